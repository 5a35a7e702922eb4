"""The gate flow (SPEC section 3): a pull request into env/<environment> -> what merging it gives
(the server's merge ref when it is that merge, else computed; or the conflicting paths), judged
by the rules in force on env/<environment>'s current head (core/promotion_policy.py), never by
the pull request's own -> the core's gate decision over the recorded digests and the upstream
verifications (confirmed live where the upstream has kube access) ->
`layering/gate/<environment>` on the pull request's head -> the gate is kept for re-evaluation
until it passes (then its passing verdict is kept for the pipeline view until the promotion
lands), and a gate pending on a soak is checked again when the soak is over (a scheduled
re-check, not a retry).

Does I/O only through the ports it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pipeline.core import (
    gate,
    ports,
    promotion,
    promotion_policy,
    promotion_request,
    reconcile,
    repo,
    tasks,
)
from pipeline.flows import promotion_inputs


def decide(
    merged: repo.Repository | None,
    *,
    head: repo.Repository,
    environment: str,
    sources: promotion_inputs.Sources,
    now: float,
    conflicts: Sequence[str] = (),
    unrelated: bool = False,
) -> gate.GateDecision:
    """The gate of a pull request from the repository its merge into env/<environment> gives
    (`merged`) under the rules of the branch's current `head`, or from the paths that keep it
    from merging."""
    if merged is None:
        return gate.conflicted(environment, conflicts, unrelated=unrelated)
    rules = promotion_policy.in_force(merged, head=head, environment=environment)
    inputs = promotion_inputs.load(rules.repository, environment, sources)
    decision = gate.decide(
        rules,
        lookups=inputs.lookups,
        verifications=inputs.verifications,
        now=now,
        public_key=inputs.public_key,
    )
    if decision.state is not gate.GateState.FAILURE or not decision.refusals:
        return decision
    # "not verified" while the upstream still rolls the digest out is a wait: pending, decided
    # again when the rollout watch records the verification (it re-checks the watched gates)
    waits = reconcile.waits_of(
        decision.refusals,
        rules.repository,
        verifications=inputs.verifications,
        rolling_out=sources.store.rolling_out(promotion.upstreams(rules.repository, environment)),
    )
    if not waits or not any(w.kind is reconcile.WaitKind.ROLLOUT for w in waits):
        return decision
    ends = [w.until - now for w in waits if w.until is not None]
    return gate.GateDecision(
        gate.GateState.PENDING,
        f"waiting: {waits[0].describe(now)}",
        remaining_seconds=max(0.0, *ends) if ends else 0.0,
        refusals=decision.refusals,
    )


def judge(
    merged: repo.Repository | None,
    *,
    head: repo.Repository,
    head_sha: str,
    environment: str,
    sources: promotion_inputs.Sources,
    reporter: ports.StatusReporter,
    now: float,
    conflicts: Sequence[str] = (),
    unrelated: bool = False,
    target_url: str | None = None,
) -> gate.GateDecision:
    """Decide the gate (`decide`) and post it on the pull request's head."""
    decision = decide(
        merged,
        head=head,
        environment=environment,
        sources=sources,
        now=now,
        conflicts=conflicts,
        unrelated=unrelated,
    )
    reporter.report(head_sha, decision.status(environment, target_url=target_url))
    return decision


def run(
    head_sha: str,
    environment: str,
    pr_number: int,
    *,
    branches: ports.EnvBranches,
    sources: promotion_inputs.Sources,
    reporter: ports.StatusReporter,
    queue: ports.TaskQueue,
    now: Callable[[], float],
    head_ref: str = "",
    requests: ports.PromotionRequests | None = None,
    waits: ports.PromotionWaits | None = None,
) -> dict[str, Any]:
    """ "layering.gate": judge what merging the pull request gives now, and keep watching it
    until it passes. A green promotion pull request (`layering/promote/<environment>`) is
    merged through `requests` when the environment's rules in force allow it (`autoMerge`)."""
    branch = f"env/{environment}"
    merge = branches.pull_request_merge(head_sha, branch=branch, pr_number=pr_number)
    # the rules in force: the branch as it is now (read after the merge: at least as new)
    in_force = branches.at_branch(branch) if merge.repository is not None else None
    decision = decide(
        merge.repository,
        head=in_force or repo.Repository({}, {}),
        environment=environment,
        sources=sources,
        now=now(),
        conflicts=merge.conflicts,
        unrelated=merge.unrelated,
    )
    store = sources.store
    verdict = gate.WatchedGate(
        head_sha,
        environment,
        pr_number,
        head_ref,
        state=decision.state.value,
        description=decision.description,
    )
    # watched (or not) before the status is out: whoever sees the status sees the store agree.
    # The new verdict is stored before the old one goes: the pipeline view always has one
    if decision.state is gate.GateState.SUCCESS:
        store.record_gate_pass(verdict)
        store.unwatch_gate(environment, pr_number)
    else:
        store.watch_gate(verdict)
        store.forget_gate_pass(environment, pr_number)
    reporter.report(head_sha, decision.status(environment))
    if decision.recheck_after is not None and not _waits_for_rollout_only(decision):
        queue.send(
            tasks.Gate(head_sha, environment, pr_number, head_ref).call(
                countdown=decision.recheck_after
            )
        )
    merged = (
        requests is not None
        and in_force is not None
        and decision.state is gate.GateState.SUCCESS
        and promotion_request.environment_of(head_ref) == environment
        and _ours(waits, environment, pr_number=pr_number, head_sha=head_sha)
        and promotion_request.auto_merge(in_force, environment)
        and requests.merge(pr_number, head_sha=head_sha)
    )
    return {
        "state": decision.state.value,
        "description": decision.description,
        "merge_sha": merge.commit_sha,
        "merge_source": merge.source,
        "auto_merged": merged,
    }


def _waits_for_rollout_only(decision: gate.GateDecision) -> bool:
    """A pending gate with no soak time left to count: the rollout watch's re-check of the
    watched gates decides it again, a countdown would only poll."""
    return (
        decision.state is gate.GateState.PENDING
        and decision.remaining_seconds <= 0.0
        and any(refusal.kind is promotion.RefusalKind.UNVERIFIED for refusal in decision.refusals)
    )


def _ours(
    waits: ports.PromotionWaits | None, environment: str, *, pr_number: int, head_sha: str
) -> bool:
    """Whether pull request `pr_number` at `head_sha` is the promotion the service itself
    opened (its post-push record): a branch merely named `layering/promote/<environment>`, in
    a fork or pushed by a person, is never merged by the service."""
    return waits is not None and any(
        record.pull_request == pr_number and record.commit_sha == head_sha
        for record in waits.post_pushes(environment)
    )


def recheck_watched(store: ports.PromotionStore, queue: ports.TaskQueue) -> None:
    """Every watched gate decided again: after a promotion or a rollout, a verification it
    waits for may have changed."""
    for watched in store.watched_gates():
        queue.send(
            tasks.Gate(
                watched.head_sha, watched.environment, watched.pr_number, watched.head_ref
            ).call()
        )
