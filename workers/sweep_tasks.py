"""The periodic sweep of lost builds (queue `events`); the work is pipeline/flows/
build_sweep.py. Thin: build the process's adapters, call the flow. Does I/O.

- "layering.sweep_builds"(): Celery beat, every LAYERING_BUILD_SWEEP_INTERVAL_SECONDS: builds
  whose lease expired (their worker vanished) get their unacknowledged task message restored
  to its queue (kombu's QoS.restore_by_tag), so another worker runs them within
  LAYERING_BUILD_LEASE_SECONDS + the interval instead of the broker's visibility timeout.
"""

from __future__ import annotations

from celery import Task

from pipeline.adapters import redelivery
from pipeline.core import tasks
from pipeline.flows import build_sweep
from workers import adapters
from workers.app import app, settings_of
from workers.build_tasks import build_leases

app.conf.beat_schedule = {
    **(app.conf.beat_schedule or {}),
    "layering-sweep-builds": {
        "task": tasks.SweepBuilds.NAME,
        "schedule": settings_of(app).build_sweep_interval_seconds,
        "options": {
            "queue": tasks.SweepBuilds.QUEUE,
            "expires": settings_of(app).build_sweep_interval_seconds,
        },
    },
}


@app.task(name=tasks.SweepBuilds.NAME, bind=True)  # type: ignore[untyped-decorator]
def sweep_builds(self: Task) -> dict[str, list[str]]:
    settings = settings_of(self.app)
    return build_sweep.sweep(
        leases=build_leases(settings),
        records=adapters.build_store(settings),
        redelivery=adapters.once("redelivery", lambda: redelivery.UnackedRestore(self.app)),
    ).to_dict()
