"""The HTTP receiver (FastAPI on uvicorn): verify, dedupe, enqueue; nothing else. Plus health,
Prometheus metrics and the read-only builds API. Does network I/O (Redis, HTTP).

A delivery is answered 202 only once its task message is in Redis; when Redis cannot be reached
the answer is 503 so that GitHub (or the post-receive hook) redelivers.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.registry import Collector
from starlette.types import Receive, Scope, Send

from pipeline.adapters import queue
from pipeline.core import builds, events
from pipeline.core.errors import TemporaryError
from pipeline.core.settings import Settings
from pipeline.web import dashboard

log = logging.getLogger(__name__)


class BuildStore(Protocol):
    """What the builds API reads (pipeline/adapters/build_records.py provides it)."""

    def list_builds(self, *, limit: int) -> list[Mapping[str, Any]]: ...

    def get_build(self, build_id: str) -> Mapping[str, Any] | None: ...

    def read_log(self, build_id: str) -> str | None: ...


class Enqueuer(Protocol):
    async def ping(self) -> None: ...

    async def enqueue_once(
        self, dedupe_key: str | None, ttl_seconds: int, message: queue.TaskMessage
    ) -> bool: ...

    async def close(self) -> None: ...


def _json(
    status: int, document: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        json.dumps(document, separators=(",", ":")).encode(),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


Answer = tuple[int, bytes, dict[str, str]]
WEBHOOK_PATHS = {"/webhook/github": "github", "/webhook/git": "git"}


class WebhookFront:
    """Serves the two webhook paths as plain ASGI (the receiver's hot path skips the
    framework's routing, request and response objects) and passes everything else, lifespan
    included, to the FastAPI app."""

    def __init__(
        self,
        app: FastAPI,
        receive: Callable[[str, Mapping[str, str], bytes], Awaitable[Answer]],
        *,
        limit: int,
        too_large: Callable[[], Answer],
    ) -> None:
        self.app = app
        self._receive = receive
        self._limit = limit
        self._too_large = too_large

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
            self._too_large() if body is None else await self._receive(source, headers, body)
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
        declared = headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > self._limit:
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


class Metrics:
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


def create_app(
    settings: Settings,
    *,
    enqueuer: Enqueuer | None = None,
    store: BuildStore | None = None,
    collectors: tuple[Collector, ...] = (),
    is_promotion_commit: Callable[[str, str], bool] | None = None,
) -> WebhookFront:
    """The receiver. `store` serves /api/builds; `collectors` add to /metrics (e.g. build
    durations and queue latency recorded by workers in Redis)."""
    secret = settings.webhook_secret.get_secret_value().encode() if settings.webhook_secret else b""
    redis_url = settings.redis_url.get_secret_value()
    real_enqueuer: Enqueuer = enqueuer or queue.Enqueuer(redis_url)
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    for collector in collectors:
        registry.register(collector)
    route_options: dict[str, Any] = {
        "full_name": settings.github_repo_name,
        "repo_url": settings.repo_url,
        "default_branch": settings.default_branch,
    }
    if is_promotion_commit is not None:
        route_options["is_promotion_commit"] = is_promotion_commit
    limit = settings.max_body_bytes
    ttl = settings.delivery_ttl_seconds

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Everything loaded at start-up lives as long as the process: moving it out of the
        # collector's reach makes full collections (the receiver's latency tail) much cheaper.
        gc.collect()
        gc.freeze()
        yield
        await real_enqueuer.close()

    app = FastAPI(
        title="coreos-layering-pipeline",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.exception_handler(TemporaryError)
    async def unavailable(_: Request, exc: TemporaryError) -> Response:
        return _json(503, {"error": str(exc)}, {"Retry-After": str(int(exc.retry_after))})

    counters: dict[tuple[str, str], Any] = {}

    def count(event: str, outcome: str) -> None:
        # labels() takes a lock and builds a key per call; the receiver's hot path keeps the
        # children (event names are bounded: only handled ones reach an outcome but "rejected")
        child = counters.get((event, outcome))
        if child is None:
            child = counters[(event, outcome)] = metrics.deliveries.labels(
                event if event in _KNOWN_EVENTS else "other", outcome
            )
        child.inc()

    def answer(
        status: int, document: Mapping[str, Any], event: str, outcome: str
    ) -> tuple[int, bytes, dict[str, str]]:
        count(event or "unknown", outcome)
        extra = {"retry-after": "5"} if status == 503 else {}
        return status, json.dumps(document, separators=(",", ":")).encode(), extra

    async def receive(
        source: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, bytes, dict[str, str]]:
        """One delivery: headers (lower-case names) and raw body -> status, JSON, headers."""
        event_name = headers.get(events.EVENT_HEADER, "push" if source == "git" else "")
        if not secret:
            return answer(
                503, {"error": "webhook secret not configured"}, event_name, "unconfigured"
            )
        if not events.signature_valid(secret, body, headers.get(events.SIGNATURE_HEADER)):
            return answer(
                401, {"error": "missing or wrong X-Hub-Signature-256"}, event_name, "bad_signature"
            )
        if not event_name:
            return answer(400, {"error": "missing X-GitHub-Event header"}, "", "rejected")
        event = events.parse(event_name, body)
        if isinstance(event, events.Rejection):
            return answer(event.status, {"error": event.reason}, event_name, "rejected")
        action = events.route(event, **route_options)
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
            fresh = await real_enqueuer.enqueue_once(f"{source}:{dedupe}", ttl, message)
        except TemporaryError as exc:
            log.warning("delivery %s not queued: %s", dedupe, exc)
            return answer(
                503, {"error": "queue unavailable; redeliver later"}, event_name, "unavailable"
            )
        metrics.enqueue_seconds.observe(time.perf_counter() - enqueue_started)
        if not fresh:
            metrics.duplicates.inc()
            return answer(202, {"duplicate": True}, event_name, "duplicate")
        count(event_name, "queued")
        # task names and ids are plain ASCII (uuid4, dotted names): no escaping needed
        return (
            202,
            b'{"queued":"%s","task_id":"%s"}' % (call.name.encode(), message.task_id.encode()),
            {},
        )

    @app.get("/healthz")
    async def healthz() -> Response:
        return _json(200, {"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        try:
            await real_enqueuer.ping()
        except TemporaryError as exc:
            return _json(503, {"status": "unavailable", "error": str(exc)})
        return _json(200, {"status": "ready"})

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    no_store = _json(503, {"error": "build store not configured"})

    @app.get("/api/builds")
    def list_builds(limit: int = 100) -> Response:
        if store is None:
            return no_store
        builds = store.list_builds(limit=max(1, min(limit, 1000)))
        return _json(200, {"builds": [dict(b) for b in builds]})

    bad_id = _json(400, {"error": f"malformed build id: expected {builds.BUILD_ID_RULE}"})

    @app.get("/api/builds/{build_id}")
    def get_build(build_id: str) -> Response:
        if not builds.is_build_id(build_id):
            return bad_id
        build = store.get_build(build_id) if store is not None else None
        if build is None:
            return no_store if store is None else _json(404, {"error": f"no build {build_id!r}"})
        return _json(200, dict(build))

    @app.get("/api/builds/{build_id}/log")
    def get_build_log(build_id: str) -> Response:
        if not builds.is_build_id(build_id):
            return bad_id
        text = store.read_log(build_id) if store is not None else None
        if text is None:
            return no_store if store is None else _json(404, {"error": f"no log for {build_id!r}"})
        return Response(text, media_type="text/plain; charset=utf-8")

    app.include_router(dashboard.router(settings, store))
    return WebhookFront(
        app,
        receive,
        limit=limit,
        too_large=lambda: answer(
            413, {"error": f"body larger than {limit} bytes"}, "", "too_large"
        ),
    )


_KNOWN_EVENTS = frozenset({"push", "pull_request", "issue_comment", "ping", "unknown"})


class StoreView:
    """The builds API's view of pipeline.adapters.store.BuildStore (records as JSON)."""

    def __init__(self, build_store: Any) -> None:
        self._store = build_store

    def list_builds(self, *, limit: int) -> list[Mapping[str, Any]]:
        return [record.to_dict() for record in self._store.recent(limit)]

    def get_build(self, build_id: str) -> Mapping[str, Any] | None:
        record = self._store.get(build_id)
        return None if record is None else dict(record.to_dict())

    def read_log(self, build_id: str) -> str | None:
        if self._store.get(build_id) is None:
            return None
        lines = self._store.read_log(build_id, 0, 1_000_000)
        return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def service_app(settings: Settings) -> WebhookFront:
    """The receiver wired to the real adapters (what `layering serve` runs)."""
    import redis

    from pipeline.adapters import build_records, metrics, promotion_metrics, promotion_store
    from pipeline.core import promotion

    client = redis.Redis.from_url(
        settings.redis_url.get_secret_value(), socket_timeout=5, socket_connect_timeout=2
    )
    return create_app(
        settings,
        store=StoreView(build_records.BuildStore.from_settings(settings)),
        collectors=(
            metrics.RedisHistograms(client),
            promotion_metrics.PromotionCollector(promotion_store.PromotionStore(client)),
        ),
        is_promotion_commit=promotion.is_promotion_commit,
    )


def app_from_environment() -> WebhookFront:
    """For `uvicorn --factory pipeline.web.server:app_from_environment`."""
    from pipeline.adapters.environment import load_settings

    return service_app(load_settings())
