"""The adapters of one worker process, built once and handed to the task shims: one Redis
client (one connection pool) per process instead of one per call. A prefork child gets fresh
ones: `worker_process_init` drops what the parent built before the fork. Does no I/O itself
(redis-py connects lazily)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import redis
from celery import Celery
from celery.signals import worker_process_init

from pipeline.adapters import build_records, credentials, github, promotion_waits, status_queue
from pipeline.adapters import github_checks as github_checks_adapter
from pipeline.adapters import promotion_requests as promotion_requests_adapter
from pipeline.adapters import redis_client as redis_clients
from pipeline.adapters import task_queue as task_queues
from pipeline.core.settings import Settings

_built: dict[str, Any] = {}
T = TypeVar("T")


def once(name: str, make: Callable[[], T]) -> T:
    """The process's `name`, made by `make` on first use (None is kept too)."""
    if name not in _built:
        _built[name] = make()
    return _built[name]  # type: ignore[no-any-return]


def redis_client(settings: Settings) -> redis.Redis[bytes]:
    """The process's Redis client for the configured URL."""
    return once(
        "redis",
        lambda: redis_clients.sync_client(
            settings.redis_url.get_secret_value(), socket_timeout=30, socket_connect_timeout=10
        ),
    )


def build_store(settings: Settings) -> build_records.BuildStore:
    """The process's build records, logs and build-key locks, on its Redis client."""
    return once(
        "build_store",
        lambda: build_records.BuildStore.from_settings(settings, client=redis_client(settings)),
    )


def promotion_waits_store(settings: Settings) -> promotion_waits.PromotionWaits:
    """The process's promotion waits and post-push records (ports.PromotionWaits)."""
    return once("promotion_waits", lambda: promotion_waits.PromotionWaits(redis_client(settings)))


def task_queue(app: Celery) -> task_queues.CeleryTaskQueue:
    """The process's TaskQueue: sends through `app`."""
    return once("task_queue", lambda: task_queues.CeleryTaskQueue(app))


def status_reporter(app: Celery, settings: Settings) -> status_queue.QueuedStatuses:
    """The process's StatusReporter: every commit status goes through "layering.report_status"."""
    return once(
        "status_reporter",
        lambda: status_queue.QueuedStatuses(redis_client(settings), task_queue(app)),
    )


def github_client(settings: Settings) -> github.GitHubClient | None:
    """The process's GitHub client; None when the service has no GitHub credentials."""
    return once("github", lambda: github.GitHubClient.from_settings(settings))


def github_checks(settings: Settings) -> github_checks_adapter.GitHubChecks | None:
    """The process's ChecksPoster; None unless LAYERING_GITHUB_CHECKS resolves to check-runs."""
    return once(
        "github_checks",
        lambda: github_checks_adapter.GitHubChecks.from_settings(
            settings, redis_client(settings), secrets=tuple(credentials.secret_values(settings))
        ),
    )


def promotion_requests(
    settings: Settings,
) -> promotion_requests_adapter.GitHubPromotionRequests | None:
    """The process's ports.PromotionRequests (pull-request mode); None without GitHub."""

    def make() -> promotion_requests_adapter.GitHubPromotionRequests | None:
        client = github_client(settings)
        return (
            None if client is None else promotion_requests_adapter.GitHubPromotionRequests(client)
        )

    return once("promotion_requests", make)


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _forget_the_parents(**_: Any) -> None:
    _built.clear()
