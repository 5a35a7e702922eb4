"""The Celery application: Redis broker and result backend, JSON only, late acks, one task
prefetched at a time, a queue per capability (core/tasks.py), and what every task shares
(PipelineTask): the one retry rule, and poison messages parked. Reads settings once at import
(for `celery -A`).

Late acks with reject-on-worker-lost deliver a task again when its worker process dies (an
OOM kill, a segfault): right for a machine that went away, a crash loop for a message that
kills every worker that takes it. So PipelineTask counts the deliveries of each (task id,
retry) in Redis before the body runs and clears the count when it returns or raises; a
delivery that finds LAYERING_POISON_REDELIVERIES deaths before it is parked instead
(flows/poison.py: a Redis record, a log line, a status on the commit it is tied to) and
acknowledged without running or calling its callbacks (celery.exceptions.Ignore).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from typing import Any

from celery import Celery, Task
from celery.exceptions import Ignore
from kombu import Queue  # type: ignore[attr-defined]

from pipeline.adapters import poison as poison_store
from pipeline.adapters import redis_client
from pipeline.adapters.environment import load_settings
from pipeline.core import poison, retry, tasks
from pipeline.core.errors import TemporaryError
from pipeline.core.settings import RetryKind, Settings
from pipeline.flows import poison as poison_flow
from workers import adapters

log = logging.getLogger(__name__)

# Task modules register themselves on import; every worker imports all of them.
TASK_MODULES = [
    "workers.build_tasks",
    "workers.head_tasks",
    "workers.promotion_tasks",
    "workers.status_tasks",
    "workers.sweep_tasks",  # beat: builds whose worker vanished are delivered again
    "workers.upgrade_tasks",  # builds ahead of a cluster upgrade: its pull request
    "workers.startup",  # start-up checks: build isolation, verification key
]


def visibility_timeout(settings: Settings) -> int:
    """A task running longer than this is delivered again: keep it above the longest build
    (acks_late makes the message stay unacknowledged while the task runs)."""
    return settings.build_timeout_seconds * 2 + 300


def celery_config(settings: Settings) -> dict[str, Any]:
    redis_url = settings.redis_url.get_secret_value()
    redelivery = visibility_timeout(settings)
    return {
        # broker and results at LAYERING_REDIS_URL: redis://, rediss:// (TLS) or sentinel://
        **redis_client.celery_options(redis_url, {"visibility_timeout": redelivery}),
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": tasks.EVENTS_QUEUE,
        "task_queues": [Queue(name) for name in tasks.QUEUES],  # type: ignore[no-untyped-call]
        # each task on the queue the contract names (core/tasks.py)
        "task_routes": {task.NAME: {"queue": task.QUEUE} for task in tasks.ALL},
        "task_track_started": True,
        "result_expires": settings.build_retention_seconds,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "task_time_limit": settings.build_timeout_seconds + 120,
        "task_soft_time_limit": settings.build_timeout_seconds,
    }


class PipelineTask(Task):  # type: ignore[misc]
    """Every task retries TemporaryError the same way: Celery's `autoretry_for`, with the wait
    from retry.backoff over the policy `retry_kind` names in Settings (so a server's
    Retry-After is honoured, which Celery's own `retry_backoff` cannot do)."""

    autoretry_for = (TemporaryError,)
    retry_backoff = False
    retry_kind: RetryKind = "task"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        if request.called_directly or request.is_eager or not request.id:
            return super().__call__(*args, **kwargs)
        settings = settings_of(self.app)
        store = poison_guard(settings)
        retries = int(request.retries or 0)
        try:
            deliveries = store.arrived(request.id, retries)
        except TemporaryError as exc:
            # the task itself may still work (or fail and retry): run it, uncounted
            log.warning("task %s[%s]: deliveries not counted: %s", self.name, request.id, exc)
            return self.run(*args, **kwargs)
        if poison.should_park(deliveries, limit=settings.poison_redeliveries):
            parked = poison.ParkedTask(
                request.id, self.name, args, kwargs, retries, deliveries, time.time()
            )
            poison_flow.park(
                parked,
                store=store,
                statuses=adapters.status_reporter(self.app, settings),
                records=adapters.build_store(settings),
                public_url=settings.public_url,
                now=parked.parked_at,
            )
            raise Ignore(parked.reason)
        try:
            # the worker pushed this delivery's request; Task.__call__ would push a bare one
            return self.run(*args, **kwargs)
        finally:
            with contextlib.suppress(TemporaryError):
                store.finished(request.id, retries)

    def retry(
        self,
        args: Any = None,
        kwargs: Any = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: Any = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Any:
        if countdown is None and eta is None:
            policy = settings_of(self.app).retry_policy(self.retry_kind)
            countdown = retry.backoff(
                int(self.request.retries or 0),
                policy,
                retry_after=exc.retry_after if isinstance(exc, TemporaryError) else 0.0,
                draw=random.random(),  # noqa: S311 - spreading retries, not cryptography
            )
            if max_retries is None:
                max_retries = policy.max_retries
        return super().retry(args, kwargs, exc, throw, eta, countdown, max_retries, **options)


def create_app(settings: Settings) -> Celery:
    app = Celery("layering", include=TASK_MODULES, task_cls=PipelineTask)
    app.conf.update(celery_config(settings))
    app.conf.layering_settings = settings
    return app


app = create_app(load_settings())


def poison_guard(settings: Settings) -> poison_store.PoisonStore:
    """The process's delivery counts and parked tasks (see the module docstring)."""
    return adapters.once(
        "poison_store",
        lambda: poison_store.PoisonStore(
            adapters.redis_client(settings),
            # above the visibility timeout: a message whose whole worker vanished comes back then
            ttl_seconds=3 * visibility_timeout(settings),
            keep_seconds=settings.build_retention_seconds,
        ),
    )


def settings_of(celery_app: Celery) -> Settings:
    settings = celery_app.conf.layering_settings
    assert isinstance(settings, Settings)
    return settings
