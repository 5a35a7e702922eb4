"""The promotion plan decided as data (SPEC sections 3, 6, 7): the repository at an environment
branch's head, the digest each pool's build recorded and the verifications upstream -> a
PromotionPlan of file steps (write, delete, skipped) or refusals. A MachineConfig the pipeline
did not write that would set a pool's image is refused too (machineconfig_overrides.py). No
I/O: the promote flow gathers digests and verifications through its ports and acts on the plan.

The gate of a pull request is in gate.py (with the rules in force: promotion_policy.py), the
upstream checks in promotion_upstream.py, the promotion commit in promotion_commit.py, and what
a promotion reports and records in promotion_report.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from pipeline.core import (
    content_address,
    image_policy,
    machineconfig,
    machineconfig_overrides,
    promotion_upstream,
    repo,
    verification,
)

format_duration = promotion_upstream.format_duration


@dataclass(frozen=True)
class Target:
    """One pool of one cluster and the image build that should boot it."""

    cluster: str
    pool: str
    image: str
    build_key: str
    image_repository: str  # <registry>/<image>
    base_image: str

    @property
    def tag_reference(self) -> str:
        return f"{self.image_repository}:{content_address.tag(self.build_key)}"


@dataclass(frozen=True)
class DigestLookup:
    """The digest a build recorded for a build key, checked against the registry; or why not."""

    build_key: str
    digest: str | None = None
    failure: str = ""  # the build failed: its reason; empty when simply not built (yet)
    refused: str = ""  # recorded, but the registry disagrees (tag moved, manifest gone)
    unsigned: str = ""  # a signing key is set and the digest is not signed by it: why

    @property
    def problem(self) -> str:
        if self.digest is not None:
            return ""
        if self.refused:
            return self.refused
        if self.failure:
            return f"build failed: {self.failure}"
        return "not built: no build recorded this build key"


@dataclass(frozen=True)
class WriteFile:
    cluster: str
    pool: str
    path: str
    content: bytes
    os_image: machineconfig.OsImage


@dataclass(frozen=True)
class DeleteFile:
    cluster: str
    pool: str
    path: str


@dataclass(frozen=True)
class Skipped:
    cluster: str
    pool: str
    path: str
    reason: str


Step = WriteFile | DeleteFile | Skipped


class RefusalKind(StrEnum):
    CONFIGURATION = "configuration"
    MISSING = "missing"  # not built, build failed, the lookup is missing, or the tag moved
    BASE_DIFFERS = promotion_upstream.BASE_DIFFERS
    UNVERIFIED = promotion_upstream.UNVERIFIED  # not verified upstream, or failed there
    SOAKING = promotion_upstream.SOAKING  # verified upstream, soak time not over
    OVERRIDE = "override"  # a MachineConfig the pipeline did not write sets osImageURL
    UNSIGNED = "unsigned"  # not signed by the signing key (or by another key)


@dataclass(frozen=True)
class Refusal:
    """Why a pool cannot be promoted; one refusal stops the whole promotion."""

    cluster: str
    pool: str
    image: str
    reason: str
    digest: str = ""
    kind: RefusalKind = RefusalKind.MISSING

    def __str__(self) -> str:
        return f"{self.cluster}/{self.pool} ({self.image}): {self.reason}"


@dataclass(frozen=True)
class PromotionPlan:
    environment: str
    source_commit: str
    clusters: tuple[str, ...]
    steps: tuple[Step, ...] = ()
    refusals: tuple[Refusal, ...] = ()
    # ClusterImagePolicy files to write (their bytes differ), in the commit of the steps
    policies: tuple[image_policy.PolicyFile, ...] = ()

    @property
    def refused(self) -> bool:
        return bool(self.refusals)

    @property
    def changes(self) -> tuple[WriteFile | DeleteFile, ...]:
        if self.refused:
            return ()
        return tuple(s for s in self.steps if isinstance(s, WriteFile | DeleteFile))

    def steps_for(self, cluster: str) -> list[Step]:
        return [step for step in self.steps if step.cluster == cluster]

    def refusals_for(self, cluster: str) -> list[Refusal]:
        return [refusal for refusal in self.refusals if refusal.cluster == cluster]


def targets(repository: repo.Repository, environment: str) -> list[Target]:
    """Every pool of every cluster of `environment`, with the build key its image has there.

    A pool whose image or tree id is unknown has no target; `plan` refuses it with a reason.
    """
    found: list[Target] = []
    for cluster in repository.clusters_in(environment):
        for pool, image_name in sorted(cluster.pools.items()):
            target = _target(repository, cluster, pool, image_name)
            if target is not None:
                found.append(target)
    return found


def _target(
    repository: repo.Repository, cluster: repo.Cluster, pool: str, image_name: str
) -> Target | None:
    image = repository.images.get(image_name)
    if image is None or image.tree_id is None:
        return None
    return Target(
        cluster=cluster.name,
        pool=pool,
        image=image_name,
        build_key=content_address.build_key(
            tree_id=image.tree_id,
            base_digest=cluster.base_digest,
            build_args=image.settings.build_args,
        ),
        image_repository=cluster.image_repository(image_name),
        base_image=str(cluster.base_image),
    )


def managed_paths(repository: repo.Repository, cluster: str) -> dict[str, str]:
    """Managed MachineConfig files of a cluster -> the pool each one sets: labelled as ours
    and at the path the pipeline writes for that pool (a label alone proves nothing)."""
    prefix = f"{repo.CLUSTERS_DIR}/{cluster}/{repo.MACHINECONFIGS_DIR}/"
    found: dict[str, str] = {}
    for path, raw in sorted(repository.machineconfigs.items()):
        if not path.startswith(prefix):
            continue
        document = machineconfig.parse_managed(raw)
        if document is None:
            continue
        labels = document.get("metadata", {}).get("labels", {})
        pool = str(labels.get(machineconfig.ROLE_LABEL, ""))
        if pool and path == machineconfig.path_for(cluster, pool):
            found[path] = pool
    return found


def upstreams(repository: repo.Repository, environment: str) -> set[str]:
    """The clusters whose verifications the clusters of `environment` wait for."""
    return {
        cluster.promotes_from
        for cluster in repository.clusters_in(environment)
        if cluster.promotes_from is not None
    }


def plan(
    repository: repo.Repository,
    *,
    environment: str,
    source_commit: str,
    lookups: Mapping[tuple[str, str], DigestLookup],
    verifications: Mapping[tuple[str, str], verification.Verification],
    now: float,
    public_key: bytes | None = None,
) -> PromotionPlan:
    """What promoting `environment` at `source_commit` writes and deletes, or why it cannot.

    `lookups` is keyed by (image, cluster), `verifications` by (cluster, digest). With the
    signing `public_key`, each cluster's ClusterImagePolicy is written with its pools' files.
    """
    clusters = repository.clusters_in(environment)
    steps: list[Step] = []
    refusals: list[Refusal] = []
    policies: list[image_policy.PolicyFile] = []
    for cluster in clusters:
        refusals.extend(_problems(repository, cluster))
        desired: set[str] = set()
        for pool, image_name in sorted(cluster.pools.items()):
            path = machineconfig.path_for(cluster.name, pool)
            desired.add(path)
            outcome = _pool_step(
                repository,
                cluster,
                pool,
                image_name,
                source_commit=source_commit,
                lookups=lookups,
                verifications=verifications,
                now=now,
            )
            if isinstance(outcome, Refusal):
                refusals.append(outcome)
            else:
                steps.append(outcome)
        if public_key is not None:
            policy = _policy(repository, cluster, public_key)
            if isinstance(policy, Refusal):
                refusals.append(policy)
            elif policy is not None:
                policies.append(policy)
        managed = managed_paths(repository, cluster.name)
        steps += [DeleteFile(cluster.name, managed[p], p) for p in managed if p not in desired]
        refusals += [
            Refusal(cluster.name, "-", "-", str(found), kind=RefusalKind.OVERRIDE)
            for found in machineconfig_overrides.found(
                repository, cluster.name, ours=desired | set(managed)
            )
        ]
    return PromotionPlan(
        environment=environment,
        source_commit=source_commit,
        clusters=tuple(cluster.name for cluster in clusters),
        steps=tuple(steps),
        refusals=tuple(refusals),
        policies=tuple(policies),
    )


def _policy(
    repository: repo.Repository, cluster: repo.Cluster, public_key: bytes
) -> image_policy.PolicyFile | Refusal | None:
    """The cluster's ClusterImagePolicy when the file there differs; None when it is the same,
    or when no pool boots a layered image (a policy left from earlier pools stays: it only
    holds repositories no pool boots from to the key)."""
    if not cluster.pools:
        return None
    problem = image_policy.problem(cluster, public_key=public_key)
    if problem is not None:
        return Refusal(cluster.name, "-", "-", problem, kind=RefusalKind.CONFIGURATION)
    found = image_policy.file_for(cluster, public_key=public_key)
    return None if repository.machineconfigs.get(found.path) == found.content else found


def _problems(repository: repo.Repository, cluster: repo.Cluster) -> list[Refusal]:
    # a MachineConfig left unread (over its size cap) could set osImageURL unseen: refuse
    paths = [
        f"{repo.CLUSTERS_DIR}/{cluster.name}/{repo.CLUSTER_FILE}",
        f"{repo.CLUSTERS_DIR}/{cluster.name}/{repo.MACHINECONFIGS_DIR}/",
    ] + [f"{repo.IMAGES_DIR}/{image}/" for image in sorted(set(cluster.pools.values()))]
    return [
        Refusal(
            cluster.name,
            "-",
            "-",
            f"configuration problem: {problem}",
            kind=RefusalKind.CONFIGURATION,
        )
        for path in paths
        for problem in repository.problems_for(path)
    ]


def _pool_step(
    repository: repo.Repository,
    cluster: repo.Cluster,
    pool: str,
    image_name: str,
    *,
    source_commit: str,
    lookups: Mapping[tuple[str, str], DigestLookup],
    verifications: Mapping[tuple[str, str], verification.Verification],
    now: float,
) -> Step | Refusal:
    target = _target(repository, cluster, pool, image_name)
    if target is None:
        reason = (
            f"image {image_name!r} does not exist under images/"
            if image_name not in repository.images
            else f"the Git tree id of images/{image_name} is unknown"
        )
        return Refusal(cluster.name, pool, image_name, reason)
    lookup = lookups.get((image_name, cluster.name))
    if lookup is None or lookup.build_key != target.build_key:
        return Refusal(
            cluster.name,
            pool,
            image_name,
            f"no lookup for build key {content_address.tag(target.build_key)}; "
            f"check {target.tag_reference}",
        )
    if lookup.digest is None:
        return Refusal(
            cluster.name,
            pool,
            image_name,
            f"{lookup.problem} ({target.tag_reference})",
        )
    digest = lookup.digest
    if lookup.unsigned:
        return Refusal(
            cluster.name, pool, image_name, lookup.unsigned, digest, RefusalKind.UNSIGNED
        )
    unproven = promotion_upstream.problem(
        repository,
        cluster,
        image=image_name,
        digest=digest,
        verifications=verifications,
        now=now,
    )
    if unproven is not None:
        return Refusal(
            cluster.name, pool, image_name, unproven.reason, digest, RefusalKind(unproven.kind)
        )
    path = machineconfig.path_for(cluster.name, pool)
    os_image = machineconfig.OsImage(
        image=image_name,
        repository=target.image_repository,
        digest=digest,
        build_key=target.build_key,
        source_commit=source_commit,
        base_image=target.base_image,
    )
    existing = repository.machineconfigs.get(path)
    if existing is not None and _kept(pool, os_image, existing):
        return Skipped(cluster.name, pool, path, "unchanged")
    content = machineconfig.render_yaml(pool=pool, os_image=os_image)
    return WriteFile(cluster.name, pool, path, content, os_image)


def _kept(pool: str, os_image: machineconfig.OsImage, existing: bytes) -> bool:
    """Whether the file there is exactly what the pipeline renders for this image, promoted
    from whichever commit it names: the same digest stays attributed to the commit that first
    promoted it. Only the exact bytes count, never what a file (or a commit) claims."""
    document = machineconfig.parse_managed(existing)
    annotations = (document or {}).get("metadata", {}).get("annotations") or {}
    source = annotations.get(machineconfig.ANNOTATION_SOURCE_COMMIT)
    if not isinstance(source, str) or not source:
        return False
    kept = dataclasses.replace(os_image, source_commit=source)
    return machineconfig.render_yaml(pool=pool, os_image=kept) == existing


def first_refusal(refusals: Sequence[Refusal]) -> str:
    """The first refusal, with the count in front so a cut description still says it."""
    if len(refusals) == 1:
        return str(refusals[0])
    return f"{len(refusals)} pools blocked; {refusals[0]}"
