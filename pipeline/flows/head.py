"""What a push, a pull request, /ok-to-test or a close does (queue `events`): claim the head of
the branch or pull request, fetch the mirror, plan and lint the head through the HeadLinter (a
subprocess under CPU-time and memory limits: `read_head` runs there, parsing the head's
repository once), let core/head.py decide, then create the build records, send the builds,
cancel what the new head supersedes and report every status through the StatusReporter. A lint
that stopped (a limit, a crash) fails `layering/lint` and builds nothing. Also the final status
of each build, reported by the build task's callbacks. I/O only through ports.

/ok-to-test approves one commit (core/approval.py): the one it names, or the head as of the
comment, checked against the head GitHub reports now; a later push is linted, not built.

Cancelling a build raises its cancel flag (a running build polls it and kills buildah's process
group before any push), revokes its task (a queued copy is dropped by the worker that receives
it), records it cancelled and posts its status. The task is revoked without `terminate`:
killing the pool process would leave the build-key lock held until it expires.

A merged pull request is left alone: the push to the default branch builds the merge, and
reuses by build key what the pull request's builds pushed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.core import approval, builds, changes, commit_status, head, head_lint, ports, tasks
from pipeline.core.settings import Settings
from pipeline.flows import history
from pipeline.flows import reconcile as reconcile_flow

log = logging.getLogger(__name__)

Summary = dict[str, Any]
Clock = Callable[[], float]


@dataclass(frozen=True)
class Adapters:
    """What an event task talks to."""

    heads: ports.HeadStore
    mirror: ports.Mirror
    records: ports.QueuedBuilds
    queue: ports.TaskQueue
    statuses: ports.StatusReporter
    metrics: ports.EventMetrics
    linter: ports.HeadLinter
    now: Clock = time.time

    def observe_latency(self, enqueued_at: float | None) -> None:
        if enqueued_at is not None:
            self.metrics.queue_latency(max(0.0, self.now() - enqueued_at))


# -- the events -----------------------------------------------------------------------------


def handle_push(
    adapters: Adapters,
    settings: Settings,
    *,
    branch: str,
    before: str,
    after: str,
    enqueued_at: float | None = None,
) -> Summary:
    adapters.observe_latency(enqueued_at)
    new = head.push(branch, before=before, after=after, enqueued_at=enqueued_at or adapters.now())
    return handle_head(adapters, settings, new)


def handle_pull_request(
    adapters: Adapters,
    settings: Settings,
    *,
    number: int,
    head_sha: str,
    base_ref: str,
    from_fork: bool,
    enqueued_at: float | None = None,
) -> Summary:
    adapters.observe_latency(enqueued_at)
    return _pull_request(adapters, settings, number, head_sha, base_ref, from_fork, enqueued_at)


def ok_to_test(
    adapters: Adapters,
    pulls: ports.PullRequests | None,
    settings: Settings,
    *,
    number: int,
    user: str,
    enqueued_at: float | None = None,
    sha: str | None = None,
    commented_at: float | None = None,
) -> Summary:
    """A maintainer's /ok-to-test (made at `commented_at`, naming commit `sha` or none) builds
    the one commit it approves of a (fork's) pull request into the default branch."""
    adapters.observe_latency(enqueued_at)
    if pulls is None:
        return {"ignored": "no GitHub credentials configured"}
    if not pulls.can_write(user):
        log.info("/ok-to-test on #%s from %s ignored: no write permission", number, user)
        return {"ignored": f"{user} has no write permission"}
    pull = pulls.pull_head(number)
    # a comment without a time (an older message) counts from when the receiver queued it:
    # by the clock that timed the heads, so without the margin for GitHub's clock
    timed = commented_at is not None
    verdict = approval.approve(
        pull,
        named=sha,
        at=commented_at if commented_at is not None else (enqueued_at or adapters.now()),
        timeline=adapters.heads.timeline(head.pull_request_scope(number)),
        default_branch=settings.default_branch,
        margin=approval.CLOCK_MARGIN_SECONDS if timed else 0.0,
    )
    if isinstance(verdict, approval.Refused):
        log.info("/ok-to-test on #%s from %s ignored: %s", number, user, verdict.reason)
        return {"ignored": verdict.reason}
    log.info("/ok-to-test on #%s from %s approves %s", number, user, verdict.sha)
    return _pull_request(adapters, settings, number, verdict.sha, pull.base_ref, False, enqueued_at)


def close_pull_request(
    adapters: Adapters,
    settings: Settings,
    *,
    number: int,
    head_sha: str,
    enqueued_at: float | None = None,
) -> Summary:
    """A pull request closed without merging: cancel its queued and running builds; their
    statuses end as `error` "pull request closed". A later reopen builds again."""
    adapters.observe_latency(enqueued_at)
    claimed, previous = adapters.heads.claim(
        head.pull_request_scope(number), head_sha, enqueued_at or adapters.now(), closed=True
    )
    if not claimed:
        return {"ignored": f"pull request #{number} changed after it was closed"}
    decision = head.decide(
        changes.Plan(), {}, previous, sha=head_sha, public_url=settings.public_url, closed=True
    )
    _cancel(adapters, decision.cancels)
    return {"closed": number, "cancelled": [cancel.build.build_id for cancel in decision.cancels]}


def _pull_request(
    adapters: Adapters,
    settings: Settings,
    number: int,
    head_sha: str,
    base_ref: str,
    fork: bool,
    enqueued_at: float | None,
) -> Summary:
    new = head.pull_request(
        number,
        head_sha=head_sha,
        base_ref=base_ref,
        fork=fork,
        enqueued_at=enqueued_at or adapters.now(),
    )
    return handle_head(adapters, settings, new)


def handle_head(adapters: Adapters, settings: Settings, new: head.NewHead) -> Summary:
    """Plan, lint and build one head of a branch or pull request; returns a summary."""
    claimed, previous = adapters.heads.claim(new.scope, new.sha, new.enqueued_at)
    if not claimed:
        return {"head": new.sha, "stale": True, "newer": previous.sha if previous else None}
    with adapters.mirror.fetch(*new.refs):
        pass  # fetched: the linter reads the mirror in a process of its own
    request = head_lint.Request(
        adapters.mirror.source, new.from_rev, new.sha, settings.default_branch, new.branch
    )
    read = adapters.linter.lint(request)
    if isinstance(read, head_lint.Stopped):
        log.warning("head %s of %s: %s", new.sha[:12], new.scope, read.description)
        decision = head.decide_stopped(read, previous, sha=new.sha, public_url=settings.public_url)
    else:
        adapters.heads.record_lint(new.sha, read.findings)
        decision = head.decide(
            read.plan,
            read.findings,
            previous,
            sha=new.sha,
            public_url=settings.public_url,
            fork=new.fork,
        )
    for status in decision.statuses:
        adapters.statuses.report(new.sha, status)
    _cancel(adapters, decision.cancels)
    if decision.note is not None:
        return {"head": new.sha, "builds": [], "note": decision.note}
    sent = [_send(adapters, settings, new, target) for target in decision.builds]
    newer = adapters.heads.record_builds(new.scope, new.sha, sent)
    mine = head.Head(new.sha, new.enqueued_at, tuple(sent))
    _cancel(adapters, head.overtaken(mine, newer, public_url=settings.public_url))
    if newer is not None and newer.closed:
        return {"head": new.sha, "builds": [], "note": "pull request closed meanwhile"}
    return {"head": new.sha, "builds": [build.to_json() for build in sent]}


def read_range(git_history: ports.GitHistory, request: head_lint.Request) -> history.Range:
    """The plan of one head and its repository model (parsed once, MachineConfigs included:
    lint reads them)."""
    return history.read_range(
        git_history,
        request.from_rev,
        request.sha,
        request.default_branch,
        branch=request.branch,
        unknown_from="default-branch",
        machineconfigs=True,
    )


def read_head(git_history: ports.GitHistory, request: head_lint.Request) -> head_lint.Reading:
    """The plan of one head and its lint findings: what the HeadLinter answers (the lint
    subprocess, pipeline/cli/lint_sandbox.py, runs the same two steps)."""
    read = read_range(git_history, request)
    return head_lint.Reading(read.plan, head.lint_findings(read.plan, read.repository))


def _send(
    adapters: Adapters,
    settings: Settings,
    new: head.NewHead,
    target: changes.BuildTarget | head.HeadBuild,
) -> head.HeadBuild:
    """Create the build's record (so its status links to it at once), post its pending status,
    send "layering.build" with its callbacks. A HeadBuild `target` is a re-run of that build
    (flows/retest.py)."""
    record = adapters.records.create_queued(
        image=target.image,
        cluster=target.cluster,
        commit_sha=new.sha,
        build_key=target.build_key,
    )
    task_id = head.task_id(record.id)
    adapters.statuses.report(
        new.sha,
        commit_status.pending_build(
            target.image, target.cluster, build_id=record.id, public_url=settings.public_url
        ),
    )
    build = tasks.Build(
        source=adapters.mirror.source,
        commit_sha=new.sha,
        image=target.image,
        cluster=target.cluster,
        build_key=target.build_key,
        build_id=record.id,
        status_sha=new.sha,
    )
    adapters.queue.send(
        build.call(task_id=task_id),
        on_success=tasks.ReportBuild(new.sha, new.scope).call(),
        on_error=tasks.ReportBuildError(new.sha, target.image, target.cluster, record.id).call(),
    )
    return head.HeadBuild(record.id, task_id, target.build_key, target.image, target.cluster)


def _cancel(adapters: Adapters, cancels: Sequence[head.Cancel]) -> None:
    """Cancel the unfinished builds among `cancels` (see the module docstring)."""
    for cancel in cancels:
        build = cancel.build
        record = adapters.records.get(build.build_id)
        if record is not None and record.state.terminal:
            continue
        adapters.records.request_cancel(build.build_id)
        adapters.queue.revoke(build.task_id)
        if record is not None:
            try:
                adapters.records.save(
                    builds.cancel(record, now=adapters.now(), reason=cancel.reason)
                )
            except builds.InvalidTransition:
                continue  # finished meanwhile: its own result is reported
        log.info("build %s of %s cancelled: %s", build.build_id, cancel.sha[:12], cancel.reason)
        adapters.statuses.report(cancel.sha, cancel.status)


# -- a build's outcome ----------------------------------------------------------------------


def report_build(
    statuses: ports.StatusReporter,
    settings: Settings,
    record: Mapping[str, Any],
    *,
    sha: str,
    waits: ports.PromotionWaits | None = None,
    queue: ports.TaskQueue | None = None,
) -> str:
    """The final status of a build ("layering.build" returned `record`, a BuildRecord as JSON);
    "unfinished" when it has none (a cancelled build's status was posted when cancelled).
    With `waits` and `queue`, the environments whose promotion waits for this build key are
    promoted again (flows/reconcile.py). Its duration was counted when its record was saved
    finished (BuildStore.save)."""
    status = commit_status.build_status(record, public_url=settings.public_url)
    if waits is not None and queue is not None:
        reconcile_flow.build_finished(record, waits=waits, queue=queue)
    if status is None:
        return "unfinished"
    statuses.report(sha, status)
    return status.state


CRASHED = (
    "the build task ended without a result: its worker raised before the build began, or "
    "killed it at Celery's hard time limit (LAYERING_BUILD_TIMEOUT_SECONDS + 120 s); the "
    "layering-builds worker log says why; comment /retest or push again to build it again"
)


def report_build_error(
    statuses: ports.StatusReporter,
    records: ports.QueuedBuilds,
    settings: Settings,
    *,
    sha: str,
    image: str,
    cluster: str,
    build_id: str,
    now: Clock = time.time,
) -> str:
    """ "layering.build" failed without a result: an `error` status, unless it was cancelled.
    A record the task left unfinished (Celery's hard time limit killed it, or it raised before
    the build began) is failed here: it would stay running, and out of the failure rate."""
    record = records.get(build_id)
    if record is not None and record.state is builds.BuildState.CANCELLED:
        return "cancelled"
    if record is not None and not record.state.terminal:
        records.save(builds.fail(record, error=CRASHED, now=now()))
    statuses.report(
        sha,
        commit_status.crashed(image, cluster, build_id=build_id, public_url=settings.public_url),
    )
    return "error"
