"""Celery tasks of the promotion stage (SPEC sections 3, 6, 7), queue `promotions`.

Task names and arguments are a stable contract (the webhook receiver enqueues them by name):

- "layering.promote"(commit_sha: str, environment: str): a push to env/<environment> whose head
  is commit_sha. Writes/deletes MachineConfigs for every cluster of the environment, commits
  once, pushes, posts `layering/promote/<cluster>`, then starts rollout watches.
- "layering.gate"(head_sha: str, base_environment: str, pr_number: int): a pull request into
  env/<base_environment> with head commit head_sha; judges what merging it into the branch's
  current head gives (the server's refs/pull/<pr_number>/merge when it is that merge, else
  computed; a conflicting merge fails) and posts `layering/gate/<base_environment>`.
- "layering.watch_rollout"(commit_sha: str, environment: str, cluster: str): follows one
  cluster's pools after its promotion commit (enqueued by "layering.promote").
- "layering.base_drift"(): periodic (Celery beat); compares each kube cluster's
  machine-config-osimageurl ConfigMap with cluster.yaml.

Enqueue with e.g. `app.send_task(PROMOTE_TASK, args=[sha, env], queue=tasks.PROMOTIONS_QUEUE)`.
Before enqueueing a promotion for a push, call `promotion.is_promotion_commit(message)` on the
head commit's message: the pipeline's own promotion commits are ignored.
"""

from __future__ import annotations

import random
import time
from typing import Any

import redis
from celery import Task

from pipeline.adapters import branch_writer, github, kube, registry
from pipeline.adapters import git as gitadapter
from pipeline.adapters.promotion_store import Drift, PromotionStore, WatchedGate
from pipeline.core import promotion, rollout, tasks
from pipeline.core.errors import PermanentError, PipelineError, TemporaryError
from pipeline.core.settings import Settings
from pipeline.flows import promote as promote_flow
from workers import head_tasks
from workers.app import app, settings_of

PROMOTE_TASK = "layering.promote"
GATE_TASK = "layering.gate"
WATCH_ROLLOUT_TASK = "layering.watch_rollout"
BASE_DRIFT_TASK = "layering.base_drift"

MAX_RETRIES = 8

app.conf.beat_schedule = {
    **(app.conf.beat_schedule or {}),
    "layering-base-drift": {
        "task": BASE_DRIFT_TASK,
        "schedule": settings_of(app).base_drift_interval_seconds,
        "options": {"queue": tasks.PROMOTIONS_QUEUE},
    },
}


def _redis(settings: Settings) -> redis.Redis[bytes]:
    return redis.Redis.from_url(settings.redis_url.get_secret_value())


class _GitHubReporter:
    def __init__(self, client: github.GitHubClient) -> None:
        self._client = client

    def set_status(
        self, sha: str, *, context: str, state: str, description: str, target_url: str | None
    ) -> None:
        assert state in ("pending", "success", "failure", "error")
        self._client.set_status(
            sha,
            context=context,
            state=state,  # type: ignore[arg-type]
            description=description,
            target_url=target_url,
        )


def _reporter(settings: Settings) -> promote_flow.StatusReporter:
    client = github.GitHubClient.from_settings(settings)
    return _GitHubReporter(client) if client is not None else promote_flow.LogReporter()


def _repo_url(settings: Settings) -> str:
    if not settings.repo_url:
        raise PermanentError("LAYERING_REPO_URL is not set: nothing to promote")
    return settings.repo_url


def _mirror(settings: Settings) -> gitadapter.GitRepo:
    url = _repo_url(settings)
    return gitadapter.GitRepo.ensure_mirror(head_tasks.mirror_path(settings, url), url)


def _retry(task: Task, exc: TemporaryError) -> Any:
    delay = min(exc.retry_after, 300) * (1 + random.random())  # noqa: S311 - jitter
    return task.retry(exc=exc, countdown=delay, max_retries=MAX_RETRIES)


def writer_for(settings: Settings, client: redis.Redis[bytes]) -> branch_writer.BranchWriter:
    return branch_writer.BranchWriter(
        url=_repo_url(settings),
        workdir=settings.workdir / "promotions",
        mirror=head_tasks.mirror_path(settings, _repo_url(settings)),
        lock=branch_writer.RedisBranchLock(client),
    )


@app.task(name=PROMOTE_TASK, bind=True, queue=tasks.PROMOTIONS_QUEUE, acks_late=True)  # type: ignore[untyped-decorator]
def promote(self: Task, commit_sha: str, environment: str) -> dict[str, Any]:
    settings = settings_of(app)
    client = _redis(settings)
    store = PromotionStore(client)
    try:
        outcome = promote_flow.promote(
            commit_sha,
            environment,
            writer=writer_for(settings, client),
            registry=registry.Registry.from_settings(settings),
            store=store,
            reporter=_reporter(settings),
            now=time.time,
        )
    except TemporaryError as exc:
        raise _retry(self, exc) from None
    for cluster in outcome.clusters_to_watch():
        app.send_task(
            WATCH_ROLLOUT_TASK,
            args=[outcome.commit_sha, environment, cluster],
            queue=tasks.PROMOTIONS_QUEUE,
        )
    _reevaluate_gates(store)
    return {
        "commit_sha": outcome.commit_sha,
        "head_sha": outcome.head_sha,
        "attempts": outcome.attempts,
        "refusals": [str(r) for r in outcome.plan.refusals] if outcome.plan else [],
    }


@app.task(name=GATE_TASK, bind=True, queue=tasks.PROMOTIONS_QUEUE, acks_late=True)  # type: ignore[untyped-decorator]
def gate(self: Task, head_sha: str, base_environment: str, pr_number: int) -> dict[str, Any]:
    settings = settings_of(app)
    store = PromotionStore(_redis(settings))
    try:
        with _mirror(settings) as mirror:
            merge = _pull_request_merge(mirror, head_sha, base_environment, pr_number)
            model = mirror.load(merge.commit_sha) if merge.commit_sha else None
        decision = promote_flow.gate(
            model,
            head_sha=head_sha,
            environment=base_environment,
            registry=registry.Registry.from_settings(settings),
            store=store,
            reporter=_reporter(settings),
            now=time.time(),
            conflicts=merge.conflicts,
            unrelated=merge.unrelated,
        )
    except TemporaryError as exc:
        raise _retry(self, exc) from None
    watched = WatchedGate(head_sha, base_environment, pr_number)
    if decision.state is promotion.GateState.SUCCESS:
        store.unwatch_gate(base_environment, pr_number)
    else:
        store.watch_gate(watched)
    if decision.state is promotion.GateState.PENDING:
        app.send_task(
            GATE_TASK,
            args=[head_sha, base_environment, pr_number],
            queue=tasks.PROMOTIONS_QUEUE,
            countdown=decision.remaining_seconds + 1,
        )
    return {
        "state": decision.state.value,
        "description": decision.description,
        "merge_sha": merge.commit_sha,
        "merge_source": merge.source,
    }


def _pull_request_merge(
    mirror: gitadapter.GitRepo, head_sha: str, environment: str, pr_number: int
) -> gitadapter.Merge:
    """The merge of the pull request's head into the current env/<environment> head (SPEC
    section 3: the gate judges what the merge would promote, not the head alone)."""
    branch = f"env/{environment}"
    # refs/pull/<n>/* (GitHub's head and merge refs) as a pattern: no error where there are none
    mirror.fetch(branch, f"refs/pull/{pr_number}/*")
    if not mirror.exists(head_sha):
        mirror.fetch()
    return mirror.merge(f"refs/heads/{branch}", head_sha, offered=f"refs/pull/{pr_number}/merge")


def _reevaluate_gates(store: PromotionStore) -> None:
    for watched in store.watched_gates():
        app.send_task(
            GATE_TASK,
            args=[watched.head_sha, watched.environment, watched.pr_number],
            queue=tasks.PROMOTIONS_QUEUE,
        )


@app.task(name=WATCH_ROLLOUT_TASK, bind=True, queue=tasks.PROMOTIONS_QUEUE, acks_late=True)  # type: ignore[untyped-decorator]
def watch_rollout(
    self: Task,
    commit_sha: str,
    environment: str,
    cluster: str,
    started_at: float | None = None,
) -> dict[str, str]:
    settings = settings_of(app)
    store = PromotionStore(_redis(settings))
    started_at = started_at or time.time()
    reporter = _reporter(settings)
    try:
        with _mirror(settings) as mirror:
            if not mirror.exists(commit_sha):
                mirror.fetch(f"env/{environment}")
            model = mirror.load(commit_sha)
        context = model.clusters[cluster].kube_context
        if context is None:
            return {}
        # one run watches for rollout_watch_seconds at most, and never past the timeout
        left = started_at + settings.rollout_timeout_seconds - time.time()
        with kube.KubeCluster.connect(kubeconfig=settings.kubeconfig, context=context) as reader:
            states = promote_flow.watch_rollout(
                model,
                commit_sha=commit_sha,
                cluster=cluster,
                reader=reader,
                store=store,
                reporter=reporter,
                now=time.time,
                timeout=max(1.0, min(settings.rollout_watch_seconds, left)),
            )
        updating = any(state.phase is rollout.Phase.UPDATING for state in states.values())
        if updating and time.time() - started_at < settings.rollout_timeout_seconds:
            app.send_task(
                WATCH_ROLLOUT_TASK,
                args=[commit_sha, environment, cluster],
                kwargs={"started_at": started_at},
                queue=tasks.PROMOTIONS_QUEUE,
            )
            return {pool: state.phase.value for pool, state in states.items()}
        if updating:
            promote_flow.rollout_timed_out(
                model,
                commit_sha=commit_sha,
                cluster=cluster,
                states=states,
                waited=time.time() - started_at,
                store=store,
                reporter=reporter,
                now=time.time(),
            )
    except TemporaryError as exc:
        raise _retry(self, exc) from None
    _reevaluate_gates(store)
    return {pool: state.phase.value for pool, state in states.items()}


@app.task(name=BASE_DRIFT_TASK, bind=True, queue=tasks.PROMOTIONS_QUEUE, acks_late=True)  # type: ignore[untyped-decorator]
def base_drift(self: Task) -> dict[str, bool]:
    settings = settings_of(app)
    store = PromotionStore(_redis(settings))
    drifted: dict[str, bool] = {}
    try:
        with _mirror(settings) as mirror:
            mirror.fetch(settings.default_branch)
            model = mirror.load(f"refs/heads/{settings.default_branch}")
    except TemporaryError as exc:
        raise _retry(self, exc) from None
    for name, cluster in sorted(model.clusters.items()):
        if cluster.kube_context is None:
            continue
        # one unreachable or misconfigured cluster must not hide the others' drift; the next
        # beat run checks it again
        try:
            with kube.KubeCluster.connect(
                kubeconfig=settings.kubeconfig, context=cluster.kube_context
            ) as reader:
                drift = promote_flow.check_base_drift(cluster, reader, store=store, now=time.time())
        except PipelineError as exc:
            drift = Drift(
                cluster=name,
                expected=str(cluster.base_image),
                actual="",
                release_version="",
                checked_at=time.time(),
                error=str(exc),
            )
            store.record_drift(drift)
        drifted[name] = drift.drifted
    return drifted
