"""What parking a poison message does (core/poison.py decides when): keep the task in the
ParkedTasks store, fail the build record it was running (with a line in its log), and post the
status that says so on the commit it is tied to. I/O only through ports; workers/app.py
(PipelineTask) calls it instead of running the task."""

from __future__ import annotations

import contextlib
import logging

from pipeline.core import builds, poison, ports

log = logging.getLogger(__name__)


def park(
    parked: poison.ParkedTask,
    *,
    store: ports.ParkedTasks,
    statuses: ports.StatusReporter,
    records: ports.BuildRecords,
    public_url: str,
    now: float,
) -> None:
    store.park(parked)
    log.error(
        "task %s[%s] parked: its worker died %d times running it (args %r, kwargs %r)",
        parked.name,
        parked.task_id,
        parked.deaths,
        parked.args,
        dict(parked.kwargs),
    )
    build_id = poison.build_id(parked)
    record = records.get(build_id) if build_id is not None else None
    if record is not None and not record.state.terminal:
        records.append_log(record.id, parked.reason)
        with contextlib.suppress(builds.InvalidTransition):  # finished meanwhile
            records.save(builds.fail(record, error=parked.reason, now=now))
    tied = poison.tied_status(parked, public_url=public_url)
    if tied is not None:
        statuses.report(*tied)
