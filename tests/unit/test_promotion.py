from __future__ import annotations

from collections.abc import Mapping

import pytest

from pipeline.core import (
    commit_status,
    content_address,
    gate,
    machineconfig,
    promotion,
    promotion_commit,
    promotion_policy,
    promotion_report,
    repo,
    verification,
    yamlfile,
)
from tests import crd

BASE_A = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "a" * 64
BASE_B = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "b" * 64
REGISTRY = "registry.example.com/layering"
TREES = {"firewalld": "1" * 40, "usbguard": "2" * 40}
SOURCE = "5" * 40
NOW = 1_000_000.0
HOUR = 3600


def digest_of(char: str) -> str:
    return "sha256:" + char * 64


def cluster_yaml(
    environment: str,
    pools: Mapping[str, str],
    *,
    base: str = BASE_A,
    promotes_from: str | None = None,
    soak: str = "0s",
) -> bytes:
    document: dict[str, object] = {
        "environment": environment,
        "baseImage": base,
        "registry": REGISTRY,
        "pools": dict(pools),
        "soak": soak,
    }
    if promotes_from:
        document["promotesFrom"] = promotes_from
    return yamlfile.dump(document)


def repository(
    clusters: Mapping[str, bytes], machineconfigs: Mapping[str, bytes] | None = None
) -> repo.Repository:
    files: dict[str, bytes] = {
        f"images/{image}/Containerfile": b"FROM scratch\nRUN ostree container commit\n"
        for image in TREES
    }
    files.update({f"clusters/{name}/cluster.yaml": raw for name, raw in clusters.items()})
    files.update(machineconfigs or {})
    return repo.parse_files(files, TREES)


def key(image: str, base: str = BASE_A) -> str:
    return content_address.build_key(
        tree_id=TREES[image], base_digest=base.split("@")[1], build_args={}
    )


def found(
    image: str, cluster: str, digest: str, base: str = BASE_A
) -> dict[tuple[str, str], promotion.DigestLookup]:
    return {(image, cluster): promotion.DigestLookup(key(image, base), digest)}


NONPROD = {"nonprod": cluster_yaml("nonprod", {"worker": "firewalld", "infra": "usbguard"})}
NONPROD_LOOKUPS = found("firewalld", "nonprod", digest_of("c")) | found(
    "usbguard", "nonprod", digest_of("d")
)


def plan_of(
    repository_: repo.Repository,
    environment: str,
    lookups: Mapping[tuple[str, str], promotion.DigestLookup],
    verifications: Mapping[tuple[str, str], verification.Verification] | None = None,
    now: float = NOW,
) -> promotion.PromotionPlan:
    return promotion.plan(
        repository_,
        environment=environment,
        source_commit=SOURCE,
        lookups=lookups,
        verifications=verifications or {},
        now=now,
    )


def test_nonprod_writes_a_valid_machineconfig_per_pool() -> None:
    plan = plan_of(repository(NONPROD), "nonprod", NONPROD_LOOKUPS)
    assert not plan.refused
    writes = {step.pool: step for step in plan.changes if isinstance(step, promotion.WriteFile)}
    assert sorted(writes) == ["infra", "worker"]
    for pool, step in writes.items():
        assert step.path == f"clusters/nonprod/machineconfigs/99-layering-{pool}-os-image.yaml"
        document = yamlfile.load(step.content)
        assert crd.machineconfig_errors(document) == []
        assert machineconfig.is_managed(document)
    assert yamlfile.load(writes["worker"].content)["spec"]["osImageURL"] == (
        f"{REGISTRY}/firewalld@{digest_of('c')}"
    )
    annotations = yamlfile.load(writes["infra"].content)["metadata"]["annotations"]
    assert annotations[machineconfig.ANNOTATION_BUILD_KEY] == key("usbguard")
    assert annotations[machineconfig.ANNOTATION_SOURCE_COMMIT] == SOURCE


def test_same_input_gives_the_same_bytes_and_applied_plan_is_skipped() -> None:
    first = plan_of(repository(NONPROD), "nonprod", NONPROD_LOOKUPS)
    second = plan_of(repository(NONPROD), "nonprod", NONPROD_LOOKUPS)
    assert first == second
    applied = {
        step.path: step.content for step in first.changes if isinstance(step, promotion.WriteFile)
    }
    again = promotion.plan(
        repository(NONPROD, applied),
        environment="nonprod",
        source_commit="9" * 40,  # a later merge that changes no image
        lookups=NONPROD_LOOKUPS,
        verifications={},
        now=NOW,
    )
    assert again.changes == ()
    assert {type(step) for step in again.steps} == {promotion.Skipped}


def test_changed_digest_rewrites_with_the_new_source_commit() -> None:
    applied = {
        step.path: step.content
        for step in plan_of(repository(NONPROD), "nonprod", NONPROD_LOOKUPS).changes
        if isinstance(step, promotion.WriteFile)
    }
    lookups = dict(NONPROD_LOOKUPS) | found("firewalld", "nonprod", digest_of("e"))
    again = promotion.plan(
        repository(NONPROD, applied),
        environment="nonprod",
        source_commit="9" * 40,
        lookups=lookups,
        verifications={},
        now=NOW,
    )
    (write,) = [s for s in again.changes if isinstance(s, promotion.WriteFile)]
    assert write.pool == "worker"
    assert write.os_image.source_commit == "9" * 40


def test_removed_pool_deletes_its_managed_machineconfig_only() -> None:
    applied = {
        step.path: step.content
        for step in plan_of(repository(NONPROD), "nonprod", NONPROD_LOOKUPS).changes
        if isinstance(step, promotion.WriteFile)
    }
    hand_written = {"clusters/nonprod/machineconfigs/50-chrony.yaml": b"kind: MachineConfig\n"}
    shrunk = {"nonprod": cluster_yaml("nonprod", {"worker": "firewalld"})}
    plan = plan_of(repository(shrunk, applied | hand_written), "nonprod", NONPROD_LOOKUPS)
    deletes = [step for step in plan.changes if isinstance(step, promotion.DeleteFile)]
    assert deletes == [
        promotion.DeleteFile(
            "nonprod", "infra", "clusters/nonprod/machineconfigs/99-layering-infra-os-image.yaml"
        )
    ]
    assert "Layering-Removed: nonprod/infra" in promotion_commit.commit_message(plan)


@pytest.mark.parametrize(
    ("lookup", "expected"),
    [
        (None, "no lookup for build key"),
        (promotion.DigestLookup(key("usbguard")), "not built"),
        (promotion.DigestLookup(key("usbguard"), failure="RUN step 2 failed"), "build failed"),
        (promotion.DigestLookup("f" * 64, digest_of("d")), "no lookup for build key"),
    ],
)
def test_a_missing_image_refuses_the_whole_promotion(
    lookup: promotion.DigestLookup | None, expected: str
) -> None:
    lookups = dict(found("firewalld", "nonprod", digest_of("c")))
    if lookup is not None:
        lookups[("usbguard", "nonprod")] = lookup
    plan = plan_of(repository(NONPROD), "nonprod", lookups)
    assert plan.refused
    assert plan.changes == ()
    (refusal,) = plan.refusals
    assert (refusal.cluster, refusal.pool, refusal.image) == ("nonprod", "infra", "usbguard")
    assert expected in refusal.reason
    statuses = promotion_report.promote_statuses(plan)
    assert [(s.context, s.state) for s in statuses] == [("layering/promote/nonprod", "failure")]
    assert "usbguard" in statuses[0].description
    assert len(statuses[0].description) <= 140


CHAIN = {
    "nonprod": cluster_yaml("nonprod", {"worker": "firewalld"}),
    "prod": cluster_yaml("prod", {"worker": "firewalld"}, promotes_from="nonprod", soak="24h"),
}
PROD_LOOKUPS = found("firewalld", "prod", digest_of("c"))


def verified(
    at: float, *, cluster: str = "nonprod", digest: str = digest_of("c"), healthy: bool = True
) -> dict[tuple[str, str], verification.Verification]:
    return {
        (cluster, digest): verification.Verification(
            cluster,
            digest,
            at,
            verification.VerificationMethod.ROLLOUT,
            healthy=healthy,
            message="" if healthy else "Node worker-0 is reporting: boot failed",
        )
    }


@pytest.mark.parametrize(
    ("verifications", "refusal_kind", "gate_state", "text"),
    [
        (
            {},
            promotion.RefusalKind.UNVERIFIED,
            gate.GateState.FAILURE,
            "not verified on nonprod",
        ),
        (
            verified(NOW - 2 * HOUR),
            promotion.RefusalKind.SOAKING,
            gate.GateState.PENDING,
            "22h left",
        ),
        (
            verified(NOW - 25 * HOUR, healthy=False),
            promotion.RefusalKind.UNVERIFIED,
            gate.GateState.FAILURE,
            "boot failed",
        ),
        (
            verified(NOW - 25 * HOUR, digest=digest_of("e")),
            promotion.RefusalKind.UNVERIFIED,
            gate.GateState.FAILURE,
            "not verified",
        ),
        (
            verified(NOW - 25 * HOUR, cluster="elsewhere"),
            promotion.RefusalKind.UNVERIFIED,
            gate.GateState.FAILURE,
            "not verified",
        ),
        (verified(NOW - 24 * HOUR), None, gate.GateState.SUCCESS, "safe to merge"),
    ],
)
def test_prod_takes_only_digests_verified_upstream_for_the_soak(
    verifications: dict[tuple[str, str], verification.Verification],
    refusal_kind: promotion.RefusalKind | None,
    gate_state: gate.GateState,
    text: str,
) -> None:
    repository_ = repository(CHAIN)
    plan = plan_of(repository_, "prod", PROD_LOOKUPS, verifications)
    if refusal_kind is None:
        assert not plan.refused
        assert [s.cluster for s in plan.changes] == ["prod"]
    else:
        (refusal,) = plan.refusals
        assert refusal.kind is refusal_kind
        assert refusal.digest == digest_of("c")
        assert plan.changes == ()
        status = promotion_report.promote_statuses(plan)[0]
        assert status.state == "failure"
        assert "sha256:" + "c" * 12 in status.description
    decision = gate.decide(
        promotion_policy.own(repository_, "prod"),
        lookups=PROD_LOOKUPS,
        verifications=verifications,
        now=NOW,
    )
    assert decision.state is gate_state
    assert text in decision.description
    assert len(decision.description) <= 140
    if gate_state is gate.GateState.PENDING:
        assert decision.remaining_seconds == 22 * HOUR


def test_prod_with_another_base_refuses_and_says_why() -> None:
    chain = dict(CHAIN)
    chain["prod"] = cluster_yaml(
        "prod", {"worker": "firewalld"}, base=BASE_B, promotes_from="nonprod"
    )
    lookups = found("firewalld", "prod", digest_of("c"), base=BASE_B)
    plan = plan_of(repository(chain), "prod", lookups, verified(NOW - 48 * HOUR))
    (refusal,) = plan.refusals
    assert refusal.kind is promotion.RefusalKind.BASE_DIFFERS
    assert "base image differs from nonprod" in refusal.reason
    decision = gate.decide(
        promotion_policy.own(repository(chain), "prod"),
        lookups=lookups,
        verifications={},
        now=NOW,
    )
    assert decision.state is gate.GateState.FAILURE
    assert "base image differs" in decision.description


def test_gate_for_an_environment_without_upstream_needs_only_built_images() -> None:
    decision = gate.decide(
        promotion_policy.own(repository(NONPROD), "nonprod"),
        lookups=NONPROD_LOOKUPS,
        verifications={},
        now=NOW,
    )
    assert decision.state is gate.GateState.SUCCESS
    missing = gate.decide(
        promotion_policy.own(repository(NONPROD), "nonprod"),
        lookups={},
        verifications={},
        now=NOW,
    )
    assert missing.state is gate.GateState.FAILURE
    assert missing.description.startswith("2 pools blocked; ")


def test_one_refused_cluster_blocks_the_others() -> None:
    clusters = dict(NONPROD) | {"nonprod-b": cluster_yaml("nonprod", {"worker": "firewalld"})}
    plan = plan_of(repository(clusters), "nonprod", NONPROD_LOOKUPS)
    assert plan.changes == ()
    states = {s.context: (s.state, s.description) for s in promotion_report.promote_statuses(plan)}
    assert states["layering/promote/nonprod"][0] == "failure"
    assert states["layering/promote/nonprod"][1].startswith("not promoted: blocked by nonprod-b")
    assert states["layering/promote/nonprod-b"][0] == "failure"


def test_commit_message_has_trailers_per_pool_and_is_recognised() -> None:
    plan = plan_of(repository(NONPROD), "nonprod", NONPROD_LOOKUPS)
    message = promotion_commit.commit_message(plan)
    trailers = promotion_commit.trailers(message)
    assert ("Layering-Source-Commit", SOURCE) in trailers
    assert [v for k, v in trailers if k == "Layering-Image"] == ["usbguard", "firewalld"]
    assert [v for k, v in trailers if k == "Layering-Digest"] == [digest_of("d"), digest_of("c")]
    assert [v for k, v in trailers if k == "Layering-Build-Key"] == [
        key("usbguard"),
        key("firewalld"),
    ]
    assert promotion_commit.describes_promotion(message, "nonprod")
    assert not promotion_commit.describes_promotion(message, "prod")


@pytest.mark.parametrize(
    "message",
    [
        "Merge branch 'main' into env/nonprod\n",
        'Revert "layering: promote nonprod"\n\nThis reverts commit abc.\n',
        "fix\n\nLayering-Source-Commit: abc\nnot a trailer line\n",
        "",
    ],
)
def test_other_commits_are_not_promotion_commits(message: str) -> None:
    assert not promotion_commit.describes_promotion(message, "nonprod")


@pytest.mark.parametrize(
    ("text", "length"),
    [("short", 5), ("x" * 140, 140), ("y" * 500, 140), ("a\n b   c", 5)],
)
def test_status_descriptions_fit_github(text: str, length: int) -> None:
    assert len(commit_status.Status("c", "pending", text).description) == length


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (0.2, "1s"), (59, "59s"), (3725, "1h2m5s"), (90000, "1d1h")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert promotion.format_duration(seconds) == text


def test_configuration_problems_refuse() -> None:
    clusters = {"nonprod": cluster_yaml("nonprod", {"worker": "nosuchimage"})}
    plan = plan_of(repository(clusters), "nonprod", {})
    assert plan.refused
    assert any("does not exist under images/" in r.reason for r in plan.refusals)


def test_targets_name_the_content_addressed_tag() -> None:
    (worker, infra) = sorted(
        promotion.targets(repository(NONPROD), "nonprod"), key=lambda t: t.pool, reverse=True
    )
    assert worker.tag_reference == f"{REGISTRY}/firewalld:{key('firewalld')[:20]}"
    assert infra.build_key == key("usbguard")


@pytest.mark.parametrize(
    ("paths", "text"),
    [
        ([], "merge conflicts with env/prod; rebase the pull request"),
        (
            ["clusters/prod/cluster.yaml"],
            "merge conflicts with env/prod in clusters/prod/cluster.yaml; rebase the pull request",
        ),
        (
            ["a", "b", "c", "d", "e"],
            "merge conflicts with env/prod in a, b, c and 2 more; rebase the pull request",
        ),
    ],
)
def test_a_conflicting_merge_fails_the_gate(paths: list[str], text: str) -> None:
    decision = gate.conflicted("prod", paths)
    assert (decision.state, decision.description) == (gate.GateState.FAILURE, text)


def test_unrelated_history_fails_the_gate_and_says_why() -> None:
    decision = gate.conflicted("prod", [], unrelated=True)
    assert decision.state is gate.GateState.FAILURE
    assert decision.description.startswith("no history in common with env/prod")
    assert len(decision.description) <= 140


def test_what_a_promotion_records_and_commits() -> None:
    plan = plan_of(repository(NONPROD), "nonprod", NONPROD_LOOKUPS)
    change = promotion_commit.change_of(plan)
    assert change is not None
    assert sorted(change.writes) == [
        "clusters/nonprod/machineconfigs/99-layering-infra-os-image.yaml",
        "clusters/nonprod/machineconfigs/99-layering-worker-os-image.yaml",
    ]
    assert change.deletes == frozenset()
    assert change.message == promotion_commit.commit_message(plan)
    records = promotion_report.promoted_records(plan, commit_sha="8" * 40, now=NOW)
    assert [(r.pool, r.image, r.digest, r.commit_sha, r.promoted_at) for r in records] == [
        ("infra", "usbguard", digest_of("d"), "8" * 40, NOW),
        ("worker", "firewalld", digest_of("c"), "8" * 40, NOW),
    ]
    assert promotion_report.removed_pools(plan) == []
    # no kube: every pool of the plan counts from the promotion commit
    proven = promotion_report.time_verifications(
        repository(NONPROD), plan, commit_sha="8" * 40, now=NOW
    )
    assert {(v.cluster, v.digest, v.method) for v in proven} == {
        ("nonprod", digest_of("c"), verification.VerificationMethod.TIME),
        ("nonprod", digest_of("d"), verification.VerificationMethod.TIME),
    }
    assert promotion_report.clusters_to_watch(plan, repository(NONPROD)) == []


def test_a_refused_or_applied_plan_commits_and_records_nothing() -> None:
    refused = plan_of(repository(NONPROD), "nonprod", {})
    assert promotion_commit.change_of(refused) is None
    assert promotion_report.promoted_records(refused, commit_sha=SOURCE, now=NOW) == []
    applied = {
        step.path: step.content
        for step in plan_of(repository(NONPROD), "nonprod", NONPROD_LOOKUPS).changes
        if isinstance(step, promotion.WriteFile)
    }
    again = plan_of(repository(NONPROD, applied), "nonprod", NONPROD_LOOKUPS)
    assert promotion_commit.change_of(again) is None
    # unchanged pools still count by time from the head that has them
    assert (
        len(
            promotion_report.time_verifications(
                repository(NONPROD, applied), again, commit_sha=SOURCE, now=NOW
            )
        )
        == 2
    )


def test_kube_clusters_whose_pools_change_are_watched() -> None:
    kube_yaml = yamlfile.load(NONPROD["nonprod"]) | {"kube": {"context": "nonprod-admin"}}
    clusters = {"nonprod": yamlfile.dump(kube_yaml)}
    plan = plan_of(repository(clusters), "nonprod", NONPROD_LOOKUPS)
    assert promotion_report.clusters_to_watch(plan, repository(clusters)) == ["nonprod"]
    assert (
        promotion_report.time_verifications(repository(clusters), plan, commit_sha=SOURCE, now=NOW)
        == []
    )


def test_removed_pools_are_forgotten() -> None:
    applied = {
        step.path: step.content
        for step in plan_of(repository(NONPROD), "nonprod", NONPROD_LOOKUPS).changes
        if isinstance(step, promotion.WriteFile)
    }
    shrunk = {"nonprod": cluster_yaml("nonprod", {"worker": "firewalld"})}
    plan = plan_of(repository(shrunk, applied), "nonprod", NONPROD_LOOKUPS)
    assert promotion_report.removed_pools(plan) == [("nonprod", "infra")]
    change = promotion_commit.change_of(plan)
    assert change is not None
    assert change.deletes == {"clusters/nonprod/machineconfigs/99-layering-infra-os-image.yaml"}


def test_gate_status_and_recheck() -> None:
    pending = gate.GateDecision(gate.GateState.PENDING, "soaking", remaining_seconds=10)
    assert pending.recheck_after == 11
    assert pending.status("prod") == commit_status.Status(
        "layering/gate/prod", "pending", "soaking"
    )
    assert gate.GateDecision(gate.GateState.FAILURE, "no").recheck_after is None
    assert gate.GateDecision(gate.GateState.SUCCESS, "ok").recheck_after is None
