"""Delivers a task again whose worker vanished, with kombu's own mechanism: the Redis
transport keeps each delivered, unacknowledged message in the `unacked` hash (delivery tag ->
[message, exchange, routing key]) until the worker acknowledges it (late acks), and restores
those older than the visibility timeout to their queue (`QoS.restore_visible`). This adapter
finds the message of one task id there and calls the same `QoS.restore_by_tag`, so the message
goes back as it was sent: its id, retries, and its callbacks (`link`, `link_error`). Does
network I/O (Redis, through kombu).

Why restore rather than send a fresh task: the original message keeps its callbacks, so the
build's outcome is still reported by the callbacks it was sent with, and it leaves the
`unacked` hash, so the visibility timeout never brings back a second copy later.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from celery import Celery
from redis.exceptions import RedisError

from pipeline.core import redaction
from pipeline.core.errors import TemporaryError

log = logging.getLogger(__name__)


class UnackedRestore:
    """ports.Redelivery over the Celery app's broker connection (the kombu Redis transport)."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def restore(self, task_id: str) -> bool:
        try:
            with self.app.connection_for_write() as connection:
                channel: Any = connection.default_channel
                client = channel.client
                for tag, raw in client.hscan_iter(channel.unacked_key):
                    if _task_id(raw) == task_id:
                        channel.qos.restore_by_tag(tag, client=client)
                        log.info("task %s: unacknowledged message %s restored", task_id, tag)
                        return True
        except (RedisError, OSError) as exc:
            raise TemporaryError(
                f"broker unavailable while restoring task {task_id}: "
                f"{type(exc).__name__}: {redaction.scrub(str(exc))}"
            ) from None
        return False


def _task_id(raw: bytes) -> str | None:
    """The task id of one `unacked` entry (Celery message protocol 2 keeps it in the headers)."""
    try:
        message = json.loads(raw)[0]
        task_id = message["headers"]["id"]
    except (ValueError, LookupError, TypeError):
        return None
    return task_id if isinstance(task_id, str) else None
