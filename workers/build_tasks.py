"""The Celery task of the build stage, queue `builds`: wires the adapters of one build and runs
`flows.build.run_build`, which `layering build` runs too. Its name and arguments are
`tasks.Build` (core/tasks.py); the record it updates was created, queued, by whoever sent it
(`BuildStore.create_queued`), so a status check can link to it before the build starts. The
digest a build pushes (or reuses) is recorded per build key in the same store: promotion
takes it from there, never from the tag.

Worker loss: the task holds a lease on its build id, renewed by a heartbeat thread every third
of LAYERING_BUILD_LEASE_SECONDS together with the build-key lock (adapters/leases.py); when the
worker vanishes both expire and beat's sweep (workers/sweep_tasks.py) restores this task's
unacknowledged message. A delivery that finds the lease live elsewhere is acknowledged without
running (celery.exceptions.Ignore: no callbacks), so a build never runs twice at once; and the
outcome is reported once per build id: only the delivery that claims the report returns it
to its callbacks (BuildStore.claim_report).

Clean-up: reading what a pushed build's image changes against its base (then asking for its
check to be drawn again) and removing its local image run on one thread per worker process
(`deferred`), after the record says succeeded, so the task's slot goes to the next build
meanwhile (tests/bench/fanout_bench.py); a removal that fails is logged, and one still queued
when the process exits runs before it does.

Content lint: between build and push the build's layers are read from local storage
(adapters/layer_content.py, one reader per process: it keeps the bases it read) and judged by
the content rules; LAYERING_CONTENT_LINT=false leaves it out.

Time limit: at Celery's soft time limit (LAYERING_BUILD_TIMEOUT_SECONDS) the builder kills
buildah's process group and the record fails naming the setting (flows/build.py `stopped`).

TemporaryError is retried by PipelineTask (workers/app.py) with the "build" retry policy:
LAYERING_REGISTRY_RETRIES retries; the last attempt fails the record instead of raising.
Returns the final record as JSON. Does I/O (through the adapters it builds).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from celery import Task
from celery.exceptions import Ignore, SoftTimeLimitExceeded
from celery.signals import worker_process_init

from pipeline.adapters import (
    buildah,
    credentials,
    image_changes,
    layer_content,
    leases,
    process_groups,
    registry,
)
from pipeline.adapters import source as source_adapter
from pipeline.core import builds, commit_status, tasks
from pipeline.core.settings import Settings
from pipeline.flows import build as build_flow
from workers import adapters
from workers.app import app, settings_of

log = logging.getLogger(__name__)

# how much lower the clean-up thread's priority is than the builds' (nice(2) increment)
CLEANUP_NICENESS = 10


def build_leases(settings: Settings) -> leases.RedisBuildLeases:
    """The process's build leases (also read by the sweep)."""
    return adapters.once(
        "build_leases",
        lambda: leases.RedisBuildLeases(
            adapters.redis_client(settings),
            ttl_seconds=settings.build_lease_seconds,
            keep_seconds=settings.build_retention_seconds,
        ),
    )


def checkout_loader(settings: Settings) -> source_adapter.CheckoutLoader:
    """The process's checkouts: its mirror kept open between builds, so a checkout starts no
    Git process (made after a prefork fork: see workers/adapters.py)."""
    return adapters.once(
        "checkout_loader",
        lambda: source_adapter.CheckoutLoader.from_settings(settings, keep_mirror=True),
    )


def content_reader(settings: Settings) -> layer_content.LayerReader | None:
    """The process's reader of built images' layers for the content lint (it caches the
    bases it has read); None with LAYERING_CONTENT_LINT=false."""
    if not settings.content_lint:
        return None
    return adapters.once(
        "content_reader", lambda: layer_content.LayerReader(buildah.config_of(settings))
    )


def deferred(cleanup: Callable[[], None]) -> None:
    """Run `cleanup` on the process's clean-up thread (made after a prefork fork: see
    workers/adapters.py), logging a failure."""
    executor = adapters.once(
        "build_cleanup",
        lambda: ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="layering-build-cleanup", initializer=_yield_cpu
        ),
    )
    executor.submit(cleanup).add_done_callback(_log_failure)


def _yield_cpu() -> None:
    """The clean-up thread (and the buildah and rpm it starts) runs at a lower priority: on
    Linux the nice value is per thread, so builds waiting for a slot go first and reading a
    finished image's changes only takes the CPU they leave."""
    try:
        os.nice(CLEANUP_NICENESS)
    except OSError as exc:
        log.info("build clean-up thread keeps its priority: %s", exc)


def _log_failure(done: Future[None]) -> None:
    if (error := done.exception()) is not None:
        log.warning("build clean-up failed: %s: %s", type(error).__name__, error)


@app.task(name=tasks.Build.NAME, bind=True, retry_kind="build")  # type: ignore[untyped-decorator]
def build(
    self: Task,
    source: str,
    commit_sha: str | None,
    image: str,
    cluster: str,
    build_key: str | None = None,
    build_id: str | None = None,
    status_sha: str | None = None,
) -> dict[str, Any]:
    settings = settings_of(self.app)
    store = adapters.build_store(settings)
    record_id = build_id or f"task-{self.request.id}"
    lease = build_leases(settings).acquire(record_id, task_id=str(self.request.id or record_id))
    if lease is None:
        raise Ignore(f"build {record_id} runs under a live lease elsewhere; that run reports it")
    heartbeat = leases.Heartbeat(
        lease, every=settings.build_lease_seconds / 3, also=store.extend_held_locks
    )
    with heartbeat:
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
            sources=checkout_loader(settings),
            builder=buildah.Buildah.from_settings(
                settings,
                cancelled=lambda: not lease.held() or store.cancel_requested(record_id),
            ),
            registry=registry.Registry.from_settings(settings),
            locks=store,
            secrets=credentials.secret_values(settings),
            built=store,
            final_attempt=int(self.request.retries or 0) >= settings.registry_retries,
            lease=lease,
            stopped=(SoftTimeLimitExceeded,),
            timeout_seconds=settings.build_timeout_seconds,
            defer=deferred,
            on_start=_report_started(self.app, settings, status_sha),
            inspector=image_changes.ImageReader(buildah.config_of(settings)),
            on_changes=_refresh_check(self.app, settings, status_sha),
            content=content_reader(settings),
        )
    if not lease.held():
        raise Ignore(f"build {record_id}: delivered again elsewhere; that run reports it")
    if record.state.terminal and not store.claim_report(record.id):
        raise Ignore(f"build {record_id}: its outcome was reported by an earlier delivery")
    return record.to_dict()


def _report_started(
    app: Any, settings: Settings, status_sha: str | None
) -> Callable[[builds.BuildRecord], None] | None:
    """Reports on `status_sha` that buildah started (the build's check run: in_progress); None
    for a build no commit shows (promotion, sweep), and with commit statuses: "started" is
    not a status, and reporting it would take the place of the queued `pending` (one
    sequence per sha and context)."""
    if status_sha is None or settings.resolved_github_checks != "check-runs":
        return None
    reporter = adapters.status_reporter(app, settings)

    def started(record: builds.BuildRecord) -> None:
        status = commit_status.build_started(
            record.image, record.cluster, build_id=record.id, public_url=settings.public_url
        )
        # best effort: the build goes on, and its final status follows anyway
        try:
            reporter.report(status_sha, status)
        except Exception as exc:
            log.warning("build %s: its start was not reported: %s", record.id, exc)

    return started


def _refresh_check(
    app: Any, settings: Settings, status_sha: str | None
) -> Callable[[builds.BuildRecord], None]:
    """Once a build's image changes are on its record, its check run on `status_sha` is drawn
    again from the record (nothing to draw for a build no commit shows, nor for a commit
    status, which does not show them)."""

    def refresh(record: builds.BuildRecord) -> None:
        if status_sha is not None and settings.resolved_github_checks == "check-runs":
            call = tasks.RefreshBuildCheck(build_id=record.id, sha=status_sha).call()
            adapters.task_queue(app).send(call)

    return refresh


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _kill_buildah_with_the_child(**_: Any) -> None:
    """A prefork child killed by a signal takes the buildah sessions it started with it."""
    process_groups.install_signal_handlers()
