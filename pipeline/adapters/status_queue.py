"""The StatusReporter port: every commit status (lint, build, promote, gate, rollout) is given
the next sequence number of its (sha, context) in Redis and queued as "layering.report_status",
which posts it with retries and parks it when GitHub will not take it. A status queued later
for the same (sha, context) wins over an earlier one still waiting. Does network I/O (Redis,
the broker)."""

from __future__ import annotations

import redis

from pipeline.adapters import parked_statuses
from pipeline.core import commit_status, ports, tasks

# a counter outlives the retries of its statuses; parking extends it (parked_statuses.py)
SEQ_TTL_SECONDS = 3 * 24 * 3600


class QueuedStatuses:
    def __init__(self, client: redis.Redis[bytes], queue: ports.TaskQueue) -> None:
        self._client = client
        self._queue = queue

    def report(self, sha: str, status: commit_status.Status) -> None:
        key = parked_statuses.seq_key(sha, status.context)
        with self._client.pipeline() as pipe:
            pipe.incr(key)
            pipe.expire(key, SEQ_TTL_SECONDS)
            seq = int(pipe.execute()[0])
        self._queue.send(
            tasks.ReportStatus(
                sha=sha,
                context=status.context,
                state=status.state,
                description=status.description,
                target_url=status.target_url,
                seq=seq,
                details=dict(status.details) if status.details is not None else None,
                build_id=status.build_id,
            ).call()
        )
