"""What a push, a pull request, /ok-to-test or a close does, decided as data. No I/O.

The head of a scope (a branch, `branch:<name>`, or a pull request, `pr:<number>`) is the commit
the newest delivery named, with the builds queued for it. `claim` decides whether a delivery
may take a scope (an older delivery arriving late may not); `decide` takes the plan of the new
head, its lint findings and the previous head of the scope and returns the statuses to post,
the builds to send and the builds to cancel. An older head's builds are cancelled unless the
newer head builds the same build key (the newer head then reuses their result); a closed pull
request's builds are all cancelled.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.core import (
    changes,
    check_output,
    commit_status,
    head_lint,
    lint,
    lint_packages,
    repo,
)

ZERO_SHA = "0" * 40
FORK_NOTE = "fork: lint only"
NOTHING_NOTE = "nothing to build"


@dataclass(frozen=True)
class HeadBuild:
    """A build queued for one head of a branch or pull request."""

    build_id: str
    task_id: str
    build_key: str
    image: str
    cluster: str

    @property
    def context(self) -> str:
        return commit_status.build_context(self.image, self.cluster)

    def to_json(self) -> dict[str, str]:
        return {
            "build_id": self.build_id,
            "task_id": self.task_id,
            "build_key": self.build_key,
            "image": self.image,
            "cluster": self.cluster,
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> HeadBuild:
        return cls(
            **{
                k: str(document[k])
                for k in ("build_id", "task_id", "build_key", "image", "cluster")
            }
        )


def task_id(build_id: str) -> str:
    """The Celery task id of a build's "layering.build" (revoked by that id when cancelled)."""
    return f"build-{build_id}"


@dataclass(frozen=True)
class Head:
    """The current head of a scope: which commit, claimed by a delivery queued when, with which
    builds. `closed`: a pull request closed without merging (a tombstone: no builds)."""

    sha: str
    enqueued_at: float
    builds: tuple[HeadBuild, ...] = ()
    closed: bool = False

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "sha": self.sha,
            "enqueued_at": self.enqueued_at,
            "builds": [build.to_json() for build in self.builds],
        }
        if self.closed:
            document["closed"] = True
        return document

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Head:
        return cls(
            sha=str(document.get("sha") or ""),
            enqueued_at=float(document.get("enqueued_at", 0)),
            builds=tuple(HeadBuild.from_json(b) for b in document.get("builds", [])),
            closed=bool(document.get("closed")),
        )


@dataclass(frozen=True)
class PullHead:
    """A pull request as GitHub reports it (for /ok-to-test, which names only its number)."""

    number: int
    head_sha: str
    head_ref: str
    head_repository: str | None
    base_ref: str
    state: str = "open"  # "open" or "closed" (merged pull requests are closed too)


@dataclass(frozen=True)
class NewHead:
    """A delivery naming a new head: where to compare from, which refs to fetch, and whether
    to build (a fork's pull request is linted only, until a maintainer says /ok-to-test)."""

    scope: str
    sha: str
    from_rev: str
    branch: str | None
    refs: tuple[str, ...]
    fork: bool
    enqueued_at: float


def pull_request_scope(number: int) -> str:
    return f"pr:{number}"


def push(branch: str, *, before: str, after: str, enqueued_at: float) -> NewHead:
    return NewHead(f"branch:{branch}", after, before, branch, (), False, enqueued_at)


def pull_request(
    number: int, *, head_sha: str, base_ref: str, fork: bool, enqueued_at: float
) -> NewHead:
    """A pull request's head is compared with its merge base with the default branch."""
    refs = (f"refs/pull/{number}/head", base_ref)
    return NewHead(pull_request_scope(number), head_sha, ZERO_SHA, None, refs, fork, enqueued_at)


# -- claiming a scope -----------------------------------------------------------------------


def claim(
    previous: Head | None, *, sha: str, enqueued_at: float, closed: bool = False
) -> Head | None:
    """The scope's new head document, or None when a newer delivery already claimed it.
    `closed` leaves a tombstone (a later reopen or push claims the scope again); the same sha
    claimed again keeps its builds."""
    if previous is not None and previous.enqueued_at > enqueued_at:
        return None
    if closed:
        return Head(sha, enqueued_at, closed=True)
    kept = previous.builds if previous is not None and previous.sha == sha else ()
    return Head(sha, enqueued_at, kept)


def with_builds(current: Head | None, *, sha: str, builds: Sequence[HeadBuild]) -> Head | None:
    """`current` with `builds` added; None when the scope is no longer head `sha` (a newer head
    took it, or the pull request was closed, while the builds were being queued)."""
    if current is None or current.sha != sha or current.closed:
        return None
    return Head(current.sha, current.enqueued_at, (*current.builds, *builds), current.closed)


# -- lint -----------------------------------------------------------------------------------


def lint_images(plan: changes.Plan) -> list[str]:
    """The images an event lints: those it builds and those it changed (unless deleted)."""
    return sorted(
        {target.image for target in plan.builds}
        | set(plan.changed_images) - set(plan.deleted_images)
    )


def lint_findings(
    plan: changes.Plan,
    repository: repo.Repository | None,
    *,
    on_image: Callable[[str], None] | None = None,
) -> dict[str, list[commit_status.LintFinding]]:
    """image -> its findings, for the images `lint_images` names that `repository` holds:
    its own, then those of the unreadable MachineConfigs of the clusters that use it (its
    LAY004/LAY005 checks cannot read them; `layering lint` reports them repository-wide).
    `on_image` hears each image's directory before it is linted (the lint subprocess names
    it on stderr, so a limit hit names the image)."""
    found: dict[str, list[commit_status.LintFinding]] = {}
    if repository is None:
        return found
    _, unreadable = lint_packages.read_machineconfigs(repository)
    for image in lint_images(plan):
        if image not in repository.images:
            continue
        if on_image is not None:
            on_image(repository.images[image].directory)
        clusters = {cluster.name for cluster in repository.clusters_using(image)}
        found[image] = [
            commit_status.LintFinding(f.id, str(f.severity), f.path, f.line, f.message)
            for f in (
                *lint.lint_image(repository, image),
                *(f for f in unreadable if f.path.split("/")[1] in clusters),
            )
        ]
    return found


# -- cancelling -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Cancel:
    """Cancel one build of head `sha`; once cancelled, post `status` on `sha`."""

    sha: str
    build: HeadBuild
    reason: str
    status: commit_status.Status


def superseded_builds(old: Iterable[HeadBuild], new_keys: Iterable[str]) -> list[HeadBuild]:
    """Builds of an older head to cancel: all but those whose key the newer head also builds
    (those keep running and the newer head reuses their result)."""
    keep = set(new_keys)
    return [build for build in old if build.build_key not in keep]


def supersede(
    previous: Head | None, *, new_sha: str, new_keys: Iterable[str], public_url: str
) -> tuple[Cancel, ...]:
    """What head `new_sha`, building `new_keys`, cancels of the scope's previous head."""
    if previous is None or previous.sha == new_sha:
        return ()
    return tuple(
        Cancel(
            previous.sha,
            build,
            f"superseded by {new_sha}",
            commit_status.superseded(
                build.context,
                by_sha=new_sha,
                target_url=commit_status.log_url(public_url, build.build_id),
                build_id=build.build_id,
            ),
        )
        for build in superseded_builds(previous.builds, new_keys)
    )


def close(head: Head, *, public_url: str) -> tuple[Cancel, ...]:
    """A pull request closed without merging cancels every build of its head."""
    return tuple(
        Cancel(
            head.sha,
            build,
            commit_status.PULL_REQUEST_CLOSED,
            commit_status.closed(
                build.context,
                target_url=commit_status.log_url(public_url, build.build_id),
                build_id=build.build_id,
            ),
        )
        for build in head.builds
    )


def overtaken(mine: Head, newer: Head | None, *, public_url: str) -> tuple[Cancel, ...]:
    """What to cancel of `mine` when `newer` took the scope while its builds were being queued
    (`with_builds` returned None): all of them for a closed pull request, else those the newer
    head does not build too."""
    if newer is None:
        return ()
    if newer.closed:
        return close(mine, public_url=public_url)
    if not newer.sha:
        return ()
    keys = [build.build_key for build in newer.builds]
    return supersede(mine, new_sha=newer.sha, new_keys=keys, public_url=public_url)


# -- the decision ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What one event does: post `statuses`, send `builds`, cancel `cancels`. `note` says why
    nothing is built (None when the builds are sent)."""

    statuses: tuple[commit_status.Status, ...] = ()
    builds: tuple[changes.BuildTarget, ...] = ()
    cancels: tuple[Cancel, ...] = ()
    note: str | None = None


def decide(
    plan: changes.Plan,
    findings: Mapping[str, Sequence[commit_status.LintFinding]],
    previous: Head | None,
    *,
    sha: str,
    public_url: str,
    fork: bool = False,
    closed: bool = False,
) -> Decision:
    """What head `sha` of a scope does, given its plan, its lint findings by image (see
    `lint_findings`) and the scope's previous head. `fork`: lint only; `closed`: the pull
    request was closed without merging (the plan is not used)."""
    if closed:
        if previous is None or previous.closed:
            return Decision()
        return Decision(cancels=close(previous, public_url=public_url))
    images = lint_images(plan)
    if not plan.builds and not plan.problems and not images:
        cancels = supersede(previous, new_sha=sha, new_keys=(), public_url=public_url)
        return Decision(cancels=cancels, note=plan.note or NOTHING_NOTE)
    problems = [
        commit_status.LintFinding("LAY006", "error", problem.path, problem.line)
        for problem in plan.problems
    ]
    every = problems + [f for image in images for f in findings.get(image, ())]
    details = check_output.lint_details(
        problems=problems,
        findings=findings,
        images=images,
        targets=[(target.image, target.cluster) for target in plan.builds],
        fork=fork,
    )
    lint_status = dataclasses.replace(commit_status.lint_status(every, fork=fork), details=details)
    if fork:
        cancels = supersede(previous, new_sha=sha, new_keys=(), public_url=public_url)
        return Decision((lint_status,), cancels=cancels, note=FORK_NOTE)
    statuses = [lint_status]
    to_build: list[changes.BuildTarget] = []
    for target in plan.builds:
        if any(f.severity == "error" for f in findings.get(target.image, ())):
            statuses.append(
                commit_status.not_built(
                    target.image, target.cluster, "lint errors (see layering/lint)"
                )
            )
            continue
        to_build.append(target)
    keys = [target.build_key for target in plan.builds]
    cancels = supersede(previous, new_sha=sha, new_keys=keys, public_url=public_url)
    return Decision(tuple(statuses), tuple(to_build), cancels)


def decide_stopped(
    stopped: head_lint.Stopped, previous: Head | None, *, sha: str, public_url: str
) -> Decision:
    """Head `sha` whose plan and lint stopped before answering (a limit, a crash): a failed
    `layering/lint` naming why, no builds, and the previous head's builds cancelled."""
    cancels = supersede(previous, new_sha=sha, new_keys=(), public_url=public_url)
    return Decision((head_lint.status(stopped),), cancels=cancels, note=stopped.description)
