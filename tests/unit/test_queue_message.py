"""pipeline.adapters.queue.celery_message: the Celery protocol 2 envelope kombu's Redis
transport stores (compared with the one Celery writes, and run by real workers, in
tests/integration/test_task_contract.py; the receiver's flows in test_webhook_e2e.py)."""

from __future__ import annotations

import base64
import json

from pipeline.adapters import queue


def test_envelope_shape() -> None:
    message = queue.TaskMessage(
        task="layering.handle_push",
        queue="events",
        args=("main", "a" * 40, "b" * 40, False),
        task_id="0f6f7a1e-4c1b-4c3e-9a51-6d1f0c1f2a3b",
        kwargs={"enqueued_at": 1.5},
    )
    envelope = json.loads(queue.celery_message(message))
    headers = envelope["headers"]
    assert headers["task"] == "layering.handle_push"
    assert headers["id"] == headers["root_id"] == message.task_id
    assert headers["lang"] == "py"
    assert headers["timelimit"] == [None, None]
    assert headers["ignore_result"] is None  # what Celery writes when the caller says nothing
    properties = envelope["properties"]
    assert properties["delivery_info"] == {"exchange": "", "routing_key": "events"}
    assert properties["correlation_id"] == message.task_id
    assert properties["body_encoding"] == "base64"
    args, kwargs, embed = json.loads(base64.b64decode(envelope["body"]))
    assert args == ["main", "a" * 40, "b" * 40, False]
    assert kwargs == {"enqueued_at": 1.5}
    assert embed == {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def test_awkward_values_stay_valid_json() -> None:
    message = queue.TaskMessage(
        task='x"y', queue="events", args=('quote " and \\ backslash', "é"), task_id="id"
    )
    envelope = json.loads(queue.celery_message(message))
    assert envelope["headers"]["task"] == 'x"y'
    args, _, _ = json.loads(base64.b64decode(envelope["body"]))
    assert args == ['quote " and \\ backslash', "é"]
