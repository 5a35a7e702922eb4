"""What a worker checks before it takes a task, by the queues it consumes: a `builds` worker
resolves the build isolation (the probe of adapters/isolation.py) and the buildah storage driver
(the probe of adapters/storage_probe.py: overlay where it works on the storage root, else vfs),
once, before prefork children fork, so they inherit the answers, and opens the signing key
(LAYERING_SIGNING_KEY with its passphrase file) or says pushes are unsigned; a `promotions`
worker needs LAYERING_VERIFICATION_KEY. A check that fails stops the worker with the reason
and the fix; chroot isolation, chosen explicitly, and a fall-back to vfs are logged as
WARNINGs naming what they cost; the storage choice is logged at INFO otherwise. Once ready,
a `builds` worker publishes what it resolved for /readyz (adapters/worker_presence.py) until
it stops. Imported by the worker with the task modules (workers/app.py TASK_MODULES). Does
process I/O (the probes run buildah) and network I/O (Redis)."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_ready, worker_shutdown

from pipeline.adapters import (
    buildah,
    promotion_store,
    signed_push,
    signing_keys,
    storage_probe,
    worker_presence,
)
from pipeline.core import isolation, storage_driver, tasks
from pipeline.core.errors import PipelineError
from pipeline.core.settings import Settings
from workers.app import settings_of

log = logging.getLogger("layering.worker")


@dataclass
class Checked:
    """What the start-up checks found: (level, message) lines to log once logging is set up,
    and, for a builds worker, what builds will use."""

    notes: list[tuple[int, str]] = field(default_factory=list)
    storage: storage_driver.Driver | None = None
    isolation: isolation.Resolved | None = None

    @property
    def warnings(self) -> list[str]:
        return [text for level, text in self.notes if level >= logging.WARNING]


# found at worker_init, logged and published at worker_ready
_checked = Checked()
_publisher: list[worker_presence.Publisher] = []


def consumed(app: Celery) -> set[str]:
    """The queues this worker consumes (-Q), or every queue of the contract."""
    selected = app.amqp.queues.consume_from
    return set(selected) if selected else set(tasks.QUEUES)


def check(settings: Settings, queues: Collection[str]) -> Checked:
    """The start-up checks of a worker on `queues`: what to log and what builds use; a
    PipelineError (naming what is missing and how to fix it) when the worker must not start."""
    found = Checked()
    if tasks.BUILDS_QUEUE in queues:
        choice = buildah.storage_choice(settings)
        found.storage = choice.driver
        found.notes.append((logging.WARNING if choice.warning else logging.INFO, choice.message))
        leftover = storage_driver.leftover_warning(
            choice.driver, storage_probe.drivers_with_images(settings.buildah_root)
        )
        if leftover is not None:
            found.notes.append((logging.WARNING, leftover))
        found.isolation = buildah.Buildah.from_settings(settings).isolation_mode()
        found.notes.append((logging.INFO, f"build isolation {isolation.describe(found.isolation)}"))
        if found.isolation == "chroot":
            found.notes.append((logging.WARNING, isolation.CHROOT_WARNING))
        found.notes.append((logging.INFO, signing_note(settings)))
    if tasks.PROMOTIONS_QUEUE in queues:
        promotion_store.verification_key(settings)
    return found


def signing_note(settings: Settings) -> str:
    """Whether pushes are signed, said once; a key that does not open with its passphrase
    stops the worker (PermanentError naming the setting) instead of failing every push."""
    signing = signed_push.of(settings)
    if signing is None:
        return "pushes are not signed: LAYERING_SIGNING_KEY is not set"
    signing_keys.load(signing.private_key, signing.passphrase_file)
    return f"pushes are signed with the sigstore key {signing.private_key}"


@worker_init.connect  # type: ignore[untyped-decorator]
def _check_at_start(sender: Any, **_: Any) -> None:
    global _checked
    try:
        _checked = check(settings_of(sender.app), consumed(sender.app))
    except PipelineError as exc:
        # SystemExit passes through Celery's signal dispatch (it logs and swallows Exception)
        raise SystemExit(f"layering worker cannot start: {exc}") from None


@worker_ready.connect  # type: ignore[untyped-decorator]
def _ready(sender: Any, **_: Any) -> None:
    for level, text in _checked.notes:
        log.log(level, text)
    if _checked.storage is None or _checked.isolation is None:
        return
    settings = settings_of(sender.app)
    report = storage_driver.WorkerReport(
        worker=str(sender.hostname),
        storage_driver=_checked.storage,
        isolation=_checked.isolation,
        hostname=socket.gethostname(),
        seen=time.time(),  # replaced by Redis server time when published
    )
    publisher = worker_presence.Publisher.from_url(settings.redis_url.get_secret_value(), report)
    publisher.start()
    _publisher.append(publisher)


@worker_shutdown.connect  # type: ignore[untyped-decorator]
def _gone(**_: Any) -> None:
    while _publisher:
        _publisher.pop().stop()
