"""Promotion to the next environment (issue 11 item 2, pull-request mode): a digest becomes
eligible for env/<downstream> once it is verified on the upstream cluster its clusters
`promotesFrom` and soaked there. Does I/O only through the ports it is given.

- `trigger`: after a verification is recorded on a cluster of env/<upstream> (the rollout
  watch's success, or the promote flow's time-based verifications), queue
  "layering.promote_downstream" for every environment promoting from it (read from the
  upstream branch's repository).
- `run`: that task. The writer (adapters/promotion_requests.py `merging`) starts from
  env/<downstream>'s head merged with env/<upstream>'s head, so the pull request brings the
  upstream content; the plan is the promote flow's, computed on that merged repository. A plan
  that waits for the soak is run again at its end (a countdown); nothing to change closes a
  stale pull request; a conflicting merge opens none and posts `failure` naming the paths
  (core/downstream.MergeConflict). The gate then judges the pull request like any other into
  env/<downstream>, and auto-merge applies where `autoMerge` allows.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from typing import Any

from pipeline.core import (
    commit_status,
    downstream,
    ports,
    promotion,
    promotion_commit,
    reconcile,
    repo,
    tasks,
)
from pipeline.flows import promotion_inputs

log = logging.getLogger(__name__)

# a soak's countdown lands this long after its end: the plan then no longer sees it soaking
SOAK_MARGIN_SECONDS = 0.5


def trigger(
    repository: repo.Repository,
    environment: str,
    queue: ports.TaskQueue,
    *,
    clusters: Iterable[str] | None = None,
) -> list[str]:
    """Queue the promotions of the environments promoting from `clusters` (by default every
    cluster of `environment`), read from env/<environment>'s `repository`; returns them."""
    if clusters is None:
        found = downstream.downstream_of_environment(repository, environment)
    else:
        found = [e for e in downstream.downstream_of(repository, clusters) if e != environment]
    for name in found:
        queue.send(tasks.PromoteDownstream(name, environment).call())
    return found


def run(
    environment: str,
    upstream: str,
    *,
    writer: ports.BranchWriter,
    sources: promotion_inputs.Sources,
    reporter: ports.StatusReporter,
    queue: ports.TaskQueue,
    now: Callable[[], float],
    target_url: str | None = None,
    waits: ports.PromotionWaits | None = None,
) -> dict[str, Any]:
    """ "layering.promote_downstream": open, update or close env/<environment>'s promotion pull
    request carrying env/<upstream>'s content (`writer` merges it in; see the docstring)."""
    decided: list[reconcile.Reconciliation] = []

    def change_for(head: str, repository: repo.Repository) -> promotion_commit.Change | None:
        inputs = promotion_inputs.load(repository, environment, sources)
        plan = promotion.plan(
            repository,
            environment=environment,
            source_commit=head,
            lookups=inputs.lookups,
            verifications=inputs.verifications,
            now=now(),
            public_key=inputs.public_key,
        )
        decision = reconcile.reconcile(
            plan,
            repository,
            lookups=inputs.lookups,
            verifications=inputs.verifications,
            underway={},
        )
        decided.append(decision)
        return promotion_commit.change_of(plan)

    try:
        result = writer.write(f"env/{environment}", change_for)
    except downstream.MergeConflict as exc:
        log.warning("downstream promotion of %s from %s: %s", environment, upstream, exc)
        for cluster in exc.clusters:
            reporter.report(
                exc.head_sha,
                commit_status.Status(
                    commit_status.promote_context(cluster), "failure", str(exc), target_url
                ),
            )
        return {"environment": environment, "conflicts": list(exc.conflicts), "error": str(exc)}
    found: dict[str, Any] = {
        "environment": environment,
        "upstream": upstream,
        "commit_sha": result.commit_sha,
        "pull_request": result.pull_request,
    }
    decision = decided[-1] if decided else None
    slot = reconcile.downstream_slot(environment, upstream)
    if decision is not None and decision.waiting:
        wait = dataclasses.replace(
            reconcile.environment_wait(decision, commit_sha=result.head_sha, now=now()),
            from_upstream=upstream,
        )
        found["waits"] = [f"{w.cluster}/{w.pool}: {w.kind.value}" for w in decision.waits]
        # kept where the sweep finds it: a lost countdown is run again within one interval
        if waits is not None:
            waits.record_wait(wait)
        for status in reconcile.statuses(decision, now=now(), target_url=target_url):
            reporter.report(result.head_sha, status)
        if wait.due is not None:
            # the soak ends: eligible then, and this runs again by itself
            again = tasks.PromoteDownstream(environment, upstream)
            queue.send(again.call(countdown=max(0.0, wait.due - now()) + SOAK_MARGIN_SECONDS))
    elif waits is not None:
        waits.clear_wait(slot)
    if decision is not None and decision.refusals:
        found["refusals"] = [str(refusal) for refusal in decision.refusals]
    return found
