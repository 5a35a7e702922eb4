"""The web service's factories: one ASGI app holding the webhook receiver (receiver.py), the API
(api.py) and the dashboard (dashboard.py), behind the read token when one is set
(read_access.py), wired to adapters that are built once per process, passed in, and closed when
the app's lifespan ends. No request creates a connection pool. `layering serve` splits it over
two listeners when LAYERING_READ_LISTEN is set (listeners.py).

    create_app(settings, enqueuer=, store=, promotion_source=, ...)  # the app, given its parts
    service_app(settings)         # given the real adapters: what `layering serve` runs
    app_from_environment()        # `uvicorn --factory pipeline.web.server:app_from_environment`

Does no I/O itself; the adapters it builds connect lazily.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from pipeline.adapters import (
    backlog_metrics,
    build_records,
    environment,
    head_store,
    metrics,
    promotion_metrics,
    promotion_store,
    promotion_waits,
    queue,
    redis_client,
    worker_presence,
)
from pipeline.core import events, isolation
from pipeline.core.errors import InputError, TemporaryError
from pipeline.core.settings import Settings
from pipeline.web import (
    api,
    build_source,
    dashboard,
    pipeline_page,
    promotions,
    read_access,
    receiver,
)


def create_app(
    settings: Settings,
    *,
    enqueuer: receiver.Enqueuer | None = None,
    store: build_source.BuildSource | None = None,
    promotion_source: promotions.PromotionSource | None = None,
    collectors: tuple[Collector, ...] = (),
    on_shutdown: Sequence[Callable[[], None]] = (),
    build_workers: worker_presence.Reader | None = None,
    pipeline_source: pipeline_page.PipelineSource | None = None,
) -> receiver.WebhookFront:
    """The web app. `store` serves /api/builds and the dashboard's builds; `promotion_source`
    the dashboard's promotions; `collectors` add to /metrics (e.g. build durations and queue
    latency recorded by workers in Redis); `on_shutdown` closes what the caller built;
    `build_workers` gives /readyz the workers' reports (closed with the app);
    `pipeline_source` the pipeline view at `/`."""
    secret = settings.webhook_secret.get_secret_value().encode() if settings.webhook_secret else b""
    the_enqueuer: receiver.Enqueuer = enqueuer or queue.Enqueuer(
        settings.redis_url.get_secret_value()
    )
    registry = CollectorRegistry()
    receiver_metrics = receiver.Metrics(registry)
    for collector in collectors:
        registry.register(collector)
    route_options: dict[str, Any] = {
        "full_name": settings.github_repo_name,
        "repo_url": settings.repo_url,
        "default_branch": settings.default_branch,
    }
    # No push to env/<environment> is skipped for what its message says (trailers can be
    # forged): the promote flow finds that the pipeline's own commits leave nothing to do.

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Everything loaded at start-up lives as long as the process: moving it out of the
        # collector's reach makes full collections (the receiver's latency tail) much cheaper.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await the_enqueuer.close()
            if build_workers is not None:
                await build_workers.close()
            for close in on_shutdown:
                close()

    app = FastAPI(
        title="coreos-layering-pipeline",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.exception_handler(TemporaryError)
    async def unavailable(_: Request, exc: TemporaryError) -> Response:
        return api.json_response(
            503, {"error": str(exc)}, {"Retry-After": str(int(exc.retry_after))}
        )

    app.include_router(
        api.router(
            enqueuer=the_enqueuer,
            registry=registry,
            store=store,
            build_isolation=isolation.readiness(settings.buildah_isolation),
            build_workers=build_workers,
            upgrades=settings.read_token is not None,
        )
    )
    app.include_router(pipeline_page.router(pipeline_source))
    app.include_router(dashboard.router(store, promotion_source=promotion_source))
    return receiver.WebhookFront(
        # the webhook paths are answered before the guard; everything else needs the read
        # token when one is set (read_access.py)
        read_access.guard(app, settings),
        receiver.Receiver(
            secret=secret,
            enqueuer=the_enqueuer,
            metrics=receiver_metrics,
            route=functools.partial(events.route, **route_options),
            dedupe_ttl_seconds=settings.delivery_ttl_seconds,
            limit=settings.max_body_bytes,
        ),
    )


def service_app(settings: Settings) -> receiver.WebhookFront:
    """The web app wired to the real adapters, each built once for the process: one Redis
    client for the metrics, promotion records, waits and heads, the build store (with its own
    client and timeouts), the queue writer, the build workers' reports for /readyz, and the
    dashboard's Git mirror (the pipeline view reads it too)."""
    client = redis_client.sync_client(
        settings.redis_url.get_secret_value(), socket_timeout=5, socket_connect_timeout=2
    )
    build_store = build_records.BuildStore.from_settings(settings)
    promotion_records = promotion_store.PromotionStore.from_settings(
        settings, client=client, signing=False
    )
    repository_promotions = promotions.RepositoryPromotions(settings, records=promotion_records)
    pipeline = pipeline_page.StoredPipeline(
        models=repository_promotions,
        records=promotion_records,
        waits=promotion_waits.PromotionWaits(client),
        heads=head_store.RedisHeadStore(client),
        builds=build_store,
        pull_url=pipeline_page.pull_url(settings.github_repo_name),
        verifying=settings.verification_key is not None,
    )
    return create_app(
        settings,
        store=build_source.StoreView(build_store),
        promotion_source=repository_promotions,
        collectors=(
            metrics.RedisHistograms(client),
            promotion_metrics.PromotionCollector(promotion_records),
            backlog_metrics.BacklogCollector(client),
        ),
        on_shutdown=(repository_promotions.close, build_store.client.close, client.close),
        build_workers=worker_presence.Reader(settings.redis_url.get_secret_value()),
        pipeline_source=pipeline,
    )


def app_from_environment() -> receiver.WebhookFront:
    """For `uvicorn --factory pipeline.web.server:app_from_environment` (one listener)."""
    settings = environment.load_settings()
    if settings.read_address is not None:
        # one uvicorn listener would serve the reads next to the webhook: refuse, never widen
        raise InputError(
            "LAYERING_READ_LISTEN is set: run `layering serve`, which opens the read listener "
            "beside the webhook one (uvicorn --factory serves a single listener)"
        )
    return service_app(settings)
