"""Celery tasks that deliver commit statuses (queue `events`); the work is
pipeline/flows/status_delivery.py. Thin: build the process's adapters, call the flow. Does I/O.

- "layering.report_status"(sha, context, state, description, target_url, seq): one commit
  status (queued by the StatusReporter, adapters/status_queue.py), retried while GitHub refuses
  it for a passing reason LAYERING_STATUS_RETRIES times, then parked in Redis; skipped when a
  newer status for the same (sha, context) was queued meanwhile.
- "layering.resend_statuses"(): periodic (Celery beat, every
  LAYERING_STATUS_RESEND_INTERVAL_SECONDS): sends parked statuses that are due again.
"""

from __future__ import annotations

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
) -> str:
    settings = settings_of(self.app)
    outcome = status_delivery.deliver(
        tasks.ReportStatus(sha, context, state, description, target_url, seq),
        attempt=int(self.request.retries or 0),
        poster=adapters.github_client(settings),
        parked=_parked(settings),
        settings=settings,
    )
    if isinstance(outcome, status_delivery.RetryLater):
        raise self.retry(exc=outcome.error, countdown=outcome.countdown)
    return outcome


@app.task(name=tasks.ResendStatuses.NAME, bind=True)  # type: ignore[untyped-decorator]
def resend_statuses(self: Task) -> dict[status_delivery.Resent, int]:
    settings = settings_of(self.app)
    return status_delivery.resend(
        poster=adapters.github_client(settings), parked=_parked(settings), settings=settings
    )
