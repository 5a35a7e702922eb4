"""The promotion plan decided as data (SPEC sections 3, 6, 7): the repository at an environment
branch's head, the digests found for each pool's build key and the verifications recorded
upstream -> a PromotionPlan of file steps (write, delete, skipped) or refusals. No I/O: the
promote flow gathers digests and verifications through its ports and acts on the plan.

The gate of a pull request is in gate.py, the promotion commit in promotion_commit.py, and what
a promotion reports and records in promotion_report.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from pipeline.core import commit_status, content_address, machineconfig, repo, verification


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
    """What the registry (or the build record) says about a build key: a digest, or why not."""

    build_key: str
    digest: str | None = None
    failure: str = ""  # the build failed: its reason; empty when simply not built (yet)

    @property
    def problem(self) -> str:
        if self.digest is not None:
            return ""
        if self.failure:
            return f"build failed: {self.failure}"
        return "not built: no image under the build key's tag"


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
    MISSING = "missing"  # not built, build failed, or the lookup is missing
    BASE_DIFFERS = "base-differs"
    UNVERIFIED = "unverified"  # not verified upstream, or failed there
    SOAKING = "soaking"  # verified upstream, soak time not over


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
    """Managed MachineConfig files of a cluster -> the pool each one sets."""
    prefix = f"{repo.CLUSTERS_DIR}/{cluster}/{repo.MACHINECONFIGS_DIR}/"
    found: dict[str, str] = {}
    for path, raw in sorted(repository.machineconfigs.items()):
        if not path.startswith(prefix):
            continue
        document = machineconfig.parse_managed(raw)
        if document is None:
            continue
        labels = document.get("metadata", {}).get("labels", {})
        found[path] = str(labels.get(machineconfig.ROLE_LABEL, ""))
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
) -> PromotionPlan:
    """What promoting `environment` at `source_commit` writes and deletes, or why it cannot.

    `lookups` is keyed by (image, cluster), `verifications` by (cluster, digest).
    """
    clusters = repository.clusters_in(environment)
    steps: list[Step] = []
    refusals: list[Refusal] = []
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
        for path, pool in managed_paths(repository, cluster.name).items():
            if path not in desired:
                steps.append(DeleteFile(cluster.name, pool, path))
    return PromotionPlan(
        environment=environment,
        source_commit=source_commit,
        clusters=tuple(cluster.name for cluster in clusters),
        steps=tuple(steps),
        refusals=tuple(refusals),
    )


def _problems(repository: repo.Repository, cluster: repo.Cluster) -> list[Refusal]:
    paths = [f"{repo.CLUSTERS_DIR}/{cluster.name}/{repo.CLUSTER_FILE}"] + [
        f"{repo.IMAGES_DIR}/{image}/" for image in sorted(set(cluster.pools.values()))
    ]
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
    if cluster.promotes_from is not None:
        refusal = _upstream_refusal(
            repository, cluster, target, digest, verifications=verifications, now=now
        )
        if refusal is not None:
            return refusal
    path = machineconfig.path_for(cluster.name, pool)
    os_image = machineconfig.OsImage(
        image=image_name,
        repository=target.image_repository,
        digest=digest,
        build_key=target.build_key,
        source_commit=_kept_source_commit(repository, path, target, digest) or source_commit,
        base_image=target.base_image,
    )
    content = machineconfig.render_yaml(pool=pool, os_image=os_image)
    if repository.machineconfigs.get(path) == content:
        return Skipped(cluster.name, pool, path, "unchanged")
    return WriteFile(cluster.name, pool, path, content, os_image)


def _kept_source_commit(
    repository: repo.Repository, path: str, target: Target, digest: str
) -> str | None:
    """The same digest stays attributed to the commit that first promoted it: same bytes."""
    existing = repository.machineconfigs.get(path)
    document = machineconfig.parse_managed(existing) if existing is not None else None
    if document is None:
        return None
    annotations = document.get("metadata", {}).get("annotations") or {}
    same = (
        document.get("spec", {}).get("osImageURL") == f"{target.image_repository}@{digest}"
        and annotations.get(machineconfig.ANNOTATION_BUILD_KEY) == target.build_key
        and annotations.get(machineconfig.ANNOTATION_BASE_IMAGE) == target.base_image
    )
    source = annotations.get(machineconfig.ANNOTATION_SOURCE_COMMIT)
    return source if same and isinstance(source, str) and source else None


def _upstream_refusal(
    repository: repo.Repository,
    cluster: repo.Cluster,
    target: Target,
    digest: str,
    *,
    verifications: Mapping[tuple[str, str], verification.Verification],
    now: float,
) -> Refusal | None:
    upstream_name = cluster.promotes_from
    assert upstream_name is not None
    upstream = repository.clusters.get(upstream_name)
    refuse = _refuser(cluster.name, target.pool, target.image, digest)
    named = f"{target.image}@sha256:{commit_status.short_digest(digest)}"
    if upstream is None:
        return refuse(f"promotesFrom names unknown cluster {upstream_name!r}")
    if upstream.base_digest != cluster.base_digest:
        return refuse(
            f"base image differs from {upstream.name}'s "
            f"({commit_status.short_digest(cluster.base_digest)} vs "
            f"{commit_status.short_digest(upstream.base_digest)}), "
            "so the build key differs: the tested bits cannot be promoted; align baseImage",
            RefusalKind.BASE_DIFFERS,
        )
    proven = verifications.get((upstream.name, digest))
    if proven is None:
        return refuse(f"{named} is not verified on {upstream.name}")
    if not proven.healthy:
        message = f": {proven.message}" if proven.message else ""
        return refuse(f"{named} failed on {upstream.name}{message}")
    remaining = proven.verified_at + cluster.soak_seconds - now
    if remaining > 0:
        return refuse(
            f"{named} soaking on {upstream.name}: "
            f"{format_duration(remaining)} of {format_duration(cluster.soak_seconds)} left",
            RefusalKind.SOAKING,
        )
    return None


def _refuser(cluster: str, pool: str, image: str, digest: str) -> Callable[..., Refusal]:
    def refuse(reason: str, kind: RefusalKind = RefusalKind.UNVERIFIED) -> Refusal:
        return Refusal(cluster, pool, image, reason, digest, kind)

    return refuse


def format_duration(seconds: float) -> str:
    """3725 -> '1h2m5s'; rounds up so a remaining wait never shows as 0s."""
    total = max(0, int(-(-seconds // 1)))
    if total == 0:
        return "0s"
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    return "".join(f"{value}{unit}" for value, unit in parts if value)


def first_refusal(refusals: Sequence[Refusal]) -> str:
    """The first refusal, with the count in front so a cut description still says it."""
    if len(refusals) == 1:
        return str(refusals[0])
    return f"{len(refusals)} pools blocked; {refusals[0]}"
