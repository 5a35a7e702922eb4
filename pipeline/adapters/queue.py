"""Enqueue Celery tasks from the webhook receiver without Celery: one atomic Redis script sets
the delivery's dedupe key and pushes a Celery (protocol 2) message onto the queue's list, in one
round trip over a pooled asyncio connection. Does network I/O (Redis).

Why not `app.send_task`: it is synchronous (a thread hop per request in an async server) and
does several round trips; the receiver's latency budget is a few milliseconds. The message is
the one kombu's Redis transport writes (`LPUSH <queue> <json>`), so a stock worker consumes it.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from pipeline.errors import TemporaryError

DEDUPE_PREFIX = "layering:delivery:"

# KEYS[1] dedupe key (or "" for none), KEYS[2] queue list; ARGV[1] ttl, ARGV[2] message.
# A Lua script runs atomically: either the key is set and the message queued, or neither,
# so a failed enqueue never leaves a key behind that would make a redelivery look duplicate.
_ENQUEUE_ONCE = """
if KEYS[1] ~= "" then
  if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[1])) then
    return 0
  end
end
redis.call('LPUSH', KEYS[2], ARGV[2])
return 1
"""


@dataclass(frozen=True)
class TaskMessage:
    task: str
    queue: str
    args: Sequence[Any]
    task_id: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)


_ORIGIN = f"{os.getpid()}@{socket.gethostname()}"


def celery_message(message: TaskMessage) -> bytes:
    """A Celery protocol 2 message as kombu's Redis transport stores it."""
    body = json.dumps(
        [list(message.args), dict(message.kwargs), _NO_CALLBACKS], separators=(",", ":")
    )
    envelope = {
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": message.task,
            "id": message.task_id,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": message.task_id,
            "parent_id": None,
            "argsrepr": repr(tuple(message.args))[:256],
            "kwargsrepr": repr(dict(message.kwargs))[:256],
            "origin": _ORIGIN,
            "ignore_result": False,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        },
        "properties": {
            "correlation_id": message.task_id,
            "reply_to": "",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": message.queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return json.dumps(envelope, separators=(",", ":")).encode()


_NO_CALLBACKS = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def new_task_id() -> str:
    return str(uuid.uuid4())


class Enqueuer:
    """A pooled Redis client for the receiver: dedupe + enqueue, readiness ping."""

    def __init__(self, redis_url: str, *, max_connections: int = 64) -> None:
        self._client = aioredis.Redis.from_url(
            redis_url,
            max_connections=max_connections,
            socket_connect_timeout=2,
            socket_timeout=5,
            health_check_interval=0,
        )
        self._sha: str | None = None

    async def close(self) -> None:
        await self._client.aclose()  # type: ignore[attr-defined]

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise TemporaryError(f"redis unreachable: {type(exc).__name__}", retry_after=5) from exc

    async def enqueue_once(
        self, dedupe_key: str | None, ttl_seconds: int, message: TaskMessage
    ) -> bool:
        """Queue `message` unless `dedupe_key` was seen; False for a duplicate.

        Raises TemporaryError when Redis cannot be reached (nothing was queued then).
        """
        keys = [DEDUPE_PREFIX + dedupe_key if dedupe_key else "", message.queue]
        argv = [str(ttl_seconds), celery_message(message)]
        try:
            try:
                if self._sha is None:
                    raise NoScriptError("not loaded")
                result = await self._client.evalsha(self._sha, 2, *keys, *argv)  # type: ignore[no-untyped-call]
            except NoScriptError:
                self._sha = await self._client.script_load(_ENQUEUE_ONCE)  # type: ignore[no-untyped-call]
                result = await self._client.evalsha(self._sha, 2, *keys, *argv)  # type: ignore[no-untyped-call]
        except (RedisError, OSError) as exc:
            raise TemporaryError(
                f"could not queue {message.task}: redis unreachable ({type(exc).__name__})",
                retry_after=5,
            ) from exc
        return bool(result)
