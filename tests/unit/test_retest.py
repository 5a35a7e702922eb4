"""`/retest` as data (pipeline/core/retest.py): the parser, the routing of a comment to the
"layering.retest" task, what a command re-runs, how the head's record takes the re-runs, and
the reply."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipeline.core import builds, events, head, retest, tasks

A = "a" * 40
B = "b" * 40
REPO = {"full_name": "acme/layers", "clone_url": "https://github.com/acme/layers.git"}
T = retest.Target


@pytest.mark.parametrize(
    ("body", "parsed"),
    [
        ("/retest", retest.Command()),
        ("  /retest  \r\nthe registry hiccupped", retest.Command()),
        ("/retest firewalld@nonprod", retest.Command(T("firewalld", "nonprod"))),
        ("/retest\tFirewalld@NonProd  ", retest.Command(T("firewalld", "nonprod"))),
        (
            "/retest firewalld@nonprod\n/retest chrony@nonprod",
            retest.Command(T("firewalld", "nonprod")),
        ),
        ("/retest firewalld", retest.Malformed()),
        ("/retest firewalld@", retest.Malformed()),
        ("/retest @nonprod", retest.Malformed()),
        ("/retest fire_walld@nonprod", retest.Malformed()),
        ("/retest a@b@c", retest.Malformed()),
        ("/retest -x@nonprod", retest.Malformed()),
        (f"/retest {'a' * 64}@nonprod", retest.Malformed()),
        ("/retest firewalld@nonprod chrony@nonprod", retest.Malformed()),
        ("/retest <img src=x>@nonprod", retest.Malformed()),
        ("/RETEST", None),
        ("/retests", None),
        ("please /retest", None),
        ("lgtm\n/retest", None),
        ("", None),
        ("   \n", None),
    ],
)
def test_the_command_is_the_first_word_of_the_first_line(
    body: str, parsed: retest.Command | retest.Malformed | None
) -> None:
    assert retest.parse(body) == parsed


def comment(body: str, **more: Any) -> dict[str, Any]:
    issue: dict[str, Any] = {"number": 7, "state": more.pop("state", "open")}
    if more.pop("on_pr", True):
        issue["pull_request"] = {"url": "https://api.github.com/repos/acme/layers/pulls/7"}
    return {
        "action": more.pop("action", "created"),
        "issue": issue,
        "comment": {"body": body, "user": {"login": "maint"}, **more},
        "repository": REPO,
    }


def route(payload: dict[str, Any]) -> events.Action:
    event = events.parse("issue_comment", json.dumps(payload).encode())
    assert not isinstance(event, events.Rejection), event
    return events.route(event, full_name="acme/layers", repo_url=None, default_branch="main")


@pytest.mark.parametrize(
    ("payload", "action"),
    [
        (comment("/retest"), events.Retest(7, "maint")),
        (
            comment("/retest chrony@nonprod", created_at="2026-11-29T12:00:00Z"),
            events.Retest(7, "maint", "chrony@nonprod", 1795953600.0),
        ),
        (comment("/retest chrony"), events.Retest(7, "maint", malformed=True)),
        (
            comment("/retest", state="closed"),
            events.Ignore("pull request #7 is closed: nothing re-run"),
        ),
        (comment("/retest", on_pr=False), events.Ignore("comment not on a pull request")),
        (comment("/retest", action="edited"), events.Ignore("comment not on a pull request")),
        (comment("thanks"), events.Ignore("comment is neither /ok-to-test nor /retest")),
    ],
)
def test_a_comment_is_routed(payload: dict[str, Any], action: events.Action) -> None:
    assert route(payload) == action


def test_the_task_carries_the_checked_target_only() -> None:
    action = route(comment("/retest Chrony@Nonprod\n<script>", created_at="2026-11-29T12:00:00Z"))
    call = events.task_for(action, enqueued_at=1795953601.5)
    assert call == tasks.TaskCall(
        "layering.retest",
        "events",
        {
            "number": 7,
            "user": "maint",
            "target": "chrony@nonprod",
            "enqueued_at": 1795953601.5,
            "commented_at": 1795953600.0,
            "malformed": False,
        },
    )
    malformed = events.task_for(route(comment("/retest <b>x</b>")), enqueued_at=1.0)
    assert malformed is not None
    assert malformed.kwargs["target"] is None
    assert malformed.kwargs["malformed"] is True
    assert "<b>" not in json.dumps(dict(malformed.kwargs))


# -- the decision ---------------------------------------------------------------------------


def build(build_id: str, image: str = "firewalld", cluster: str = "nonprod") -> head.HeadBuild:
    return head.HeadBuild(build_id, f"build-{build_id}", f"key-{image}-{cluster}", image, cluster)


FW, CH = build("fw1"), build("ch1", "chrony")
FW2 = build("fw2")  # a later build of firewalld@nonprod on the same head (a redelivery)
PULL = head.PullHead(7, B, "feature", "acme/layers", "main")
FORK_PULL = head.PullHead(7, B, "feature", "mallory/layers", "main")
HEAD = head.Head(B, 10.0, (FW, CH))
S = builds.BuildState


def decide(
    *,
    pull: head.PullHead = PULL,
    recorded: head.Head | None = HEAD,
    states: dict[str, builds.BuildState] | None = None,
    target: retest.Target | None = None,
    as_of: str | None = B,
) -> retest.Rerun | retest.Nothing:
    return retest.decide(
        pull,
        recorded,
        {"fw1": S.FAILED, "ch1": S.SUCCEEDED} if states is None else states,
        target=target,
        as_of=as_of,
        default_branch="main",
        fork=retest.is_fork(pull, "acme/layers"),
    )


@pytest.mark.parametrize(
    ("options", "outcome"),
    [
        ({}, retest.Rerun(B, (FW,))),
        ({"states": {"fw1": S.FAILED, "ch1": S.FAILED}}, retest.Rerun(B, (FW, CH))),
        ({"as_of": None}, retest.Rerun(B, (FW,))),
        (
            {"states": {"fw1": S.SUCCEEDED, "ch1": S.SKIPPED}},
            retest.Nothing("no failed builds on bbbbbbbbbbbb"),
        ),
        (
            {"states": {"fw1": S.CANCELLED, "ch1": S.RUNNING}},
            retest.Nothing("no failed builds on bbbbbbbbbbbb"),
        ),
        # a build whose record expired is not re-run
        ({"states": {"ch1": S.SUCCEEDED}}, retest.Nothing("no failed builds on bbbbbbbbbbbb")),
        # the later build of a context counts, not the one it replaced
        (
            {
                "recorded": head.Head(B, 10.0, (FW, CH, FW2)),
                "states": {"fw1": S.FAILED, "fw2": S.SUCCEEDED},
            },
            retest.Nothing("no failed builds on bbbbbbbbbbbb"),
        ),
        ({"target": T("chrony", "nonprod")}, retest.Rerun(B, (CH,))),
        ({"target": T("firewalld", "nonprod")}, retest.Rerun(B, (FW,))),
        (
            {"target": T("chrony", "nonprod"), "states": {"ch1": S.CANCELLED}},
            retest.Rerun(B, (CH,)),
        ),
        (
            {"target": T("chrony", "nonprod"), "states": {"ch1": S.RUNNING}},
            retest.Nothing("chrony@nonprod is already running on bbbbbbbbbbbb"),
        ),
        (
            {"target": T("chrony", "nonprod"), "states": {"ch1": S.QUEUED}},
            retest.Nothing("chrony@nonprod is already running on bbbbbbbbbbbb"),
        ),
        (
            {"target": T("chrony", "prod")},
            retest.Nothing("no such build on bbbbbbbbbbbb: chrony@prod"),
        ),
        (
            {"target": T("chrony", "nonprod"), "states": {"fw1": S.FAILED}},
            retest.Nothing("no such build on bbbbbbbbbbbb: chrony@nonprod"),
        ),
        (
            {"pull": head.PullHead(7, B, "feature", "acme/layers", "main", "closed")},
            retest.Nothing("pull request #7 is closed"),
        ),
        (
            {"pull": head.PullHead(7, B, "feature", "acme/layers", "release")},
            retest.Nothing("pull request #7 is not into main"),
        ),
        (
            {"recorded": None},
            retest.Nothing(
                "the head of #7 is bbbbbbbbbbbb, which the service has not planned yet; "
                "comment again once its checks appear"
            ),
        ),
        (
            {"recorded": head.Head(A, 10.0, (FW,))},
            retest.Nothing(
                "the head of #7 is bbbbbbbbbbbb, which the service has not planned yet; "
                "comment again once its checks appear"
            ),
        ),
        (
            {"recorded": head.Head(B, 10.0, closed=True)},
            retest.Nothing(
                "the head of #7 is bbbbbbbbbbbb, which the service has not planned yet; "
                "comment again once its checks appear"
            ),
        ),
        (
            {"as_of": A},
            retest.Nothing(
                "#7 moved to bbbbbbbbbbbb after the comment; comment again to re-run its builds"
            ),
        ),
        (
            {"pull": FORK_PULL, "recorded": head.Head(B, 10.0)},
            retest.Nothing(
                "bbbbbbbbbbbb is a fork's commit that no /ok-to-test approved: it has no builds "
                "to re-run"
            ),
        ),
        # a fork's head that /ok-to-test approved has builds: they re-run like any
        ({"pull": FORK_PULL}, retest.Rerun(B, (FW,))),
        ({"recorded": head.Head(B, 10.0)}, retest.Nothing("bbbbbbbbbbbb has no builds to re-run")),
    ],
)
def test_what_a_retest_reruns(options: dict[str, Any], outcome: object) -> None:
    assert decide(**options) == outcome


def test_a_rerun_replaces_the_build_in_the_heads_record() -> None:
    new = build("fw3")
    assert retest.with_rerun(HEAD, sha=B, replaced=["fw1"], builds=[new]) == head.Head(
        B, 10.0, (CH, new)
    )
    # another /retest replaced it first: both re-runs stay on record (a push cancels both)
    other = build("fw4")
    once = head.Head(B, 10.0, (CH, new))
    assert retest.with_rerun(once, sha=B, replaced=["fw1"], builds=[other]) == head.Head(
        B, 10.0, (CH, new, other)
    )
    # a push or a close took the scope first: nothing is written, the caller cancels
    assert retest.with_rerun(head.Head(A, 11.0), sha=B, replaced=["fw1"], builds=[new]) is None
    assert retest.with_rerun(None, sha=B, replaced=["fw1"], builds=[new]) is None
    closed = head.Head(B, 12.0, closed=True)
    assert retest.with_rerun(closed, sha=B, replaced=["fw1"], builds=[new]) is None


@pytest.mark.parametrize(
    ("user", "outcome", "text"),
    [
        (
            "maint",
            retest.Rerun(B, (FW, CH)),
            "/retest by @maint: re-running `firewalld@nonprod`, `chrony@nonprod` on bbbbbbbbbbbb.",
        ),
        (
            "dependabot[bot]",
            retest.Nothing("no failed builds on bbbbbbbbbbbb"),
            "/retest by @dependabot[bot]: nothing re-run: no failed builds on bbbbbbbbbbbb.",
        ),
        (
            "visitor",
            retest.not_allowed("visitor"),
            "/retest by @visitor: nothing re-run: @visitor has no write access to this repository.",
        ),
        (
            "<img src=x onerror=alert(1)>",
            retest.not_allowed("<img src=x onerror=alert(1)>"),
            "/retest by someone: nothing re-run: someone has no write access to this repository.",
        ),
        (
            "maint",
            retest.malformed(),
            "/retest by @maint: nothing re-run: its argument is not one `<image>@<cluster>`; "
            + retest.USAGE
            + ".",
        ),
    ],
)
def test_the_reply(user: str, outcome: retest.Rerun | retest.Nothing, text: str) -> None:
    assert retest.reply(user, outcome) == text


def test_the_usage_shows_both_forms() -> None:
    assert "`/retest`" in retest.USAGE
    assert "`/retest <image>@<cluster>`" in retest.USAGE
