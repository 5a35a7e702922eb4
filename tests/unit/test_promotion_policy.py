"""The pure decisions behind issue 10's policy findings, as tables: the rules in force for a pull
request (promotion_policy), MachineConfigs that would override the pipeline's
(machineconfig_overrides), a stored verification confirmed against the upstream's pools
(upstream_proof), and when a tag may be reused by a build (builds.reuse_problem)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from pipeline.core import (
    builds,
    machineconfig,
    machineconfig_overrides,
    promotion,
    promotion_policy,
    repo,
    rollout,
    upstream_proof,
    verification,
    yamlfile,
)

BASE = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "a" * 64
REGISTRY = "registry.example.com/layering"
DIGEST = "sha256:" + "c" * 64
EVIL = "quay.io/evil/os@sha256:" + "e" * 64


def cluster(
    environment: str,
    *,
    promotes_from: str | None = None,
    soak: str = "0s",
    kube: str | None = None,
    pools: Mapping[str, str] | None = None,
) -> bytes:
    document: dict[str, object] = {
        "environment": environment,
        "baseImage": BASE,
        "registry": REGISTRY,
        "pools": dict(pools if pools is not None else {"worker": "firewalld"}),
        "soak": soak,
        "promotesFrom": promotes_from,
    }
    if kube:
        document["kube"] = {"context": kube}
    return yamlfile.dump(document)


def model(
    clusters: Mapping[str, bytes], files: Mapping[str, bytes] | None = None
) -> repo.Repository:
    return repo.parse_files(
        {
            "images/firewalld/Containerfile": b"FROM x\n",
            **{f"clusters/{name}/cluster.yaml": raw for name, raw in clusters.items()},
            **(files or {}),
        },
        {"firewalld": "1" * 40},
    )


HEAD = model(
    {
        "nonprod": cluster("nonprod", kube="nonprod-admin"),
        "prod": cluster("prod", promotes_from="nonprod", soak="24h"),
    }
)


# -- the rules in force -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "changed"),
    [
        ({}, ()),
        ({"prod": cluster("prod")}, ("prod",)),
        ({"prod": cluster("prod", promotes_from="nonprod", soak="0s")}, ("prod",)),
        ({"prod": cluster("nonprod", promotes_from="nonprod", soak="24h")}, ("prod",)),
        ({"nonprod": cluster("nonprod")}, ("nonprod",)),  # the upstream's kube access
        ({"prod": cluster("prod", promotes_from="nonprod", soak="24h", pools={})}, ()),
    ],
    ids=["same", "no-upstream", "no-soak", "other-environment", "upstream-kube", "pools-only"],
)
def test_the_head_rules_apply_to_the_merge(
    changes: Mapping[str, bytes], changed: tuple[str, ...]
) -> None:
    merged = model(
        {
            "nonprod": cluster("nonprod", kube="nonprod-admin"),
            "prod": cluster("prod", promotes_from="nonprod", soak="24h"),
            **changes,
        }
    )
    rules = promotion_policy.in_force(merged, head=HEAD, environment="prod")
    assert rules.changed == changed
    assert rules.refusals == ()
    prod = rules.repository.clusters["prod"]
    assert (prod.environment, prod.promotes_from, prod.soak_seconds) == ("prod", "nonprod", 86400)
    assert rules.repository.clusters["nonprod"].kube_context == "nonprod-admin"
    assert prod.pools == merged.clusters["prod"].pools  # what is promoted: the merge's
    assert bool(rules.notice) is bool(changed)


@pytest.mark.parametrize(
    ("added", "refused"),
    [
        (cluster("prod", promotes_from="nonprod", soak="24h"), False),
        (cluster("prod", promotes_from="nonprod", soak="48h"), False),
        (cluster("prod", promotes_from="nonprod", soak="1h"), True),
        (cluster("prod"), True),
        (cluster("prod", promotes_from="prod-b", soak="24h"), True),
    ],
    ids=["same", "stricter", "shorter-soak", "no-upstream", "other-upstream"],
)
def test_a_new_cluster_may_not_weaken_the_environment(added: bytes, refused: bool) -> None:
    merged = model(
        {
            **{"nonprod": cluster("nonprod")},
            "prod": cluster("prod", promotes_from="nonprod", soak="24h"),
            "prod-b": added,
        }
    )
    head = model(
        {
            "nonprod": cluster("nonprod"),
            "prod": cluster("prod", promotes_from="nonprod", soak="24h"),
        }
    )
    rules = promotion_policy.in_force(merged, head=head, environment="prod")
    assert bool(rules.refusals) is refused
    if refused:
        (refusal,) = rules.refusals
        assert refusal.reason.startswith("clusters/prod-b/cluster.yaml is new in env/prod")
        assert "promotesFrom: nonprod, soak: 1d" in refusal.reason


def test_a_cluster_moved_into_the_environment_counts_as_new() -> None:
    merged = model(
        {
            "nonprod": cluster("nonprod"),
            "prod": cluster("prod", promotes_from="nonprod", soak="24h"),
            "nonprod-x": cluster("prod"),  # was in nonprod on the head
        }
    )
    head = model(
        {
            "nonprod": cluster("nonprod"),
            "prod": cluster("prod", promotes_from="nonprod", soak="24h"),
            "nonprod-x": cluster("nonprod"),
        }
    )
    rules = promotion_policy.in_force(merged, head=head, environment="prod")
    (refusal,) = rules.refusals
    assert refusal.reason.startswith("clusters/nonprod-x/cluster.yaml is new in env/prod")
    assert rules.repository.clusters["nonprod-x"].environment == "prod"


def test_an_environment_with_nothing_in_force_takes_its_own_rules() -> None:
    merged = model({"nonprod": cluster("nonprod"), "prod": cluster("prod")})
    rules = promotion_policy.in_force(merged, head=model({}), environment="prod")
    assert (rules.changed, rules.refusals) == ((), ())
    assert rules.repository.clusters["prod"].promotes_from is None


def test_a_broken_cluster_yaml_is_refused_not_dropped() -> None:
    merged = model({"nonprod": cluster("nonprod"), "prod": b"environment: [prod\n"})
    rules = promotion_policy.in_force(merged, head=HEAD, environment="prod")
    (refusal,) = rules.refusals
    assert refusal.kind is promotion.RefusalKind.CONFIGURATION
    assert refusal.reason.startswith("configuration problem: clusters/prod/cluster.yaml:")


def rendered(pool: str, digest: str = DIGEST, source: str = "5" * 40) -> bytes:
    return machineconfig.render_yaml(
        pool=pool,
        os_image=machineconfig.OsImage(
            image="firewalld",
            repository=f"{REGISTRY}/firewalld",
            digest=digest,
            build_key="d" * 64,
            source_commit=source,
            base_image=BASE,
        ),
    )


def test_edits_of_the_pipelines_files_are_refused() -> None:
    ours = machineconfig.path_for("prod", "worker")
    head = model({"prod": cluster("prod")}, {ours: rendered("worker")})
    edited = rendered("worker", EVIL.split("@")[1])
    merged = model({"prod": cluster("prod")}, {ours: edited})
    rules = promotion_policy.in_force(merged, head=head, environment="prod")
    step = promotion.WriteFile("prod", "worker", ours, rendered("worker"), None)  # type: ignore[arg-type]
    (refusal,) = promotion_policy.edited(rules, [step])
    assert refusal.reason.startswith(f"{ours}: this pull request edits a MachineConfig")
    untouched = promotion_policy.in_force(head, head=head, environment="prod")
    assert promotion_policy.edited(untouched, [step]) == []


# -- MachineConfigs that would override the pipeline's ----------------------------------------


def mc(name: str, **spec: object) -> bytes:
    return yamlfile.dump(
        {
            "apiVersion": machineconfig.API_VERSION,
            "kind": machineconfig.KIND,
            "metadata": {"name": name, "labels": {machineconfig.ROLE_LABEL: "worker"}},
            "spec": spec,
        }
    )


DIRECTORY = "clusters/prod/machineconfigs"
OURS = machineconfig.path_for("prod", "worker")


@pytest.mark.parametrize(
    ("name", "raw", "said"),
    [
        ("50-chrony.yaml", mc("50-chrony", kernelArguments=["x"]), None),
        ("99-zzz.yaml", mc("99-zzz", osImageURL=EVIL), "sorts after 99-layering-worker-os-image"),
        ("10-a.yaml", mc("10-a", osImageURL=EVIL), "which only the pipeline's"),
        ("10-b.yaml", mc("99-zzz", osImageURL=EVIL), "sorts after"),  # the name that counts
        ("10-c.yaml", mc("10-c", config={"OsImageUrl": EVIL}), "sets osImageURL"),
        ("10-d.yaml", mc("10-d", osImageURL=""), "sets osImageURL"),
        ("10-e.yaml", mc("99-layering-worker-os-image"), "like the pipeline's own"),
        ("10-f.yaml", b"a: [\n", "cannot be read (line 2)"),
        ("other/10-g.yaml", mc("10-g", osImageURL=EVIL), None),  # not in this directory
    ],
)
def test_overrides_are_found_and_named(name: str, raw: bytes, said: str | None) -> None:
    path = f"{DIRECTORY}/{name}" if "/" not in name else f"clusters/prod/{name}"
    repository = model({"prod": cluster("prod")}, {OURS: rendered("worker"), path: raw})
    found = machineconfig_overrides.found(repository, "prod", ours={OURS})
    if said is None:
        assert found == []
    else:
        (override,) = found
        assert override.path == path
        assert said in override.reason


def test_a_plan_refuses_what_would_override_it_and_deletes_only_its_own() -> None:
    imposter = f"{DIRECTORY}/99-zzz.yaml"
    labelled = yamlfile.load(rendered("worker")) | {
        "metadata": {
            "name": "99-zzz",
            "labels": {
                machineconfig.ROLE_LABEL: "worker",
                machineconfig.MANAGED_BY_LABEL: machineconfig.MANAGER,
            },
        }
    }
    repository = model({"prod": cluster("prod")}, {imposter: yamlfile.dump(labelled)})
    assert promotion.managed_paths(repository, "prod") == {}  # a label proves nothing
    plan = promotion.plan(
        repository,
        environment="prod",
        source_commit="5" * 40,
        lookups={},
        verifications={},
        now=0,
    )
    kinds = {(r.kind, r.reason.split(":")[0]) for r in plan.refusals}
    assert (promotion.RefusalKind.OVERRIDE, imposter) in kinds
    assert not any(isinstance(step, promotion.DeleteFile) for step in plan.steps)


def test_a_kept_source_commit_needs_the_exact_bytes() -> None:
    lookups = {
        ("firewalld", "prod"): promotion.DigestLookup(
            promotion.targets(model({"prod": cluster("prod")}), "prod")[0].build_key, DIGEST
        )
    }

    def step(existing: bytes) -> promotion.Step:
        repository = model({"prod": cluster("prod")}, {OURS: existing})
        plan = promotion.plan(
            repository,
            environment="prod",
            source_commit="9" * 40,
            lookups=lookups,
            verifications={},
            now=0,
        )
        (only,) = plan.steps
        return only

    key = promotion.targets(model({"prod": cluster("prod")}), "prod")[0].build_key
    exact = machineconfig.render_yaml(
        pool="worker",
        os_image=machineconfig.OsImage(
            "firewalld", f"{REGISTRY}/firewalld", DIGEST, key, "5" * 40, BASE
        ),
    )
    assert isinstance(step(exact), promotion.Skipped)
    padded = step(exact + b"# and a comment\n")
    assert isinstance(padded, promotion.WriteFile)
    assert padded.os_image.source_commit == "9" * 40


# -- a stored verification confirmed against the upstream's pools ------------------------------

UPDATED = rollout.RolloutState(rollout.Phase.UPDATED, 2, 2)
PROVEN = verification.Verification("nonprod", DIGEST, 0, verification.VerificationMethod.ROLLOUT)


@pytest.mark.parametrize(
    ("running", "message"),
    [
        ([rollout.Running("worker", f"{REGISTRY}/firewalld@{DIGEST}", UPDATED)], None),
        (
            [
                rollout.Running("worker", f"{REGISTRY}/firewalld@{DIGEST}", UPDATED),
                rollout.Running("infra", None, rollout.RolloutState(rollout.Phase.UPDATING)),
            ],
            None,
        ),
        (
            [
                rollout.Running("worker", f"{REGISTRY}/firewalld@{DIGEST}", UPDATED),
                rollout.Running(
                    "infra",
                    f"{REGISTRY}/firewalld@{DIGEST}",
                    rollout.RolloutState(rollout.Phase.DEGRADED, 0, 1, "Degraded: x"),
                ),
            ],
            "pool infra on it is degraded now: Degraded: x",
        ),
        (
            [
                rollout.Running(
                    "worker",
                    f"{REGISTRY}/firewalld@{DIGEST}",
                    rollout.RolloutState(rollout.Phase.UPDATING, 1, 3),
                )
            ],
            "pool worker is still updating to it (1/3 machines)",
        ),
        (
            [rollout.Running("worker", EVIL, UPDATED)],
            "no pool runs it now (worker runs sha256:eeeeeeeeeeee)",
        ),
        ([], "no pool runs it now (none of its pools was found)"),
    ],
    ids=["runs-it", "one-of-two", "degraded", "updating", "runs-another", "no-pools"],
)
def test_a_verification_holds_only_while_the_upstream_runs_the_digest(
    running: list[rollout.Running], message: str | None
) -> None:
    confirmed = upstream_proof.confirmed(PROVEN, running)
    if message is None:
        assert confirmed == PROVEN
    else:
        assert not confirmed.healthy
        assert confirmed.message == message
        assert confirmed.verified_at == PROVEN.verified_at


def test_only_upstreams_with_kube_access_are_read() -> None:
    repository = model(
        {
            "nonprod": cluster(
                "nonprod", kube="nonprod-admin", pools={"worker": "firewalld", "infra": "firewalld"}
            ),
            "nonprod-b": cluster("nonprod"),
            "prod": cluster("prod", promotes_from="nonprod"),
            "prod-b": cluster("prod", promotes_from="nonprod-b"),
        }
    )
    assert upstream_proof.pools_to_read(repository, "prod") == {"nonprod": ["infra", "worker"]}


# -- when a build may reuse a tag -------------------------------------------------------------


def spec() -> builds.BuildSpec:
    return builds.BuildSpec(
        image="hello",
        cluster="dev",
        build_key="k" * 64,
        target=f"{REGISTRY}/hello:{'k' * 20}",
        base=BASE,
        containerfile="FROM x\n",
        context=Path("."),
        build_args={},
        labels={builds.LABEL_BUILD_KEY: "k" * 64, builds.LABEL_BASE_DIGEST: "sha256:" + "a" * 64},
    )


@pytest.mark.parametrize(
    ("labels", "problem"),
    [
        ({builds.LABEL_BUILD_KEY: "k" * 64, builds.LABEL_BASE_DIGEST: "sha256:" + "a" * 64}, ""),
        ({}, "its config has no layering.build-key label"),
        ({builds.LABEL_BUILD_KEY: "k" * 64}, "no org.opencontainers.image.base.digest label"),
        (
            {builds.LABEL_BUILD_KEY: "x", builds.LABEL_BASE_DIGEST: "sha256:" + "a" * 64},
            "is x, not",
        ),
    ],
)
def test_a_tag_is_reused_only_with_the_builds_labels(labels: dict[str, str], problem: str) -> None:
    found = builds.reuse_problem(spec(), builds.RegistryImage(DIGEST, labels))
    assert (found == "") if not problem else (problem in found)
    assert spec().repository == f"{REGISTRY}/hello"


def test_a_built_record_is_taken_only_with_its_mac() -> None:
    built = builds.BuiltImage("k" * 64, f"{REGISTRY}/hello", DIGEST, "b1", 1.0)
    key = b"k" * 32
    stored = builds.signed_built(key, built)
    assert builds.trusted_built(key, stored) == built
    assert builds.trusted_built(b"x" * 32, stored) is None
    assert builds.trusted_built(key, {**stored, "digest": EVIL.split("@")[1]}) is None
    unsigned = {k: v for k, v in stored.items() if k != builds.BUILT_MAC_FIELD}
    assert builds.trusted_built(key, unsigned) is None
