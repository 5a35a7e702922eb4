"""The Celery task of the build stage, queue `builds`: wires the adapters of one build and runs
`flows.build.run_build`, which `layering build` runs too. Its name and arguments are
`tasks.Build` (core/tasks.py); the record it updates was created, queued, by whoever sent it
(`BuildStore.create_queued`), so a status check can link to it before the build starts. The
digest a build pushes (or reuses) is recorded per build key in the same store: promotion
takes it from there, never from the tag.

TemporaryError is retried by PipelineTask (workers/app.py) with the "build" retry policy:
LAYERING_REGISTRY_RETRIES retries; the last attempt fails the record instead of raising.
Returns the final record as JSON. Does I/O (through the adapters it builds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import Task
from celery.signals import worker_process_init

from pipeline.adapters import buildah, credentials, registry
from pipeline.adapters import source as source_adapter
from pipeline.core import builds, tasks
from pipeline.flows import build as build_flow
from workers import adapters
from workers.app import app, settings_of


@app.task(name=tasks.Build.NAME, bind=True, retry_kind="build")  # type: ignore[untyped-decorator]
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
    store = adapters.build_store(settings)
    record_id = build_id or f"task-{self.request.id}"
    record = build_flow.run_build(
        settings,
        builds.BuildRequest(
            source=Path(source),
            image=image,
            cluster=cluster,
            commit_sha=commit_sha,
            build_key=build_key,
        ),
        build_id=record_id,
        records=store,
        sources=source_adapter.CheckoutLoader.from_settings(settings),
        builder=buildah.Buildah.from_settings(
            settings, cancelled=lambda: store.cancel_requested(record_id)
        ),
        registry=registry.Registry.from_settings(settings),
        locks=store,
        secrets=credentials.secret_values(settings),
        built=store,
        final_attempt=int(self.request.retries or 0) >= settings.registry_retries,
    )
    return record.to_dict()


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _kill_buildah_with_the_child(**_: Any) -> None:
    """A prefork child killed by a signal takes the buildah sessions it started with it."""
    buildah.install_signal_handlers()
