"""Celery tasks of the build stage (SPEC section 4), queue `builds`. Thin: arguments are ids,
the work is `pipeline.building.run_build`, which `layering build` runs too. Does I/O.

Task names and arguments are a stable contract (the event task enqueues them by name):

- "layering.build"(source: str, commit_sha: str | None, image: str, cluster: str,
  build_key: str | None = None, build_id: str | None = None) -> dict (a BuildRecord as JSON)

  `source`: a Git repository on the worker's disk (the event task's mirror, e.g.
  `<LAYERING_WORKDIR>/mirror.git`) holding `commit_sha`, or a checkout directory with
  `commit_sha=None`. `build_key`: the key the planner computed (checked; a mismatch is logged).
  `build_id`: the record to update; pass the id you created with `create_build_record` so a
  status check's target_url can point at `/api/builds/<id>` before the build starts.

  Already in the registry -> record `skipped` with the existing digest (buildah not run).
  Same build key running elsewhere -> waits for it (Redis lock), then reuses its digest.
  TemporaryError -> retried with exponential back-off and jitter up to
  LAYERING_REGISTRY_RETRIES times, then `failed` naming the registry and the last error.
  A Containerfile error -> `failed` at once with the failing step and line.

Enqueue from Python:

    build_id = tasks.submit_build(app, settings, source=..., commit_sha=..., image=...,
                                  cluster=..., build_key=...)

or, without Celery (the webhook's own enqueue path), create the record with
`build_records.BuildStore.from_settings(settings).create(builds.queued(build_id, ...))` and send
task BUILD_TASK with kwargs {"source", "commit_sha", "image", "cluster", "build_key", "build_id"} on
queue `builds`. Read results with `build_records.BuildStore.get(build_id)` / `read_log(...)`.
"""

from __future__ import annotations

import random
import time
import uuid
from pathlib import Path
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init

from pipeline.adapters import build_records, buildah, registry
from pipeline.adapters import git as gitadapter
from pipeline.core import builds, tasks
from pipeline.core.errors import TemporaryError
from pipeline.core.settings import Settings
from pipeline.flows import build as build_flow
from workers.app import app, settings_of

BUILD_TASK = "layering.build"


def new_build_id() -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:12]


def create_build_record(
    settings: Settings,
    *,
    image: str,
    cluster: str,
    commit_sha: str | None = None,
    build_key: str | None = None,
    build_id: str | None = None,
) -> builds.BuildRecord:
    """A queued record in the store, before the task is sent."""
    record = builds.queued(
        build_id or new_build_id(),
        image=image,
        cluster=cluster,
        now=time.time(),
        commit_sha=commit_sha or "",
        build_key=build_key or "",
    )
    build_records.BuildStore.from_settings(settings).save(record)
    return record


def submit_build(
    celery_app: Celery,
    settings: Settings,
    *,
    source: str,
    commit_sha: str | None,
    image: str,
    cluster: str,
    build_key: str | None = None,
    build_id: str | None = None,
) -> str:
    """Create the queued record and send "layering.build"; returns the build id."""
    record = create_build_record(
        settings,
        image=image,
        cluster=cluster,
        commit_sha=commit_sha,
        build_key=build_key,
        build_id=build_id,
    )
    celery_app.send_task(
        BUILD_TASK,
        kwargs={
            "source": source,
            "commit_sha": commit_sha,
            "image": image,
            "cluster": cluster,
            "build_key": build_key,
            "build_id": record.id,
        },
        queue=tasks.BUILDS_QUEUE,
        task_id=f"build-{record.id}",
    )
    return record.id


def _mirrored_remote(settings: Settings, source: str) -> str | None:
    """The repository URL when `source` is this worker's mirror of it (see BuildRequest)."""
    if settings.repo_url and Path(source).resolve() == gitadapter.mirror_path(
        settings.workdir, settings.repo_url
    ):
        return settings.repo_url
    return None


@app.task(name=BUILD_TASK, bind=True, queue=tasks.BUILDS_QUEUE, max_retries=None)  # type: ignore[untyped-decorator]
def build(
    self: Task,
    source: str,
    commit_sha: str | None,
    image: str,
    cluster: str,
    build_key: str | None = None,
    build_id: str | None = None,
) -> dict[str, Any]:
    settings = settings_of(self.app)
    retries = int(self.request.retries or 0)
    build_store = build_records.BuildStore.from_settings(settings)
    record_id = build_id or f"task-{self.request.id}"
    try:
        record = build_flow.run_build(
            settings,
            build_flow.BuildRequest(
                source=Path(source),
                image=image,
                cluster=cluster,
                commit_sha=commit_sha,
                build_key=build_key,
                remote=_mirrored_remote(settings, source),
            ),
            build_id=record_id,
            records=build_store,
            builder=buildah.Buildah.from_settings(
                settings, cancelled=lambda: build_store.cancel_requested(record_id)
            ),
            registry=registry.Registry.from_settings(settings),
            locks=build_store,
            final_attempt=retries >= settings.registry_retries,
        )
    except TemporaryError as exc:
        delay = builds.retry_delay(
            retries,
            base=settings.retry_backoff_seconds,
            jitter=random.random(),  # noqa: S311 - spreading retries, not cryptography
        )
        raise self.retry(exc=exc, countdown=delay) from None
    return record.to_dict()


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _kill_buildah_with_the_child(**_: Any) -> None:
    """A prefork child killed by a signal takes the buildah sessions it started with it."""
    buildah.install_signal_handlers()
