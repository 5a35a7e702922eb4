"""pipeline.core.head: what a push, a pull request or a close decides (statuses to post, builds
to send, builds to cancel), claiming a scope, and what a newer head overtakes; a lint that
stopped (core/head_lint.py); what an /ok-to-test approves (core/approval.py)."""

from __future__ import annotations

import pytest

from pipeline.core import approval, changes, commit_status, head, head_lint, repo

URL = "https://layering.example.com"
A = "a" * 40
B = "b" * 40
C = "c" * 40
CLEAN = commit_status.Status("layering/lint", "success", "no findings")


def target(image: str, key: str, cluster: str = "nonprod") -> changes.BuildTarget:
    return changes.BuildTarget(
        image=image,
        cluster=cluster,
        environment="nonprod",
        build_key=key,
        tree_id=f"tree-{image}",
        base_image="quay.io/fedora/fedora-coreos:stable",
        base_digest="sha256:" + "1" * 64,
        repository=f"registry.example.com/layering/{image}",
        pools=("worker",),
        reason=f"images/{image} changed",
    )


def plan(
    *targets: changes.BuildTarget, note: str = "", problems: tuple[repo.Problem, ...] = ()
) -> changes.Plan:
    changed = tuple(sorted({t.image for t in targets}))
    return changes.Plan(builds=targets, changed_images=changed, problems=problems, note=note)


def queued(build_id: str, image: str, key: str) -> head.HeadBuild:
    return head.HeadBuild(build_id, f"build-{build_id}", key, image, "nonprod")


def superseded(sha: str, build: head.HeadBuild, by: str) -> head.Cancel:
    return head.Cancel(
        sha,
        build,
        f"superseded by {by}",
        commit_status.Status(
            f"layering/build/{build.image}@nonprod",
            "error",
            f"superseded by {by[:12]}",
            f"{URL}/builds/{build.build_id}",
        ),
    )


def closed(sha: str, build: head.HeadBuild) -> head.Cancel:
    return head.Cancel(
        sha,
        build,
        "pull request closed",
        commit_status.Status(
            f"layering/build/{build.image}@nonprod",
            "error",
            "pull request closed",
            f"{URL}/builds/{build.build_id}",
        ),
    )


FIREWALLD = target("firewalld", "k-firewalld")
CHRONY = target("chrony", "k-chrony")
HTOP = target("htop", "k-htop")
OLD_FIREWALLD = queued("b1", "firewalld", "k-old-firewalld")
SHARED_CHRONY = queued("b2", "chrony", "k-chrony")
WARNING = commit_status.LintFinding("LAY005", "warning", "images/chrony/Containerfile", 3)
ERROR = commit_status.LintFinding("LAY001", "error", "images/firewalld/Containerfile", 1)

# (case, plan, findings, previous head, options, expected decision)
CASES = [
    (
        "push to the default branch",
        plan(FIREWALLD),
        {"firewalld": []},
        head.Head(A, 1.0),
        {},
        head.Decision(statuses=(CLEAN,), builds=(FIREWALLD,)),
    ),
    (
        "new branch: no previous head",
        plan(CHRONY, note="new branch: compared with the merge base with main"),
        {"chrony": []},
        None,
        {},
        head.Decision(statuses=(CLEAN,), builds=(CHRONY,)),
    ),
    (
        "force push: the old head's build of another key is cancelled",
        plan(FIREWALLD, note=f"force push: compared with the merge base of {C[:12]} and {B[:12]}"),
        {"firewalld": []},
        head.Head(C, 1.0, (OLD_FIREWALLD,)),
        {},
        head.Decision(
            statuses=(CLEAN,),
            builds=(FIREWALLD,),
            cancels=(superseded(C, OLD_FIREWALLD, by=B),),
        ),
    ),
    (
        "a newer head supersedes an older one; a shared build key keeps running",
        plan(CHRONY, HTOP),
        {"chrony": [], "htop": []},
        head.Head(A, 1.0, (OLD_FIREWALLD, SHARED_CHRONY)),
        {},
        head.Decision(
            statuses=(CLEAN,),
            builds=(CHRONY, HTOP),
            cancels=(superseded(A, OLD_FIREWALLD, by=B),),
        ),
    ),
    (
        "the same head delivered again cancels nothing",
        plan(CHRONY),
        {"chrony": []},
        head.Head(B, 1.0, (SHARED_CHRONY,)),
        {},
        head.Decision(statuses=(CLEAN,), builds=(CHRONY,)),
    ),
    (
        "fork pull request: lint only, and the older head's builds are cancelled",
        plan(CHRONY),
        {"chrony": [WARNING]},
        head.Head(A, 1.0, (SHARED_CHRONY,)),
        {"fork": True},
        head.Decision(
            statuses=(
                commit_status.Status(
                    "layering/lint",
                    "success",
                    f"passed with 1 warning(s): LAY005; {commit_status.FORK_NOTE}",
                ),
            ),
            cancels=(superseded(A, SHARED_CHRONY, by=B),),
            note="fork: lint only",
        ),
    ),
    (
        "closed pull request: every build of its head is cancelled",
        changes.Plan(),
        {},
        head.Head(B, 1.0, (OLD_FIREWALLD, SHARED_CHRONY)),
        {"closed": True},
        head.Decision(cancels=(closed(B, OLD_FIREWALLD), closed(B, SHARED_CHRONY))),
    ),
    (
        "closed pull request that was never built",
        changes.Plan(),
        {},
        None,
        {"closed": True},
        head.Decision(),
    ),
    (
        "closed pull request closed again",
        changes.Plan(),
        {},
        head.Head(B, 1.0, closed=True),
        {"closed": True},
        head.Decision(),
    ),
    (
        "lint errors: that image is not built, the others are",
        plan(FIREWALLD, CHRONY),
        {"firewalld": [ERROR], "chrony": []},
        None,
        {},
        head.Decision(
            statuses=(
                commit_status.Status(
                    "layering/lint",
                    "failure",
                    "1 error(s): LAY001 at images/firewalld/Containerfile:1",
                ),
                commit_status.Status(
                    "layering/build/firewalld@nonprod",
                    "failure",
                    "not built: lint errors (see layering/lint)",
                ),
            ),
            builds=(CHRONY,),
        ),
    ),
    (
        "a repository problem fails lint",
        plan(
            CHRONY,
            problems=(repo.Problem("clusters/nonprod/cluster.yaml", "bad", line=4),),
        ),
        {"chrony": []},
        None,
        {},
        head.Decision(
            statuses=(
                commit_status.Status(
                    "layering/lint",
                    "failure",
                    "1 error(s): LAY006 at clusters/nonprod/cluster.yaml:4",
                ),
            ),
            builds=(CHRONY,),
        ),
    ),
    (
        "nothing to build or lint: no status, the older head's builds are cancelled",
        changes.Plan(note="README.md only"),
        {},
        head.Head(A, 1.0, (SHARED_CHRONY,)),
        {},
        head.Decision(cancels=(superseded(A, SHARED_CHRONY, by=B),), note="README.md only"),
    ),
    (
        "nothing to build, no note",
        changes.Plan(),
        {},
        None,
        {},
        head.Decision(note="nothing to build"),
    ),
]


@pytest.mark.parametrize(
    ("the_plan", "findings", "previous", "options", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decide(
    the_plan: changes.Plan,
    findings: dict[str, list[commit_status.LintFinding]],
    previous: head.Head | None,
    options: dict[str, bool],
    expected: head.Decision,
) -> None:
    assert head.decide(the_plan, findings, previous, sha=B, public_url=URL, **options) == expected


@pytest.mark.parametrize(
    ("previous", "options", "expected"),
    [
        (None, {}, head.Head(B, 5.0)),
        (head.Head(A, 4.0, (SHARED_CHRONY,)), {}, head.Head(B, 5.0)),
        (head.Head(B, 4.0, (SHARED_CHRONY,)), {}, head.Head(B, 5.0, (SHARED_CHRONY,))),
        (head.Head(A, 6.0), {}, None),
        (head.Head(B, 4.0, (SHARED_CHRONY,)), {"closed": True}, head.Head(B, 5.0, closed=True)),
        (head.Head(B, 4.0, closed=True), {}, head.Head(B, 5.0)),
    ],
    ids=["first", "newer", "same sha keeps builds", "stale", "close", "reopen"],
)
def test_claim(
    previous: head.Head | None, options: dict[str, bool], expected: head.Head | None
) -> None:
    assert head.claim(previous, sha=B, enqueued_at=5.0, **options) == expected


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        (head.Head(B, 1.0, (SHARED_CHRONY,)), head.Head(B, 1.0, (SHARED_CHRONY, OLD_FIREWALLD))),
        (head.Head(C, 2.0), None),
        (head.Head(B, 2.0, closed=True), None),
        (None, None),
    ],
    ids=["recorded", "newer head", "closed meanwhile", "gone"],
)
def test_with_builds(current: head.Head | None, expected: head.Head | None) -> None:
    assert head.with_builds(current, sha=B, builds=[OLD_FIREWALLD]) == expected


MINE = head.Head(B, 1.0, (OLD_FIREWALLD, SHARED_CHRONY))


@pytest.mark.parametrize(
    ("newer", "expected"),
    [
        (None, ()),
        (head.Head(C, 2.0, (SHARED_CHRONY,)), (superseded(B, OLD_FIREWALLD, by=C),)),
        (head.Head(B, 2.0, closed=True), (closed(B, OLD_FIREWALLD), closed(B, SHARED_CHRONY))),
    ],
    ids=["recorded", "superseded meanwhile", "closed meanwhile"],
)
def test_overtaken(newer: head.Head | None, expected: tuple[head.Cancel, ...]) -> None:
    assert head.overtaken(MINE, newer, public_url=URL) == expected


def test_head_document_round_trip() -> None:
    for document in (MINE, head.Head(B, 2.5, closed=True), head.Head(A, 0.0)):
        assert head.Head.from_json(document.to_json()) == document
    assert head.Head(B, 2.5, closed=True).to_json() == {
        "sha": B,
        "enqueued_at": 2.5,
        "builds": [],
        "closed": True,
    }


def test_scopes_and_refs() -> None:
    push = head.push("main", before=A, after=B, enqueued_at=3.0)
    assert (push.scope, push.from_rev, push.sha, push.branch, push.refs, push.fork) == (
        "branch:main",
        A,
        B,
        "main",
        (),
        False,
    )
    pull = head.pull_request(7, head_sha=B, base_ref="main", fork=True, enqueued_at=3.0)
    assert (pull.scope, pull.from_rev, pull.branch, pull.refs, pull.fork) == (
        "pr:7",
        head.ZERO_SHA,
        None,
        ("refs/pull/7/head", "main"),
        True,
    )


# -- a lint that stopped (core/head_lint.py) ---------------------------------------------------


def test_a_stopped_lint_fails_and_supersedes_everything() -> None:
    stopped = head_lint.Stopped(head_lint.cpu_limit(20), "images/evil/Containerfile")
    decision = head.decide_stopped(stopped, MINE, sha=C, public_url=URL)
    description = (
        "lint stopped: exceeded the 20 s CPU-time limit (LAYERING_LINT_CPU_SECONDS) "
        "at images/evil/Containerfile"
    )
    assert decision.statuses == (commit_status.Status("layering/lint", "failure", description),)
    assert decision.builds == ()
    assert decision.note == description
    assert [cancel.build for cancel in decision.cancels] == list(MINE.builds)


@pytest.mark.parametrize(
    ("stderr", "expected"),
    [
        ("", None),
        (head_lint.progress_line("clusters/a/cluster.yaml"), "clusters/a/cluster.yaml"),
        (
            head_lint.progress_line("images/x/Containerfile")
            + head_lint.progress_line("images/y/\nimage.yaml")
            + "Traceback (most recent call last):\nMemoryError\n",
            "images/y/\nimage.yaml",
        ),
        (head_lint.PROGRESS + "not json\n", None),
    ],
)
def test_the_last_file_read_is_named(stderr: str, expected: str | None) -> None:
    assert head_lint.last_read(stderr) == expected


def test_a_long_path_keeps_the_limit_in_the_status() -> None:
    stopped = head_lint.Stopped(head_lint.memory_limit(1024), "images/" + "x" * 200)
    assert "(LAYERING_LINT_MEMORY_MB)" in head_lint.status(stopped).description


# -- /ok-to-test (core/approval.py) -------------------------------------------------------------

TIMELINE = [approval.Seen(A, 10.0), approval.Seen(B, 20.0), approval.Seen(A, 30.0)]


@pytest.mark.parametrize(
    ("at", "expected"),
    [(5.0, None), (10.0, A), (19.9, A), (20.0, B), (29.0, B), (31.0, A)],
)
def test_head_as_of(at: float, expected: str | None) -> None:
    assert approval.head_as_of(TIMELINE, at) == expected


@pytest.mark.parametrize(
    ("previous", "sha", "closed", "arrives"),
    [
        (None, A, False, True),
        (head.Head(A, 1.0), A, False, False),
        (head.Head(A, 1.0), B, False, True),
        (head.Head(A, 1.0, closed=True), A, False, True),
        (head.Head(A, 1.0), A, True, False),
    ],
)
def test_which_claims_arrive_on_the_timeline(
    previous: head.Head | None, sha: str, closed: bool, arrives: bool
) -> None:
    assert approval.arrives(previous, sha=sha, closed=closed) is arrives


PULL = head.PullHead(7, B, "feature", "mallory/layers", "main")


@pytest.mark.parametrize(
    ("pull", "named", "at", "verdict"),
    [
        (PULL, None, 25.0, approval.Approved(B)),
        (PULL, B, 5.0, approval.Approved(B)),
        (PULL, None, 15.0, approval.Refused),  # B arrived after the comment
        (PULL, None, 21.0, approval.Refused),  # B arrived within the clocks' margin of it
        (PULL, None, 5.0, approval.Refused),  # nothing seen before it
        (PULL, A, 25.0, approval.Refused),  # names another commit
        (head.PullHead(7, B, "f", "m/l", "main", "closed"), B, 25.0, approval.Refused),
        (head.PullHead(7, B, "f", "m/l", "release"), B, 25.0, approval.Refused),
    ],
)
def test_what_an_ok_to_test_approves(
    pull: head.PullHead, named: str | None, at: float, verdict: object
) -> None:
    found = approval.approve(pull, named=named, at=at, timeline=TIMELINE[:2], default_branch="main")
    if isinstance(verdict, type):
        assert isinstance(found, verdict), found
    else:
        assert found == verdict


def test_timeline_entries_round_trip_and_junk_is_dropped() -> None:
    assert approval.Seen.from_json(approval.Seen(A, 1.5).to_json()) == approval.Seen(A, 1.5)
    for junk in (None, [A], [1, 2], [A, "soon"], {"sha": A}):
        assert approval.Seen.from_json(junk) is None


def test_the_stored_lint_names_the_images_its_errors_held_back() -> None:
    error = commit_status.LintFinding("LAY010", "error", "images/b/Containerfile", 2, "kargs")
    warning = commit_status.LintFinding("LAY009", "warning", "images/a/Containerfile", 2, "up")
    kept = head_lint.stored({"a": [warning], "b": [error], "c": []})
    assert head_lint.held_from_stored(kept[head_lint.HELD_FIELD]) == ["b"]
    assert head_lint.HELD_FIELD not in head_lint.stored({"a": [warning]})


@pytest.mark.parametrize(
    "raw",
    [None, b"not json", b'{"a": 1}', b'["ok", "../etc", 7, "Bad_Name", "' + b"x" * 300 + b'"]'],
)
def test_held_images_read_back_from_redis_are_checked(raw: bytes | None) -> None:
    held = head_lint.held_from_stored(raw)
    assert held in ([], ["ok"])
