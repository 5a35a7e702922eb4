"""The service's plain HTTP API: `/healthz`, `/readyz` (the queue answers; how build steps are
isolated, with a warning under chroot; and `build_workers`, what each live build worker
resolved at start: storage driver and isolation, read in the same single Redis call that shows
the queue answers; none seen is shown, not an error), `/metrics`
(Prometheus) and the read-only builds API (`/api/builds`, `/api/builds/{id}`,
`/api/builds/{id}/log?offset=&limit=`: a bounded range of the log as text, with
`X-Log-Next-Offset` and, while more may follow, a `Link: <…>; rel="next"` header), and
`POST /api/upgrades` {cluster, release, os_tag?}: "layering.upgrade" enqueued (only with
LAYERING_READ_TOKEN set, whose guard it sits behind). Who may read
what is decided in front of these routes (read_access.py, listeners.py). Does network I/O
(Redis) through the adapters it is given.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from pipeline.adapters import queue
from pipeline.core import builds, storage_driver, upgrade_request
from pipeline.core.errors import TemporaryError
from pipeline.web import build_source, receiver


def json_response(
    status: int, document: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        json.dumps(document, separators=(",", ":")).encode(),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


class BuildWorkers(Protocol):
    """What the build workers published (adapters/worker_presence.Reader provides it)."""

    async def read(self) -> tuple[float, list[storage_driver.WorkerReport]]: ...


def router(
    *,
    enqueuer: receiver.Enqueuer,
    registry: CollectorRegistry,
    store: build_source.BuildSource | None,
    build_isolation: Mapping[str, str] | None = None,
    build_workers: BuildWorkers | None = None,
    upgrades: bool = False,
) -> APIRouter:
    """`build_isolation`: what /readyz says about build isolation (isolation.readiness);
    `build_workers`: where /readyz reads the workers' reports (the queue's Redis: that read
    answering is the readiness check, so /readyz stays one round trip)."""
    routes = APIRouter()
    isolation_report = dict(build_isolation or {})

    async def queue_answers() -> dict[str, Any]:
        if build_workers is None:
            await enqueuer.ping()
            return {}
        now, reports = await build_workers.read()
        return {"build_workers": [report.readiness(now) for report in reports]}

    @routes.get("/healthz")
    async def healthz() -> Response:
        return json_response(200, {"status": "ok"})

    @routes.get("/readyz")
    async def readyz() -> Response:
        try:
            workers = await queue_answers()
        except TemporaryError as exc:
            return json_response(
                503, {"status": "unavailable", "error": str(exc), **isolation_report}
            )
        return json_response(200, {"status": "ready", **isolation_report, **workers})

    @routes.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    no_store = json_response(503, {"error": "build store not configured"})

    @routes.get("/api/builds")
    def list_builds(limit: int = 100) -> Response:
        if store is None:
            return no_store
        documents = store.list_builds(limit=max(1, min(limit, 1000)))
        return json_response(200, {"builds": [dict(document) for document in documents]})

    bad_id = json_response(400, {"error": f"malformed build id: expected {builds.BUILD_ID_RULE}"})

    @routes.get("/api/builds/{build_id}")
    def get_build(build_id: str) -> Response:
        if not builds.is_build_id(build_id):
            return bad_id
        if store is None:
            return no_store
        build = store.get_build(build_id)
        if build is None:
            return json_response(404, {"error": f"no build {build_id!r}"})
        return json_response(200, dict(build))

    @routes.get("/api/builds/{build_id}/log")
    def get_build_log(
        build_id: str, offset: int = 0, limit: int = build_source.LOG_DEFAULT_LINES
    ) -> Response:
        if not builds.is_build_id(build_id):
            return bad_id
        problem = build_source.range_problem(offset, limit)
        if problem is not None:
            return json_response(400, {"error": problem})
        if store is None:
            return no_store
        if store.get_build(build_id) is None:
            return json_response(404, {"error": f"no log for {build_id!r}"})
        lines, more = build_source.log_range(store, build_id, offset=offset, limit=limit)
        following = offset + len(lines)
        headers = {"X-Log-Next-Offset": str(following)}
        if more:
            page = min(limit, build_source.LOG_MAX_LINES)
            next_url = f"/api/builds/{quote(build_id, safe='')}/log?offset={following}&limit={page}"
            headers["Link"] = f'<{next_url}>; rel="next"'
        return Response("".join(lines), media_type="text/plain; charset=utf-8", headers=headers)

    @routes.post("/api/upgrades")
    async def request_upgrade(request: Request) -> Response:
        # a write: only behind the read token (a cookie is SameSite=Strict, and a JSON body
        # cannot come from another site's form)
        if not upgrades:
            return json_response(403, {"error": upgrade_request.DISABLED})
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return json_response(415, {"error": "send the upgrade as application/json"})
        body = await request.body()
        if len(body) > upgrade_request.MAX_BODY_BYTES:
            return json_response(413, {"error": f"over {upgrade_request.MAX_BODY_BYTES} bytes"})
        try:
            call = upgrade_request.task_for(body)
        except ValueError as exc:
            return json_response(400, {"error": str(exc)})
        message = queue.TaskMessage(
            task=call.name,
            queue=call.queue,
            args=call.args,
            task_id=queue.new_task_id(),
            kwargs=call.kwargs,
        )
        try:
            await enqueuer.enqueue_once(None, 0, message)
        except TemporaryError as exc:
            return json_response(503, {"error": str(exc)})
        return json_response(202, {"task_id": message.task_id, **call.kwargs})

    return routes
