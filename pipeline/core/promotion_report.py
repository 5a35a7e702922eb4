"""What a promotion plan reports and leaves behind, as data: the `layering/promote/<cluster>`
statuses, the clusters whose rollouts to watch, one summary line per step, the Promoted record
of each pool written (and the pools removed), and the time-based verifications of clusters
without kube access (SPEC section 7). No I/O: the promote flow posts and stores them."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.core import commit_status, machineconfig, promotion, repo, verification


def promote_statuses(
    plan: promotion.PromotionPlan, *, target_url: str | None = None
) -> list[commit_status.Status]:
    """`layering/promote/<cluster>` for every cluster of the plan."""
    statuses: list[commit_status.Status] = []
    first = plan.refusals[0] if plan.refusals else None
    for cluster in plan.clusters:
        context = commit_status.promote_context(cluster)
        own = plan.refusals_for(cluster)
        if own:
            description = f"not promoted: {promotion.first_refusal(own)}"
            statuses.append(commit_status.Status(context, "failure", description, target_url))
        elif first is not None:
            description = f"not promoted: blocked by {first}; nothing committed"
            statuses.append(commit_status.Status(context, "failure", description, target_url))
        else:
            steps = plan.steps_for(cluster)
            written = sum(isinstance(step, promotion.WriteFile) for step in steps)
            deleted = sum(isinstance(step, promotion.DeleteFile) for step in steps)
            unchanged = sum(isinstance(step, promotion.Skipped) for step in steps)
            description = f"{written} written, {deleted} removed, {unchanged} unchanged"
            if any(policy.cluster == cluster for policy in plan.policies):
                description += "; ClusterImagePolicy written"
            statuses.append(commit_status.Status(context, "success", description, target_url))
    return statuses


def clusters_to_watch(plan: promotion.PromotionPlan, repository: repo.Repository) -> list[str]:
    """The clusters with kube access whose pools the plan changes: their rollouts are watched
    once its commit is pushed."""
    changed = {step.cluster for step in plan.changes}
    return [
        name
        for name in sorted(changed)
        if name in repository.clusters and repository.clusters[name].kube_context
    ]


def diff_summary(plan: promotion.PromotionPlan) -> Sequence[str]:
    """One line per step, for the CLI and logs."""
    lines: list[str] = []
    for step in plan.steps:
        if isinstance(step, promotion.WriteFile):
            lines.append(f"write  {step.path}  {step.os_image.url}")
        elif isinstance(step, promotion.DeleteFile):
            lines.append(f"delete {step.path}")
        else:
            lines.append(f"keep   {step.path}  ({step.reason})")
    lines += [
        f"write  {policy.path}  ClusterImagePolicy ({', '.join(policy.scopes)})"
        for policy in plan.policies
    ]
    lines += [f"REFUSED {refusal}" for refusal in plan.refusals]
    return lines


def promoted_records(
    plan: promotion.PromotionPlan, *, commit_sha: str, now: float
) -> list[verification.Promoted]:
    """What each pool the plan writes is promoted to, as of `commit_sha`."""
    return [
        verification.Promoted(
            cluster=step.cluster,
            pool=step.pool,
            image=step.os_image.image,
            digest=step.os_image.digest,
            os_image_url=step.os_image.url,
            build_key=step.os_image.build_key,
            commit_sha=commit_sha,
            promoted_at=now,
        )
        for step in plan.changes
        if isinstance(step, promotion.WriteFile)
    ]


def removed_pools(plan: promotion.PromotionPlan) -> list[tuple[str, str]]:
    """(cluster, pool) of every MachineConfig the plan deletes: back to the stock image."""
    return [
        (step.cluster, step.pool) for step in plan.changes if isinstance(step, promotion.DeleteFile)
    ]


def time_verifications(
    repository: repo.Repository,
    plan: promotion.PromotionPlan,
    *,
    commit_sha: str,
    now: float,
) -> list[verification.Verification]:
    """Clusters without kube: a promoted digest counts from its promotion commit (SPEC 7).
    Unchanged pools count too (their MachineConfig as it is at the head)."""
    found: list[verification.Verification] = []
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
        found.append(
            verification.Verification(
                cluster=step.cluster,
                digest=verification.digest_of(str(document["spec"]["osImageURL"])),
                verified_at=now,
                method=verification.VerificationMethod.TIME,
                commit_sha=commit_sha,
            )
        )
    return found
