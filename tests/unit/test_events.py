"""pipeline.events: signatures, parsing, fork detection and the routing table."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipeline import events

SECRET = b"s3cret-webhook"
A = "a" * 40
B = "b" * 40
REPO = {"full_name": "acme/layers", "clone_url": "https://github.com/acme/layers.git"}


def push(ref: str = "refs/heads/main", **extra: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "ref": ref,
        "before": A,
        "after": B,
        "created": False,
        "deleted": False,
        "forced": False,
        "repository": REPO,
        "pusher": {"name": "alice"},
        "head_commit": {"id": B, "message": "change firewalld"},
        "commits": [],
    }
    payload.update(extra)
    return payload


def pull(action: str = "opened", base: str = "main", head_repo: Any = REPO) -> dict[str, Any]:
    return {
        "action": action,
        "number": 7,
        "pull_request": {
            "number": 7,
            "head": {"ref": "feature", "sha": B, "repo": head_repo},
            "base": {"ref": base, "sha": A, "repo": REPO},
        },
        "repository": REPO,
        "sender": {"login": "bob"},
    }


def comment(
    body: str = "/ok-to-test", on_pr: bool = True, action: str = "created"
) -> dict[str, Any]:
    issue: dict[str, Any] = {"number": 7}
    if on_pr:
        issue["pull_request"] = {"url": "https://api.github.com/repos/acme/layers/pulls/7"}
    return {
        "action": action,
        "issue": issue,
        "comment": {"body": body, "user": {"login": "maintainer"}},
        "repository": REPO,
    }


def route(name: str, payload: dict[str, Any], **options: Any) -> events.Action:
    event = events.parse(name, json.dumps(payload).encode())
    assert not isinstance(event, events.Rejection), event
    defaults: dict[str, Any] = {
        "full_name": "acme/layers",
        "repo_url": None,
        "default_branch": "main",
    }
    defaults.update(options)
    return events.route(event, **defaults)


def test_signature_round_trip() -> None:
    body = b'{"zen": "x"}'
    header = events.signature(SECRET, body)
    assert header.startswith("sha256=")
    assert events.signature_valid(SECRET, body, header)


@pytest.mark.parametrize(
    ("secret", "body", "header"),
    [
        (SECRET, b"{}", None),
        (SECRET, b"{}", ""),
        (SECRET, b"{}", "sha1=" + "0" * 40),
        (SECRET, b"{}", events.signature(b"other", b"{}")),
        (SECRET, b"{} ", events.signature(SECRET, b"{}")),
        (SECRET, b"{}", events.signature(SECRET, b"{}").upper()),
        (b"", b"{}", events.signature(b"", b"{}")),
    ],
)
def test_signature_refused(secret: bytes, body: bytes, header: str | None) -> None:
    assert not events.signature_valid(secret, body, header)


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"[]", 400), (b'"x"', 400), (b"not json", 400), (b"\xff\xfe", 400), (b"null", 400)],
)
def test_parse_rejects_non_objects(body: bytes, status: int) -> None:
    result = events.parse("push", body)
    assert isinstance(result, events.Rejection)
    assert result.status == status


@pytest.mark.parametrize(
    "payload",
    [
        {"ref": "refs/heads/main", "before": A, "repository": REPO},
        push(after="not-a-sha"),
        push(repository="acme/layers"),
        {**push(), "repository": {"name": "layers"}},
    ],
)
def test_parse_rejects_malformed_push(payload: dict[str, Any]) -> None:
    result = events.parse("push", json.dumps(payload).encode())
    assert isinstance(result, events.Rejection)
    assert result.status == 400


def test_parse_push_fields() -> None:
    event = events.parse("push", json.dumps(push(forced=True)).encode())
    assert isinstance(event, events.Push)
    assert event.branch == "main"
    assert (event.before, event.after, event.forced, event.pusher) == (A, B, True, "alice")
    assert event.head_message == "change firewalld"
    assert event.repository.urls == ("https://github.com/acme/layers.git",)


def test_unhandled_and_ping() -> None:
    assert events.parse("star", b"{}") == events.Unhandled("star")
    assert events.parse("ping", b'{"zen": "Keep it simple"}') == events.Ping("Keep it simple")


@pytest.mark.parametrize(
    ("head_repo", "fork"),
    [
        (REPO, False),
        ({"full_name": "ACME/Layers"}, False),
        ({"full_name": "mallory/layers"}, True),
        (None, True),
    ],
)
def test_fork_detection(head_repo: Any, fork: bool) -> None:
    event = events.parse("pull_request", json.dumps(pull(head_repo=head_repo)).encode())
    assert isinstance(event, events.PullRequest)
    assert event.from_fork is fork


@pytest.mark.parametrize(
    ("name", "payload", "expected"),
    [
        ("ping", {"zen": "z"}, events.Pong()),
        ("push", push(), events.BuildPush(branch="main", before=A, after=B, forced=False)),
        (
            "push",
            push(forced=True, created=True),
            events.BuildPush(branch="main", before=A, after=B, forced=True),
        ),
        ("push", push("refs/heads/env/nonprod"), events.Promote(B, "nonprod", "env/nonprod")),
        ("push", push("refs/heads/env/Bad_Name"), events.Ignore),
        ("push", push("refs/heads/feature"), events.Ignore),
        ("push", push("refs/tags/v1"), events.Ignore),
        ("push", push(deleted=True, after="0" * 40), events.Ignore),
        ("push", push(repository={"full_name": "other/repo"}), events.Ignore),
        (
            "pull_request",
            pull(),
            events.BuildPullRequest(7, B, "feature", "main", from_fork=False),
        ),
        (
            "pull_request",
            pull("synchronize", head_repo={"full_name": "mallory/layers"}),
            events.BuildPullRequest(7, B, "feature", "main", from_fork=True),
        ),
        ("pull_request", pull("reopened"), events.BuildPullRequest(7, B, "feature", "main", False)),
        ("pull_request", pull("closed"), events.Ignore),
        ("pull_request", pull("labeled"), events.Ignore),
        ("pull_request", pull(base="env/prod"), events.Gate(B, "prod", 7)),
        ("pull_request", pull(base="release"), events.Ignore),
        ("issue_comment", comment(), events.OkToTest(7, "maintainer")),
        ("issue_comment", comment("  /ok-to-test  \nthanks"), events.OkToTest(7, "maintainer")),
        ("issue_comment", comment("please /ok-to-test"), events.Ignore),
        ("issue_comment", comment(on_pr=False), events.Ignore),
        ("issue_comment", comment(action="edited"), events.Ignore),
        ("star", {"action": "created"}, events.Ignore),
    ],
)
def test_routing_table(name: str, payload: dict[str, Any], expected: Any) -> None:
    action = route(name, payload)
    if isinstance(expected, type):
        assert isinstance(action, expected), action
    else:
        assert action == expected


def test_default_branch_is_configurable() -> None:
    assert isinstance(route("push", push("refs/heads/main"), default_branch="trunk"), events.Ignore)
    assert isinstance(
        route("push", push("refs/heads/trunk"), default_branch="trunk"), events.BuildPush
    )


@pytest.mark.parametrize(
    ("repository", "full_name", "repo_url", "ours"),
    [
        ({"full_name": "acme/layers"}, "acme/layers", None, True),
        ({"full_name": "Acme/Layers"}, "acme/layers", None, True),
        ({"full_name": "acme/other"}, "acme/layers", None, False),
        (
            {"full_name": "x", "clone_url": "file:///srv/git/layers.git"},
            None,
            "file:///srv/git/layers",
            True,
        ),
        (
            {"full_name": "x", "clone_url": "file:///srv/git/layers.git/"},
            None,
            "file:///srv/git/layers.git",
            True,
        ),
        (
            {"full_name": "x", "clone_url": "file:///srv/git/evil.git"},
            None,
            "file:///srv/git/layers.git",
            False,
        ),
        ({"full_name": "acme/layers"}, None, None, False),
    ],
)
def test_repository_matching(
    repository: dict[str, Any], full_name: str | None, repo_url: str | None, ours: bool
) -> None:
    action = route("push", push(repository=repository), full_name=full_name, repo_url=repo_url)
    assert isinstance(action, events.BuildPush) is ours


def test_own_promotion_commit_is_ignored() -> None:
    def is_promotion(message: str, environment: str) -> bool:
        return "Layering-Source-Commit" in message and environment == "nonprod"

    own = push(
        "refs/heads/env/nonprod", head_commit={"id": B, "message": "x\n\nLayering-Source-Commit: a"}
    )
    assert isinstance(route("push", own, is_promotion_commit=is_promotion), events.Ignore)
    assert isinstance(
        route("push", push("refs/heads/env/nonprod"), is_promotion_commit=is_promotion),
        events.Promote,
    )


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-github-delivery": "abc-123"}, "-:abc-123"),
        ({"x-github-delivery": "abc-123", "x-github-hook-id": "42"}, "42:abc-123"),
        (
            {"x-github-delivery": "d", "x-github-hook-installation-target-id": "9"},
            "9:d",
        ),
        ({}, events.Rejection),
        ({"x-github-delivery": "a b"}, events.Rejection),
        ({"x-github-delivery": "d", "x-github-hook-id": "x;y"}, events.Rejection),
    ],
)
def test_delivery_key(headers: dict[str, str], expected: Any) -> None:
    key = events.delivery_key(headers)
    if isinstance(expected, type):
        assert isinstance(key, expected)
    else:
        assert key == expected


def test_task_calls_carry_ids_only() -> None:
    options = {"promote_task": "layering.promote", "gate_task": "layering.gate"}
    assert events.task_call(
        events.BuildPush("main", A, B, forced=False), **options
    ) == events.TaskCall("layering.handle_push", "events", ("main", A, B, False))
    assert events.task_call(events.Promote(B, "prod", "env/prod"), **options) == events.TaskCall(
        "layering.promote", "promotions", (B, "prod")
    )
    assert events.task_call(events.Gate(B, "prod", 3), **options) == events.TaskCall(
        "layering.gate", "promotions", (B, "prod", 3)
    )
    assert events.task_call(events.Ignore("x"), **options) is None
