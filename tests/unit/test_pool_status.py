"""`pool_status.status_rows` (what `layering status` and the dashboard show per pool) and the
base drift check, over records handed in: no Redis, no cluster."""

from __future__ import annotations

import pytest

from pipeline.core import drift, machineconfig, pool_status, repo, rollout, verification, yamlfile

BASE = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "a" * 64
NEWER = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "e" * 64
REGISTRY = "registry.example.com/layering"
DIGEST = "sha256:" + "c" * 64
URL = f"{REGISTRY}/firewalld@{DIGEST}"
NOW = 1_000_000.0


def cluster_yaml(environment: str, pools: dict[str, str], *, kube: bool = False) -> bytes:
    document: dict[str, object] = {
        "environment": environment,
        "baseImage": BASE,
        "registry": REGISTRY,
        "pools": pools,
    }
    if kube:
        document["kube"] = {"context": f"{environment}-admin"}
    return yamlfile.dump(document)


def repository(*, promoted: bool) -> repo.Repository:
    files = {
        "images/firewalld/Containerfile": b"FROM x\n",
        "clusters/nonprod/cluster.yaml": cluster_yaml("nonprod", {"worker": "firewalld"}),
        "clusters/prod/cluster.yaml": cluster_yaml("prod", {"worker": "firewalld"}, kube=True),
    }
    if promoted:
        os_image = machineconfig.OsImage(
            image="firewalld",
            repository=f"{REGISTRY}/firewalld",
            digest=DIGEST,
            build_key="d" * 64,
            source_commit="5" * 40,
            base_image=BASE,
        )
        files[machineconfig.path_for("nonprod", "worker")] = machineconfig.render_yaml(
            pool="worker", os_image=os_image
        )
    return repo.parse_files(files, {"firewalld": "1" * 40})


def promoted_record(cluster: str) -> verification.Promoted:
    return verification.Promoted(
        cluster, "worker", "firewalld", DIGEST, URL, "d" * 64, "8" * 40, NOW - 60
    )


def test_nothing_recorded_yet() -> None:
    rows = pool_status.status_rows(repository(promoted=False), pool_status.PoolRecords(), now=NOW)
    assert rows == [
        {
            "cluster": name,
            "environment": name,
            "pool": "worker",
            "image": "firewalld",
            "digest": "-",
            "verification": "not verified",
            "rollout": "-",
            "base": "-",
        }
        for name in ("nonprod", "prod")
    ]


@pytest.mark.parametrize(
    ("proven", "text"),
    [
        (None, "not verified"),
        (
            verification.Verification(
                "nonprod", DIGEST, NOW - 3600, verification.VerificationMethod.TIME
            ),
            "time-based (no kube access): promoted 1h ago",
        ),
        (
            verification.Verification(
                "nonprod", DIGEST, NOW - 90, verification.VerificationMethod.ROLLOUT
            ),
            "rolled out 1m30s ago",
        ),
        (
            verification.Verification(
                "nonprod",
                DIGEST,
                NOW - 5,
                verification.VerificationMethod.ROLLOUT,
                healthy=False,
                message="Degraded: boot failed",
            ),
            "failed 5s ago: Degraded: boot failed",
        ),
    ],
)
def test_the_verification_of_the_promoted_digest(
    proven: verification.Verification | None, text: str
) -> None:
    records = pool_status.PoolRecords(verifications={("nonprod", DIGEST): proven} if proven else {})
    (row, _) = pool_status.status_rows(repository(promoted=True), records, now=NOW)
    assert (row["digest"], row["verification"]) == (DIGEST, text)


def test_the_store_says_what_a_pool_runs_when_the_branch_has_no_machineconfig() -> None:
    state = rollout.RolloutState(rollout.Phase.UPDATING, 1, 3, "draining")
    records = pool_status.PoolRecords(
        promoted={"prod": {"worker": promoted_record("prod")}},
        rollouts={
            "prod": {
                "worker": rollout.record(
                    state,
                    cluster="prod",
                    pool="worker",
                    commit_sha="8" * 40,
                    os_image_url=URL,
                    observed_at=NOW,
                )
            }
        },
    )
    (_, row) = pool_status.status_rows(repository(promoted=False), records, now=NOW)
    assert (row["digest"], row["rollout"]) == (DIGEST, "Updating 1/3: draining")


def test_a_rollout_of_another_image_is_not_shown() -> None:
    other = rollout.RolloutRecord(
        "nonprod", "worker", "8" * 40, URL.replace("c" * 64, "f" * 64), "Updated", 3, 3, "", NOW
    )
    records = pool_status.PoolRecords(rollouts={"nonprod": {"worker": other}})
    (row, _) = pool_status.status_rows(repository(promoted=True), records, now=NOW)
    assert row["rollout"] == "-"


def cluster(name: str = "prod") -> repo.Cluster:
    return repository(promoted=False).clusters[name]


@pytest.mark.parametrize(
    ("checked", "drifted", "text"),
    [
        (drift.check(cluster(), drift.BaseImage(BASE, "4.16.3"), now=NOW), False, "matches"),
        (
            drift.check(cluster(), drift.BaseImage(NEWER, "4.16.9"), now=NOW),
            True,
            f"DRIFT: cluster runs {NEWER} (4.16.9)",
        ),
        (
            drift.check(cluster(), None, now=NOW),
            False,
            "unknown: ConfigMap machine-config-osimageurl not found",
        ),
        (
            drift.unreadable(cluster(), "kube context 'prod-admin': refused", now=NOW),
            False,
            "unknown: kube context 'prod-admin': refused",
        ),
    ],
)
def test_base_drift(checked: drift.Drift, drifted: bool, text: str) -> None:
    assert checked.drifted is drifted
    assert checked.expected == BASE
    records = pool_status.PoolRecords(drift={"prod": checked})
    (_, row) = pool_status.status_rows(repository(promoted=False), records, now=NOW)
    assert row["base"].startswith(text)
