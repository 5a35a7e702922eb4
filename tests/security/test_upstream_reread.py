"""Issue 10, finding 3 (what the prod gate trusts): for an upstream with kube access the gate
took a stored verification alone, which anything that reached Redis could write. Now the gate
(and the promotion) read the upstream's MachineConfigPools and their rendered configs afresh:
a stored verification counts only while a pool runs the digest, Updated and not degraded.
kmock serves the pools to the real `kubernetes` client; a real worker watches the rollout and
stores the verification, as in production."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from pipeline.core import machineconfig, yamlfile
from tests import services
from tests.conftest import require_tools
from tests.plugins.builds import BaseImage, StartWorker
from tests.plugins.kube import KubeServer, MachineConfigOperator
from tests.security import policy_support
from tests.security.policy_support import Stage

pytestmark = pytest.mark.integration

CONTEXT = "upk-admin"
UPSTREAM = "upk"
PROD = "prodk"
OTHER = "quay.io/other/os@sha256:" + "f" * 64


@dataclass
class Upstream:
    stage: Stage
    mco: MachineConfigOperator
    url: str  # the osImageURL promoted to upk/worker and rolled out

    def gate(self, number: int) -> tuple[str, str]:
        """A harmless pull request into env/prodk: its gate's state and description."""
        head = self.stage.pull_request(
            f"prodk-docs-{number}",
            f"env/{PROD}",
            lambda s: s.gitops.write("README.md", f"docs {number}\n"),
        )
        decision = self.stage.gate(head, PROD, number)
        state = str(decision["state"])
        return state, self.stage.wait_status(head, f"layering/gate/{PROD}", state)


@pytest.fixture(scope="module")
def upstream(
    tmp_path_factory: pytest.TempPathFactory,
    registry: services.Registry,
    base_image: BaseImage,
    start_worker: StartWorker,
) -> Iterator[Upstream]:
    """upk (kube) runs firewalld: promoted, rolled out by the MCO stand-in, verified by the
    worker's rollout watch; prodk takes upk's digests, soak 0s."""
    require_tools("git", "redis-server", "skopeo", "buildah")
    directory = tmp_path_factory.mktemp("upstream-reread")
    kube = KubeServer(directory).start()
    kubeconfig = kube.kubeconfig([CONTEXT])
    mco = MachineConfigOperator(kubeconfig, CONTEXT)
    try:
        with policy_support.stage(
            directory,
            registry=registry,
            base=base_image,
            start_worker=start_worker,
            worker_name="upstream-reread",
            extra_env={"KUBECONFIG": str(kubeconfig)},
        ) as stage:

            def clusters(s: Stage) -> None:
                s.cluster(
                    UPSTREAM, environment=UPSTREAM, pools={"worker": "firewalld"}, kube=CONTEXT
                )
                s.cluster(
                    PROD, environment=PROD, pools={"worker": "firewalld"}, promotes_from=UPSTREAM
                )

            stage.on_main(clusters, "clusters")
            stage.build("firewalld", UPSTREAM)
            mco.create_pool("worker", machines=2, os_image_url=base_image.ref)
            promoted = stage.promote(stage.branch_from_main(f"env/{UPSTREAM}"), UPSTREAM)
            assert promoted["commit_sha"], promoted
            model = stage.gitops.origin_model(promoted["commit_sha"])
            url = yamlfile.load(model.machineconfigs[machineconfig.path_for(UPSTREAM, "worker")])[
                "spec"
            ]["osImageURL"]
            mco.start_update("worker", url)
            mco.node_updated("worker", 1)
            mco.node_updated("worker", 2)
            stage.wait_status(
                promoted["commit_sha"], f"layering/rollout/{UPSTREAM}", "success", timeout=60
            )
            stage.branch_from_main(f"env/{PROD}")
            yield Upstream(stage, mco, url)
    finally:
        mco.close()
        kube.stop()


def test_the_gate_passes_while_the_upstream_runs_the_digest(upstream: Upstream) -> None:
    state, description = upstream.gate(21)
    assert state == "success", description


def test_a_degraded_upstream_pool_fails_the_gate_despite_the_stored_verification(
    upstream: Upstream,
) -> None:
    upstream.mco.degrade("worker", "kernel panic on boot")
    try:
        state, description = upstream.gate(22)
    finally:
        upstream.mco.node_updated("worker", 2)  # healthy again
    assert state == "failure"
    assert "failed on upk: pool worker on it is degraded now: " in description
    assert upstream.gate(23)[0] == "success"


def test_an_upstream_that_no_longer_runs_the_digest_fails_the_gate(upstream: Upstream) -> None:
    upstream.mco.start_update("worker", OTHER)
    upstream.mco.node_updated("worker", 2)
    state, description = upstream.gate(24)
    assert state == "failure"
    assert "failed on upk: no pool runs it now (worker runs sha256:ffffffffffff)" in description
    # the promotion checks it too: nothing is committed to env/prodk
    head = upstream.stage.gitops.origin_head(f"env/{PROD}")
    outcome = upstream.stage.promote(head, PROD)
    assert outcome["commit_sha"] is None
    assert "no pool runs it now" in outcome["refusals"][0]
