"""Promotion as reconciliation, as data (issue 11): which refusals of a plan are WAITS that end
by themselves (a build of a needed key queued or running, a soak not over, an upstream rollout
in progress) and which need a person (a failed or missing build, a base mismatch, a refused
digest, an unmanaged MachineConfig); the `layering/promote/<cluster>` statuses of a plan that
only waits (`pending`, with what it waits for and when); what an environment waiting is
recorded as (EnvironmentWait), and when that wait is over. No I/O: the promote flow loads the
inputs, flows/reconcile.py triggers the re-runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pipeline.core import (
    commit_status,
    content_address,
    promotion,
    promotion_report,
    repo,
    rollout,
    verification,
)


class WaitKind(StrEnum):
    BUILDING = "building"  # a build of the needed key is queued or running
    SOAKING = "soaking"  # verified upstream, the soak is not over
    ROLLOUT = "rollout"  # the digest is rolling out upstream


@dataclass(frozen=True)
class BuildUnderway:
    """A build of `build_key` that is queued or running (the oldest such record)."""

    build_key: str
    state: str  # "queued" | "running"
    since: float  # when its record was created


@dataclass(frozen=True)
class Wait:
    """A pool that cannot be promoted yet, for a reason that ends without anyone acting."""

    cluster: str
    pool: str
    image: str
    kind: WaitKind
    build_key: str = ""
    upstream: str = ""
    digest: str = ""
    since: float = 0.0  # BUILDING: when the build was queued
    until: float | None = None  # SOAKING: when the soak is over

    def describe(self, now: float) -> str:
        """One short line: what is waited for and the expected time."""
        if self.kind is WaitKind.BUILDING:
            age = promotion.format_duration(max(0.0, now - self.since))
            return (
                f"{self.cluster}/{self.pool} waits for the build of {self.image} "
                f"({content_address.tag(self.build_key)[:12]}), underway for {age}"
            )
        named = f"{self.image}@sha256:{commit_status.short_digest(self.digest)}"
        if self.kind is WaitKind.SOAKING and self.until is not None:
            left = promotion.format_duration(max(0.0, self.until - now))
            return f"{self.cluster}/{self.pool}: {named} soaking on {self.upstream}, {left} left"
        return f"{self.cluster}/{self.pool}: {named} rolling out on {self.upstream}"


@dataclass(frozen=True)
class Reconciliation:
    """A plan split into what it waits for and what needs a person."""

    plan: promotion.PromotionPlan
    waits: tuple[Wait, ...] = ()
    refusals: tuple[promotion.Refusal, ...] = ()
    soak_seconds: float = 0.0  # the longest soak of the plan's clusters (what /metrics shows)

    @property
    def waiting(self) -> bool:
        """Only waits: nothing is wrong, the promotion runs by itself when they end."""
        return bool(self.waits) and not self.refusals


def reconcile(
    plan: promotion.PromotionPlan,
    repository: repo.Repository,
    *,
    lookups: Mapping[tuple[str, str], promotion.DigestLookup],
    verifications: Mapping[tuple[str, str], verification.Verification],
    underway: Mapping[str, BuildUnderway],
    rolling_out: Collection[tuple[str, str]] = (),
) -> Reconciliation:
    """Split `plan`'s refusals. `underway`: build key -> its build queued or running;
    `rolling_out`: (cluster, digest) rollouts in progress upstream."""
    keys = {
        (target.cluster, target.pool): target.build_key
        for target in promotion.targets(repository, plan.environment)
    }
    waits: list[Wait] = []
    refusals: list[promotion.Refusal] = []
    for refusal in plan.refusals:
        wait = _wait(
            refusal,
            repository,
            build_key=keys.get((refusal.cluster, refusal.pool), ""),
            lookups=lookups,
            verifications=verifications,
            underway=underway,
            rolling_out=rolling_out,
        )
        if wait is None:
            refusals.append(refusal)
        else:
            waits.append(wait)
    soak = max(
        (
            repository.clusters[name].soak_seconds
            for name in plan.clusters
            if name in repository.clusters
        ),
        default=0,
    )
    return Reconciliation(plan, tuple(waits), tuple(refusals), float(soak))


def rollouts_in_progress(records: Iterable[rollout.RolloutRecord]) -> set[tuple[str, str]]:
    """(cluster, digest) of the rollouts still Updating among the stored records (one per
    pool, the last state seen). One that timed out or ended Degraded is not: the watch
    recorded a failed verification for it, and a person must act."""
    return {
        (record.cluster, verification.digest_of(record.os_image_url))
        for record in records
        if record.phase == rollout.Phase.UPDATING.value
    }


def waits_of(
    refusals: Sequence[promotion.Refusal],
    repository: repo.Repository,
    *,
    verifications: Mapping[tuple[str, str], verification.Verification],
    rolling_out: Collection[tuple[str, str]],
) -> list[Wait] | None:
    """The gate's view: every refusal as a wait on a soak or an upstream rollout, or None
    when one of them needs a person (the gate sees no builds underway: it judges digests
    already built)."""
    found: list[Wait] = []
    for refusal in refusals:
        wait = _wait(
            refusal,
            repository,
            build_key="",
            lookups={},
            verifications=verifications,
            underway={},
            rolling_out=rolling_out,
        )
        if wait is None:
            return None
        found.append(wait)
    return found


def _wait(
    refusal: promotion.Refusal,
    repository: repo.Repository,
    *,
    build_key: str,
    lookups: Mapping[tuple[str, str], promotion.DigestLookup],
    verifications: Mapping[tuple[str, str], verification.Verification],
    underway: Mapping[str, BuildUnderway],
    rolling_out: Collection[tuple[str, str]],
) -> Wait | None:
    cluster = repository.clusters.get(refusal.cluster)
    if cluster is None:
        return None
    where = (refusal.cluster, refusal.pool, refusal.image)
    if refusal.kind is promotion.RefusalKind.MISSING:
        lookup = lookups.get((refusal.image, refusal.cluster))
        building = underway.get(build_key)
        # only "not built (yet)": a failed build or a refused digest needs a person
        if (
            building is None
            or lookup is None
            or lookup.build_key != build_key
            or lookup.digest is not None
            or lookup.failure
            or lookup.refused
        ):
            return None
        return Wait(*where, WaitKind.BUILDING, build_key=build_key, since=building.since)
    upstream = cluster.promotes_from or ""
    if refusal.kind is promotion.RefusalKind.SOAKING:
        proven = verifications.get((upstream, refusal.digest))
        if proven is None:
            return None
        until = proven.verified_at + cluster.soak_seconds
        return Wait(*where, WaitKind.SOAKING, upstream=upstream, digest=refusal.digest, until=until)
    if refusal.kind is promotion.RefusalKind.UNVERIFIED and (
        (upstream, refusal.digest) in rolling_out
        and (upstream, refusal.digest) not in verifications
    ):
        return Wait(*where, WaitKind.ROLLOUT, upstream=upstream, digest=refusal.digest)
    return None


def statuses(
    reconciliation: Reconciliation, *, now: float, target_url: str | None = None
) -> list[commit_status.Status]:
    """`layering/promote/<cluster>` for every cluster: `failure` for what needs a person,
    `pending` (what and until when) for a plan that only waits, else the plan's own."""
    plan = reconciliation.plan
    if reconciliation.refusals or not reconciliation.waits:
        kept = dataclasses.replace(plan, refusals=reconciliation.refusals)
        return promotion_report.promote_statuses(kept, target_url=target_url)
    first = reconciliation.waits[0]
    found: list[commit_status.Status] = []
    for cluster in plan.clusters:
        own = [wait for wait in reconciliation.waits if wait.cluster == cluster]
        if own:
            more = f" (+{len(own) - 1} more)" if len(own) > 1 else ""
            text = f"waiting{more}: {own[0].describe(now)}; promotes by itself then"
        else:
            text = f"waiting for {first.describe(now)}; nothing committed yet"
        found.append(
            commit_status.Status(
                commit_status.promote_context(cluster), "pending", text, target_url
            )
        )
    return found


@dataclass(frozen=True)
class EnvironmentWait:
    """What an environment waits for, kept until its promotion runs again: the builds whose
    end triggers it, and when a timed wait (a soak) is over."""

    environment: str
    commit_sha: str  # where its statuses go: the pushed head that asked
    build_keys: tuple[str, ...] = ()
    due: float | None = None  # the earliest end of a timed wait
    recorded_at: float = 0.0
    upstreams: tuple[str, ...] = ()  # clusters whose rollout's end (verification) triggers it
    # a downstream promotion (pull-request mode) bringing env/<from_upstream>'s content: the
    # sweep runs "layering.promote_downstream" for it, not "layering.promote"
    from_upstream: str = ""
    # the environment's soak: a wait much longer than it is worth an alert (deploy/components/
    # monitoring)
    soak_seconds: float = 0.0

    @property
    def slot(self) -> str:
        """Where the wait is kept: one per environment, and one per downstream promotion."""
        return downstream_slot(self.environment, self.from_upstream)

    def to_json(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "build_keys": list(self.build_keys),
            "upstreams": list(self.upstreams),
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> EnvironmentWait:
        return cls(
            environment=str(document["environment"]),
            commit_sha=str(document["commit_sha"]),
            build_keys=tuple(str(key) for key in document.get("build_keys", ())),
            due=None if document.get("due") is None else float(document["due"]),
            recorded_at=float(document.get("recorded_at", 0.0)),
            upstreams=tuple(str(name) for name in document.get("upstreams", ())),
            from_upstream=str(document.get("from_upstream", "")),
            soak_seconds=float(document.get("soak_seconds", 0.0)),
        )


def downstream_slot(environment: str, from_upstream: str = "") -> str:
    return f"{environment}<-{from_upstream}" if from_upstream else environment


def environment_wait(
    reconciliation: Reconciliation, *, commit_sha: str, now: float
) -> EnvironmentWait:
    waits = reconciliation.waits
    ends = [wait.until for wait in waits if wait.until is not None]
    return EnvironmentWait(
        environment=reconciliation.plan.environment,
        commit_sha=commit_sha,
        build_keys=tuple(sorted({w.build_key for w in waits if w.kind is WaitKind.BUILDING})),
        due=min(ends) if ends else None,
        recorded_at=now,
        upstreams=tuple(sorted({w.upstream for w in waits if w.kind is WaitKind.ROLLOUT})),
        soak_seconds=reconciliation.soak_seconds,
    )


def wait_over(
    wait: EnvironmentWait, *, underway: Collection[str], now: float, recheck_seconds: float
) -> bool:
    """Whether a recorded wait has ended (or its trigger may have been lost): a build it
    waits for is no longer underway, its timed wait is due, or a wait with neither (an
    upstream rollout) has not been looked at for `recheck_seconds`."""
    if any(key not in underway for key in wait.build_keys):
        return True
    if wait.due is not None:
        return wait.due <= now
    return not wait.build_keys and wait.recorded_at + recheck_seconds <= now


def swept(wait: EnvironmentWait, *, now: float, interval: float) -> EnvironmentWait:
    """A wait the sweep has just promoted again: due once more an interval from now, should
    that run be lost too (its builds are over: nothing else to trigger it)."""
    return dataclasses.replace(wait, build_keys=(), due=now + interval, recorded_at=now)


def waiting_on(waits: Sequence[EnvironmentWait], build_key: str) -> list[EnvironmentWait]:
    """The environments whose promotion waits for a build of `build_key`."""
    return [wait for wait in waits if build_key in wait.build_keys]


def waiting_on_rollout(waits: Sequence[EnvironmentWait], cluster: str) -> list[EnvironmentWait]:
    """The environments whose promotion waits for a rollout on `cluster` to be verified."""
    return [wait for wait in waits if cluster in wait.upstreams]
