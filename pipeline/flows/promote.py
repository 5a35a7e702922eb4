"""The promote flow (SPEC sections 6, 7; issue 11): a push to env/<environment> -> the plan at the
branch's current head (the digests the builds recorded, checked against the registry; upstream
verifications from the store, confirmed live where the upstream has kube access) -> one commit
pushed, or nothing -> `layering/promote/<cluster>` statuses on the pushed head, the Promoted
records and the time-based verifications of clusters without kube -> follow-ups: a rollout
watch for every kube cluster the commit changes, and a re-check of every watched gate.

Promotion is reconciliation (core/reconcile.py): a plan that only WAITS (a build of a needed
key queued or running, a soak not over, an upstream rollout) posts `pending` saying what and
until when, commits nothing, and is recorded; it runs again by itself when the wait ends (the
build's report, a countdown at the soak's end, beat's sweep: flows/reconcile.py). `failure`
is left for what needs a person.

The post-push steps are durable (core/post_push.py): their record is written before the push
and removed once the statuses are queued and the watches sent, and a run that finds nothing
to commit completes the records still pending for its environment.

The rules are the head's own: the gate judged the merge that brought them under the rules
before it, and branch protection requires the gate. Every push is planned, the pipeline's own
promotion commits included (their messages prove nothing): a head that already holds what the
pipeline renders commits nothing.

`promote` is shared by "layering.promote" (through `run`, which adds the follow-ups) and
`layering promote`. Does I/O only through the ports it is given. Safe to repeat: an applied
plan commits nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.core import (
    commit_status,
    ports,
    post_push,
    promotion,
    promotion_commit,
    promotion_report,
    reconcile,
    repo,
    tasks,
)
from pipeline.core.errors import PermanentError
from pipeline.flows import downstream as downstream_flow
from pipeline.flows import gate as gate_flow
from pipeline.flows import promotion_inputs

# a soak's countdown lands this long after its end: the plan then no longer sees it soaking
SOAK_MARGIN_SECONDS = 0.5


@dataclass(frozen=True)
class PromotionOutcome:
    plan: promotion.PromotionPlan | None  # None when the branch had nothing to plan
    commit_sha: str | None  # the promotion commit pushed, None when nothing was committed
    head_sha: str
    attempts: int
    repository: repo.Repository | None = None  # the model the plan was made from
    reconciliation: reconcile.Reconciliation | None = None
    # promotions landed whose statuses and rollout watches are still to be done
    landed: tuple[post_push.PostPush, ...] = ()
    pull_request: int | None = None  # pull-request mode: the promotion PR opened or updated

    def clusters_to_watch(self) -> list[str]:
        if self.plan is None or self.commit_sha is None or self.repository is None:
            return []
        return promotion_report.clusters_to_watch(self.plan, self.repository)

    def summary(self) -> dict[str, Any]:
        """What "layering.promote" returns."""
        refusals = self.plan.refusals if self.plan else ()
        if self.reconciliation is not None:
            refusals = self.reconciliation.refusals
        found: dict[str, Any] = {
            "commit_sha": self.commit_sha,
            "head_sha": self.head_sha,
            "attempts": self.attempts,
            "refusals": [str(r) for r in refusals],
        }
        if self.reconciliation is not None and self.reconciliation.waits:
            found["waits"] = [
                f"{w.cluster}/{w.pool}: {w.kind.value}" for w in self.reconciliation.waits
            ]
        if self.pull_request is not None:
            found["pull_request"] = self.pull_request
        return found


def decide(
    repository: repo.Repository,
    *,
    environment: str,
    source_commit: str,
    sources: promotion_inputs.Sources,
    now: float,
) -> promotion.PromotionPlan:
    """Load the digests and upstream verifications the plan needs, and plan."""
    return _reconciled(
        repository, environment=environment, source_commit=source_commit, sources=sources, now=now
    ).plan


def _reconciled(
    repository: repo.Repository,
    *,
    environment: str,
    source_commit: str,
    sources: promotion_inputs.Sources,
    now: float,
    activity: ports.BuildActivity | None = None,
) -> reconcile.Reconciliation:
    inputs = promotion_inputs.load(repository, environment, sources)
    plan = promotion.plan(
        repository,
        environment=environment,
        source_commit=source_commit,
        lookups=inputs.lookups,
        verifications=inputs.verifications,
        now=now,
        public_key=inputs.public_key,
    )
    keys = {target.build_key for target in promotion.targets(repository, environment)}
    return reconcile.reconcile(
        plan,
        repository,
        lookups=inputs.lookups,
        verifications=inputs.verifications,
        underway=activity.underway(keys) if activity is not None and plan.refused else {},
        # an upstream still rolling the digest out: a wait, not "not verified"
        rolling_out=(
            sources.store.rolling_out(promotion.upstreams(repository, environment))
            if plan.refused
            else set()
        ),
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
    activity: ports.BuildActivity | None = None,
    records: ports.PromotionWaits | None = None,
) -> PromotionOutcome:
    """Promote env/<environment> at its current head (commit_sha is the pushed head that
    asked for it; statuses go there). With `records`, the post-push steps of a push are
    recorded before it and returned in `landed` (with those of earlier pushes a run that
    commits nothing finds pending); `run` does them."""
    decided: list[tuple[repo.Repository, reconcile.Reconciliation]] = []
    saved: dict[str, post_push.PostPush] = {}

    def change_for(head: str, repository: repo.Repository) -> promotion_commit.Change | None:
        # asked again at the new head after a push race: the last plan is the one pushed
        at = now()
        decision = _reconciled(
            repository,
            environment=environment,
            source_commit=head,
            sources=sources,
            now=at,
            activity=activity,
        )
        decided.append((repository, decision))
        change = promotion_commit.change_of(decision.plan)
        if records is not None and change is not None and not change.empty:
            # before the push: a worker lost after it leaves this behind, not nothing
            record = post_push.PostPush(
                environment,
                commit_sha,
                head,
                tuple(reconcile.statuses(decision, now=at, target_url=target_url)),
                tuple(promotion_report.clusters_to_watch(decision.plan, repository)),
                created_at=at,
            )
            records.save_post_push(record)
            saved[head] = record
        return change

    try:
        result = writer.write(f"env/{environment}", change_for)
    except PermanentError as exc:
        # e.g. branch protection refusing a direct push: a person must act, and the statuses
        # say what to do (the message names the fix)
        if decided:
            for cluster in decided[-1][1].plan.clusters:
                reporter.report(
                    commit_sha,
                    commit_status.Status(
                        commit_status.promote_context(cluster), "failure", str(exc), target_url
                    ),
                )
        raise
    if not decided:
        return PromotionOutcome(None, result.commit_sha, result.head_sha, result.attempts)
    repository, decision = decided[-1]
    plan = decision.plan
    landed = _landed(records, environment, result, saved) if records is not None else []
    if commit_sha not in {record.status_sha for record in landed}:
        for status in reconcile.statuses(decision, now=now(), target_url=target_url):
            reporter.report(commit_sha, status)
    if not plan.refused:
        _record(repository, plan, result, store=sources.store, now=now)
    return PromotionOutcome(
        plan,
        result.commit_sha,
        result.head_sha,
        result.attempts,
        repository,
        decision,
        tuple(landed),
        result.pull_request,
    )


def _landed(
    records: ports.PromotionWaits,
    environment: str,
    result: promotion_commit.WriteResult,
    saved: dict[str, post_push.PostPush],
) -> list[post_push.PostPush]:
    """The promotions of `environment` that landed and whose post-push steps are to be done
    now: the one just pushed, or (nothing committed: the branch holds what the plan renders)
    those still pending from earlier runs."""
    if result.commit_sha is not None:
        for head in saved:
            if head != result.head_sha:
                records.remove_post_push(environment, head)  # lost a push race: not pushed
        mine = saved.get(result.head_sha)
        if mine is None:
            return []
        mine = dataclasses.replace(
            mine, commit_sha=result.commit_sha, pull_request=result.pull_request
        )
        records.save_post_push(mine)
        # pull-request mode: it lands when the pull request is merged (that push promotes)
        return [] if mine.pull_request is not None else [mine]
    if result.pull_request is not None:
        return []
    found: list[post_push.PostPush] = []
    for record in records.post_pushes(environment):
        commit = post_push.landed_commit(record, head_sha=result.head_sha)
        if commit is None:
            records.remove_post_push(environment, record.base_head)  # never landed
            continue
        found.append(dataclasses.replace(record, commit_sha=commit))
    return found


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
    activity: ports.BuildActivity | None = None,
    waits: ports.PromotionWaits | None = None,
    downstream: bool = False,
) -> dict[str, Any]:
    """ "layering.promote": promote, then watch the rollouts of the commit and re-check the
    watched gates (a time-based verification may have let one pass). With `waits`: the
    post-push steps are durable, and a plan that only waits is recorded and scheduled. With
    `downstream` (pull-request mode): time-based verifications recorded on the branch as it
    is queue the next environments' promotions (flows/downstream.py)."""
    outcome = promote(
        commit_sha,
        environment,
        writer=writer,
        sources=sources,
        reporter=reporter,
        now=now,
        activity=activity,
        records=waits,
    )
    if waits is None:
        if outcome.commit_sha is not None and outcome.pull_request is None:
            for cluster in outcome.clusters_to_watch():
                queue.send(tasks.WatchRollout(outcome.commit_sha, environment, cluster).call())
    else:
        for record in outcome.landed:
            complete(record, reporter=reporter, queue=queue, records=waits)
            if record.pull_request is not None:  # merged: its gate's pass is history
                sources.store.forget_gate_pass(environment, record.pull_request)
        _follow_waits(outcome, commit_sha, environment, waits, activity, queue, now)
    if downstream and _verified_by_time(outcome):
        assert outcome.repository is not None
        downstream_flow.trigger(outcome.repository, environment, queue)
    gate_flow.recheck_watched(sources.store, queue)
    return outcome.summary()


def _verified_by_time(outcome: PromotionOutcome) -> bool:
    """Whether the run recorded time-based verifications of what the branch already holds
    (clusters without kube; those with kube are verified by their rollout watch)."""
    plan, repository = outcome.plan, outcome.repository
    if plan is None or repository is None or plan.refused or outcome.commit_sha is not None:
        return False
    return any(repository.clusters[name].kube_context is None for name in plan.clusters)


def complete(
    record: post_push.PostPush,
    *,
    reporter: ports.StatusReporter,
    queue: ports.TaskQueue,
    records: ports.PromotionWaits,
) -> None:
    """The post-push steps of a landed promotion: its statuses queued, its rollouts watched,
    then its record removed (a run that dies before that leaves it for the next one)."""
    assert record.commit_sha is not None, "a landed promotion names its commit"
    for status in record.statuses:
        reporter.report(record.status_sha, status)
    for cluster in record.clusters:
        queue.send(tasks.WatchRollout(record.commit_sha, record.environment, cluster).call())
    records.remove_post_push(record.environment, record.base_head)


def _follow_waits(
    outcome: PromotionOutcome,
    commit_sha: str,
    environment: str,
    waits: ports.PromotionWaits,
    activity: ports.BuildActivity | None,
    queue: ports.TaskQueue,
    now: Callable[[], float],
) -> None:
    """Record what a plan that only waits waits for (its triggers find it there) and schedule
    the end of a soak; forget the wait of any other plan."""
    decision = outcome.reconciliation
    if decision is None or not decision.waiting:
        waits.clear_wait(environment)
        return
    wait = reconcile.environment_wait(decision, commit_sha=commit_sha, now=now())
    waits.record_wait(wait)
    again = tasks.Promote(commit_sha, environment)
    if wait.due is not None:
        queue.send(again.call(countdown=max(0.0, wait.due - now()) + SOAK_MARGIN_SECONDS))
    elif (
        activity is not None
        and wait.build_keys
        and len(activity.underway(wait.build_keys)) < len(wait.build_keys)
    ):
        # a build that ended between the plan and the record found no wait to trigger
        queue.send(again.call())
