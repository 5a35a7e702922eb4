"""The promotion commit as data: what a plan changes on its env branch (Change), the one commit's
message and trailers, and what writing a change to a branch gave (WriteResult). No I/O:
adapters/branch_writer.py writes the Change.

Trailers describe a promotion for people and tools; they never make a commit the pipeline's
own (anyone can write them into a merge message). Nothing skips a push to env/<environment>
for its message: the promote flow plans every push, and a head that already holds what the
pipeline renders commits nothing (issue 10)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pipeline.core import promotion, repo

TRAILER_IMAGE = "Layering-Image"
TRAILER_DIGEST = "Layering-Digest"
TRAILER_SOURCE_COMMIT = "Layering-Source-Commit"
TRAILER_BUILD_KEY = "Layering-Build-Key"
TRAILER_POOL = "Layering-Pool"
TRAILER_REMOVED = "Layering-Removed"
TRAILER_ENVIRONMENT = "Layering-Environment"
TRAILER_IMAGE_POLICY = "Layering-Image-Policy"
# the value is stripped in Python: `:\s*(?P<value>.*?)\s*$` retried `\s*$` from every
# character of a line's blanks, quadratic in a commit message a pull request writes
_TRAILER_LINE = re.compile(r"(?P<key>[A-Za-z0-9-]+):(?P<value>.*)")


@dataclass(frozen=True)
class PoolChange:
    """What a change does to one pool, for people (a promotion pull request's body)."""

    cluster: str
    pool: str
    path: str  # the pool's MachineConfig
    image: str = ""  # empty with digest None: removed, back to the stock image
    digest: str | None = None
    build_key: str = ""
    source_commit: str = ""


@dataclass(frozen=True)
class Change:
    """Files to write (path -> bytes) and delete at a head, and the one commit's message."""

    message: str
    writes: Mapping[str, bytes] = field(default_factory=dict)
    deletes: frozenset[str] = frozenset()
    pools: tuple[PoolChange, ...] = ()  # per pool, in the order of the plan's steps

    @property
    def empty(self) -> bool:
        return not self.writes and not self.deletes


# head commit sha, the repository model at that head -> what to change, or None for nothing
ChangeFor = Callable[[str, repo.Repository], Change | None]


@dataclass(frozen=True)
class WriteResult:
    head_sha: str  # the branch head the final attempt was based on
    commit_sha: str | None  # None: nothing to commit (the change was empty or already there)
    attempts: int
    change: Change | None
    # pull-request mode: the promotion PR into the branch that was opened or updated with the
    # commit (which then sits on layering/promote/<environment>, not on the branch itself)
    pull_request: int | None = None


def change_of(plan: promotion.PromotionPlan) -> Change | None:
    """The commit a plan makes; None when it is refused or has nothing to change. A cluster's
    ClusterImagePolicy goes in the same commit as its MachineConfigs."""
    if plan.refused or not (plan.changes or plan.policies):
        return None
    return Change(
        message=commit_message(plan),
        writes={
            **{s.path: s.content for s in plan.changes if isinstance(s, promotion.WriteFile)},
            **{policy.path: policy.content for policy in plan.policies},
        },
        deletes=frozenset(s.path for s in plan.changes if isinstance(s, promotion.DeleteFile)),
        pools=tuple(_pool_change(step) for step in plan.changes),
    )


def _pool_change(step: promotion.WriteFile | promotion.DeleteFile) -> PoolChange:
    if isinstance(step, promotion.DeleteFile):
        return PoolChange(step.cluster, step.pool, step.path)
    image = step.os_image
    return PoolChange(
        step.cluster,
        step.pool,
        step.path,
        image=image.image,
        digest=image.digest,
        build_key=image.build_key,
        source_commit=image.source_commit,
    )


def commit_message(plan: promotion.PromotionPlan) -> str:
    """One commit per promotion; trailers per pool, in the order of the steps."""
    changes = plan.changes
    written = [step for step in changes if isinstance(step, promotion.WriteFile)]
    removed = [step for step in changes if isinstance(step, promotion.DeleteFile)]
    clusters = sorted({step.cluster for step in changes} | {p.cluster for p in plan.policies})
    subject = (
        f"layering: promote {plan.environment}: {len(written)} MachineConfig(s) written, "
        f"{len(removed)} removed"
    )
    if plan.policies:
        subject += f", {len(plan.policies)} ClusterImagePolicy written"
    body = [f"{step.cluster}/{step.pool}: {step.os_image.url}" for step in written]
    body += [f"{step.cluster}/{step.pool}: removed, back to the stock image" for step in removed]
    body += [
        f"{policy.cluster}: ClusterImagePolicy {policy.path} ({', '.join(policy.scopes)})"
        for policy in plan.policies
    ]
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
    trailers += [(TRAILER_IMAGE_POLICY, policy.cluster) for policy in plan.policies]
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
        match = _TRAILER_LINE.fullmatch(line)
        if match is None:
            return []
        found.append((match.group("key"), match.group("value").strip()))
    return found


def describes_promotion(message: str, environment: str) -> bool:
    """Whether a commit message describes a promotion of `environment` (its trailers say so).
    What a message says, not who wrote it: never decide anything on it."""
    found = dict(trailers(message))
    return TRAILER_SOURCE_COMMIT in found and found.get(TRAILER_ENVIRONMENT) == environment
