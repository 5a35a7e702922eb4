"""Issue 10, finding 4: the gate read its rules from the pull request it judged. A pull request
into env/<environment> that sets `promotesFrom: null` or `soak: 0s`, adds a cluster with
weaker rules, or breaks its cluster.yaml, is judged by the rules in force on the branch head;
the gate says so, and is never green for it. Real worker, Git origin, registry and builds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import services
from tests.conftest import require_tools
from tests.plugins.builds import BaseImage, StartWorker
from tests.security import policy_support
from tests.security.policy_support import Stage

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def policy(
    tmp_path_factory: pytest.TempPathFactory,
    registry: services.Registry,
    base_image: BaseImage,
    start_worker: StartWorker,
) -> Iterator[Stage]:
    require_tools("git", "redis-server", "skopeo", "buildah")
    with policy_support.stage(
        tmp_path_factory.mktemp("gate-policy"),
        registry=registry,
        base=base_image,
        start_worker=start_worker,
        worker_name="gate-policy",
    ) as stage:
        # nonprod (no kube) runs firewalld, verified by time when promoted; htop is built but
        # runs nowhere
        def nonprod(s: Stage) -> None:
            s.cluster("nonprod", environment="nonprod", pools={"worker": "firewalld"})

        stage.on_main(nonprod, "nonprod")
        stage.build("firewalld", "nonprod")
        stage.build("htop", "nonprod")
        stage.branch_from_main("env/nonprod")
        promoted = stage.promote(stage.gitops.origin_head("env/nonprod"), "nonprod")
        assert promoted["refusals"] == [], promoted
        assert promoted["commit_sha"], promoted
        yield stage


def in_force(
    stage: Stage, cluster: str, *, pools: dict[str, str], soak: str, extra: str = ""
) -> None:
    """env/<cluster> holding `cluster` (promotesFrom nonprod), the rules in force."""

    def add(s: Stage) -> None:
        s.cluster(cluster, environment=cluster, pools=pools, promotes_from="nonprod", soak=soak)

    stage.on_main(add, f"{cluster}: promotes from nonprod after {soak}")
    stage.branch_from_main(f"env/{cluster}")


def test_a_pull_request_dropping_promotes_from_is_judged_by_the_rules_in_force(
    policy: Stage,
) -> None:
    in_force(policy, "gp1", pools={}, soak="0s")

    def unverified_straight_in(s: Stage) -> None:
        s.cluster("gp1", environment="gp1", pools={"worker": "htop"}, promotes_from=None)

    head = policy.pull_request("gp1-no-upstream", "env/gp1", unverified_straight_in)
    decision = policy.gate(head, "gp1", 1)
    assert decision["state"] == "failure", decision
    description = policy.wait_status(head, "layering/gate/gp1", "failure")
    assert description.startswith("judged by env/gp1's promotesFrom/soak, not this PR's: ")
    assert f"htop@{policy.short('htop')} is not verified" in description


def test_a_pull_request_cutting_the_soak_is_judged_by_the_rules_in_force(policy: Stage) -> None:
    in_force(policy, "gp2", pools={"worker": "firewalld"}, soak="24h")

    def no_soak(s: Stage) -> None:
        s.cluster(
            "gp2",
            environment="gp2",
            pools={"worker": "firewalld"},
            promotes_from="nonprod",
            soak="0s",
        )

    head = policy.pull_request("gp2-no-soak", "env/gp2", no_soak)
    decision = policy.gate(head, "gp2", 2)
    assert decision["state"] == "pending", decision
    description = policy.wait_status(head, "layering/gate/gp2", "pending")
    assert description.startswith("judged by env/gp2's promotesFrom/soak, not this PR's: soaking: ")
    # the 140-character cut falls later or earlier as the soak's time left is "24h" or
    # "23h59m59s" (a busy machine crosses the second): only what fits either way is checked
    assert f"firewalld@{policy.short('firewalld')} soakin" in description

    # the same pull request without the rule change is judged the same, and says nothing more
    def docs(s: Stage) -> None:
        s.gitops.write("README.md", "gp2 takes firewalld\n")

    honest = policy.pull_request("gp2-docs", "env/gp2", docs)
    assert policy.gate(honest, "gp2", 3)["state"] == "pending"
    assert policy.wait_status(honest, "layering/gate/gp2", "pending").startswith("soaking: ")


def test_a_new_cluster_may_not_bring_weaker_rules(policy: Stage) -> None:
    in_force(policy, "gp3", pools={"worker": "firewalld"}, soak="0s")

    def side_door(s: Stage) -> None:
        s.cluster("gp3-b", environment="gp3", pools={"worker": "htop"}, promotes_from=None)

    head = policy.pull_request("gp3-side-door", "env/gp3", side_door)
    assert policy.gate(head, "gp3", 4)["state"] == "failure"
    description = policy.wait_status(head, "layering/gate/gp3", "failure")
    assert "clusters/gp3-b/cluster.yaml is new in env/gp3 with weaker rules" in description

    # a new cluster with the rules in force is judged like the others: here it passes
    def same_rules(s: Stage) -> None:
        s.cluster(
            "gp3-c",
            environment="gp3",
            pools={"worker": "firewalld"},
            promotes_from="nonprod",
            soak="0s",
        )

    added = policy.pull_request("gp3-same-rules", "env/gp3", same_rules)
    assert policy.gate(added, "gp3", 5)["state"] == "success"


def test_a_pull_request_breaking_its_cluster_yaml_does_not_slip_out_of_the_gate(
    policy: Stage,
) -> None:
    in_force(policy, "gp4", pools={"worker": "htop"}, soak="0s")

    def broken(s: Stage) -> None:
        s.gitops.write("clusters/gp4/cluster.yaml", "environment: [gp4\n")

    head = policy.pull_request("gp4-broken", "env/gp4", broken)
    assert policy.gate(head, "gp4", 6)["state"] == "failure"
    description = policy.wait_status(head, "layering/gate/gp4", "failure")
    assert "configuration problem: clusters/gp4/cluster.yaml" in description
