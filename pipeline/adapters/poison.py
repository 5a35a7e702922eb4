"""Poison messages in Redis: how often each task message was delivered, and the tasks parked
because their worker kept dying (the ParkedTasks port). Does network I/O (Redis).

- `layering:deliveries:<task id>:<retry>`: a counter, incremented before the task body runs
  and deleted when it returns or raises; what is left counts the deliveries whose worker died.
  It expires after `ttl_seconds` (above the broker's visibility timeout, after which a message
  whose whole worker vanished is delivered again).
- `layering:parked-task:<task id>`: the parked task as JSON (core/poison.py ParkedTask), kept
  `keep_seconds`; `layering:parked-tasks` indexes them by time.

Redis errors become TemporaryError.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from pipeline.core import poison
from pipeline.core.errors import TemporaryError

DELIVERIES_PREFIX = "layering:deliveries:"
PARKED_PREFIX = "layering:parked-task:"
PARKED_INDEX = "layering:parked-tasks"


def deliveries_key(task_id: str, retries: int) -> str:
    return f"{DELIVERIES_PREFIX}{task_id}:{retries}"


def parked_key(task_id: str) -> str:
    return f"{PARKED_PREFIX}{task_id}"


@contextmanager
def _translated(action: str) -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        raise TemporaryError(f"Redis: {action}: {type(exc).__name__}", retry_after=5) from exc


class PoisonStore:
    def __init__(self, client: redis.Redis[bytes], *, ttl_seconds: int, keep_seconds: int) -> None:
        self._client = client
        self._ttl = ttl_seconds
        self._keep = keep_seconds

    def arrived(self, task_id: str, retries: int) -> int:
        """Count one more delivery of (task id, retry); returns the count, this one included."""
        name = deliveries_key(task_id, retries)
        action = f"count the deliveries of task {task_id}"
        with _translated(action), self._client.pipeline() as pipe:
            pipe.incr(name)
            pipe.expire(name, self._ttl)
            count, _ = pipe.execute()
        return int(count)

    def finished(self, task_id: str, retries: int) -> None:
        """The delivery returned (or raised): the worker did not die running it."""
        with _translated(f"clear the deliveries of task {task_id}"):
            self._client.delete(deliveries_key(task_id, retries))

    def park(self, parked: poison.ParkedTask) -> None:
        with _translated(f"park task {parked.task_id}"), self._client.pipeline() as pipe:
            pipe.set(parked_key(parked.task_id), json.dumps(parked.to_json()), ex=self._keep)
            pipe.zadd(PARKED_INDEX, {parked.task_id: parked.parked_at})
            pipe.zremrangebyscore(PARKED_INDEX, "-inf", parked.parked_at - self._keep)
            pipe.delete(deliveries_key(parked.task_id, parked.retries))
            pipe.execute()

    def get(self, task_id: str) -> poison.ParkedTask | None:
        with _translated(f"read parked task {task_id}"):
            raw = self._client.get(parked_key(task_id))
        return poison.ParkedTask.from_json(json.loads(raw)) if raw else None

    def parked(self, limit: int = 100) -> list[poison.ParkedTask]:
        """The most recently parked tasks, newest first."""
        with _translated("list parked tasks"):
            ids = self._client.zrevrange(PARKED_INDEX, 0, limit - 1)
        found = (self.get(task_id.decode()) for task_id in ids)
        return [parked for parked in found if parked is not None]
