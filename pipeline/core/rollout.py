"""Where a MachineConfigPool stands for a promoted image (SPEC section 7): the pool object and
the osImageURL of the rendered config it targets -> Updating (updated/total), Updated, or
Degraded with the MCO's message. No I/O: the kube adapter reads the objects."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pipeline.core import commit_status

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

    def status(self, cluster: str, pool: str) -> commit_status.Status:
        """`layering/rollout/<cluster>` for one pool."""
        context = commit_status.rollout_context(cluster)
        if self.phase is Phase.UPDATED:
            return commit_status.Status(
                context, "success", f"{pool}: {self.updated}/{self.total} machines updated"
            )
        if self.phase is Phase.DEGRADED:
            return commit_status.Status(context, "failure", f"{pool} degraded: {self.message}")
        return commit_status.Status(
            context,
            "pending",
            f"{pool}: {self.updated}/{self.total} machines updated"
            + (f" ({self.message})" if self.message else ""),
        )


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
