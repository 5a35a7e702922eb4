from __future__ import annotations

from typing import Any

import pytest

from pipeline.core import rollout
from tests import crd

URL = "registry.example.com/layering/firewalld@sha256:" + "c" * 64
OLD = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "a" * 64


def pool(
    *,
    target: str = "rendered-worker-2",
    current: str = "rendered-worker-1",
    machines: int = 3,
    updated: int = 0,
    conditions: tuple[tuple[str, str, str], ...] = (),
) -> dict[str, Any]:
    return {
        "apiVersion": "machineconfiguration.openshift.io/v1",
        "kind": "MachineConfigPool",
        "metadata": {"name": "worker"},
        "spec": {"configuration": {"name": target}},
        "status": {
            "configuration": {"name": current},
            "machineCount": machines,
            "updatedMachineCount": updated,
            "readyMachineCount": updated,
            "unavailableMachineCount": 0,
            "degradedMachineCount": 0,
            "conditions": [
                {"type": kind, "status": value, "message": message}
                for kind, value, message in conditions
            ],
        },
    }


CASES = [
    (
        "not rendered yet",
        pool(),
        OLD,
        rollout.RolloutState(
            rollout.Phase.UPDATING, 0, 3, "waiting for the MCO to render the config"
        ),
    ),
    ("one of three", pool(updated=1), URL, rollout.RolloutState(rollout.Phase.UPDATING, 1, 3)),
    (
        "all updated, status not switched",
        pool(updated=3),
        URL,
        rollout.RolloutState(rollout.Phase.UPDATING, 3, 3),
    ),
    (
        "done",
        pool(current="rendered-worker-2", updated=3),
        URL,
        rollout.RolloutState(rollout.Phase.UPDATED, 3, 3),
    ),
    (
        "empty pool",
        pool(current="rendered-worker-2", machines=0),
        URL,
        rollout.RolloutState(rollout.Phase.UPDATED, 0, 0),
    ),
    (
        "done but with another image",
        pool(current="rendered-worker-2", updated=3),
        OLD,
        rollout.RolloutState(
            rollout.Phase.UPDATING, 0, 3, "waiting for the MCO to render the config"
        ),
    ),
    (
        "node degraded",
        pool(
            updated=1,
            conditions=(
                ("Updating", "True", ""),
                ("NodeDegraded", "True", 'Node worker-1 is reporting: "failed to rebase"'),
            ),
        ),
        URL,
        rollout.RolloutState(
            rollout.Phase.DEGRADED,
            1,
            3,
            'NodeDegraded: Node worker-1 is reporting: "failed to rebase"',
        ),
    ),
    (
        "render degraded",
        pool(conditions=(("RenderDegraded", "True", "Failed to render"),)),
        URL,
        rollout.RolloutState(rollout.Phase.DEGRADED, 0, 3, "RenderDegraded: Failed to render"),
    ),
    (
        "degraded false is fine",
        pool(
            current="rendered-worker-2",
            updated=3,
            conditions=(("Degraded", "False", ""), ("NodeDegraded", "False", "")),
        ),
        URL,
        rollout.RolloutState(rollout.Phase.UPDATED, 3, 3),
    ),
    (
        "no rendered config readable",
        pool(current="rendered-worker-2", updated=3),
        None,
        rollout.RolloutState(
            rollout.Phase.UPDATING, 0, 3, "waiting for the MCO to render the config"
        ),
    ),
]


@pytest.mark.parametrize(
    ("name", "pool_object", "rendered", "expected"), CASES, ids=[case[0] for case in CASES]
)
def test_rollout_state(
    name: str, pool_object: dict[str, Any], rendered: str | None, expected: rollout.RolloutState
) -> None:
    assert crd.machineconfigpool_errors(pool_object) == []
    assert (
        rollout.state(pool_object, rendered_os_image_url=rendered, expected_os_image_url=URL)
        == expected
    )


@pytest.mark.parametrize(
    ("state", "status_state", "text"),
    [
        (
            rollout.RolloutState(rollout.Phase.UPDATING, 1, 3),
            "pending",
            "worker: 1/3 machines updated",
        ),
        (
            rollout.RolloutState(rollout.Phase.UPDATED, 3, 3),
            "success",
            "worker: 3/3 machines updated",
        ),
        (
            rollout.RolloutState(rollout.Phase.DEGRADED, 1, 3, "NodeDegraded: " + "x" * 300),
            "failure",
            "worker degraded: NodeDegraded: xxx",
        ),
    ],
)
def test_rollout_status(state: rollout.RolloutState, status_state: str, text: str) -> None:
    status = state.status("nonprod", "worker")
    assert status.context == "layering/rollout/nonprod"
    assert status.state == status_state
    assert status.description.startswith(text)
    assert len(status.description) <= 140


def test_empty_object_is_updating() -> None:
    assert rollout.state({}, rendered_os_image_url=None, expected_os_image_url=URL).phase is (
        rollout.Phase.UPDATING
    )
