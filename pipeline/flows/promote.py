"""The promotion stage run end to end (load -> decide -> act -> report), shared by the Celery
tasks and `layering promote`. Depends on Protocols; the workers hand in the real adapters, tests
may hand in fakes. Does I/O only through what it is given.

- `promote`: plan at the env branch's head, commit/push once (or nothing), statuses, records.
- `gate`: the `layering/gate/<environment>` decision for a pull request, from its merge result.
- `watch_rollout`: follow a cluster's pools after a promotion commit, record verifications.
- `check_base_drift`: compare a cluster's MCO ConfigMap with cluster.yaml.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from pipeline.adapters import branch_writer
from pipeline.adapters.promotion_store import (
    Drift,
    Promoted,
    PromotionStore,
    RolloutRecord,
    rollout_record,
)
from pipeline.core import commit_status, machineconfig, promotion, repo, rollout

log = logging.getLogger(__name__)


class DigestSource(Protocol):
    def digest_of(self, reference: str) -> str | None: ...


class StatusReporter(Protocol):
    def set_status(
        self,
        sha: str,
        *,
        context: str,
        state: str,
        description: str,
        target_url: str | None,
    ) -> None: ...


class ClusterReader(Protocol):
    def watch_rollout(
        self,
        pool: str,
        *,
        expected_os_image_url: str,
        timeout: float,
        on_change: Callable[[rollout.RolloutState], None],
    ) -> rollout.RolloutState: ...

    def base_image(self) -> BaseImageInfo | None: ...


class BaseImageInfo(Protocol):
    @property
    def base_os_container_image(self) -> str: ...

    @property
    def release_version(self) -> str: ...


class Writer(Protocol):
    def write(
        self, branch: str, change_for: branch_writer.ChangeFor
    ) -> branch_writer.WriteResult: ...


class LogReporter:
    """For plain Git servers (no GitHub): statuses go to the log."""

    def set_status(
        self, sha: str, *, context: str, state: str, description: str, target_url: str | None
    ) -> None:
        log.info("status %s %s=%s: %s", sha[:12], context, state, description)


@dataclass(frozen=True)
class PromotionOutcome:
    plan: promotion.PromotionPlan | None  # None when the branch had nothing to plan
    commit_sha: str | None  # the promotion commit pushed, None when nothing was committed
    head_sha: str
    attempts: int
    repository: repo.Repository | None = None  # the model the plan was made from

    def clusters_to_watch(self) -> list[str]:
        repository = self.repository
        if self.plan is None or self.commit_sha is None or repository is None:
            return []
        changed = {step.cluster for step in self.plan.changes}
        return [
            name
            for name in sorted(changed)
            if name in repository.clusters and repository.clusters[name].kube_context
        ]


def lookup_digests(
    targets: Iterable[promotion.Target], registry: DigestSource
) -> dict[tuple[str, str], promotion.DigestLookup]:
    found: dict[tuple[str, str], promotion.DigestLookup] = {}
    seen: dict[str, str | None] = {}
    for target in targets:
        if target.tag_reference not in seen:
            seen[target.tag_reference] = registry.digest_of(target.tag_reference)
        found[(target.image, target.cluster)] = promotion.DigestLookup(
            target.build_key, seen[target.tag_reference]
        )
    return found


def _upstreams(repository: repo.Repository, environment: str) -> set[str]:
    return {
        cluster.promotes_from
        for cluster in repository.clusters_in(environment)
        if cluster.promotes_from is not None
    }


def decide(
    repository: repo.Repository,
    *,
    environment: str,
    source_commit: str,
    registry: DigestSource,
    store: PromotionStore,
    now: float,
) -> promotion.PromotionPlan:
    return promotion.plan(
        repository,
        environment=environment,
        source_commit=source_commit,
        lookups=lookup_digests(promotion.targets(repository, environment), registry),
        verifications=store.verifications(_upstreams(repository, environment)),
        now=now,
    )


def change_of(plan: promotion.PromotionPlan) -> branch_writer.Change | None:
    if plan.refused or not plan.changes:
        return None
    return branch_writer.Change(
        message=promotion.commit_message(plan),
        writes={s.path: s.content for s in plan.changes if isinstance(s, promotion.WriteFile)},
        deletes=frozenset(s.path for s in plan.changes if isinstance(s, promotion.DeleteFile)),
    )


def promote(
    commit_sha: str,
    environment: str,
    *,
    writer: Writer,
    registry: DigestSource,
    store: PromotionStore,
    reporter: StatusReporter,
    now: Callable[[], float],
    target_url: str | None = None,
) -> PromotionOutcome:
    """Promote env/<environment> at its current head (commit_sha is the pushed head that
    asked for it; statuses go there). Safe to repeat: an applied plan commits nothing."""
    plans: list[promotion.PromotionPlan] = []
    models: list[repo.Repository] = []

    def change_for(head: str, repository: repo.Repository) -> branch_writer.Change | None:
        models.append(repository)
        plan = decide(
            repository,
            environment=environment,
            source_commit=head,
            registry=registry,
            store=store,
            now=now(),
        )
        plans.append(plan)
        return change_of(plan)

    result = writer.write(f"env/{environment}", change_for)
    plan = plans[-1] if plans else None
    if plan is not None:
        for status in promotion.promote_statuses(plan):
            reporter.set_status(
                commit_sha,
                context=status.context,
                state=status.state,
                description=status.description,
                target_url=target_url,
            )
        if not plan.refused:
            _record(plan, result, store=store, now=now())
            record_time_based(
                models[-1],
                plan,
                store=store,
                commit_sha=result.commit_sha or result.head_sha,
                now=now(),
            )
    return PromotionOutcome(
        plan, result.commit_sha, result.head_sha, result.attempts, models[-1] if models else None
    )


def _record(
    plan: promotion.PromotionPlan,
    result: branch_writer.WriteResult,
    *,
    store: PromotionStore,
    now: float,
) -> None:
    commit = result.commit_sha or result.head_sha
    for step in plan.steps:
        if isinstance(step, promotion.WriteFile):
            store.record_promoted(
                Promoted(
                    cluster=step.cluster,
                    pool=step.pool,
                    image=step.os_image.image,
                    digest=step.os_image.digest,
                    os_image_url=step.os_image.url,
                    build_key=step.os_image.build_key,
                    commit_sha=commit,
                    promoted_at=now,
                )
            )
        elif isinstance(step, promotion.DeleteFile):
            store.forget_promoted(step.cluster, step.pool)


def record_time_based(
    repository: repo.Repository,
    plan: promotion.PromotionPlan,
    *,
    store: PromotionStore,
    commit_sha: str,
    now: float,
) -> list[promotion.Verification]:
    """Clusters without kube: a promoted digest counts from its promotion commit (SPEC 7)."""
    recorded = []
    for step in plan.steps:
        cluster = repository.clusters.get(step.cluster)
        if cluster is None or cluster.kube_context or isinstance(step, promotion.DeleteFile):
            continue
        document = machineconfig.parse_managed(
            step.content
            if isinstance(step, promotion.WriteFile)
            else repository.machineconfigs.get(step.path, b"")
        )
        if document is None:
            continue
        url = str(document["spec"]["osImageURL"])
        verification = promotion.Verification(
            cluster=step.cluster,
            digest=url.rpartition("@")[2],
            verified_at=now,
            method=promotion.VerificationMethod.TIME,
            commit_sha=commit_sha,
        )
        if store.record_verification(verification):
            recorded.append(verification)
    return recorded


def expected_images(repository: repo.Repository, cluster: str) -> dict[str, str]:
    """pool -> osImageURL for the managed MachineConfigs of a cluster at a commit."""
    found: dict[str, str] = {}
    for path, pool in promotion.managed_paths(repository, cluster).items():
        document = machineconfig.parse_managed(repository.machineconfigs[path])
        if document is not None and pool:
            found[pool] = str(document["spec"]["osImageURL"])
    return found


def watch_rollout(
    repository: repo.Repository,
    *,
    commit_sha: str,
    cluster: str,
    reader: ClusterReader,
    store: PromotionStore,
    reporter: StatusReporter,
    now: Callable[[], float],
    timeout: float,
    target_url: str | None = None,
) -> dict[str, rollout.RolloutState]:
    """Follow every managed pool of `cluster` at the promotion commit; statuses on that
    commit; verifications recorded for Updated (healthy) and Degraded (failed) pools."""
    context = commit_status.rollout_context(cluster)
    states: dict[str, rollout.RolloutState] = {}
    images = expected_images(repository, cluster)
    for pool, url in sorted(images.items()):

        def report(state: rollout.RolloutState, pool: str = pool, url: str = url) -> None:
            store.record_rollout(
                rollout_record(
                    cluster=cluster,
                    pool=pool,
                    commit_sha=commit_sha,
                    os_image_url=url,
                    state=state,
                    observed_at=now(),
                )
            )
            if state.phase is not rollout.Phase.UPDATED:
                status = state.status(cluster, pool)
                reporter.set_status(
                    commit_sha,
                    context=status.context,
                    state=status.state,
                    description=status.description,
                    target_url=target_url,
                )

        state = reader.watch_rollout(
            pool, expected_os_image_url=url, timeout=timeout, on_change=report
        )
        states[pool] = state
        if state.phase is rollout.Phase.UPDATING:
            return states  # not done within this watch: the caller watches again later
        store.record_verification(
            promotion.Verification(
                cluster=cluster,
                digest=url.rpartition("@")[2],
                verified_at=now(),
                method=promotion.VerificationMethod.ROLLOUT,
                healthy=state.phase is rollout.Phase.UPDATED,
                message=state.message,
                commit_sha=commit_sha,
            )
        )
        if state.phase is rollout.Phase.DEGRADED:
            return states
    total = sum(state.total for state in states.values())
    reporter.set_status(
        commit_sha,
        context=context,
        state="success",
        description=f"{len(states)} pool(s) rolled out: {total} machines on the promoted image",
        target_url=target_url,
    )
    return states


def rollout_timed_out(
    repository: repo.Repository,
    *,
    commit_sha: str,
    cluster: str,
    states: Mapping[str, rollout.RolloutState],
    waited: float,
    store: PromotionStore,
    reporter: StatusReporter,
    now: float,
    target_url: str | None = None,
) -> None:
    """The pools of `cluster` at the promotion commit (`repository`) still Updating after the
    rollout timeout: their digests count as failed there (a gate must not wait on them for
    ever), and `layering/rollout/<cluster>` says which pool stalled where."""
    stalled = {pool: state for pool, state in states.items() if not state.done}
    if not stalled:
        return
    pool, state = sorted(stalled.items())[0]
    message = f"rollout timed out after {promotion.format_duration(waited)}: {pool} at " + (
        f"{state.updated}/{state.total} machines updated"
        + (f" ({state.message})" if state.message else "")
    )
    images = expected_images(repository, cluster)
    for name in sorted(stalled.keys() & images.keys()):
        store.record_verification(
            promotion.Verification(
                cluster=cluster,
                digest=images[name].rpartition("@")[2],
                verified_at=now,
                method=promotion.VerificationMethod.ROLLOUT,
                healthy=False,
                message=message,
                commit_sha=commit_sha,
            )
        )
    reporter.set_status(
        commit_sha,
        context=commit_status.rollout_context(cluster),
        state="failure",
        description=message,
        target_url=target_url,
    )


def gate(
    merged: repo.Repository | None,
    *,
    head_sha: str,
    environment: str,
    registry: DigestSource,
    store: PromotionStore,
    reporter: StatusReporter,
    now: float,
    conflicts: Sequence[str] = (),
    unrelated: bool = False,
    target_url: str | None = None,
) -> promotion.GateDecision:
    """Decide and post the gate of a pull request head from the repository its merge into
    env/<environment> gives (`merged`), or from the paths that keep it from merging."""
    if merged is None:
        decision = promotion.conflicted_gate(environment, conflicts, unrelated=unrelated)
    else:
        decision = promotion.gate(
            merged,
            environment=environment,
            lookups=lookup_digests(promotion.targets(merged, environment), registry),
            verifications=store.verifications(_upstreams(merged, environment)),
            now=now,
        )
    reporter.set_status(
        head_sha,
        context=commit_status.gate_context(environment),
        state=decision.state.value,
        description=decision.description,
        target_url=target_url,
    )
    return decision


def check_base_drift(
    cluster: repo.Cluster, reader: ClusterReader, *, store: PromotionStore, now: float
) -> Drift:
    found = reader.base_image()
    drift = Drift(
        cluster=cluster.name,
        expected=str(cluster.base_image),
        actual=found.base_os_container_image if found else "",
        release_version=found.release_version if found else "",
        checked_at=now,
        error="" if found else "ConfigMap machine-config-osimageurl not found",
    )
    store.record_drift(drift)
    return drift


def status_rows(
    repository: repo.Repository,
    store: PromotionStore,
    *,
    now: float,
) -> list[Mapping[str, str]]:
    """Per cluster and pool: promoted digest, verification (rollout- or time-based), rollout."""
    rows: list[Mapping[str, str]] = []
    verifications = store.verifications(repository.clusters)
    drift = store.drift()
    for name, cluster in sorted(repository.clusters.items()):
        promoted = store.promoted(name)
        rollouts = store.rollouts(name)
        images = expected_images(repository, name)
        for pool, image in sorted(cluster.pools.items()):
            url = images.get(pool) or (promoted[pool].os_image_url if pool in promoted else "")
            digest = url.rpartition("@")[2] if url else ""
            verification = verifications.get((name, digest)) if digest else None
            rows.append(
                {
                    "cluster": name,
                    "environment": cluster.environment,
                    "pool": pool,
                    "image": image,
                    "digest": digest or "-",
                    "verification": _verification_text(verification, cluster, now=now),
                    "rollout": _rollout_text(rollouts.get(pool), url),
                    "base": _drift_text(drift.get(name)),
                }
            )
    return rows


def _verification_text(
    verification: promotion.Verification | None, cluster: repo.Cluster, *, now: float
) -> str:
    if verification is None:
        return "not verified"
    age = promotion.format_duration(now - verification.verified_at)
    if not verification.healthy:
        return f"failed {age} ago: {verification.message}"
    if verification.method is promotion.VerificationMethod.TIME:
        return f"time-based (no kube access): promoted {age} ago"
    return f"rolled out {age} ago"


def _rollout_text(record: RolloutRecord | None, url: str) -> str:
    if record is None or (url and record.os_image_url != url):
        return "-"
    text = f"{record.phase} {record.updated}/{record.total}"
    return f"{text}: {record.message}" if record.message else text


def _drift_text(drift: Drift | None) -> str:
    if drift is None:
        return "-"
    if drift.error:
        return f"unknown: {drift.error}"
    if drift.drifted:
        return f"DRIFT: cluster runs {drift.actual} ({drift.release_version})"
    return f"matches ({drift.release_version})"
