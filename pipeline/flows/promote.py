"""The promote flow (SPEC sections 6, 7): a push to env/<environment> -> the plan at the branch's
current head (the digests the builds recorded, checked against the registry; upstream
verifications from the store, confirmed live where the upstream has kube access) -> one commit
pushed, or nothing -> `layering/promote/<cluster>` statuses on the pushed head, the Promoted
records and the time-based verifications of clusters without kube -> follow-ups: a rollout
watch for every kube cluster the commit changes, and a re-check of every watched gate.

The rules are the head's own: the gate judged the merge that brought them under the rules
before it, and branch protection requires the gate. Every push is planned, the pipeline's own
promotion commits included (their messages prove nothing): a head that already holds what the
pipeline renders commits nothing.

`promote` is shared by "layering.promote" (through `run`, which adds the follow-ups) and
`layering promote`. Does I/O only through the ports it is given. Safe to repeat: an applied
plan commits nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.core import ports, promotion, promotion_commit, promotion_report, repo, tasks
from pipeline.flows import gate as gate_flow
from pipeline.flows import promotion_inputs


@dataclass(frozen=True)
class PromotionOutcome:
    plan: promotion.PromotionPlan | None  # None when the branch had nothing to plan
    commit_sha: str | None  # the promotion commit pushed, None when nothing was committed
    head_sha: str
    attempts: int
    repository: repo.Repository | None = None  # the model the plan was made from

    def clusters_to_watch(self) -> list[str]:
        if self.plan is None or self.commit_sha is None or self.repository is None:
            return []
        return promotion_report.clusters_to_watch(self.plan, self.repository)

    def summary(self) -> dict[str, Any]:
        """What "layering.promote" returns."""
        return {
            "commit_sha": self.commit_sha,
            "head_sha": self.head_sha,
            "attempts": self.attempts,
            "refusals": [str(r) for r in self.plan.refusals] if self.plan else [],
        }


def decide(
    repository: repo.Repository,
    *,
    environment: str,
    source_commit: str,
    sources: promotion_inputs.Sources,
    now: float,
) -> promotion.PromotionPlan:
    """Load the digests and upstream verifications the plan needs, and plan."""
    inputs = promotion_inputs.load(repository, environment, sources)
    return promotion.plan(
        repository,
        environment=environment,
        source_commit=source_commit,
        lookups=inputs.lookups,
        verifications=inputs.verifications,
        now=now,
    )


def promote(
    commit_sha: str,
    environment: str,
    *,
    writer: ports.BranchWriter,
    sources: promotion_inputs.Sources,
    reporter: ports.StatusReporter,
    now: Callable[[], float],
    target_url: str | None = None,
) -> PromotionOutcome:
    """Promote env/<environment> at its current head (commit_sha is the pushed head that
    asked for it; statuses go there)."""
    plans: list[promotion.PromotionPlan] = []
    models: list[repo.Repository] = []

    def change_for(head: str, repository: repo.Repository) -> promotion_commit.Change | None:
        # asked again at the new head after a push race: the last plan is the one pushed
        models.append(repository)
        plan = decide(
            repository,
            environment=environment,
            source_commit=head,
            sources=sources,
            now=now(),
        )
        plans.append(plan)
        return promotion_commit.change_of(plan)

    result = writer.write(f"env/{environment}", change_for)
    plan = plans[-1] if plans else None
    if plan is not None:
        for status in promotion_report.promote_statuses(plan, target_url=target_url):
            reporter.report(commit_sha, status)
        if not plan.refused:
            _record(models[-1], plan, result, store=sources.store, now=now)
    return PromotionOutcome(
        plan, result.commit_sha, result.head_sha, result.attempts, models[-1] if models else None
    )


def _record(
    repository: repo.Repository,
    plan: promotion.PromotionPlan,
    result: promotion_commit.WriteResult,
    *,
    store: ports.PromotionStore,
    now: Callable[[], float],
) -> None:
    """What each pool now runs, and the time-based verifications, as of the commit pushed (or
    the head that already had it)."""
    commit = result.commit_sha or result.head_sha
    for promoted in promotion_report.promoted_records(plan, commit_sha=commit, now=now()):
        store.record_promoted(promoted)
    for cluster, pool in promotion_report.removed_pools(plan):
        store.forget_promoted(cluster, pool)
    for proven in promotion_report.time_verifications(
        repository, plan, commit_sha=commit, now=now()
    ):
        store.record_verification(proven)


def run(
    commit_sha: str,
    environment: str,
    *,
    writer: ports.BranchWriter,
    sources: promotion_inputs.Sources,
    reporter: ports.StatusReporter,
    queue: ports.TaskQueue,
    now: Callable[[], float],
) -> dict[str, Any]:
    """ "layering.promote": promote, then watch the rollouts of the commit and re-check the
    watched gates (a time-based verification may have let one pass)."""
    outcome = promote(
        commit_sha,
        environment,
        writer=writer,
        sources=sources,
        reporter=reporter,
        now=now,
    )
    if outcome.commit_sha is not None:
        for cluster in outcome.clusters_to_watch():
            queue.send(tasks.WatchRollout(outcome.commit_sha, environment, cluster).call())
    gate_flow.recheck_watched(sources.store, queue)
    return outcome.summary()
