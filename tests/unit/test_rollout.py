from __future__ import annotations

from typing import Any

import pytest

from pipeline.core import commit_status, machineconfig, repo, rollout, verification, yamlfile
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


COMMIT = "7" * 40
DIGEST = "sha256:" + "c" * 64


def promoted_repository(pools: tuple[str, ...] = ("worker", "infra")) -> repo.Repository:
    """nonprod (kube) with a managed MachineConfig per pool, all on the image at URL."""
    os_image = machineconfig.OsImage(
        image="firewalld",
        repository=URL.split("@")[0],
        digest=DIGEST,
        build_key="d" * 64,
        source_commit=COMMIT,
        base_image=OLD,
    )
    cluster = yamlfile.dump(
        {
            "environment": "nonprod",
            "baseImage": OLD,
            "registry": "registry.example.com/layering",
            "pools": dict.fromkeys(pools, "firewalld"),
            "kube": {"context": "nonprod-admin"},
        }
    )
    files = {
        "images/firewalld/Containerfile": b"FROM x\n",
        "clusters/nonprod/cluster.yaml": cluster,
    }
    files |= {
        machineconfig.path_for("nonprod", pool): machineconfig.render_yaml(
            pool=pool, os_image=os_image
        )
        for pool in pools
    }
    return repo.parse_files(files, {"firewalld": "1" * 40})


def test_expected_images_are_the_managed_machineconfigs_of_the_cluster() -> None:
    assert rollout.expected_images(promoted_repository(), "nonprod") == {
        "infra": URL,
        "worker": URL,
    }
    assert rollout.expected_images(promoted_repository(), "prod") == {}


def test_a_record_keeps_the_state_seen() -> None:
    state = rollout.RolloutState(rollout.Phase.UPDATING, 1, 3, "draining")
    assert rollout.record(
        state,
        cluster="nonprod",
        pool="worker",
        commit_sha=COMMIT,
        os_image_url=URL,
        observed_at=5.0,
    ) == rollout.RolloutRecord("nonprod", "worker", COMMIT, URL, "Updating", 1, 3, "draining", 5.0)


@pytest.mark.parametrize(
    ("state", "healthy"),
    [
        (rollout.RolloutState(rollout.Phase.UPDATED, 3, 3), True),
        (rollout.RolloutState(rollout.Phase.DEGRADED, 1, 3, "NodeDegraded: boot failed"), False),
    ],
)
def test_a_finished_rollout_verifies_the_digest(state: rollout.RolloutState, healthy: bool) -> None:
    assert rollout.verification_of(
        state, cluster="nonprod", os_image_url=URL, commit_sha=COMMIT, now=9.0
    ) == verification.Verification(
        "nonprod",
        DIGEST,
        9.0,
        verification.VerificationMethod.ROLLOUT,
        healthy=healthy,
        message=state.message,
        commit_sha=COMMIT,
    )


def test_rolled_out_counts_the_machines_of_every_pool() -> None:
    states = {
        "worker": rollout.RolloutState(rollout.Phase.UPDATED, 3, 3),
        "infra": rollout.RolloutState(rollout.Phase.UPDATED, 2, 2),
    }
    assert rollout.rolled_out("nonprod", states) == commit_status.Status(
        "layering/rollout/nonprod",
        "success",
        "2 pool(s) rolled out: 5 machines on the promoted image",
    )


def test_timeout_fails_the_stalled_pools_and_names_the_first() -> None:
    states = {
        "worker": rollout.RolloutState(
            rollout.Phase.UPDATING, 0, 2, "waiting for the MCO to render the config"
        ),
        "infra": rollout.RolloutState(rollout.Phase.UPDATING, 1, 2),
    }
    outcome = rollout.timed_out(
        promoted_repository(),
        commit_sha=COMMIT,
        cluster="nonprod",
        states=states,
        waited=3725,
        now=9.0,
    )
    assert outcome is not None
    message = "rollout timed out after 1h2m5s: infra at 1/2 machines updated"
    assert outcome.status == commit_status.Status("layering/rollout/nonprod", "failure", message)
    assert [(v.digest, v.healthy, v.message) for v in outcome.verifications] == [
        (DIGEST, False, message),
        (DIGEST, False, message),
    ]
    done = {"worker": rollout.RolloutState(rollout.Phase.UPDATED, 2, 2)}
    assert (
        rollout.timed_out(
            promoted_repository(),
            commit_sha=COMMIT,
            cluster="nonprod",
            states=done,
            waited=10,
            now=9.0,
        )
        is None
    )


UPDATING = {"worker": rollout.RolloutState(rollout.Phase.UPDATING, 1, 3)}
UPDATED = {"worker": rollout.RolloutState(rollout.Phase.UPDATED, 3, 3)}
DEGRADED = {"worker": rollout.RolloutState(rollout.Phase.DEGRADED, 1, 3, "Degraded: x")}


@pytest.mark.parametrize(
    ("states", "elapsed", "step"),
    [
        (UPDATED, 10, rollout.NextStep.DONE),
        (DEGRADED, 10, rollout.NextStep.DONE),
        ({}, 10, rollout.NextStep.DONE),
        (UPDATING, 10, rollout.NextStep.WATCH_AGAIN),
        (UPDATING, 99, rollout.NextStep.WATCH_AGAIN),
        (UPDATING, 100, rollout.NextStep.TIMED_OUT),
    ],
)
def test_next_step_after_a_watch(
    states: dict[str, rollout.RolloutState], elapsed: float, step: rollout.NextStep
) -> None:
    assert rollout.next_step(states, started_at=1000, now=1000 + elapsed, timeout_seconds=100) is (
        step
    )


@pytest.mark.parametrize(("elapsed", "window"), [(0, 30.0), (80, 20.0), (99.5, 1.0), (150, 1.0)])
def test_a_watch_window_never_passes_the_timeout(elapsed: float, window: float) -> None:
    assert (
        rollout.watch_window(
            started_at=1000, now=1000 + elapsed, watch_seconds=30, timeout_seconds=100
        )
        == window
    )
