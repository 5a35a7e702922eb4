"""pipeline.flows.retest with the fakes of tests/unit/test_head_flow.py: a re-run is sent as a
head's build is (record, pending status, "layering.build" with its callbacks), swapped into the
head's record, cancelled when a push took the scope meanwhile; the reply is best effort once
the builds are sent."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from typing import Any

import pytest

from pipeline.core import builds, head, retest, tasks
from pipeline.core.errors import TemporaryError
from pipeline.flows import retest as retest_flow
from tests.unit.test_head_flow import SETTINGS, SOURCE, Heads, World, pull_request, step

NUMBER = 7
SCOPE = head.pull_request_scope(NUMBER)


class RetestHeads(Heads):
    """Heads with what /retest needs; `push_meanwhile` lands a newer head just before the
    re-runs are recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.push_meanwhile: head.Head | None = None

    def get(self, scope: str) -> head.Head | None:
        return self.heads.get(scope)

    def record_rerun(
        self, scope: str, sha: str, *, replaced: Collection[str], builds: Sequence[head.HeadBuild]
    ) -> head.Head | None:
        if self.push_meanwhile is not None:
            self.heads[scope] = self.push_meanwhile
        current = self.heads.get(scope)
        written = retest.with_rerun(current, sha=sha, replaced=replaced, builds=builds)
        if written is None:
            return current
        self.heads[scope] = written
        return None


class Pulls:
    def __init__(self, sha: str) -> None:
        self.pull = head.PullHead(NUMBER, sha, "feature", "acme/layers", "main")
        self.comments: list[str] = []
        self.comment_fails = False

    def can_write(self, user: str) -> bool:
        return user == "maint"

    def pull_head(self, number: int) -> head.PullHead:
        return self.pull

    def comment(self, number: int, text: str) -> None:
        if self.comment_fails:
            raise TemporaryError("GitHub answered 502")
        self.comments.append(text)


@pytest.fixture
def world() -> World:
    world = World()
    world.heads = RetestHeads()
    world.adapters = dataclasses.replace(world.adapters, heads=world.heads)
    return world


def failed_head(world: World) -> tuple[str, builds.BuildRecord]:
    """Pull request #7 changed firewalld; its build failed."""
    sha = world.history.change(world.seed, "images/firewalld/Containerfile", step("flaky"))
    pull_request(world, sha, fork=False)
    [record] = world.records.records.values()
    world.records.save(builds.fail(record, error="RUN failed", now=20.0))
    world.queue.sent.clear()
    world.statuses.reported.clear()
    return sha, record


def run(world: World, pulls: Pulls | None, **options: Any) -> dict[str, Any]:
    heads = world.heads
    assert isinstance(heads, RetestHeads)
    return retest_flow.retest_builds(
        world.adapters, heads, pulls, SETTINGS, number=NUMBER, user="maint", **options
    )


def test_a_rerun_is_sent_as_a_heads_build_and_replaces_it(world: World) -> None:
    sha, failed = failed_head(world)
    pulls = Pulls(sha)

    summary = run(world, pulls, commented_at=200.0)

    rerun = world.records.records[summary["builds"][0]["build_id"]]
    assert rerun.id != failed.id
    assert (rerun.image, rerun.cluster, rerun.build_key) == (
        "firewalld",
        "nonprod",
        failed.build_key,
    )
    [(call, on_success, on_error)] = world.queue.sent
    assert call == tasks.Build(
        SOURCE, sha, "firewalld", "nonprod", failed.build_key, rerun.id, status_sha=sha
    ).call(task_id=f"build-{rerun.id}")
    assert on_success == tasks.ReportBuild(sha, SCOPE).call()
    assert on_error == tasks.ReportBuildError(sha, "firewalld", "nonprod", rerun.id).call()
    assert world.statuses.on(sha)["layering/build/firewalld@nonprod"][0] == "pending"
    assert [b.build_id for b in world.heads.heads[SCOPE].builds] == [rerun.id]
    assert pulls.comments == [f"/retest by @maint: re-running `firewalld@nonprod` on {sha[:12]}."]


def test_a_push_during_the_rerun_cancels_it(world: World) -> None:
    sha, _ = failed_head(world)
    newer = world.history.change(sha, "images/firewalld/Containerfile", step("fixed"))
    assert isinstance(world.heads, RetestHeads)
    world.heads.push_meanwhile = head.Head(newer, 300.0)

    summary = run(world, Pulls(sha))

    rerun = summary["builds"][0]["build_id"]
    assert world.queue.revoked == [f"build-{rerun}"]
    assert world.records.records[rerun].state is builds.BuildState.CANCELLED
    assert world.statuses.on(sha)["layering/build/firewalld@nonprod"][0] == "error"


def test_the_builds_run_when_the_reply_fails(world: World) -> None:
    sha, _ = failed_head(world)
    pulls = Pulls(sha)
    pulls.comment_fails = True

    summary = run(world, pulls)

    assert len(summary["builds"]) == 1
    assert len(world.queue.sent) == 1


def test_nothing_runs_without_github_or_for_a_reader(world: World) -> None:
    sha, failed = failed_head(world)
    assert run(world, None) == {"ignored": "no GitHub credentials configured"}
    pulls = Pulls(sha)
    summary = retest_flow.retest_builds(
        world.adapters, world.heads, pulls, SETTINGS, number=NUMBER, user="visitor"
    )
    assert summary == {"ignored": "@visitor has no write access to this repository"}
    # a target a message carried past the receiver unchecked is checked again
    assert run(world, pulls, target="Fire walld@x") == {"ignored": retest.malformed().reason}
    assert world.queue.sent == []
    assert [b.build_id for b in world.heads.heads[SCOPE].builds] == [failed.id]
    assert len(pulls.comments) == 2
