"""Delivering commit statuses to GitHub: "layering.report_status" posts one, retrying with the
"status" back-off while GitHub refuses it for a passing reason (rate limit, 5xx, refused
credentials), then parks it; "layering.resend_statuses" (beat) sends parked statuses that are
due again, with the "status-resend" back-off, until GitHub takes them or
LAYERING_STATUS_PARK_SECONDS have passed. A status older than the newest one queued for its
(sha, context) is never sent. I/O only through ports (StatusPoster, ParkedStatusStore).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pipeline.core import commit_status, ports, retry, tasks
from pipeline.core.errors import PermanentError, TemporaryError
from pipeline.core.settings import Settings

log = logging.getLogger(__name__)

# parked statuses sent per beat tick at most
RESEND_BATCH = 100

Delivered = Literal["posted", "superseded", "no-github", "parked"]
Resent = Literal["sent", "outdated", "expired", "refused", "waiting"]
Clock = Callable[[], float]


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
) -> Delivered | RetryLater:
    """Post one queued status; `attempt` counts the retries so far (0 on the first try).
    `poster` None: the service has no GitHub credentials, the status is not posted."""
    latest = parked.latest_seq(report.sha, report.context)
    if latest is not None and latest > report.seq:
        return "superseded"
    state = commit_status.state(report.state)
    if poster is None:
        log.info(
            "no GitHub credentials: status %s=%s on %s not posted",
            report.context,
            state,
            report.sha[:12],
        )
        return "no-github"
    try:
        poster.set_status(
            report.sha,
            context=report.context,
            state=state,
            description=report.description,
            target_url=report.target_url,
        )
    except TemporaryError as exc:
        if attempt < settings.status_retries:
            policy = settings.retry_policy("status")
            return RetryLater(exc, retry.backoff(attempt, policy, retry_after=exc.retry_after))
        return _park(report, state, exc, attempt=attempt, parked=parked, settings=settings, now=now)
    return "posted"


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
            outcome = _resend(status, poster=poster, parked=parked, settings=settings, now=now)
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
    try:
        poster.set_status(
            status.sha,
            context=status.context,
            state=status.state,
            description=status.description,
            target_url=status.target_url,
        )
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
    return "sent"
