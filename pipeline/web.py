"""The HTTP receiver (FastAPI on uvicorn): verify, dedupe, enqueue; nothing else. Plus health,
Prometheus metrics and the read-only builds API. Does network I/O (Redis, HTTP).

A delivery is answered 202 only once its task message is in Redis; when Redis cannot be reached
the answer is 503 so that GitHub (or the post-receive hook) redelivers.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
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

from pipeline import events
from pipeline.adapters import queue
from pipeline.errors import TemporaryError
from pipeline.settings import Settings

log = logging.getLogger(__name__)

PROMOTE_TASK = "layering.promote"  # workers/promotion.py: the promotion stage's contract
GATE_TASK = "layering.gate"


class BuildStore(Protocol):
    """What the builds API reads (pipeline/adapters/store.py provides it)."""

    def list_builds(self, *, limit: int) -> list[Mapping[str, Any]]: ...

    def get_build(self, build_id: str) -> Mapping[str, Any] | None: ...

    def read_log(self, build_id: str) -> str | None: ...


class Enqueuer(Protocol):
    async def ping(self) -> None: ...

    async def enqueue_once(
        self, dedupe_key: str | None, ttl_seconds: int, message: queue.TaskMessage
    ) -> bool: ...

    async def close(self) -> None: ...


class _BodyTooLarge(Exception):
    pass


def _json(
    status: int, document: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        json.dumps(document, separators=(",", ":")).encode(),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
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
) -> FastAPI:
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

    async def receive(request: Request, source: str) -> Response:
        started = time.perf_counter()
        headers = request.headers
        event_name = headers.get(events.EVENT_HEADER, "push" if source == "git" else "")
        try:
            body = await _read_body(request, limit)
        except _BodyTooLarge:
            metrics.deliveries.labels(event_name or "unknown", "too_large").inc()
            return _json(413, {"error": f"body larger than {limit} bytes"})
        if not secret:
            metrics.deliveries.labels(event_name or "unknown", "unconfigured").inc()
            return _json(503, {"error": "webhook secret not configured"})
        if not events.signature_valid(secret, body, headers.get(events.SIGNATURE_HEADER)):
            metrics.deliveries.labels(event_name or "unknown", "bad_signature").inc()
            return _json(401, {"error": "missing or wrong X-Hub-Signature-256"})
        if not event_name:
            metrics.deliveries.labels("unknown", "rejected").inc()
            return _json(400, {"error": "missing X-GitHub-Event header"})
        event = events.parse(event_name, body)
        if isinstance(event, events.Rejection):
            metrics.deliveries.labels(event_name, "rejected").inc()
            return _json(event.status, {"error": event.reason})
        action = events.route(event, **route_options)
        if isinstance(action, events.Pong):
            metrics.deliveries.labels(event_name, "pong").inc()
            return _json(200, {"pong": True})
        if isinstance(action, events.Ignore):
            metrics.deliveries.labels(event_name, "ignored").inc()
            return _json(202, {"ignored": action.reason})
        call = events.task_call(action, promote_task=PROMOTE_TASK, gate_task=GATE_TASK)
        if call is None:
            metrics.deliveries.labels(event_name, "ignored").inc()
            return _json(202, {"ignored": events.event_name(action)})
        dedupe = events.delivery_key({k: headers.get(k, "") for k in _DEDUPE_HEADERS})
        if isinstance(dedupe, events.Rejection):
            metrics.deliveries.labels(event_name, "rejected").inc()
            return _json(dedupe.status, {"error": dedupe.reason})
        message = queue.TaskMessage(
            task=call.task,
            queue=call.queue,
            args=call.args,
            task_id=queue.new_task_id(),
            kwargs=_TIMED_TASKS.get(call.task, _no_kwargs)(),
        )
        enqueue_started = time.perf_counter()
        try:
            fresh = await real_enqueuer.enqueue_once(f"{source}:{dedupe}", ttl, message)
        except TemporaryError as exc:
            metrics.deliveries.labels(event_name, "unavailable").inc()
            log.warning("delivery %s not queued: %s", dedupe, exc)
            return _json(503, {"error": "queue unavailable; redeliver later"}, {"Retry-After": "5"})
        metrics.enqueue_seconds.observe(time.perf_counter() - enqueue_started)
        if not fresh:
            metrics.duplicates.inc()
            metrics.deliveries.labels(event_name, "duplicate").inc()
            return _json(202, {"duplicate": True})
        metrics.deliveries.labels(event_name, "queued").inc()
        log.debug(
            "queued %s %s in %.1f ms",
            call.task,
            message.task_id,
            (time.perf_counter() - started) * 1000,
        )
        return _json(202, {"queued": call.task, "task_id": message.task_id})

    @app.post("/webhook/github")
    async def webhook_github(request: Request) -> Response:
        return await receive(request, "github")

    @app.post("/webhook/git")
    async def webhook_git(request: Request) -> Response:
        return await receive(request, "git")

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

    @app.get("/api/builds/{build_id}")
    def get_build(build_id: str) -> Response:
        build = store.get_build(build_id) if store is not None else None
        if build is None:
            return no_store if store is None else _json(404, {"error": f"no build {build_id!r}"})
        return _json(200, dict(build))

    @app.get("/api/builds/{build_id}/log")
    def get_build_log(build_id: str) -> Response:
        text = store.read_log(build_id) if store is not None else None
        if text is None:
            return no_store if store is None else _json(404, {"error": f"no log for {build_id!r}"})
        return Response(text, media_type="text/plain; charset=utf-8")

    return app


_DEDUPE_HEADERS = (events.DELIVERY_HEADER, events.HOOK_ID_HEADER, events.INSTALLATION_HEADER)


def _no_kwargs() -> dict[str, Any]:
    return {}


def _enqueued_at() -> dict[str, Any]:
    return {"enqueued_at": time.time()}


# Our own event tasks accept `enqueued_at` (for the queue latency metric); others get none.
_TIMED_TASKS: dict[str, Callable[[], dict[str, Any]]] = {
    events.HANDLE_PUSH_TASK: _enqueued_at,
    events.HANDLE_PULL_REQUEST_TASK: _enqueued_at,
    events.OK_TO_TEST_TASK: _enqueued_at,
}


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


def service_app(settings: Settings) -> FastAPI:
    """The receiver wired to the real adapters (what `layering serve` runs)."""
    import redis

    from pipeline import promotion
    from pipeline.adapters import metrics, store

    client = redis.Redis.from_url(
        settings.redis_url.get_secret_value(), socket_timeout=5, socket_connect_timeout=2
    )
    return create_app(
        settings,
        store=StoreView(store.BuildStore.from_settings(settings)),
        collectors=(metrics.RedisHistograms(client),),
        is_promotion_commit=promotion.is_promotion_commit,
    )


def app_from_environment() -> FastAPI:
    """For `uvicorn --factory pipeline.web:app_from_environment`."""
    from pipeline.settings import load_settings

    return service_app(load_settings())
