"""Celery tasks that deliver commit statuses (queue `events`); the work is
pipeline/flows/status_delivery.py. Thin: build the process's adapters, call the flow. Does I/O.

- "layering.report_status"(sha, context, state, description, target_url, seq): one commit
  status (queued by the StatusReporter, adapters/status_queue.py), retried while GitHub refuses
  it for a passing reason LAYERING_STATUS_RETRIES times, then parked in Redis; skipped when a
  newer status for the same (sha, context) was queued meanwhile.
- "layering.resend_statuses"(): periodic (Celery beat, every
  LAYERING_STATUS_RESEND_INTERVAL_SECONDS): sends parked statuses that are due again.
- "layering.refresh_build_check"(build_id, sha): reports a finished build's status again, so
  its check run is drawn anew from the record (its image changes were added after it ended).

In check-runs mode (LAYERING_GITHUB_CHECKS) lint and build statuses are sent as check runs
(flows/status_delivery.py `Checks`).
"""

from __future__ import annotations

from typing import Any

from celery import Task

from pipeline.adapters import parked_statuses
from pipeline.core import tasks
from pipeline.core.settings import Settings
from pipeline.flows import status_delivery
from workers import adapters
from workers.app import app, settings_of

app.conf.beat_schedule = {
    **(app.conf.beat_schedule or {}),
    "layering-resend-statuses": {
        "task": tasks.ResendStatuses.NAME,
        "schedule": settings_of(app).status_resend_interval_seconds,
        "options": {
            "queue": tasks.ResendStatuses.QUEUE,
            "expires": settings_of(app).status_resend_interval_seconds,
        },
    },
}


def _checks(settings: Settings) -> status_delivery.Checks | None:
    """Check-runs mode's ports; None in statuses mode."""
    poster = adapters.github_checks(settings)
    if poster is None:
        return None
    return status_delivery.Checks(
        poster, adapters.build_store(settings), public_url=settings.public_url
    )


def _parked(settings: Settings) -> parked_statuses.ParkedStatuses:
    return adapters.once(
        "parked_statuses",
        lambda: parked_statuses.ParkedStatuses(
            adapters.redis_client(settings), keep_seconds=settings.status_park_seconds
        ),
    )


# max_retries=None: the flow bounds the retries (then parks); a status that cannot be parked
# either is retried until Redis is back
@app.task(  # type: ignore[untyped-decorator]
    name=tasks.ReportStatus.NAME,
    bind=True,
    max_retries=None,
    retry_kind="status",
)
def report_status(
    self: Task,
    sha: str,
    context: str,
    state: str,
    description: str,
    target_url: str | None,
    seq: int,
    details: dict[str, Any] | None = None,
    build_id: str | None = None,
) -> str:
    settings = settings_of(self.app)
    outcome = status_delivery.deliver(
        tasks.ReportStatus(sha, context, state, description, target_url, seq, details, build_id),
        attempt=int(self.request.retries or 0),
        poster=adapters.github_client(settings),
        parked=_parked(settings),
        settings=settings,
        checks=_checks(settings),
    )
    if isinstance(outcome, status_delivery.RetryLater):
        raise self.retry(exc=outcome.error, countdown=outcome.countdown)
    return outcome


@app.task(name=tasks.ResendStatuses.NAME, bind=True)  # type: ignore[untyped-decorator]
def resend_statuses(self: Task) -> dict[status_delivery.Resent, int]:
    settings = settings_of(self.app)
    return status_delivery.resend(
        poster=adapters.github_client(settings),
        parked=_parked(settings),
        settings=settings,
        checks=_checks(settings),
    )


@app.task(name=tasks.RefreshBuildCheck.NAME, bind=True)  # type: ignore[untyped-decorator]
def refresh_build_check(self: Task, build_id: str, sha: str) -> str:
    settings = settings_of(self.app)
    return status_delivery.refresh_build_check(
        adapters.build_store(settings),
        adapters.status_reporter(self.app, settings),
        settings,
        build_id=build_id,
        sha=sha,
    )
