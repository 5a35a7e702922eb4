"""pipeline.core.events (with core.deliveries, which it re-exports): signatures, parsing, fork
detection and the routing table."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipeline.core import deliveries, events, tasks

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


def pull(
    action: str = "opened", base: str = "main", head_repo: Any = REPO, merged: bool = False
) -> dict[str, Any]:
    return {
        "action": action,
        "number": 7,
        "pull_request": {
            "number": 7,
            "merged": merged,
            "head": {"ref": "feature", "sha": B, "repo": head_repo},
            "base": {"ref": base, "sha": A, "repo": REPO},
        },
        "repository": REPO,
        "sender": {"login": "bob"},
    }


def comment(
    body: str = "/ok-to-test", on_pr: bool = True, action: str = "created", **more: Any
) -> dict[str, Any]:
    """`more`: `state` goes to the issue, `created_at` to the comment."""
    issue: dict[str, Any] = {"number": 7}
    if on_pr:
        issue["pull_request"] = {"url": "https://api.github.com/repos/acme/layers/pulls/7"}
    if "state" in more:
        issue["state"] = more["state"]
    body_of: dict[str, Any] = {"body": body, "user": {"login": "maintainer"}}
    if "created_at" in more:
        body_of["created_at"] = more["created_at"]
    return {"action": action, "issue": issue, "comment": body_of, "repository": REPO}


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


def test_events_is_the_one_api_of_webhook_handling() -> None:
    assert events.parse is deliveries.parse
    assert events.signature_valid is deliveries.signature_valid
    assert events.Push is deliveries.Push
    assert events.ZERO_SHA == "0" * 40


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
        ("pull_request", pull("closed"), events.ClosePullRequest(7, B)),
        ("pull_request", pull("closed", merged=True), events.Ignore),
        ("pull_request", pull("closed", base="env/prod"), events.Ignore),
        ("pull_request", pull("labeled"), events.Ignore),
        ("pull_request", pull(base="env/prod"), events.Gate(B, "prod", 7, head_ref="feature")),
        (
            "pull_request",
            pull(base="env/prod", head_repo={"full_name": "mallory/layers"}),
            events.Gate(B, "prod", 7, head_ref=""),  # a fork's branch name is not passed on
        ),
        ("pull_request", pull(base="release"), events.Ignore),
        ("issue_comment", comment(), events.OkToTest(7, "maintainer")),
        ("issue_comment", comment("  /ok-to-test  \nthanks"), events.OkToTest(7, "maintainer")),
        ("issue_comment", comment("please /ok-to-test"), events.Ignore),
        ("issue_comment", comment(on_pr=False), events.Ignore),
        ("issue_comment", comment(action="edited"), events.Ignore),
        # /ok-to-test is bound to a commit: the one it names, or the head as of the comment
        (
            "issue_comment",
            comment(created_at="2026-11-29T12:00:00Z", state="open"),
            events.OkToTest(7, "maintainer", None, 1795953600.0),
        ),
        ("issue_comment", comment(f"/ok-to-test {B}"), events.OkToTest(7, "maintainer", B)),
        (
            "issue_comment",
            comment(f"/ok-to-test {B.upper()}\nlooks fine"),
            events.OkToTest(7, "maintainer", B),
        ),
        ("issue_comment", comment("/ok-to-test bbbbbbb"), events.Ignore),
        ("issue_comment", comment(f"/ok-to-test {B} {A}"), events.Ignore),
        ("issue_comment", comment("/ok-to-test main"), events.Ignore),
        ("issue_comment", comment(state="closed"), events.Ignore),
        ("issue_comment", comment(created_at="yesterday"), events.OkToTest(7, "maintainer")),
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


def test_a_push_with_promotion_trailers_is_still_promoted() -> None:
    # issue 10: trailers are text anyone can write into a merge message; they never skip the
    # promotion that would overwrite a hand-written MachineConfig
    forged = push(
        "refs/heads/env/nonprod", head_commit={"id": B, "message": "x\n\nLayering-Source-Commit: a"}
    )
    assert isinstance(route("push", forged), events.Promote)
    assert isinstance(route("push", push("refs/heads/env/nonprod")), events.Promote)


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
    push = events.task_for(events.BuildPush("main", A, B, forced=False), enqueued_at=1.5)
    assert push == tasks.TaskCall(
        "layering.handle_push",
        "events",
        {"branch": "main", "before": A, "after": B, "forced": False, "enqueued_at": 1.5},
    )
    assert events.task_for(events.Promote(B, "prod", "env/prod"), enqueued_at=1.5) == (
        tasks.TaskCall("layering.promote", "promotions", {"commit_sha": B, "environment": "prod"})
    )
    assert events.task_for(events.Gate(B, "prod", 3), enqueued_at=1.5) == tasks.TaskCall(
        "layering.gate",
        "promotions",
        {"head_sha": B, "base_environment": "prod", "pr_number": 3, "head_ref": ""},
    )
    assert events.task_for(events.Ignore("x"), enqueued_at=1.5) is None


def test_closed_pull_request_enqueues_its_cancellation() -> None:
    call = events.task_for(events.ClosePullRequest(7, B), enqueued_at=1.5)
    assert call == tasks.TaskCall(
        "layering.close_pull_request",
        "events",
        {"number": 7, "head_sha": B, "enqueued_at": 1.5},
    )


def _nested(depth: int) -> bytes:
    return b'{"ref":' + b"[" * depth + b"]" * depth + b"}"


def _with(path: tuple[str, ...], value: Any, base: dict[str, Any] | None = None) -> bytes:
    document = json.loads(json.dumps(base if base is not None else push()))
    target = document
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return json.dumps(document).encode()


def _without(path: tuple[str, ...], base: dict[str, Any] | None = None) -> bytes:
    document = json.loads(json.dumps(base if base is not None else push()))
    target = document
    for step in path[:-1]:
        target = target[step]
    del target[path[-1]]
    return json.dumps(document).encode()


# Every field read from a delivery, given the wrong type or shape: a 400 whose reason is one
# short line naming the field, never an exception.
HOSTILE_BODIES: list[tuple[str, str, bytes, str]] = [
    ("ref-number", "push", _with(("ref",), 42), "field ref must be a string"),
    ("ref-null", "push", _with(("ref",), None), "field ref must be a string"),
    ("ref-object", "push", _with(("ref",), {"a": 1}), "field ref must be a string"),
    ("after-not-sha", "push", _with(("after",), "HEAD"), "field after must be a 40-hex"),
    ("after-upper", "push", _with(("after",), "B" * 40), "field after must be a 40-hex"),
    ("after-number", "push", _with(("after",), 1), "field after must be a string"),
    ("before-list", "push", _with(("before",), [A]), "field before must be a string"),
    ("no-full-name", "push", _without(("repository", "full_name")), "repository.full_name"),
    ("full-name-number", "push", _with(("repository", "full_name"), 1), "full_name must be"),
    ("repository-list", "push", _with(("repository",), []), "repository must be an object"),
    ("no-repository", "push", _without(("repository",)), "repository must be an object"),
    ("nested-deep", "push", _nested(100_000), "nested too deeply"),
    ("not-utf8", "push", b'{"ref": "\xff\xfe"}', "not UTF-8"),
    ("lone-continuation", "push", b"\x80", "not"),
    ("duplicate-key", "push", b'{"ref": "refs/heads/main", "ref": "refs/heads/x"}', "duplicate"),
    ("nan", "push", b'{"ref": NaN}', "NaN is not a JSON number"),
    ("infinity", "push", b'{"ref": -Infinity}', "Infinity is not a JSON number"),
    ("huge-int", "push", b'{"ref": ' + b"9" * 5000 + b"}", "not JSON"),
    ("trailing", "push", json.dumps(push()).encode() + b" x", "not JSON"),
    ("empty", "push", b"", "not JSON"),
    ("pr-head-string", "pull_request", _with(("pull_request", "head"), "x", pull()), "head"),
    ("pr-number-str", "pull_request", _with(("pull_request", "number"), "7", pull()), "number"),
    ("pr-number-neg", "pull_request", _with(("pull_request", "number"), -7, pull()), "positive"),
    ("pr-number-big", "pull_request", _with(("pull_request", "number"), 2**80, pull()), "number"),
    ("pr-number-bool", "pull_request", _with(("pull_request", "number"), True, pull()), "number"),
    ("pr-number-float", "pull_request", _with(("pull_request", "number"), 7.0, pull()), "number"),
    ("pr-string", "pull_request", _with(("pull_request",), "x", pull()), "pull_request"),
    ("pr-sha-short", "pull_request", _with(("pull_request", "head", "sha"), "b", pull()), "sha"),
    ("comment-body-list", "issue_comment", _with(("comment", "body"), [], comment()), "body"),
    ("comment-user-str", "issue_comment", _with(("comment", "user"), "x", comment()), "login"),
    ("issue-number-null", "issue_comment", _with(("issue", "number"), None, comment()), "number"),
]


@pytest.mark.parametrize(
    ("event", "body", "reason"),
    [case[1:] for case in HOSTILE_BODIES],
    ids=[case[0] for case in HOSTILE_BODIES],
)
def test_hostile_bodies_are_400_with_one_line(event: str, body: bytes, reason: str) -> None:
    result = events.parse(event, body)
    assert isinstance(result, events.Rejection), result
    assert result.status == 400
    assert reason in result.reason
    assert "\n" not in result.reason
    assert len(result.reason) < 200


def test_huge_array_parses_and_is_ignored_where_unused() -> None:
    body = json.dumps({**push(), "commits": [{"id": B}] * 200_000}).encode()
    event = events.parse("push", body)
    assert isinstance(event, events.Push)


@pytest.mark.parametrize(
    "ref",
    ["refs/heads/" + "x" * 100_000, "refs/heads/a\nb", "refs/heads/$(id)", "refs/heads/\x00"],
    ids=["long", "newline", "shell", "nul"],
)
def test_odd_refs_are_ignored_with_a_short_reason(ref: str) -> None:
    action = route("push", push(ref))
    assert isinstance(action, events.Ignore)
    assert len(action.reason) < 250


def test_unknown_event_name_is_echoed_short() -> None:
    action = events.route(
        events.Unhandled("x" * 10_000), full_name="acme/layers", repo_url=None, default_branch="m"
    )
    assert isinstance(action, events.Ignore)
    assert len(action.reason) < 250


@pytest.mark.parametrize(
    "hook_id",
    ["²", "1 2", "-1", "1" * 21, "0x1f", "1;DEL *"],
    ids=["sup2", "sp", "neg", "long", "hex", "inj"],
)
def test_hook_id_must_be_ascii_digits(hook_id: str) -> None:
    headers = {"x-github-delivery": "d-1", "x-github-hook-id": hook_id}
    assert events.delivery_key(headers) == events.Rejection(
        400, "malformed X-GitHub-Hook-ID header"
    )


@pytest.mark.parametrize(
    "delivery",
    ["*", "a b", "a\r\nb", "x" * 129, "../../etc", "d\u00e9"],
    ids=["glob", "space", "crlf", "long", "traversal", "latin1"],
)
def test_delivery_id_is_restricted(delivery: str) -> None:
    result = events.delivery_key({"x-github-delivery": delivery})
    assert isinstance(result, events.Rejection)
    assert result.status == 400


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (comment(state="closed"), "pull request #7 is closed: not built"),
        (
            comment("/ok-to-test abc123"),
            "/ok-to-test takes nothing or one full 40-hex commit sha, not 'abc123'",
        ),
    ],
)
def test_ok_to_test_ignored_with_a_reason(payload: dict[str, Any], reason: str) -> None:
    assert route("issue_comment", payload) == events.Ignore(reason)


def test_comment_time_and_state_must_be_strings() -> None:
    for payload in (comment(created_at=5), comment(state=["open"])):
        rejected = events.parse("issue_comment", json.dumps(payload).encode())
        assert isinstance(rejected, events.Rejection), rejected
        assert rejected.status == 400
