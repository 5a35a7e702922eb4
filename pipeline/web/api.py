"""The service's plain HTTP API: `/healthz`, `/readyz` (the queue answers), `/metrics`
(Prometheus) and the read-only builds API (`/api/builds`, `/api/builds/{id}`,
`/api/builds/{id}/log`). Does network I/O (Redis) through the adapters it is given.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from pipeline.core import builds
from pipeline.core.errors import TemporaryError
from pipeline.web import build_source, receiver

# /api/builds/{id}/log answers the whole log (the store keeps at most
# LAYERING_BUILD_LOG_MAX_LINES of it); the dashboard's live tail reads by offset instead
FULL_LOG_LINES = 1_000_000


def json_response(
    status: int, document: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        json.dumps(document, separators=(",", ":")).encode(),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def router(
    *,
    enqueuer: receiver.Enqueuer,
    registry: CollectorRegistry,
    store: build_source.BuildSource | None,
) -> APIRouter:
    routes = APIRouter()

    @routes.get("/healthz")
    async def healthz() -> Response:
        return json_response(200, {"status": "ok"})

    @routes.get("/readyz")
    async def readyz() -> Response:
        try:
            await enqueuer.ping()
        except TemporaryError as exc:
            return json_response(503, {"status": "unavailable", "error": str(exc)})
        return json_response(200, {"status": "ready"})

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
    def get_build_log(build_id: str) -> Response:
        if not builds.is_build_id(build_id):
            return bad_id
        if store is None:
            return no_store
        if store.get_build(build_id) is None:
            return json_response(404, {"error": f"no log for {build_id!r}"})
        lines = store.log_lines(build_id, offset=0, limit=FULL_LOG_LINES)
        return Response("".join(lines), media_type="text/plain; charset=utf-8")

    return routes
