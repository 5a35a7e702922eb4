"""The Celery application: Redis broker and result backend, JSON only, late acks, one task
prefetched at a time, a queue per capability (core/tasks.py), and the one retry rule every task
shares (PipelineTask). Reads settings once at import (for `celery -A`)."""

from __future__ import annotations

import random
from typing import Any

from celery import Celery, Task
from kombu import Queue  # type: ignore[attr-defined]

from pipeline.adapters.environment import load_settings
from pipeline.core import retry, tasks
from pipeline.core.errors import TemporaryError
from pipeline.core.settings import RetryKind, Settings

# Task modules register themselves on import; every worker imports all of them.
TASK_MODULES = [
    "workers.build_tasks",
    "workers.head_tasks",
    "workers.promotion_tasks",
    "workers.status_tasks",
]


def celery_config(settings: Settings) -> dict[str, Any]:
    redis_url = settings.redis_url.get_secret_value()
    # A task running longer than the visibility timeout is delivered again: keep it above the
    # longest build (acks_late makes the message stay unacknowledged while the task runs).
    visibility_timeout = settings.build_timeout_seconds * 2 + 300
    return {
        "broker_url": redis_url,
        "result_backend": redis_url,
        "broker_transport_options": {"visibility_timeout": visibility_timeout},
        "result_backend_transport_options": {"visibility_timeout": visibility_timeout},
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


def settings_of(celery_app: Celery) -> Settings:
    settings = celery_app.conf.layering_settings
    assert isinstance(settings, Settings)
    return settings
