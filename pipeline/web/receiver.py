"""The webhook receiver's hot path: the two webhook URLs served as plain ASGI in front of the
FastAPI app. Verify the signature, parse and route the event, dedupe the delivery, enqueue its
task; nothing else. Does network I/O (Redis, through the enqueuer it is given).

A delivery is answered 202 only once its task message is in Redis; when Redis cannot be reached
the answer is 503 so that GitHub (or the post-receive hook) redelivers.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Receive, Scope, Send

from pipeline.adapters import queue
from pipeline.core import events
from pipeline.core.errors import TemporaryError

log = logging.getLogger(__name__)

# status, JSON body, extra response headers
Answer = tuple[int, bytes, dict[str, str]]
WEBHOOK_PATHS = {"/webhook/github": "github", "/webhook/git": "git"}
_KNOWN_EVENTS = frozenset({"push", "pull_request", "issue_comment", "ping", "unknown"})


class Enqueuer(Protocol):
    """What the receiver needs of the queue writer (pipeline/adapters/queue.py provides it)."""

    async def ping(self) -> None: ...

    async def enqueue_once(
        self, dedupe_key: str | None, ttl_seconds: int, message: queue.TaskMessage
    ) -> bool: ...

    async def close(self) -> None: ...


class Metrics:
    """The receiver's Prometheus figures, registered in the app's registry (served on /metrics)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.deliveries = Counter(
            "layering_webhook_deliveries",
            "Webhook deliveries by event and outcome",
            ["event", "outcome"],
            registry=registry,
        )
        self.duplicates = Counter(
            "layering_webhook_duplicates",
            "Deliveries seen before (same delivery and hook id)",
            registry=registry,
        )
        self.enqueue_seconds = Histogram(
            "layering_queue_enqueue_seconds",
            "Time to put a delivery's task durably into the Redis queue",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0),
            registry=registry,
        )
        # labels() takes a lock and builds a key per call; the hot path keeps the children
        self._deliveries: dict[tuple[str, str], Any] = {}

    def count(self, event: str, outcome: str) -> None:
        child = self._deliveries.get((event, outcome))
        if child is None:
            # event names are bounded: only handled ones reach an outcome but "rejected"
            child = self._deliveries[(event, outcome)] = self.deliveries.labels(
                event if event in _KNOWN_EVENTS else "other", outcome
            )
        child.inc()


class Receiver:
    """One delivery: its source ("github" or "git"), headers (lower-case names) and raw body
    in; status, JSON body and extra headers out."""

    def __init__(
        self,
        *,
        secret: bytes,
        enqueuer: Enqueuer,
        metrics: Metrics,
        route: Callable[[events.Event], events.Action],
        dedupe_ttl_seconds: int,
        limit: int,
    ) -> None:
        self._secret = secret
        self._enqueuer = enqueuer
        self._metrics = metrics
        self._route = route
        self._ttl = dedupe_ttl_seconds
        self.limit = limit

    def answer(self, status: int, document: Mapping[str, Any], event: str, outcome: str) -> Answer:
        self._metrics.count(event or "unknown", outcome)
        extra = {"retry-after": "5"} if status == 503 else {}
        return status, json.dumps(document, separators=(",", ":")).encode(), extra

    def too_large(self) -> Answer:
        return self.answer(413, {"error": f"body larger than {self.limit} bytes"}, "", "too_large")

    async def __call__(self, source: str, headers: Mapping[str, str], body: bytes) -> Answer:
        answer = self.answer
        event_name = headers.get(events.EVENT_HEADER, "push" if source == "git" else "")
        if not self._secret:
            return answer(
                503, {"error": "webhook secret not configured"}, event_name, "unconfigured"
            )
        if not events.signature_valid(self._secret, body, headers.get(events.SIGNATURE_HEADER)):
            return answer(
                401, {"error": "missing or wrong X-Hub-Signature-256"}, event_name, "bad_signature"
            )
        if not event_name:
            return answer(400, {"error": "missing X-GitHub-Event header"}, "", "rejected")
        event = events.parse(event_name, body)
        if isinstance(event, events.Rejection):
            return answer(event.status, {"error": event.reason}, event_name, "rejected")
        action = self._route(event)
        if isinstance(action, events.Pong):
            return answer(200, {"pong": True}, event_name, "pong")
        if isinstance(action, events.Ignore):
            return answer(202, {"ignored": action.reason}, event_name, "ignored")
        call = events.task_for(action, enqueued_at=time.time())
        if call is None:
            return answer(202, {"ignored": events.event_name(action)}, event_name, "ignored")
        dedupe = events.delivery_key(headers)
        if isinstance(dedupe, events.Rejection):
            return answer(dedupe.status, {"error": dedupe.reason}, event_name, "rejected")
        message = queue.TaskMessage(
            task=call.name,
            queue=call.queue,
            args=call.args,
            task_id=queue.new_task_id(),
            kwargs=call.kwargs,
        )
        enqueue_started = time.perf_counter()
        try:
            fresh = await self._enqueuer.enqueue_once(f"{source}:{dedupe}", self._ttl, message)
        except TemporaryError as exc:
            log.warning("delivery %s not queued: %s", dedupe, exc)
            return answer(
                503, {"error": "queue unavailable; redeliver later"}, event_name, "unavailable"
            )
        self._metrics.enqueue_seconds.observe(time.perf_counter() - enqueue_started)
        if not fresh:
            self._metrics.duplicates.inc()
            return answer(202, {"duplicate": True}, event_name, "duplicate")
        self._metrics.count(event_name, "queued")
        # task names and ids are plain ASCII (uuid4, dotted names): no escaping needed
        return (
            202,
            b'{"queued":"%s","task_id":"%s"}' % (call.name.encode(), message.task_id.encode()),
            {},
        )


class WebhookFront:
    """Serves the two webhook paths as plain ASGI (the receiver's hot path skips the
    framework's routing, request and response objects) and passes everything else, lifespan
    included, to the FastAPI app."""

    def __init__(self, app: ASGIApp, receiver: Receiver) -> None:
        self.app = app
        self._receiver = receiver

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        source = WEBHOOK_PATHS.get(scope.get("path", "")) if scope["type"] == "http" else None
        if source is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        }
        body = await self._body(headers, receive)
        status, payload, extra = (
            self._receiver.too_large()
            if body is None
            else await self._receiver(source, headers, body)
        )
        response_headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            *((name.encode(), value.encode()) for name, value in extra.items()),
        ]
        if body is None:
            response_headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": payload})

    async def _body(self, headers: Mapping[str, str], receive: Receive) -> bytes | None:
        """The raw body, or None when it is larger than the limit (declared or streamed)."""
        limit = self._receiver.limit
        declared = headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
