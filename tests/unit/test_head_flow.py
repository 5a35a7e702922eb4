"""pipeline.flows.head with fakes of its ports (an in-memory Git history, head store, build
records, task queue, status reporter, and the HeadLinter running read_head in this process):
what each event sends, records, cancels and reports, that an event reads its head's repository
once, that a stopped lint builds nothing, and what an /ok-to-test approves."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import pytest

from pipeline.core import approval, builds, commit_status, head, head_lint, repo, tasks
from pipeline.core.errors import InputError
from pipeline.core.settings import Settings
from pipeline.flows import head as head_flow

URL = "https://layering.example.com"
SETTINGS = Settings(public_url=URL, default_branch="main")
SOURCE = "/var/lib/layering/mirrors/0123456789abcdef.git"
BASE = "quay.io/fedora/fedora-coreos"
SEED = {
    "README.md": b"seed\n",
    "images/firewalld/Containerfile": b"FROM " + BASE.encode() + b"\nRUN echo firewalld\n",
    "images/chrony/Containerfile": b"FROM " + BASE.encode() + b"\nRUN echo chrony\n",
    "clusters/nonprod/cluster.yaml": (
        b"environment: nonprod\nbaseImage: " + BASE.encode() + b"@sha256:" + b"1" * 64 + b"\n"
        b"registry: registry.example.com/layering\npools:\n  worker: firewalld\n  infra: chrony\n"
    ),
}


def step(command: str) -> bytes:
    """A Containerfile on the clusters' base that runs `command`."""
    return f"FROM {BASE}\nRUN {command} && ostree container commit\n".encode()


class History:
    """Commits in memory: sha -> (parents, files)."""

    def __init__(self) -> None:
        self.commits: dict[str, tuple[tuple[str, ...], dict[str, bytes]]] = {}
        self.refs: dict[str, str] = {}
        self.listed: list[str] = []

    def commit(self, files: Mapping[str, bytes], *parents: str, branch: str = "") -> str:
        sha = hashlib.sha1(repr((sorted(files.items()), parents)).encode()).hexdigest()  # noqa: S324
        self.commits[sha] = (parents, dict(files))
        if branch:
            self.refs[f"refs/heads/{branch}"] = sha
        return sha

    def change(self, parent: str, path: str, text: bytes, *, branch: str = "") -> str:
        return self.commit({**self.commits[parent][1], path: text}, parent, branch=branch)

    def resolve(self, rev: str) -> str:
        if rev in self.commits:
            return rev
        if rev in self.refs:
            return self.refs[rev]
        raise InputError(f"unknown revision {rev!r}")

    def _ancestors(self, sha: str) -> list[str]:
        seen: list[str] = []
        frontier = [sha]
        while frontier:
            commit = frontier.pop(0)
            if commit not in seen:
                seen.append(commit)
                frontier.extend(self.commits[commit][0])
        return seen

    def is_ancestor(self, a: str, b: str) -> bool:
        return a in self._ancestors(b)

    def merge_base(self, a: str, b: str) -> str | None:
        ours = set(self._ancestors(a))
        return next((c for c in self._ancestors(b) if c in ours), None)

    def changed_paths(
        self, a: str, b: str, *, prefixes: Collection[str] | None = None
    ) -> list[str]:
        old, new = self.commits[a][1], self.commits[b][1]
        return sorted(
            path
            for path in old.keys() | new.keys()
            if old.get(path) != new.get(path)
            and (prefixes is None or path.split("/")[0] in prefixes)
        )

    def listing(
        self, rev: str, *, images: Collection[str] | None = None, machineconfigs: bool = True
    ) -> repo.TreeListing:
        self.listed.append(rev)
        files = self.commits[rev][1]
        names = sorted({p.split("/")[1] for p in files if p.startswith("images/")})
        trees = {
            name: hashlib.sha1(  # noqa: S324
                repr(
                    sorted((p, t) for p, t in files.items() if p.startswith(f"images/{name}/"))
                ).encode()
            ).hexdigest()
            for name in names
        }
        unread = frozenset(name for name in names if images is not None and name not in images)
        read = {
            path: text
            for path, text in files.items()
            if repo.interesting(path)
            and not (path.startswith("images/") and path.split("/")[1] in unread)
            and (machineconfigs or "/machineconfigs/" not in path)
        }
        clusters = {p.split("/")[1] for p in files if p.startswith("clusters/")}
        return repo.TreeListing(dict(trees), clusters, read, unread)


class Mirror:
    source = SOURCE

    def __init__(self, history: History) -> None:
        self.history = history
        self.fetched: list[tuple[str, ...]] = []

    def fetch(self, *refs: str) -> contextlib.AbstractContextManager[History]:
        self.fetched.append(refs)
        return contextlib.nullcontext(self.history)


class Heads:
    def __init__(self) -> None:
        self.heads: dict[str, head.Head] = {}
        self.timelines: dict[str, list[approval.Seen]] = {}
        self.taken_meanwhile: head.Head | None = None
        self.lint: dict[str, dict[str, Sequence[commit_status.LintFinding]]] = {}

    def claim(
        self, scope: str, sha: str, enqueued_at: float, *, closed: bool = False
    ) -> tuple[bool, head.Head | None]:
        previous = self.heads.get(scope)
        written = head.claim(previous, sha=sha, enqueued_at=enqueued_at, closed=closed)
        if written is not None:
            self.heads[scope] = written
            if approval.arrives(previous, sha=sha, closed=closed):
                self.timelines.setdefault(scope, []).append(approval.Seen(sha, enqueued_at))
        return written is not None, previous

    def timeline(self, scope: str) -> list[approval.Seen]:
        return list(self.timelines.get(scope, []))

    def record_lint(self, sha: str, findings: head_lint.ByImage) -> None:
        self.lint.setdefault(sha, {}).update(findings)

    def record_builds(
        self, scope: str, sha: str, builds: Sequence[head.HeadBuild]
    ) -> head.Head | None:
        if self.taken_meanwhile is not None:
            self.heads[scope] = self.taken_meanwhile
        current = self.heads.get(scope)
        written = head.with_builds(current, sha=sha, builds=builds)
        if written is None:
            return current
        self.heads[scope] = written
        return None


class Records:
    def __init__(self) -> None:
        self.records: dict[str, builds.BuildRecord] = {}
        self.cancel_requested: list[str] = []
        self.ids = (f"b{n}" for n in itertools.count(1))

    def create_queued(
        self, *, image: str, cluster: str, commit_sha: str = "", build_key: str = ""
    ) -> builds.BuildRecord:
        record = builds.queued(
            next(self.ids),
            image=image,
            cluster=cluster,
            now=10.0,
            commit_sha=commit_sha,
            build_key=build_key,
        )
        self.records[record.id] = record
        return record

    def get(self, build_id: str) -> builds.BuildRecord | None:
        return self.records.get(build_id)

    def save(self, record: builds.BuildRecord) -> None:
        self.records[record.id] = record

    def request_cancel(self, build_id: str) -> None:
        self.cancel_requested.append(build_id)


class Queue:
    def __init__(self) -> None:
        self.sent: list[tuple[tasks.TaskCall, tasks.TaskCall | None, tasks.TaskCall | None]] = []
        self.revoked: list[str] = []

    def send(
        self,
        call: tasks.TaskCall,
        *,
        on_success: tasks.TaskCall | None = None,
        on_error: tasks.TaskCall | None = None,
    ) -> None:
        self.sent.append((call, on_success, on_error))

    def revoke(self, task_id: str) -> None:
        self.revoked.append(task_id)


class Statuses:
    def __init__(self) -> None:
        self.reported: list[tuple[str, commit_status.Status]] = []

    def report(self, sha: str, status: commit_status.Status) -> None:
        self.reported.append((sha, status))

    def on(self, sha: str) -> dict[str, tuple[str, str]]:
        return {s.context: (s.state, s.description) for c, s in self.reported if c == sha}


class Metrics:
    def __init__(self) -> None:
        self.latencies: list[float] = []

    def queue_latency(self, seconds: float) -> None:
        self.latencies.append(seconds)


class Linter:
    """The HeadLinter port in this process (adapters/sandboxed_lint.py runs the same
    read_head in a subprocess); `stop` makes it answer Stopped instead."""

    def __init__(self, history: History) -> None:
        self.history = history
        self.requests: list[head_lint.Request] = []
        self.stop: head_lint.Stopped | None = None

    def lint(self, request: head_lint.Request) -> head_lint.Reading | head_lint.Stopped:
        self.requests.append(request)
        if self.stop is not None:
            return self.stop
        return head_flow.read_head(self.history, request)


class World:
    def __init__(self) -> None:
        self.history = History()
        self.seed = self.history.commit(SEED, branch="main")
        self.mirror = Mirror(self.history)
        self.heads = Heads()
        self.records = Records()
        self.queue = Queue()
        self.statuses = Statuses()
        self.metrics = Metrics()
        self.linter = Linter(self.history)
        self.adapters = head_flow.Adapters(
            heads=self.heads,
            mirror=self.mirror,
            records=self.records,
            queue=self.queue,
            statuses=self.statuses,
            metrics=self.metrics,
            linter=self.linter,
            now=lambda: 100.0,
        )

    def push(self, before: str, after: str, enqueued_at: float = 99.0) -> dict[str, Any]:
        return head_flow.handle_push(
            self.adapters,
            SETTINGS,
            branch="main",
            before=before,
            after=after,
            enqueued_at=enqueued_at,
        )


@pytest.fixture
def world() -> World:
    return World()


def test_push_sends_one_build_per_target_with_its_record_and_callbacks(world: World) -> None:
    after = world.history.change(world.seed, "images/firewalld/Containerfile", step("echo v2"))

    summary = world.push(world.seed, after)

    [record] = world.records.records.values()
    assert (record.image, record.cluster, record.commit_sha) == ("firewalld", "nonprod", after)
    assert summary == {
        "head": after,
        "builds": [
            {
                "build_id": record.id,
                "task_id": f"build-{record.id}",
                "build_key": record.build_key,
                "image": "firewalld",
                "cluster": "nonprod",
            }
        ],
    }
    [(call, on_success, on_error)] = world.queue.sent
    assert call == tasks.Build(
        SOURCE, after, "firewalld", "nonprod", record.build_key, record.id, status_sha=after
    ).call(task_id=f"build-{record.id}")
    assert on_success == tasks.ReportBuild(after, "branch:main").call()
    assert on_error == tasks.ReportBuildError(after, "firewalld", "nonprod", record.id).call()
    assert world.statuses.on(after) == {
        "layering/lint": ("success", "no findings"),
        "layering/build/firewalld@nonprod": ("pending", "queued: firewalld on nonprod's base"),
    }
    assert world.heads.heads["branch:main"].builds == (
        head.HeadBuild(record.id, f"build-{record.id}", record.build_key, "firewalld", "nonprod"),
    )
    assert world.metrics.latencies == [1.0]
    assert world.history.listed == [after], "the head's repository is read once, by the plan"
    assert world.heads.lint == {after: {"firewalld": []}}, "kept for the build page"


def test_a_newer_push_cancels_the_older_heads_build(world: World) -> None:
    first = world.history.change(world.seed, "images/firewalld/Containerfile", step("1"))
    second = world.history.change(first, "images/firewalld/Containerfile", step("2"))
    world.push(world.seed, first, enqueued_at=1.0)
    [older] = world.records.records.values()

    world.push(first, second, enqueued_at=2.0)

    assert world.records.records[older.id].state is builds.BuildState.CANCELLED
    assert world.records.cancel_requested == [older.id]
    assert world.queue.revoked == [f"build-{older.id}"]
    assert world.statuses.on(first)["layering/build/firewalld@nonprod"] == (
        "error",
        f"superseded by {second[:12]}",
    )
    assert world.statuses.on(second)["layering/build/firewalld@nonprod"][0] == "pending"


def test_a_finished_build_of_an_older_head_is_left_alone(world: World) -> None:
    first = world.history.change(world.seed, "images/firewalld/Containerfile", step("1"))
    second = world.history.change(first, "README.md", b"docs\n")
    world.push(world.seed, first, enqueued_at=1.0)
    [older] = world.records.records.values()
    running = builds.transition(older, builds.BuildState.RUNNING, now=15.0)
    world.records.save(builds.transition(running, builds.BuildState.SUCCEEDED, now=20.0))

    assert world.push(first, second, enqueued_at=2.0) == {
        "head": second,
        "builds": [],
        "note": "nothing to build",
    }
    assert world.queue.revoked == []
    assert world.statuses.on(second) == {}


def test_an_older_delivery_arriving_late_is_stale(world: World) -> None:
    first = world.history.change(world.seed, "images/chrony/Containerfile", step("1"))
    second = world.history.change(first, "images/chrony/Containerfile", step("2"))
    world.push(first, second, enqueued_at=2.0)

    assert world.push(world.seed, first, enqueued_at=1.0) == {
        "head": first,
        "stale": True,
        "newer": second,
    }
    assert world.statuses.on(first) == {}


def pull_request(world: World, sha: str, *, fork: bool, number: int = 7) -> dict[str, Any]:
    return head_flow.handle_pull_request(
        world.adapters,
        SETTINGS,
        number=number,
        head_sha=sha,
        base_ref="main",
        from_fork=fork,
        enqueued_at=50.0,
    )


def test_a_fork_pull_request_is_linted_only(world: World) -> None:
    sha = world.history.change(world.seed, "images/chrony/Containerfile", step("fork"))

    assert pull_request(world, sha, fork=True) == {
        "head": sha,
        "builds": [],
        "note": "fork: lint only",
    }
    assert world.mirror.fetched == [("refs/pull/7/head", "main")]
    assert world.records.records == {}
    assert world.statuses.on(sha) == {
        "layering/lint": ("success", f"no findings; {commit_status.FORK_NOTE}")
    }
    assert world.heads.lint == {sha: {"chrony": []}}


def test_closing_a_pull_request_cancels_its_builds(world: World) -> None:
    sha = world.history.change(world.seed, "images/chrony/Containerfile", step("pr"))
    pull_request(world, sha, fork=False)
    [record] = world.records.records.values()

    summary = head_flow.close_pull_request(
        world.adapters, SETTINGS, number=7, head_sha=sha, enqueued_at=60.0
    )

    assert summary == {"closed": 7, "cancelled": [record.id]}
    assert world.records.records[record.id].state is builds.BuildState.CANCELLED
    assert world.statuses.on(sha)["layering/build/chrony@nonprod"] == (
        "error",
        "pull request closed",
    )
    assert world.heads.heads["pr:7"].closed
    again = head_flow.close_pull_request(
        world.adapters, SETTINGS, number=7, head_sha=sha, enqueued_at=61.0
    )
    assert again == {"closed": 7, "cancelled": []}


def test_builds_queued_while_the_pull_request_closed_are_cancelled(world: World) -> None:
    sha = world.history.change(world.seed, "images/chrony/Containerfile", step("pr"))
    world.heads.taken_meanwhile = head.Head(sha, 55.0, closed=True)

    summary = pull_request(world, sha, fork=False)

    [record] = world.records.records.values()
    assert summary == {"head": sha, "builds": [], "note": "pull request closed meanwhile"}
    assert world.queue.revoked == [f"build-{record.id}"]
    assert world.statuses.on(sha)["layering/build/chrony@nonprod"] == (
        "error",
        "pull request closed",
    )


class Pulls:
    def __init__(self, pull: head.PullHead) -> None:
        self.pull = pull

    def can_write(self, user: str) -> bool:
        return user == "maint"

    def pull_head(self, number: int) -> head.PullHead:
        return self.pull


@pytest.mark.parametrize(
    ("user", "base_ref", "with_github", "expected"),
    [
        ("maint", "main", False, {"ignored": "no GitHub credentials configured"}),
        ("visitor", "main", True, {"ignored": "visitor has no write permission"}),
        ("maint", "release", True, {"ignored": "pull request #7 is into release"}),
    ],
)
def test_ok_to_test_ignored(
    world: World, user: str, base_ref: str, with_github: bool, expected: dict[str, str]
) -> None:
    pulls = Pulls(head.PullHead(7, "f" * 40, "feature", "mallory/layers", base_ref))
    summary = head_flow.ok_to_test(
        world.adapters, pulls if with_github else None, SETTINGS, number=7, user=user
    )
    assert summary == expected
    assert world.queue.sent == []


def test_ok_to_test_builds_the_fork(world: World) -> None:
    sha = world.history.change(world.seed, "images/chrony/Containerfile", step("fork"))
    pulls = Pulls(head.PullHead(7, sha, "feature", "mallory/layers", "main"))
    pull_request(world, sha, fork=True)  # its head arrived (at 50.0) before the comment

    summary = head_flow.ok_to_test(world.adapters, pulls, SETTINGS, number=7, user="maint")

    assert [b["image"] for b in summary["builds"]] == ["chrony"]
    assert world.statuses.on(sha)["layering/lint"] == ("success", "no findings")


def test_report_build_posts_its_final_status(world: World) -> None:
    record = {
        "id": "b1",
        "image": "chrony",
        "cluster": "nonprod",
        "state": "succeeded",
        "digest": "sha256:" + "c" * 64,
        "created_at": 10.0,
        "finished_at": 25.0,
    }
    outcome = head_flow.report_build(world.statuses, SETTINGS, record, sha="a" * 40)
    assert outcome == "success"
    assert world.statuses.on("a" * 40) == {
        "layering/build/chrony@nonprod": ("success", "built cccccccccccc")
    }
    unfinished = {**record, "state": "running"}
    assert (
        head_flow.report_build(world.statuses, SETTINGS, unfinished, sha="a" * 40) == "unfinished"
    )


def test_report_build_error_unless_cancelled(world: World) -> None:
    record = world.records.create_queued(image="chrony", cluster="nonprod")
    options: dict[str, Any] = {"sha": "a" * 40, "image": "chrony", "cluster": "nonprod"}
    outcome = head_flow.report_build_error(
        world.statuses, world.records, SETTINGS, build_id=record.id, now=lambda: 12.0, **options
    )
    assert outcome == "error"
    assert world.statuses.on("a" * 40)["layering/build/chrony@nonprod"] == (
        "error",
        "build task crashed; see the build log",
    )
    # the record the task left queued says so too (and counts as a failed build)
    failed = world.records.records[record.id]
    assert (failed.state, failed.error, failed.finished_at) == ("failed", head_flow.CRASHED, 12.0)
    # one the build failed itself keeps its own error
    head_flow.report_build_error(
        world.statuses, world.records, SETTINGS, build_id=record.id, now=lambda: 13.0, **options
    )
    assert world.records.records[record.id] == failed
    world.records.save(builds.cancel(record, now=11.0))
    outcome = head_flow.report_build_error(
        world.statuses, world.records, SETTINGS, build_id=record.id, **options
    )
    assert outcome == "cancelled"


# -- a lint that stopped ----------------------------------------------------------------------


def test_a_stopped_lint_fails_lint_builds_nothing_and_cancels_the_older_head(
    world: World,
) -> None:
    first = world.history.change(world.seed, "images/firewalld/Containerfile", step("1"))
    second = world.history.change(first, "clusters/nonprod/cluster.yaml", b"bomb: &a [1]\n")
    world.push(world.seed, first, enqueued_at=1.0)
    [older] = world.records.records.values()
    world.linter.stop = head_lint.Stopped(
        head_lint.memory_limit(1024), "clusters/nonprod/cluster.yaml"
    )

    summary = world.push(first, second, enqueued_at=2.0)

    description = (
        "lint stopped: exceeded the 1024 MiB memory limit (LAYERING_LINT_MEMORY_MB) "
        "at clusters/nonprod/cluster.yaml"
    )
    assert summary == {"head": second, "builds": [], "note": description}
    assert world.statuses.on(second) == {"layering/lint": ("failure", description)}
    assert list(world.records.records) == [older.id], "nothing new is built"
    assert world.queue.revoked == [f"build-{older.id}"]
    assert world.linter.requests[-1] == head_lint.Request(SOURCE, first, second, "main", "main")


# -- /ok-to-test is bound to a commit -----------------------------------------------------------


def ok_to_test(
    world: World, pull: head.PullHead, *, at: float, sha: str | None = None
) -> dict[str, Any]:
    return head_flow.ok_to_test(
        world.adapters,
        Pulls(pull),
        SETTINGS,
        number=7,
        user="maint",
        enqueued_at=at + 1,
        sha=sha,
        commented_at=at,
    )


def test_ok_to_test_approves_the_head_as_of_the_comment(world: World) -> None:
    reviewed = world.history.change(world.seed, "images/chrony/Containerfile", step("fork"))
    pull_request(world, reviewed, fork=True)  # arrived at 50.0

    summary = ok_to_test(world, head.PullHead(7, reviewed, "f", "mallory/layers", "main"), at=60)

    assert [b["image"] for b in summary["builds"]] == ["chrony"]


def test_a_push_after_the_comment_is_not_built(world: World) -> None:
    reviewed = world.history.change(world.seed, "images/chrony/Containerfile", step("fork"))
    pushed = world.history.change(reviewed, "images/chrony/Containerfile", step("evil"))
    pull_request(world, reviewed, fork=True)  # arrived at 50.0
    head_flow.handle_pull_request(
        world.adapters,
        SETTINGS,
        number=7,
        head_sha=pushed,
        base_ref="main",
        from_fork=True,
        enqueued_at=70.0,
    )

    summary = ok_to_test(world, head.PullHead(7, pushed, "f", "mallory/layers", "main"), at=60)

    assert summary == {
        "ignored": f"the comment approved {reviewed[:12]}, but #7 moved to {pushed[:12]} "
        f"at about that time or after it; review it and comment /ok-to-test {pushed}"
    }
    assert world.queue.sent == []
    assert world.statuses.on(pushed) == {
        "layering/lint": ("success", f"no findings; {commit_status.FORK_NOTE}")
    }
    named = ok_to_test(
        world, head.PullHead(7, pushed, "f", "mallory/layers", "main"), at=80, sha=pushed
    )
    assert [b["image"] for b in named["builds"]] == ["chrony"]


@pytest.mark.parametrize(
    ("state", "named", "seen", "reason"),
    [
        ("closed", None, True, "pull request #7 is closed"),
        (
            "open",
            "e" * 40,
            True,
            "/ok-to-test names eeeeeeeeeeee, but the head of #7 is {short}; "
            "review it and comment /ok-to-test {sha}",
        ),
        (
            "open",
            None,
            False,
            "no head of #7 was seen before the comment; "
            "review {short} and comment /ok-to-test {sha}",
        ),
    ],
)
def test_ok_to_test_refused(
    world: World, state: str, named: str | None, seen: bool, reason: str
) -> None:
    sha = world.history.change(world.seed, "images/chrony/Containerfile", step("fork"))
    if seen:
        pull_request(world, sha, fork=True)
    pull = head.PullHead(7, sha, "f", "mallory/layers", "main", state)

    summary = ok_to_test(world, pull, at=60, sha=named)

    assert summary == {"ignored": reason.format(short=sha[:12], sha=sha)}
    assert world.queue.sent == []


def test_an_unreadable_machineconfig_fails_the_lint_of_the_images_on_its_cluster(
    world: World,
) -> None:
    changed = world.history.change(world.seed, "images/chrony/Containerfile", step("v2"))
    broken = world.history.change(
        changed, "clusters/nonprod/machineconfigs/99-broken.yaml", b"spec: [unclosed\n"
    )

    summary = world.push(world.seed, broken)

    assert summary == {"head": broken, "builds": []}
    state, description = world.statuses.on(broken)["layering/lint"]
    assert state == "failure"
    assert description.startswith("1 error(s): LAY006 at clusters/nonprod/machineconfigs/99-broken")
    assert world.statuses.on(broken)["layering/build/chrony@nonprod"] == (
        "failure",
        "not built: lint errors (see layering/lint)",
    )


def test_a_head_that_arrived_just_before_the_comment_is_not_approved(world: World) -> None:
    """GitHub's clock may be ahead of the receiver's: a push that followed the comment could
    look a little older than it; within the margin, only a named commit is built."""
    reviewed = world.history.change(world.seed, "images/chrony/Containerfile", step("fork"))
    pushed = world.history.change(reviewed, "images/chrony/Containerfile", step("raced"))
    pull_request(world, reviewed, fork=True)  # arrived at 50.0
    head_flow.handle_pull_request(
        world.adapters,
        SETTINGS,
        number=7,
        head_sha=pushed,
        base_ref="main",
        from_fork=True,
        enqueued_at=59.0,
    )
    pull = head.PullHead(7, pushed, "f", "mallory/layers", "main")

    assert "ignored" in ok_to_test(world, pull, at=60)
    assert ok_to_test(world, pull, at=61.5)["builds"] != []
