"""The rules a pull request into env/<environment> is judged by (issue 10): which clusters are in
the environment, what each promotes from, how long it soaks and which has kube access come from
the branch's current head, never from the pull request. A pull request that changes them is
judged by the rules already in force (and the gate says so); they apply once it is merged.

A cluster new to the environment (added, or moved in from another) has no rules in force: its
own apply, but they may not be weaker than those of the environment's clusters (same upstream,
at least the same soak).
A pull request may not edit the MachineConfigs (or the ClusterImagePolicy) the pipeline writes
either: after the merge, whatever it wrote would run until the promotion commit replaces it.
No I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pipeline.core import image_policy, promotion, repo


@dataclass(frozen=True)
class InForce:
    """A merge result with the rules of the branch head applied: `repository` is what the
    gate plans over; `changed` names the clusters whose rules the pull request changes."""

    repository: repo.Repository
    environment: str
    changed: tuple[str, ...] = ()
    refusals: tuple[promotion.Refusal, ...] = ()
    head_machineconfigs: Mapping[str, bytes] = dataclasses.field(default_factory=dict)

    @property
    def notice(self) -> str:
        """What the gate's description says first when the pull request changes the rules
        (short: the refusal after it must still fit in 140 characters)."""
        if not self.changed:
            return ""
        return f"judged by env/{self.environment}'s promotesFrom/soak, not this PR's"


def own(repository: repo.Repository, environment: str) -> InForce:
    """The rules of a branch head for that same head (what a promotion after the merge uses:
    the gate checked the merge under the rules before it, branch protection required it)."""
    return in_force(repository, head=repository, environment=environment)


def in_force(merged: repo.Repository, *, head: repo.Repository, environment: str) -> InForce:
    """`merged` (a pull request's merge into env/<environment>) under the rules of `head`."""
    clusters = dict(merged.clusters)
    changed: list[str] = []
    relevant = {c.name for c in head.clusters_in(environment)} | promotion.upstreams(
        head, environment
    )
    for name, cluster in merged.clusters.items():
        current = head.clusters.get(name)
        if current is None or (cluster.environment == environment != current.environment):
            continue  # new in the environment: its own rules, checked by _new_clusters
        ruled = dataclasses.replace(
            cluster,
            environment=current.environment,
            promotes_from=current.promotes_from,
            soak_seconds=current.soak_seconds,
            kube_context=current.kube_context,
        )
        if ruled != cluster and name in relevant:
            changed.append(name)
        clusters[name] = ruled
    refusals = _new_clusters(merged, head, environment) + _unreadable(merged, head, environment)
    return InForce(
        dataclasses.replace(merged, clusters=clusters),
        environment,
        tuple(sorted(changed)),
        tuple(refusals),
        head.machineconfigs,
    )


def _new_clusters(
    merged: repo.Repository, head: repo.Repository, environment: str
) -> list[promotion.Refusal]:
    current = head.clusters_in(environment)
    rules = {(c.promotes_from, c.soak_seconds) for c in current}
    refusals: list[promotion.Refusal] = []
    for cluster in merged.clusters_in(environment):
        if cluster.name in {c.name for c in current} or not rules:
            continue  # in force already; or the environment starts here: nothing to weaken
        if any(
            cluster.promotes_from == upstream and cluster.soak_seconds >= soak
            for upstream, soak in rules
        ):
            continue
        refusals.append(
            promotion.Refusal(
                cluster.name,
                "-",
                "-",
                f"{cluster.path} is new in env/{environment} with weaker rules "
                f"({_rule(cluster.promotes_from, cluster.soak_seconds)}) than those in force "
                f"there ({'; '.join(_rule(u, s) for u, s in sorted(rules, key=str))})",
                kind=promotion.RefusalKind.CONFIGURATION,
            )
        )
    return refusals


def _unreadable(
    merged: repo.Repository, head: repo.Repository, environment: str
) -> list[promotion.Refusal]:
    """A cluster of the environment whose cluster.yaml the pull request breaks: it would drop
    out of the environment (and out of the gate's sight) without a word."""
    return [
        promotion.Refusal(
            cluster.name,
            "-",
            "-",
            f"configuration problem: {problem}",
            kind=promotion.RefusalKind.CONFIGURATION,
        )
        for cluster in head.clusters_in(environment)
        if cluster.name not in merged.clusters
        for problem in merged.problems_for(cluster.path)
    ]


def _rule(upstream: str | None, soak: float) -> str:
    if upstream is None:
        return "promotesFrom: none"
    return f"promotesFrom: {upstream}, soak: {promotion.format_duration(soak)}"


def edited(rules: InForce, steps: Sequence[promotion.Step]) -> list[promotion.Refusal]:
    """The pipeline's own MachineConfigs the pull request edits (any it would write again or
    remove): until the promotion commit, the edited file is what the cluster gets."""
    return [
        promotion.Refusal(
            step.cluster,
            step.pool,
            "-",
            f"{step.path}: this pull request edits a MachineConfig the pipeline writes; "
            "drop that change (the promotion writes it)",
            kind=promotion.RefusalKind.OVERRIDE,
        )
        for step in steps
        if isinstance(step, promotion.WriteFile | promotion.DeleteFile)
        and rules.repository.machineconfigs.get(step.path)
        != rules.head_machineconfigs.get(step.path)
    ]


def edited_policies(
    rules: InForce, policies: Sequence[image_policy.PolicyFile]
) -> list[promotion.Refusal]:
    """The pipeline's ClusterImagePolicies the pull request edits or removes: until the
    promotion commit, the nodes would trust whatever key it wrote."""
    return [
        promotion.Refusal(
            policy.cluster,
            "-",
            "-",
            f"{policy.path}: this pull request edits the ClusterImagePolicy the pipeline writes; "
            "drop that change (the promotion writes it)",
            kind=promotion.RefusalKind.OVERRIDE,
        )
        for policy in policies
        if rules.repository.machineconfigs.get(policy.path)
        != rules.head_machineconfigs.get(policy.path)
    ]
