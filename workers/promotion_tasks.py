"""Celery tasks of the promotion stage (SPEC sections 3, 6, 7), queue `promotions`. Thin: build
the process's adapters (once per worker process), call one flow, return its summary. Names and
arguments are the contract in core/tasks.py (the receiver enqueues them by name):

- "layering.promote"(commit_sha, environment): a push to env/<environment> whose head is
  commit_sha, whoever made it: the pipeline's own commits plan to nothing (flows/promote.py).
- "layering.promote_downstream"(environment, upstream): a digest verified on a cluster of
  env/<upstream> (pull-request mode): env/<environment>'s promotion pull request, merged with
  env/<upstream> (flows/downstream.py).
- "layering.gate"(head_sha, base_environment, pr_number): a pull request into
  env/<base_environment> (flows/gate.py).
- "layering.watch_rollout"(commit_sha, environment, cluster, started_at=None): one cluster's
  pools after its promotion commit (flows/rollout_watch.py).
- "layering.base_drift"(): periodic (Celery beat) base image check (flows/drift.py).
- "layering.reconcile_promotions"(): periodic (beat): promote again what waited and is due,
  finish post-push steps left pending (flows/reconcile.py).

Statuses go through the StatusReporter ("layering.report_status": retried, then parked).
TemporaryError is retried by PipelineTask (workers/app.py) with the "task" retry policy. Does
I/O (through the adapters it builds).
"""

from __future__ import annotations

import time
from typing import Any

from celery import Task

from pipeline.adapters import (
    branch_writer,
    env_branches,
    kube,
    promotion_requests,
    promotion_store,
    promotion_waits,
    registry,
    signatures,
    signing_trust,
)
from pipeline.core import tasks
from pipeline.core.errors import PermanentError
from pipeline.core.settings import Settings
from pipeline.flows import downstream as downstream_flow
from pipeline.flows import drift as drift_flow
from pipeline.flows import gate as gate_flow
from pipeline.flows import promote as promote_flow
from pipeline.flows import promotion_inputs, rollout_watch
from pipeline.flows import reconcile as reconcile_flow
from workers import adapters, upgrade_tasks
from workers.app import app, settings_of

app.conf.beat_schedule = {
    **(app.conf.beat_schedule or {}),
    "layering-base-drift": {
        "task": tasks.BaseDrift.NAME,
        "schedule": settings_of(app).base_drift_interval_seconds,
        "options": {"queue": tasks.BaseDrift.QUEUE},
    },
    "layering-reconcile-promotions": {
        "task": tasks.ReconcilePromotions.NAME,
        "schedule": settings_of(app).promotion_sweep_seconds,
        "options": {"queue": tasks.ReconcilePromotions.QUEUE},
    },
}


def _repo_url(settings: Settings) -> str:
    if not settings.repo_url:
        raise PermanentError("LAYERING_REPO_URL is not set: nothing to promote")
    return settings.repo_url


def _store(settings: Settings) -> promotion_store.PromotionStore:
    return adapters.once(
        "promotion_store",
        lambda: promotion_store.PromotionStore.from_settings(
            settings, client=adapters.redis_client(settings)
        ),
    )


def _registry(settings: Settings) -> registry.Registry:
    return adapters.once("registry", lambda: registry.Registry.from_settings(settings))


def _branches(settings: Settings) -> env_branches.MirrorBranches:
    url = _repo_url(settings)
    return adapters.once(
        "env_branches", lambda: env_branches.MirrorBranches.for_url(settings.workdir, url)
    )


def _clusters(settings: Settings) -> kube.KubeClusters:
    return adapters.once("kube_clusters", lambda: kube.KubeClusters(settings.kubeconfig))


def _sources(settings: Settings) -> promotion_inputs.Sources:
    """Where promotions and gates read digests (what each build recorded, checked in the
    registry) and verifications (the store's, confirmed on clusters with kube access)."""
    return promotion_inputs.Sources(
        registry=_registry(settings),
        store=_store(settings),
        built=adapters.build_store(settings),
        clusters=_clusters(settings),
        signing=_signing(settings),
    )


def _signing(settings: Settings) -> promotion_inputs.Signing | None:
    """With LAYERING_SIGNING_PUBLIC_KEY: the digests promoted must be signed by it, and each
    cluster's ClusterImagePolicy carries it."""
    public_key = signing_trust.public_key(settings)
    if public_key is None:
        return None
    check = adapters.once("signatures", lambda: signatures.Signatures.from_settings(settings))
    return promotion_inputs.Signing(public_key, check)


def _activity(settings: Settings) -> promotion_waits.BuildsUnderway:
    """Which build keys have a build queued or running (what a promotion waits for)."""
    return adapters.once(
        "builds_underway",
        lambda: promotion_waits.BuildsUnderway(
            adapters.build_store(settings),
            # no build holds its key longer: an older unfinished record is a lost one
            window_seconds=settings.build_timeout_seconds + 600,
        ),
    )


def _writer(settings: Settings) -> branch_writer.BranchWriter:
    url = _repo_url(settings)
    return adapters.once(
        "branch_writer",
        # LAYERING_PROMOTION_MODE: a direct commit, or a pull request from layering/promote/<e>
        lambda: promotion_requests.writer_for(
            settings,
            url=url,
            client=adapters.github_client(settings),
            lock=branch_writer.RedisBranchLock(
                adapters.redis_client(settings), ttl=settings.promotion_lock_seconds
            ),
        ),
    )


@app.task(name=tasks.Promote.NAME, bind=True)  # type: ignore[untyped-decorator]
def promote(self: Task, commit_sha: str, environment: str) -> dict[str, Any]:
    settings = settings_of(self.app)
    return promote_flow.run(
        commit_sha,
        environment,
        writer=_writer(settings),
        sources=_sources(settings),
        reporter=adapters.status_reporter(self.app, settings),
        queue=adapters.task_queue(self.app),
        now=time.time,
        activity=_activity(settings),
        waits=adapters.promotion_waits_store(settings),
        downstream=settings.resolved_promotion_mode == "pull-request",
    )


@app.task(name=tasks.PromoteDownstream.NAME, bind=True)  # type: ignore[untyped-decorator]
def promote_downstream(self: Task, environment: str, upstream: str) -> dict[str, Any]:
    settings = settings_of(self.app)
    writer = _writer(settings)
    if not isinstance(writer, promotion_requests.PullRequestWriter):
        # commit mode promotes on pushes only: nothing automatic into the next environment
        return {"environment": environment, "skipped": "LAYERING_PROMOTION_MODE=commit"}
    return downstream_flow.run(
        environment,
        upstream,
        writer=writer.merging(f"env/{upstream}"),
        sources=_sources(settings),
        reporter=adapters.status_reporter(self.app, settings),
        queue=adapters.task_queue(self.app),
        now=time.time,
        waits=adapters.promotion_waits_store(settings),
    )


@app.task(name=tasks.ReconcilePromotions.NAME, bind=True)  # type: ignore[untyped-decorator]
def reconcile_promotions(self: Task) -> dict[str, list[str]]:
    settings = settings_of(self.app)
    return reconcile_flow.sweep(
        waits=adapters.promotion_waits_store(settings),
        activity=_activity(settings),
        queue=adapters.task_queue(self.app),
        now=time.time(),
        interval=settings.promotion_sweep_seconds,
    )


@app.task(name=tasks.Gate.NAME, bind=True)  # type: ignore[untyped-decorator]
def gate(
    self: Task, head_sha: str, base_environment: str, pr_number: int, head_ref: str = ""
) -> dict[str, Any]:
    settings = settings_of(self.app)
    return gate_flow.run(
        head_sha,
        base_environment,
        pr_number,
        branches=_branches(settings),
        sources=_sources(settings),
        reporter=adapters.status_reporter(self.app, settings),
        queue=adapters.task_queue(self.app),
        now=time.time,
        head_ref=head_ref,
        requests=adapters.promotion_requests(settings),
        waits=adapters.promotion_waits_store(settings),
    )


@app.task(  # type: ignore[untyped-decorator]
    name=tasks.WatchRollout.NAME, bind=True
)
def watch_rollout(
    self: Task,
    commit_sha: str,
    environment: str,
    cluster: str,
    started_at: float | None = None,
) -> dict[str, str]:
    settings = settings_of(self.app)
    return rollout_watch.run(
        commit_sha,
        environment,
        cluster,
        started_at=started_at,
        branches=_branches(settings),
        clusters=_clusters(settings),
        store=_store(settings),
        reporter=adapters.status_reporter(self.app, settings),
        queue=adapters.task_queue(self.app),
        now=time.time,
        watch_seconds=settings.rollout_watch_seconds,
        timeout_seconds=settings.rollout_timeout_seconds,
        waits=adapters.promotion_waits_store(settings),
        downstream=settings.resolved_promotion_mode == "pull-request",
    )


@app.task(name=tasks.BaseDrift.NAME, bind=True)  # type: ignore[untyped-decorator]
def base_drift(self: Task) -> dict[str, bool]:
    settings = settings_of(self.app)
    return drift_flow.run(
        default_branch=settings.default_branch,
        branches=_branches(settings),
        clusters=_clusters(settings),
        store=_store(settings),
        now=time.time,
        on_drift=upgrade_tasks.drift_upgrades(settings),
    )
