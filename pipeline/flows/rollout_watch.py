"""The rollout watch flow (SPEC section 7): after a promotion commit, follow each managed pool of
one cluster through the Machine Config Operator -> record every state seen, post
`layering/rollout/<cluster>` on the promotion commit, and record a verification when a pool
is Updated (healthy) or Degraded (failed). One run watches for a bounded window; a pool still
Updating is watched again by a new run until the rollout timeout, which fails its digest.
Watched gates are re-checked once the cluster is done. Does I/O only through the ports it is
given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pipeline.core import ports, reconcile, repo, rollout, tasks
from pipeline.flows import downstream as downstream_flow
from pipeline.flows import gate as gate_flow


def watch_rollout(
    repository: repo.Repository,
    *,
    commit_sha: str,
    cluster: str,
    reader: ports.ClusterReader,
    store: ports.PromotionStore,
    reporter: ports.StatusReporter,
    now: Callable[[], float],
    timeout: float,
    target_url: str | None = None,
) -> dict[str, rollout.RolloutState]:
    """Follow every managed pool of `cluster` at the promotion commit (`repository`) for at
    most `timeout` seconds each; stops at the first pool still Updating or Degraded."""
    states: dict[str, rollout.RolloutState] = {}
    images = rollout.expected_images(repository, cluster)
    for pool, url in sorted(images.items()):

        def seen(state: rollout.RolloutState, pool: str = pool, url: str = url) -> None:
            store.record_rollout(
                rollout.record(
                    state,
                    cluster=cluster,
                    pool=pool,
                    commit_sha=commit_sha,
                    os_image_url=url,
                    observed_at=now(),
                )
            )
            # an Updated pool is said once, for the whole cluster, below
            if state.phase is not rollout.Phase.UPDATED:
                reporter.report(commit_sha, state.status(cluster, pool, target_url=target_url))

        state = reader.watch_rollout(
            pool, expected_os_image_url=url, timeout=timeout, on_change=seen
        )
        states[pool] = state
        if state.phase is rollout.Phase.UPDATING:
            return states  # not done within this watch: the caller watches again later
        store.record_verification(
            rollout.verification_of(
                state, cluster=cluster, os_image_url=url, commit_sha=commit_sha, now=now()
            )
        )
        if state.phase is rollout.Phase.DEGRADED:
            return states
    reporter.report(commit_sha, rollout.rolled_out(cluster, states, target_url=target_url))
    return states


def rollout_timed_out(
    repository: repo.Repository,
    *,
    commit_sha: str,
    cluster: str,
    states: Mapping[str, rollout.RolloutState],
    waited: float,
    store: ports.PromotionStore,
    reporter: ports.StatusReporter,
    now: float,
    target_url: str | None = None,
) -> None:
    """The pools of `cluster` still Updating at the rollout timeout: their digests count as
    failed there, and `layering/rollout/<cluster>` says which pool stalled where."""
    outcome = rollout.timed_out(
        repository,
        commit_sha=commit_sha,
        cluster=cluster,
        states=states,
        waited=waited,
        now=now,
        target_url=target_url,
    )
    if outcome is None:
        return
    for failed in outcome.verifications:
        store.record_verification(failed)
    reporter.report(commit_sha, outcome.status)


def run(
    commit_sha: str,
    environment: str,
    cluster: str,
    *,
    started_at: float | None,
    branches: ports.EnvBranches,
    clusters: ports.Clusters,
    store: ports.PromotionStore,
    reporter: ports.StatusReporter,
    queue: ports.TaskQueue,
    now: Callable[[], float],
    watch_seconds: float,
    timeout_seconds: float,
    waits: ports.PromotionWaits | None = None,
    downstream: bool = False,
) -> dict[str, str]:
    """ "layering.watch_rollout": one watch window of `cluster` at the promotion commit, then
    a new run, the timeout, or (done) the watched gates re-checked. pool -> phase. With
    `downstream` (pull-request mode), every pool Updated queues the promotions of the
    environments promoting from `cluster` (flows/downstream.py)."""
    started_at = started_at or now()
    repository = branches.at_commit(commit_sha, branch=f"env/{environment}")
    context = repository.clusters[cluster].kube_context
    if context is None:
        return {}
    window = rollout.watch_window(
        started_at=started_at,
        now=now(),
        watch_seconds=watch_seconds,
        timeout_seconds=timeout_seconds,
    )
    with clusters.connect(context) as reader:
        states = watch_rollout(
            repository,
            commit_sha=commit_sha,
            cluster=cluster,
            reader=reader,
            store=store,
            reporter=reporter,
            now=now,
            timeout=window,
        )
    phases = {pool: state.phase.value for pool, state in states.items()}
    step = rollout.next_step(
        states, started_at=started_at, now=now(), timeout_seconds=timeout_seconds
    )
    if step is rollout.NextStep.WATCH_AGAIN:
        queue.send(tasks.WatchRollout(commit_sha, environment, cluster, started_at).call())
        return phases
    if step is rollout.NextStep.TIMED_OUT:
        rollout_timed_out(
            repository,
            commit_sha=commit_sha,
            cluster=cluster,
            states=states,
            waited=now() - started_at,
            store=store,
            reporter=reporter,
            now=now(),
        )
    if waits is not None:
        promote_waiting(cluster, waits=waits, queue=queue)
    if downstream and states and all(s.phase is rollout.Phase.UPDATED for s in states.values()):
        downstream_flow.trigger(repository, environment, queue, clusters=[cluster])
    gate_flow.recheck_watched(store, queue)
    return phases


def promote_waiting(cluster: str, *, waits: ports.PromotionWaits, queue: ports.TaskQueue) -> None:
    """The rollout on `cluster` is over (its verification recorded, healthy or failed): every
    environment whose promotion waits for it runs again, by itself (issue 11)."""
    for wait in reconcile.waiting_on_rollout(waits.waits(), cluster):
        queue.send(tasks.Promote(wait.commit_sha, wait.environment).call())
