"""What a worker checks before it takes a task, by the queues it consumes: a `builds` worker
resolves the build isolation (the probe of adapters/isolation.py, once, before prefork
children fork, so they inherit the answer) and a `promotions` worker needs
LAYERING_VERIFICATION_KEY. A check that fails stops the worker with the reason and the fix;
chroot isolation, chosen explicitly, is logged as a WARNING naming what it does not isolate.
Imported by the worker with the task modules (workers/app.py TASK_MODULES). Does process I/O
(the probe runs buildah)."""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_ready

from pipeline.adapters import buildah, promotion_store
from pipeline.core import isolation, tasks
from pipeline.core.errors import PipelineError
from pipeline.core.settings import Settings
from workers.app import settings_of

log = logging.getLogger("layering.worker")
# warnings found at worker_init, logged once logging is set up (worker_ready)
_warnings: list[str] = []


def consumed(app: Celery) -> set[str]:
    """The queues this worker consumes (-Q), or every queue of the contract."""
    selected = app.amqp.queues.consume_from
    return set(selected) if selected else set(tasks.QUEUES)


def check(settings: Settings, queues: Collection[str]) -> list[str]:
    """The start-up checks of a worker on `queues`: the warnings to log; a PipelineError
    (naming what is missing and how to fix it) when the worker must not start."""
    warnings: list[str] = []
    if tasks.BUILDS_QUEUE in queues:
        mode = buildah.Buildah.from_settings(settings).isolation_mode()
        if mode == "chroot":
            warnings.append(isolation.CHROOT_WARNING)
    if tasks.PROMOTIONS_QUEUE in queues:
        promotion_store.verification_key(settings)
    return warnings


@worker_init.connect  # type: ignore[untyped-decorator]
def _check_at_start(sender: Any, **_: Any) -> None:
    try:
        _warnings[:] = check(settings_of(sender.app), consumed(sender.app))
    except PipelineError as exc:
        # SystemExit passes through Celery's signal dispatch (it logs and swallows Exception)
        raise SystemExit(f"layering worker cannot start: {exc}") from None


@worker_ready.connect  # type: ignore[untyped-decorator]
def _warn(**_: Any) -> None:
    for warning in _warnings:
        log.warning(warning)
