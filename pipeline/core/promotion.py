"""The promotion stage decided as data (SPEC sections 3, 6, 7): the repository at an environment
branch's head, the digests found for each pool's build key and the verifications recorded
upstream -> a PromotionPlan of file steps (write, delete, skipped) or refusals; the gate decision
for a pull request into an environment branch; the promotion commit message and its trailers.
No I/O: adapters gather digests and verifications, workers act on the plan."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from pipeline.core import commit_status, content_address, machineconfig, repo

TRAILER_IMAGE = "Layering-Image"
TRAILER_DIGEST = "Layering-Digest"
TRAILER_SOURCE_COMMIT = "Layering-Source-Commit"
TRAILER_BUILD_KEY = "Layering-Build-Key"
TRAILER_POOL = "Layering-Pool"
TRAILER_REMOVED = "Layering-Removed"
TRAILER_ENVIRONMENT = "Layering-Environment"
_TRAILER_LINE = re.compile(r"^(?P<key>[A-Za-z0-9-]+):\s*(?P<value>.*?)\s*$")


class VerificationMethod(StrEnum):
    ROLLOUT = "rollout"  # the pool was watched until Updated with the digest
    TIME = "time"  # no kube access: the promotion commit's age counts (SPEC section 7)


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
class Verification:
    """A digest proven on a cluster at `verified_at` (epoch seconds), or seen failing there."""

    cluster: str
    digest: str
    verified_at: float
    method: VerificationMethod
    healthy: bool = True
    message: str = ""
    commit_sha: str = ""


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


class GateState(StrEnum):
    SUCCESS = "success"
    PENDING = "pending"
    FAILURE = "failure"


@dataclass(frozen=True)
class GateDecision:
    state: GateState
    description: str
    remaining_seconds: float = 0.0  # when pending: soak time still to wait
    refusals: tuple[Refusal, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "description", commit_status.description(self.description))


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


def plan(
    repository: repo.Repository,
    *,
    environment: str,
    source_commit: str,
    lookups: Mapping[tuple[str, str], DigestLookup],
    verifications: Mapping[tuple[str, str], Verification],
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
    verifications: Mapping[tuple[str, str], Verification],
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
    verifications: Mapping[tuple[str, str], Verification],
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
    verification = verifications.get((upstream.name, digest))
    if verification is None:
        return refuse(f"{named} is not verified on {upstream.name}")
    if not verification.healthy:
        message = f": {verification.message}" if verification.message else ""
        return refuse(f"{named} failed on {upstream.name}{message}")
    remaining = verification.verified_at + cluster.soak_seconds - now
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


def gate(
    repository: repo.Repository,
    *,
    environment: str,
    lookups: Mapping[tuple[str, str], DigestLookup],
    verifications: Mapping[tuple[str, str], Verification],
    now: float,
) -> GateDecision:
    """`layering/gate/<environment>` for a pull request whose merge result is `repository`."""
    if not repository.clusters_in(environment):
        return GateDecision(GateState.SUCCESS, f"no cluster in environment {environment}")
    decided = plan(
        repository,
        environment=environment,
        source_commit="0" * 40,
        lookups=lookups,
        verifications=verifications,
        now=now,
    )
    if not decided.refused:
        promoted = sum(1 for step in decided.steps if not isinstance(step, DeleteFile))
        return GateDecision(
            GateState.SUCCESS, f"{promoted} pool(s) verified upstream and soaked; safe to merge"
        )
    soaking = [r for r in decided.refusals if r.kind is RefusalKind.SOAKING]
    if len(soaking) == len(decided.refusals):
        remaining = max(
            _remaining(repository, r, verifications=verifications, now=now) for r in soaking
        )
        return GateDecision(
            GateState.PENDING,
            f"soaking: {format_duration(remaining)} left; {soaking[0]}",
            remaining_seconds=remaining,
            refusals=decided.refusals,
        )
    blocking = [r for r in decided.refusals if r not in soaking]
    return GateDecision(GateState.FAILURE, _first_of(blocking), refusals=decided.refusals)


def conflicted_gate(
    environment: str, paths: Sequence[str], *, unrelated: bool = False
) -> GateDecision:
    """`layering/gate/<environment>` for a pull request that cannot merge cleanly: nothing
    can be said about what it would promote until it is rebased."""
    if unrelated:
        return GateDecision(
            GateState.FAILURE,
            f"no history in common with env/{environment}; "
            f"open the pull request from a branch based on env/{environment}",
        )
    named = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
    return GateDecision(
        GateState.FAILURE,
        f"merge conflicts with env/{environment}"
        + (f" in {named}" if named else "")
        + "; rebase the pull request",
    )


def _first_of(refusals: Sequence[Refusal]) -> str:
    """The first refusal, with the count in front so a cut description still says it."""
    if len(refusals) == 1:
        return str(refusals[0])
    return f"{len(refusals)} pools blocked; {refusals[0]}"


def _remaining(
    repository: repo.Repository,
    refusal: Refusal,
    *,
    verifications: Mapping[tuple[str, str], Verification],
    now: float,
) -> float:
    cluster = repository.clusters[refusal.cluster]
    assert cluster.promotes_from is not None
    verification = verifications[(cluster.promotes_from, refusal.digest)]
    return max(0.0, verification.verified_at + cluster.soak_seconds - now)


def promote_statuses(plan: PromotionPlan) -> list[commit_status.Status]:
    """`layering/promote/<cluster>` for every cluster of the plan."""
    statuses: list[commit_status.Status] = []
    first = plan.refusals[0] if plan.refusals else None
    for cluster in plan.clusters:
        context = commit_status.promote_context(cluster)
        own = plan.refusals_for(cluster)
        if own:
            statuses.append(
                commit_status.Status(context, "failure", f"not promoted: {_first_of(own)}")
            )
        elif first is not None:
            statuses.append(
                commit_status.Status(
                    context, "failure", f"not promoted: blocked by {first}; nothing committed"
                )
            )
        else:
            steps = plan.steps_for(cluster)
            written = sum(isinstance(step, WriteFile) for step in steps)
            deleted = sum(isinstance(step, DeleteFile) for step in steps)
            unchanged = sum(isinstance(step, Skipped) for step in steps)
            statuses.append(
                commit_status.Status(
                    context,
                    "success",
                    f"{written} written, {deleted} removed, {unchanged} unchanged",
                )
            )
    return statuses


def commit_message(plan: PromotionPlan) -> str:
    """One commit per promotion; trailers per pool, in the order of the steps."""
    changes = plan.changes
    written = [step for step in changes if isinstance(step, WriteFile)]
    removed = [step for step in changes if isinstance(step, DeleteFile)]
    clusters = sorted({step.cluster for step in changes})
    subject = (
        f"layering: promote {plan.environment}: {len(written)} MachineConfig(s) written, "
        f"{len(removed)} removed"
    )
    body = [f"{step.cluster}/{step.pool}: {step.os_image.url}" for step in written]
    body += [f"{step.cluster}/{step.pool}: removed, back to the stock image" for step in removed]
    trailers = [
        (TRAILER_ENVIRONMENT, plan.environment),
        (TRAILER_SOURCE_COMMIT, plan.source_commit),
    ]
    for step in written:
        trailers += [
            (TRAILER_POOL, f"{step.cluster}/{step.pool}"),
            (TRAILER_IMAGE, step.os_image.image),
            (TRAILER_DIGEST, step.os_image.digest),
            (TRAILER_BUILD_KEY, step.os_image.build_key),
        ]
    trailers += [(TRAILER_REMOVED, f"{step.cluster}/{step.pool}") for step in removed]
    lines = [subject, "", f"Clusters: {', '.join(clusters)}", "", *body, ""]
    lines += [f"{key}: {value}" for key, value in trailers]
    return "\n".join(lines) + "\n"


def trailers(message: str) -> list[tuple[str, str]]:
    """The trailer block (last paragraph of `Key: value` lines) of a commit message."""
    paragraphs = [p for p in message.strip().split("\n\n") if p.strip()]
    if not paragraphs:
        return []
    found: list[tuple[str, str]] = []
    for line in paragraphs[-1].splitlines():
        match = _TRAILER_LINE.match(line)
        if match is None:
            return []
        found.append((match.group("key"), match.group("value")))
    return found


def is_promotion_commit(message: str, environment: str) -> bool:
    """Whether a pushed head is this pipeline's own promotion commit for `environment`.

    The webhook ignores such pushes. A promotion commit of another environment that arrives by
    fast-forward (env/nonprod merged into env/prod) is not ignored: prod must still promote.
    """
    found = dict(trailers(message))
    return TRAILER_SOURCE_COMMIT in found and found.get(TRAILER_ENVIRONMENT) == environment


def promoted(plan: PromotionPlan) -> Iterable[WriteFile]:
    return (step for step in plan.changes if isinstance(step, WriteFile))


def diff_summary(plan: PromotionPlan) -> Sequence[str]:
    """One line per step, for the CLI and logs."""
    lines: list[str] = []
    for step in plan.steps:
        if isinstance(step, WriteFile):
            lines.append(f"write  {step.path}  {step.os_image.url}")
        elif isinstance(step, DeleteFile):
            lines.append(f"delete {step.path}")
        else:
            lines.append(f"keep   {step.path}  ({step.reason})")
    lines += [f"REFUSED {refusal}" for refusal in plan.refusals]
    return lines
