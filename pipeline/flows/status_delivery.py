"""Delivering commit statuses to GitHub: "layering.report_status" posts one, retrying with the
"status" back-off while GitHub refuses it for a passing reason (rate limit, 5xx, refused
credentials), then parks it; "layering.resend_statuses" (beat) sends parked statuses that are
due again, with the "status-resend" back-off, until GitHub takes them or
LAYERING_STATUS_PARK_SECONDS have passed. A status older than the newest one queued for its
(sha, context) is never sent. I/O only through ports (StatusPoster, ParkedStatusStore).

In check-runs mode (`Checks`) lint and build statuses go as check runs instead
(core/check_runs.py), through the same ordering, retries and parking: a build's run is drawn
from its record as it is when it is sent (and sent again), so a late change to the record is
never overwritten by an older drawing; the ChecksPoster (ports_checks) updates the run of
(sha, name) in place and refuses one older than the newest it sent.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pipeline.core import check_output, check_runs, commit_status, ports, ports_checks, retry, tasks
from pipeline.core.errors import PermanentError, TemporaryError
from pipeline.core.settings import Settings

log = logging.getLogger(__name__)

# parked statuses sent per beat tick at most
RESEND_BATCH = 100

Delivered = Literal["posted", "superseded", "no-github", "parked", "check-only"]
Resent = Literal["sent", "outdated", "expired", "refused", "waiting"]
Clock = Callable[[], float]


@dataclass(frozen=True)
class Checks:
    """Check-runs mode: where check runs go, and the build records they are drawn from."""

    poster: ports_checks.ChecksPoster
    records: ports_checks.BuildRecordReader
    public_url: str

    def post(self, sha: str, status: commit_status.Status, *, seq: int) -> bool:
        record = self.records.get(status.build_id) if status.build_id else None
        run = check_output.render(sha, status, record=record, public_url=self.public_url)
        return self.poster.post(run, seq=seq)


def _send(
    sha: str,
    status: commit_status.Status,
    *,
    seq: int,
    poster: ports.StatusPoster,
    checks: Checks | None,
) -> bool:
    """Post `status` as a check run (check-runs mode, lint and builds) or a commit status;
    False when a newer check run of its (sha, name) was sent meanwhile, or when it is a status
    for check runs only (commit_status.check_only) and goes as a commit status."""
    if checks is not None and check_runs.is_check(status.context):
        return checks.post(sha, status, seq=seq)
    if commit_status.check_only(status):
        return False
    poster.set_status(
        sha,
        context=status.context,
        state=status.state,
        description=status.description,
        target_url=status.target_url,
    )
    return True


@dataclass(frozen=True)
class RetryLater:
    """Try the same status again in `countdown` seconds (the task retries itself)."""

    error: TemporaryError
    countdown: float


def deliver(
    report: tasks.ReportStatus,
    *,
    attempt: int,
    poster: ports.StatusPoster | None,
    parked: ports.ParkedStatusStore,
    settings: Settings,
    now: Clock = time.time,
    checks: Checks | None = None,
) -> Delivered | RetryLater:
    """Post one queued status; `attempt` counts the retries so far (0 on the first try).
    `poster` None: the service has no GitHub credentials, the status is not posted."""
    latest = parked.latest_seq(report.sha, report.context)
    if latest is not None and latest > report.seq:
        return "superseded"
    state = commit_status.state(report.state)
    status = commit_status.Status(
        report.context,
        state,
        report.description,
        report.target_url,
        report.details,
        report.build_id,
    )
    if commit_status.check_only(status) and (
        checks is None or not check_runs.is_check(status.context)
    ):
        return "check-only"
    if poster is None:
        log.info(
            "no GitHub credentials: status %s=%s on %s not posted",
            report.context,
            state,
            report.sha[:12],
        )
        return "no-github"
    try:
        sent = _send(report.sha, status, seq=report.seq, poster=poster, checks=checks)
    except TemporaryError as exc:
        if attempt < settings.status_retries:
            policy = settings.retry_policy("status")
            return RetryLater(exc, retry.backoff(attempt, policy, retry_after=exc.retry_after))
        return _park(report, state, exc, attempt=attempt, parked=parked, settings=settings, now=now)
    return "posted" if sent else "superseded"


def _park(
    report: tasks.ReportStatus,
    state: commit_status.State,
    error: TemporaryError,
    *,
    attempt: int,
    parked: ports.ParkedStatusStore,
    settings: Settings,
    now: Clock,
) -> Delivered | RetryLater:
    parked_at = now()
    status = commit_status.ParkedStatus(
        report.sha,
        report.context,
        state,
        report.description,
        report.target_url,
        report.seq,
        parked_at=parked_at,
        details=report.details,
        build_id=report.build_id,
    )
    delay = retry.backoff(0, settings.retry_policy("status-resend"), retry_after=error.retry_after)
    try:
        kept = parked.park(status, due=parked_at + delay)
    except TemporaryError as unavailable:
        # nowhere to keep it: the task keeps retrying instead, without a bound
        return RetryLater(error, unavailable.retry_after)
    log.warning(
        "status %s=%s on %s not delivered after %d attempts (%s); %s",
        report.context,
        state,
        report.sha[:12],
        attempt + 1,
        error,
        "parked for resending" if kept else "a newer status is pending: dropped",
    )
    return "parked" if kept else "superseded"


def resend(
    *,
    poster: ports.StatusPoster | None,
    parked: ports.ParkedStatusStore,
    settings: Settings,
    now: Clock = time.time,
    checks: Checks | None = None,
) -> dict[Resent, int]:
    """Send the parked statuses that are due, the earliest first; stop at the first GitHub
    still refuses (the rest count as waiting). One run at a time."""
    counts: dict[Resent, int] = {
        "sent": 0,
        "outdated": 0,
        "expired": 0,
        "refused": 0,
        "waiting": 0,
    }
    with parked.sending() as ours:
        if not ours:
            return counts  # the previous run is still sending
        due = parked.due(now(), limit=RESEND_BATCH)
        if not due or poster is None:
            return counts
        for index, status in enumerate(due):
            outcome = _resend(
                status, poster=poster, parked=parked, settings=settings, now=now, checks=checks
            )
            counts[outcome] += 1
            if outcome == "waiting":
                counts["waiting"] += len(due) - index - 1
                break
    return counts


def _resend(
    status: commit_status.ParkedStatus,
    *,
    poster: ports.StatusPoster,
    parked: ports.ParkedStatusStore,
    settings: Settings,
    now: Clock,
    checks: Checks | None,
) -> Resent:
    moment = now()
    latest = parked.latest_seq(status.sha, status.context)
    if latest is not None and latest > status.seq:
        parked.remove(status)
        return "outdated"
    if moment - status.parked_at > settings.status_park_seconds:
        log.error(
            "status %s=%s on %s dropped: GitHub refused it for %.0f s",
            status.context,
            status.state,
            status.sha[:12],
            moment - status.parked_at,
        )
        parked.remove(status)
        return "expired"
    resent = commit_status.Status(
        status.context,
        status.state,
        status.description,
        status.target_url,
        status.details,
        status.build_id,
    )
    try:
        sent = _send(status.sha, resent, seq=status.seq, poster=poster, checks=checks)
    except TemporaryError as exc:
        attempts = status.attempts + 1
        policy = settings.retry_policy("status-resend")
        delay = retry.backoff(attempts, policy, retry_after=exc.retry_after)
        parked.reschedule(dataclasses.replace(status, attempts=attempts), due=moment + delay)
        log.info("parked status %s on %s: still refused (%s)", status.context, status.sha[:12], exc)
        return "waiting"
    except PermanentError as exc:
        log.error("parked status %s on %s refused: %s", status.context, status.sha[:12], exc)
        parked.remove(status)
        return "refused"
    parked.remove(status)
    return "sent" if sent else "outdated"


def refresh_build_check(
    records: ports_checks.BuildRecordReader,
    statuses: ports.StatusReporter,
    settings: Settings,
    *,
    build_id: str,
    sha: str,
) -> str:
    """Report the final status of build `build_id` on `sha` again ("layering.
    refresh_build_check"), so that its check run is drawn anew from the record (its image
    changes were added after it finished): for check runs only, a commit status would repeat
    itself. "unfinished" when the record has no final status (or is gone)."""
    if settings.resolved_github_checks != "check-runs":
        # queued, it would still take a sequence number from the status it repeats
        return "statuses: nothing to draw again"
    record = records.get(build_id)
    status = (
        commit_status.build_status(record.to_dict(), public_url=settings.public_url)
        if record is not None
        else None
    )
    if status is None:
        return "unfinished"
    statuses.report(sha, commit_status.for_checks_only(status))
    return status.state
