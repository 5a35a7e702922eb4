"""Where a MachineConfigPool stands for a promoted image (SPEC section 7): the pool object and
the osImageURL of the rendered config it targets -> Updating (updated/total), Updated, or
Degraded with the MCO's message; what a pool runs now (Running, read afresh by the prod gate);
what a watch records and reports from those states (rollout records, verifications,
`layering/rollout/<cluster>` statuses, the timeout). No I/O: the kube adapter reads the
objects, the rollout watch flow acts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pipeline.core import commit_status, machineconfig, promotion, repo, verification

DEGRADED_CONDITIONS = ("NodeDegraded", "RenderDegraded", "Degraded")


class Phase(StrEnum):
    UPDATING = "Updating"
    UPDATED = "Updated"
    DEGRADED = "Degraded"


@dataclass(frozen=True)
class RolloutState:
    phase: Phase
    updated: int = 0
    total: int = 0
    message: str = ""

    @property
    def done(self) -> bool:
        return self.phase is not Phase.UPDATING

    def status(
        self, cluster: str, pool: str, *, target_url: str | None = None
    ) -> commit_status.Status:
        """`layering/rollout/<cluster>` for one pool."""
        context = commit_status.rollout_context(cluster)
        if self.phase is Phase.UPDATED:
            return commit_status.Status(
                context,
                "success",
                f"{pool}: {self.updated}/{self.total} machines updated",
                target_url,
            )
        if self.phase is Phase.DEGRADED:
            return commit_status.Status(
                context, "failure", f"{pool} degraded: {self.message}", target_url
            )
        return commit_status.Status(
            context,
            "pending",
            f"{pool}: {self.updated}/{self.total} machines updated"
            + (f" ({self.message})" if self.message else ""),
            target_url,
        )


@dataclass(frozen=True)
class RolloutRecord:
    """The last state seen of one pool's rollout of a promotion commit (the store keeps it)."""

    cluster: str
    pool: str
    commit_sha: str
    os_image_url: str
    phase: str
    updated: int
    total: int
    message: str
    observed_at: float


def _conditions(pool: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    conditions = (pool.get("status") or {}).get("conditions") or []
    return [c for c in conditions if isinstance(c, Mapping)]


def _count(status: Mapping[str, Any], key: str) -> int:
    value = status.get(key)
    return value if isinstance(value, int) else 0


def state(
    pool: Mapping[str, Any],
    *,
    rendered_os_image_url: str | None,
    expected_os_image_url: str,
) -> RolloutState:
    """RolloutState of `pool` (a MachineConfigPool object as the API returns it).

    `rendered_os_image_url` is spec.osImageURL of the MachineConfig named by the pool's
    spec.configuration.name (None when that config cannot be read yet).
    """
    status = pool.get("status") or {}
    total = _count(status, "machineCount")
    updated = _count(status, "updatedMachineCount")
    for kind in DEGRADED_CONDITIONS:
        for condition in _conditions(pool):
            if condition.get("type") == kind and condition.get("status") == "True":
                message = str(condition.get("message") or condition.get("reason") or kind)
                return RolloutState(Phase.DEGRADED, updated, total, f"{kind}: {message}")
    target = ((pool.get("spec") or {}).get("configuration") or {}).get("name")
    current = (status.get("configuration") or {}).get("name")
    if rendered_os_image_url != expected_os_image_url:
        # The MCO has not rendered a config with the promoted image yet: no machine has it.
        return RolloutState(Phase.UPDATING, 0, total, "waiting for the MCO to render the config")
    if target and target == current and total == updated:
        return RolloutState(Phase.UPDATED, updated, total)
    # updatedMachineCount counts machines already on the target; status.configuration switches
    # only once all are (MCO pkg/controller/node/status.go).
    return RolloutState(Phase.UPDATING, updated, total)


@dataclass(frozen=True)
class Running:
    """What a pool runs now, read live: the osImageURL of the rendered config it targets and
    its state there (Updated: every machine on it; Degraded; or still Updating)."""

    pool: str
    os_image_url: str | None
    state: RolloutState


def running(pool: Mapping[str, Any], *, rendered_os_image_url: str | None) -> Running:
    """`Running` of `pool` (a MachineConfigPool object) whose target rendered config sets
    `rendered_os_image_url` (None: that config cannot be read)."""
    name = str((pool.get("metadata") or {}).get("name") or "")
    if rendered_os_image_url is None:
        unread = RolloutState(Phase.UPDATING, message="its rendered config cannot be read")
        return Running(name, None, unread)
    settled = state(
        pool,
        rendered_os_image_url=rendered_os_image_url,
        expected_os_image_url=rendered_os_image_url,
    )
    return Running(name, rendered_os_image_url, settled)


def record(
    state: RolloutState,
    *,
    cluster: str,
    pool: str,
    commit_sha: str,
    os_image_url: str,
    observed_at: float,
) -> RolloutRecord:
    return RolloutRecord(
        cluster=cluster,
        pool=pool,
        commit_sha=commit_sha,
        os_image_url=os_image_url,
        phase=state.phase.value,
        updated=state.updated,
        total=state.total,
        message=state.message,
        observed_at=observed_at,
    )


def expected_images(repository: repo.Repository, cluster: str) -> dict[str, str]:
    """pool -> osImageURL for the managed MachineConfigs of a cluster at a commit."""
    found: dict[str, str] = {}
    for path, pool in promotion.managed_paths(repository, cluster).items():
        document = machineconfig.parse_managed(repository.machineconfigs[path])
        if document is not None and pool:
            found[pool] = str(document["spec"]["osImageURL"])
    return found


def verification_of(
    state: RolloutState, *, cluster: str, os_image_url: str, commit_sha: str, now: float
) -> verification.Verification:
    """A finished rollout proves the digest on the cluster (Updated) or shows it failing there
    (Degraded, with the MCO's message)."""
    return verification.Verification(
        cluster=cluster,
        digest=verification.digest_of(os_image_url),
        verified_at=now,
        method=verification.VerificationMethod.ROLLOUT,
        healthy=state.phase is Phase.UPDATED,
        message=state.message,
        commit_sha=commit_sha,
    )


def rolled_out(
    cluster: str, states: Mapping[str, RolloutState], *, target_url: str | None = None
) -> commit_status.Status:
    """`layering/rollout/<cluster>` once every pool is Updated."""
    total = sum(state.total for state in states.values())
    return commit_status.Status(
        commit_status.rollout_context(cluster),
        "success",
        f"{len(states)} pool(s) rolled out: {total} machines on the promoted image",
        target_url,
    )


@dataclass(frozen=True)
class TimedOut:
    """The rollout timeout reached with pools still Updating: their digests count as failed on
    the cluster (a gate must not wait on them for ever), and the status says which pool
    stalled where."""

    status: commit_status.Status
    verifications: tuple[verification.Verification, ...]


def timed_out(
    repository: repo.Repository,
    *,
    commit_sha: str,
    cluster: str,
    states: Mapping[str, RolloutState],
    waited: float,
    now: float,
    target_url: str | None = None,
) -> TimedOut | None:
    """For the pools of `cluster` at the promotion commit (`repository`) still Updating after
    `waited` seconds; None when none is."""
    stalled = {pool: state for pool, state in states.items() if not state.done}
    if not stalled:
        return None
    pool, state = sorted(stalled.items())[0]
    message = f"rollout timed out after {promotion.format_duration(waited)}: {pool} at " + (
        f"{state.updated}/{state.total} machines updated"
        + (f" ({state.message})" if state.message else "")
    )
    images = expected_images(repository, cluster)
    return TimedOut(
        commit_status.Status(
            commit_status.rollout_context(cluster), "failure", message, target_url
        ),
        tuple(
            verification.Verification(
                cluster=cluster,
                digest=verification.digest_of(images[name]),
                verified_at=now,
                method=verification.VerificationMethod.ROLLOUT,
                healthy=False,
                message=message,
                commit_sha=commit_sha,
            )
            for name in sorted(stalled.keys() & images.keys())
        ),
    )


class NextStep(StrEnum):
    """What follows one watch of a cluster's pools."""

    DONE = "done"  # every pool Updated, or one Degraded
    WATCH_AGAIN = "watch-again"  # still Updating, the rollout timeout not reached
    TIMED_OUT = "timed-out"  # still Updating at the rollout timeout


def watch_window(
    *, started_at: float, now: float, watch_seconds: float, timeout_seconds: float
) -> float:
    """How long one watch lasts: `watch_seconds` at most, never past the rollout timeout (but
    at least a second, so a late run still reads the pools once)."""
    return max(1.0, min(watch_seconds, started_at + timeout_seconds - now))


def next_step(
    states: Mapping[str, RolloutState], *, started_at: float, now: float, timeout_seconds: float
) -> NextStep:
    if not any(state.phase is Phase.UPDATING for state in states.values()):
        return NextStep.DONE
    if now - started_at < timeout_seconds:
        return NextStep.WATCH_AGAIN
    return NextStep.TIMED_OUT
