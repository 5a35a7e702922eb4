"""Issue 10, finding 4: a MachineConfig the pipeline did not write that sets `osImageURL` (the
MCO keeps the last by name, so `99-zzz` beats `99-layering-<pool>-os-image`) fails the gate,
named; so does an edit of the pipeline's own file, and a promotion that such a file would
override commits nothing and fails, naming it. Real worker, Git origin, registry and builds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pipeline.core import machineconfig
from tests import services
from tests.conftest import require_tools
from tests.plugins.builds import BaseImage, StartWorker
from tests.security import policy_support
from tests.security.policy_support import Stage, unmanaged

pytestmark = pytest.mark.integration

EVIL = "quay.io/evil/os@sha256:" + "e" * 64
CLUSTER = "um1"
BRANCH = f"env/{CLUSTER}"
DIRECTORY = f"clusters/{CLUSTER}/machineconfigs"


@pytest.fixture(scope="module")
def policy(
    tmp_path_factory: pytest.TempPathFactory,
    registry: services.Registry,
    base_image: BaseImage,
    start_worker: StartWorker,
) -> Iterator[Stage]:
    """nonprod runs firewalld (verified by time); env/um1 takes it from nonprod, soak 0s, and
    has been promoted: its MachineConfig is on the branch."""
    require_tools("git", "redis-server", "skopeo", "buildah")
    with policy_support.stage(
        tmp_path_factory.mktemp("unmanaged"),
        registry=registry,
        base=base_image,
        start_worker=start_worker,
        worker_name="unmanaged",
    ) as stage:
        policy_support.nonprod_promoted_upstream_of(stage, CLUSTER)
        stage.branch_from_main(BRANCH)
        promoted = stage.promote(stage.gitops.origin_head(BRANCH), CLUSTER)
        assert promoted["refusals"] == [], promoted
        assert promoted["commit_sha"], promoted
        yield stage


@pytest.mark.parametrize(
    ("name", "document", "said"),
    [
        (
            "99-zzz.yaml",
            unmanaged("99-zzz", role="worker", os_image_url=EVIL),
            "sets osImageURL and sorts after 99-layering-worker-os-image",
        ),
        (
            "99-zzz.yml",
            unmanaged("99-zzz", role="worker", os_image_url=EVIL),
            "sets osImageURL and sorts after 99-layering-worker-os-image",
        ),
        (
            "10-early.yaml",
            unmanaged("10-early", role="worker", os_image_url=EVIL),
            "sets osImageURL, which only the pipeline's",
        ),
        (
            "99-zzz-labelled.yaml",
            unmanaged("99-zzz-labelled", role="worker", os_image_url=EVIL, managed=True),
            "sets osImageURL and sorts after",
        ),
        (
            "50-list.yaml",
            {
                "apiVersion": "v1",
                "kind": "List",
                "items": [unmanaged("99-z", role="worker", os_image_url=EVIL)],
            },
            "sets osImageURL",
        ),
        (
            "50-odd-case.yaml",
            {**unmanaged("50-odd", role="worker", os_image_url=""), "spec": {"OSImageURL": EVIL}},
            "sets osImageURL",
        ),
        (
            "50-two-documents.yaml",
            "kind: MachineConfig\n---\nspec:\n  osImageURL: " + EVIL + "\n",
            "cannot be read (line",
        ),
        (
            "99-layering-infra-os-image.yaml",
            unmanaged("99-layering-infra-os-image", role="infra", os_image_url=EVIL),
            "sets osImageURL",
        ),
    ],
    ids=[
        "sorts-after",
        "yml",
        "sorts-before",
        "labelled-as-ours",
        "in-a-list",
        "key-case",
        "two-docs",
        "our-name-other-pool",
    ],
)
def test_a_hand_written_os_image_fails_the_gate_named(
    policy: Stage, name: str, document: object, said: str
) -> None:
    path = f"{DIRECTORY}/{name}"
    branch = f"um-{name.replace('.', '-')}"
    head = policy.pull_request(branch, BRANCH, lambda s: s.write(path, document))
    decision = policy.gate(head, CLUSTER, 10)
    assert decision["state"] == "failure", decision
    description = policy.wait_status(head, f"layering/gate/{CLUSTER}", "failure")
    assert f"{CLUSTER}/- (-): {path}: {said}" in description


def test_other_machineconfigs_and_honest_pull_requests_pass(policy: Stage) -> None:
    chrony = {
        "apiVersion": machineconfig.API_VERSION,
        "kind": machineconfig.KIND,
        "metadata": {"name": "50-chrony", "labels": {machineconfig.ROLE_LABEL: "worker"}},
        "spec": {"config": {"ignition": {"version": "3.2.0"}}},
    }
    head = policy.pull_request(
        "um-chrony", BRANCH, lambda s: s.write(f"{DIRECTORY}/50-chrony.yaml", chrony)
    )
    assert policy.gate(head, CLUSTER, 11)["state"] == "success"


def test_an_edit_of_the_pipelines_own_machineconfig_fails_the_gate(policy: Stage) -> None:
    path = machineconfig.path_for(CLUSTER, "worker")

    def edit(s: Stage) -> None:
        ours = (s.gitops.path / path).read_text()
        s.gitops.write(path, ours.replace(s.digests["firewalld"], EVIL.split("@")[1]))

    head = policy.pull_request("um-edit-ours", BRANCH, edit)
    assert policy.gate(head, CLUSTER, 12)["state"] == "failure"
    description = policy.wait_status(head, f"layering/gate/{CLUSTER}", "failure")
    assert f"{path}: this pull request edits a MachineConfig the pipeline writes" in description


def test_a_promotion_that_would_be_overridden_commits_nothing_and_names_the_file(
    policy: Stage,
) -> None:
    path = f"{DIRECTORY}/99-zzz.yaml"
    policy.pull_request(
        "um-merged",
        BRANCH,
        lambda s: s.write(path, unmanaged("99-zzz", role="worker", os_image_url=EVIL)),
    )
    merged = policy.merge("um-merged", BRANCH, message="Merge um-merged")
    outcome = policy.promote(merged, CLUSTER)
    assert outcome["commit_sha"] is None
    assert any(path in refusal for refusal in outcome["refusals"]), outcome
    assert policy.gitops.origin_head(BRANCH) == merged
    description = policy.wait_status(merged, f"layering/promote/{CLUSTER}", "failure")
    assert description.startswith(f"not promoted: {CLUSTER}/- (-): {path}: sets osImageURL")
