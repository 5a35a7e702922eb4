"""The ClusterImagePolicy a promotion writes (issue 14): valid per the openshift/api CRD (schema
and, by hand, its CEL rules on keyData and scopes), byte-stable, scoped to the cluster's image
repositories; the policy.json the MCO renders from it; the plan writing it with the first
osImageURL and the gate refusing what is not signed."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.adapters import signing_trust
from pipeline.adapters.environment import load_settings
from pipeline.core import (
    gate,
    image_policy,
    machineconfig,
    promotion,
    promotion_commit,
    promotion_policy,
    repo,
    yamlfile,
)
from pipeline.core.errors import PermanentError
from tests import crd
from tests.unit.test_promotion import (
    NONPROD,
    NONPROD_LOOKUPS,
    NOW,
    REGISTRY,
    SOURCE,
    cluster_yaml,
    digest_of,
    key,
    repository,
)

CRD = "clusterimagepolicies.crd.yaml"


def public_key_pem() -> bytes:
    private = ec.generate_private_key(ec.SECP256R1())
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


PUBLIC_KEY = public_key_pem()
OTHER_KEY = public_key_pem()

# The CRD's CEL rules, as Python: the scope pattern with [[:xdigit:]] spelled out
_SCOPE = re.compile(
    r"((((?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9]"
    r"[a-zA-Z0-9-]*[a-zA-Z0-9]))+(?::[0-9]+)?)|(localhost(?::[0-9]+)?))(?:(?:/[a-z0-9]+(?:(?:"
    r"(?:[._]|__|[-]*)[a-z0-9]+)+)?)+)?)(?::([\w][\w.-]{0,127}))?(?:@([A-Za-z][A-Za-z0-9]*"
    r"(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}))?"
)


def cel_problems(policy: dict[str, Any]) -> list[str]:
    """The CEL rules of the CRD that jsonschema does not check (x-kubernetes-validations)."""
    problems: list[str] = []
    for scope in policy["spec"]["scopes"]:
        host = scope.split("/")[0]
        if len(host.split(".")) == 1 and host.split(":")[0] != "localhost":
            problems.append(f"{scope}: no fully qualified domain name")
        if "*" not in scope and not _SCOPE.fullmatch(scope):
            problems.append(f"{scope}: invalid repository namespace")
    trust = policy["spec"]["policy"]["rootOfTrust"]
    if (trust["policyType"] == "PublicKey") != ("publicKey" in trust):
        problems.append("publicKey is required when policyType is PublicKey")
    data = base64.b64decode(trust["publicKey"]["keyData"], validate=True).decode()
    if not data.startswith("-----BEGIN PUBLIC KEY-----"):
        problems.append("keyData must start with the armour")
    if not data.endswith(("-----END PUBLIC KEY-----\n", "-----END PUBLIC KEY-----")):
        problems.append("keyData must end with the armour")
    identity = policy["spec"]["policy"].get("signedIdentity", {})
    if ("exactRepository" in identity) != (identity.get("matchPolicy") == "ExactRepository"):
        problems.append("exactRepository iff ExactRepository")
    if ("remapIdentity" in identity) != (identity.get("matchPolicy") == "RemapIdentity"):
        problems.append("remapIdentity iff RemapIdentity")
    return problems


def a_cluster(
    pools: dict[str, str], registry: str = REGISTRY, name: str = "nonprod"
) -> repo.Cluster:
    model = repo.parse_files(
        {
            **{f"images/{image}/Containerfile": b"FROM scratch\n" for image in pools.values()},
            f"clusters/{name}/cluster.yaml": cluster_yaml("nonprod", pools).replace(
                REGISTRY.encode(), registry.encode()
            ),
        }
    )
    return model.clusters[name]


def test_rendered_policy_is_valid_per_the_crd_and_scoped_to_the_pools_repositories() -> None:
    cluster = a_cluster({"worker": "firewalld", "infra": "usbguard", "edge": "firewalld"})
    written = image_policy.file_for(cluster, public_key=PUBLIC_KEY)
    assert written.path == "clusters/nonprod/machineconfigs/layering-image-policy.yaml"
    document = yamlfile.load(written.content)
    assert crd.errors(CRD, document) == []
    assert cel_problems(document) == []
    assert document["kind"] == "ClusterImagePolicy"
    assert document["apiVersion"] == "config.openshift.io/v1"
    assert document["metadata"]["name"] == "layering-nonprod-os-images"
    assert machineconfig.parse_managed(written.content) is not None  # labelled as ours
    assert document["spec"]["scopes"] == [f"{REGISTRY}/firewalld", f"{REGISTRY}/usbguard"]
    assert written.scopes == (f"{REGISTRY}/firewalld", f"{REGISTRY}/usbguard")
    trust = document["spec"]["policy"]["rootOfTrust"]
    assert trust["policyType"] == "PublicKey"
    assert base64.b64decode(trust["publicKey"]["keyData"]) == PUBLIC_KEY
    assert document["spec"]["policy"]["signedIdentity"] == {"matchPolicy": "MatchRepoDigestOrExact"}


def test_rendering_is_byte_stable() -> None:
    cluster = a_cluster({"worker": "firewalld", "infra": "usbguard"})
    first = image_policy.file_for(cluster, public_key=PUBLIC_KEY).content
    assert image_policy.file_for(cluster, public_key=PUBLIC_KEY).content == first
    # the same key in another armour form (CRLF, blanks around it) is the same policy
    crlf = b"\n  " + PUBLIC_KEY.replace(b"\n", b"\r\n") + b"\n\n"
    assert image_policy.file_for(cluster, public_key=crlf).content == first
    swapped = a_cluster({"infra": "usbguard", "worker": "firewalld"})
    assert image_policy.file_for(swapped, public_key=PUBLIC_KEY).content == first
    assert image_policy.file_for(cluster, public_key=OTHER_KEY).content != first
    assert first.startswith(b"# Written by coreos-layering-pipeline")


@pytest.mark.parametrize(
    ("registry", "wrong"),
    [
        ("registry.example.com/layering", None),
        ("127.0.0.1:5000/t1", None),
        ("localhost:5000/layering", None),
        ("localhost/layering", None),
        ("registry:5000/layering", "must be a domain with a dot"),
        ("registry/layering", "must be a domain with a dot"),
    ],
)
def test_scope_rules(registry: str, wrong: str | None) -> None:
    cluster = a_cluster({"worker": "firewalld"}, registry=registry)
    problem = image_policy.problem(cluster, public_key=PUBLIC_KEY)
    if wrong is None:
        assert problem is None
        document = yamlfile.load(image_policy.file_for(cluster, public_key=PUBLIC_KEY).content)
        assert crd.errors(CRD, document) == []
        assert cel_problems(document) == []
    else:
        assert problem is not None
        assert "clusters/nonprod/cluster.yaml: registry:" in problem
        assert wrong in problem


def test_scope_check_is_linear_on_hostile_input() -> None:
    assert image_policy.scope_problem("a.b/" + "a" * 400 + "-" * 100 + "!") is not None
    assert image_policy.scope_problem("a.b/" + "a" * 600) is not None  # over 512


@pytest.mark.parametrize(
    ("public_key", "wrong"),
    [
        (b"", "is not a PEM public key"),
        (b"ssh-ed25519 AAAAC3Nza user@host", "is not a PEM public key"),
        (
            b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
            "is not a PEM public key",
        ),
        (b"-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----\n", "not base64"),
        (
            b"-----BEGIN PUBLIC KEY-----\n" + b"AAAA" * 1600 + b"\n-----END PUBLIC KEY-----\n",
            "68 to 8192",
        ),
    ],
)
def test_key_rules(public_key: bytes, wrong: str) -> None:
    problem = image_policy.key_problem(public_key)
    assert problem is not None
    assert wrong in problem
    with pytest.raises(ValueError, match="public key"):
        image_policy.render(cluster="nonprod", scopes=["a.b/c"], public_key=public_key)


def test_policy_json_is_what_the_mco_renders() -> None:
    nonprod = yamlfile.load(
        image_policy.file_for(
            a_cluster({"worker": "firewalld", "infra": "usbguard"}), public_key=PUBLIC_KEY
        ).content
    )
    other = yamlfile.load(
        image_policy.file_for(
            a_cluster({"worker": "firewalld"}, registry="quay.io/a/b/c", name="prod"),
            public_key=OTHER_KEY,
        ).content
    )
    data = image_policy.key_data(PUBLIC_KEY)
    other_data = image_policy.key_data(OTHER_KEY)
    signed = {"type": "sigstoreSigned", "signedIdentity": {"type": "matchRepoDigestOrExact"}}
    policy = image_policy.policy_json([nonprod, other, nonprod])
    assert policy == {
        "default": [{"type": "insecureAcceptAnything"}],
        "transports": {
            "docker-daemon": {"": [{"type": "insecureAcceptAnything"}]},
            "docker": {
                # one requirement per policy naming the scope, appended (all must hold)
                f"{REGISTRY}/firewalld": [{**signed, "keyData": data}, {**signed, "keyData": data}],
                f"{REGISTRY}/usbguard": [{**signed, "keyData": data}, {**signed, "keyData": data}],
                "quay.io/a/b/c/firewalld": [{**signed, "keyData": other_data}],
            },
            # "atomic" cannot hold three or more path segments
            "atomic": {
                f"{REGISTRY}/firewalld": [{**signed, "keyData": data}, {**signed, "keyData": data}],
                f"{REGISTRY}/usbguard": [{**signed, "keyData": data}, {**signed, "keyData": data}],
            },
        },
    }
    assert image_policy.policy_json([]) == {
        "default": [{"type": "insecureAcceptAnything"}],
        "transports": {"docker-daemon": {"": [{"type": "insecureAcceptAnything"}]}},
    }


def test_policy_json_maps_every_signed_identity() -> None:
    document = yamlfile.load(
        image_policy.file_for(a_cluster({"worker": "firewalld"}), public_key=PUBLIC_KEY).content
    )
    identities = {
        "MatchRepository": ({"matchPolicy": "MatchRepository"}, {"type": "matchRepository"}),
        "ExactRepository": (
            {"matchPolicy": "ExactRepository", "exactRepository": {"repository": "a.b/c"}},
            {"type": "exactRepository", "dockerRepository": "a.b/c"},
        ),
        "RemapIdentity": (
            {
                "matchPolicy": "RemapIdentity",
                "remapIdentity": {"prefix": "a.b/c", "signedPrefix": "d.e/f"},
            },
            {"type": "remapIdentity", "prefix": "a.b/c", "signedPrefix": "d.e/f"},
        ),
    }
    for spec, rendered in identities.values():
        document["spec"]["policy"]["signedIdentity"] = spec
        (requirement,) = image_policy.policy_json([document])["transports"]["docker"][
            f"{REGISTRY}/firewalld"
        ]
        assert requirement["signedIdentity"] == rendered
    document["spec"]["policy"]["rootOfTrust"] = {"policyType": "PKI", "pki": {}}
    with pytest.raises(ValueError, match="PKI"):
        image_policy.policy_json([document])


def plan_with_key(
    model: repo.Repository,
    lookups: dict[tuple[str, str], promotion.DigestLookup] = NONPROD_LOOKUPS,
    public_key: bytes | None = PUBLIC_KEY,
) -> promotion.PromotionPlan:
    return promotion.plan(
        model,
        environment="nonprod",
        source_commit=SOURCE,
        lookups=lookups,
        verifications={},
        now=NOW,
        public_key=public_key,
    )


def test_the_first_promotion_writes_the_policy_in_the_same_commit() -> None:
    plan = plan_with_key(repository(NONPROD))
    assert not plan.refused
    (policy,) = plan.policies
    assert policy.path == image_policy.path_for("nonprod")
    change = promotion_commit.change_of(plan)
    assert change is not None
    assert change.writes[policy.path] == policy.content
    assert {machineconfig.path_for("nonprod", p) for p in ("worker", "infra")} < set(change.writes)
    assert ("Layering-Image-Policy", "nonprod") in promotion_commit.trailers(change.message)
    assert "1 ClusterImagePolicy written" in change.message.splitlines()[0]
    # without a key: no policy
    assert plan_with_key(repository(NONPROD), public_key=None).policies == ()


def applied(plan: promotion.PromotionPlan, model: repo.Repository) -> repo.Repository:
    """The repository after the plan's commit (machineconfigs/ is all a commit changes)."""
    change = promotion_commit.change_of(plan)
    assert change is not None
    files = {**model.machineconfigs, **change.writes}
    return repo.Repository(model.images, model.clusters, files, model.problems)


def test_an_unchanged_policy_makes_no_commit_and_a_changed_one_does() -> None:
    model = repository(NONPROD)
    after = applied(plan_with_key(model), model)
    again = plan_with_key(after)
    assert again.policies == ()
    assert promotion_commit.change_of(again) is None
    # the key was rotated: the policy alone changes (the digests are checked against it)
    rotated = plan_with_key(after, public_key=OTHER_KEY)
    change = promotion_commit.change_of(rotated)
    assert change is not None
    assert set(change.writes) == {image_policy.path_for("nonprod")}
    # set after the pools were promoted without a key: written by the next promotion
    unkeyed = applied(plan_with_key(model, public_key=None), model)
    late = promotion_commit.change_of(plan_with_key(unkeyed))
    assert late is not None
    assert set(late.writes) == {image_policy.path_for("nonprod")}


def test_a_changed_image_changes_the_scopes_in_the_commit_of_its_machineconfig() -> None:
    model = repository(NONPROD)
    first = applied(plan_with_key(model), model)
    lookups = {
        ("firewalld", "nonprod"): NONPROD_LOOKUPS[("firewalld", "nonprod")],
    }
    narrowed = repository(
        {"nonprod": cluster_yaml("nonprod", {"worker": "firewalld", "infra": "firewalld"})},
        dict(first.machineconfigs),
    )
    plan = plan_with_key(narrowed, lookups)
    (policy,) = plan.policies
    assert policy.scopes == (f"{REGISTRY}/firewalld",)
    change = promotion_commit.change_of(plan)
    assert change is not None
    assert machineconfig.path_for("nonprod", "infra") in change.writes


def test_removing_the_last_pool_leaves_the_policy() -> None:
    model = repository(NONPROD)
    after = applied(plan_with_key(model), model)
    emptied = repository({"nonprod": cluster_yaml("nonprod", {})}, dict(after.machineconfigs))
    plan = plan_with_key(emptied, {})
    assert not plan.refused
    change = promotion_commit.change_of(plan)
    assert change is not None
    assert image_policy.path_for("nonprod") not in change.deletes | set(change.writes)
    assert len(change.deletes) == 2
    # the policy file is not taken for a MachineConfig overriding a pool's image
    assert not any(r.kind is promotion.RefusalKind.OVERRIDE for r in plan.refusals)


def test_a_bad_key_or_registry_refuses_naming_the_fix() -> None:
    plan = plan_with_key(repository(NONPROD), public_key=b"not a key")
    assert plan.refused
    assert promotion_commit.change_of(plan) is None
    assert "LAYERING_SIGNING_PUBLIC_KEY" in str(plan.refusals[0])
    shortname = repository(
        {
            "nonprod": cluster_yaml("nonprod", {"worker": "firewalld"}).replace(
                REGISTRY.encode(), b"registry:5000/layering"
            )
        }
    )
    plan = plan_with_key(
        shortname, {("firewalld", "nonprod"): NONPROD_LOOKUPS[("firewalld", "nonprod")]}
    )
    assert plan.refused
    assert plan.refusals[0].kind is promotion.RefusalKind.CONFIGURATION
    assert "clusters/nonprod/cluster.yaml: registry:" in str(plan.refusals[0])


def unsigned_lookups(reason: str) -> dict[tuple[str, str], promotion.DigestLookup]:
    return {
        **NONPROD_LOOKUPS,
        ("usbguard", "nonprod"): promotion.DigestLookup(
            key("usbguard"), digest_of("d"), unsigned=reason
        ),
    }


def test_an_unsigned_digest_refuses_the_promotion_and_fails_the_gate_naming_it() -> None:
    reason = "sha256:dddddddddddd is not signed by the signing key: no sigstore signature"
    plan = plan_with_key(repository(NONPROD), unsigned_lookups(reason))
    assert plan.refused
    assert promotion_commit.change_of(plan) is None
    (refusal,) = plan.refusals
    assert refusal.kind is promotion.RefusalKind.UNSIGNED
    assert (refusal.cluster, refusal.pool, refusal.image, refusal.digest) == (
        "nonprod",
        "infra",
        "usbguard",
        digest_of("d"),
    )
    model = repository(NONPROD)
    decision = gate.decide(
        promotion_policy.own(model, "nonprod"),
        lookups=unsigned_lookups(reason),
        verifications={},
        now=NOW,
        public_key=PUBLIC_KEY,
    )
    assert decision.state is gate.GateState.FAILURE
    assert decision.description.startswith("nonprod/infra (usbguard): sha256:dddddddddddd")
    assert "no sigstore signature" in decision.description


def test_a_pull_request_editing_the_policy_fails_the_gate() -> None:
    model = repository(NONPROD)
    head = applied(plan_with_key(model), model)
    path = image_policy.path_for("nonprod")
    edited = yamlfile.load(head.machineconfigs[path])
    edited["spec"]["policy"]["rootOfTrust"]["publicKey"]["keyData"] = image_policy.key_data(
        OTHER_KEY
    )
    merged = repo.Repository(
        head.images,
        head.clusters,
        {**head.machineconfigs, path: image_policy.to_yaml(edited)},
        head.problems,
    )
    decision = gate.decide(
        promotion_policy.in_force(merged, head=head, environment="nonprod"),
        lookups=NONPROD_LOOKUPS,
        verifications={},
        now=NOW,
        public_key=PUBLIC_KEY,
    )
    assert decision.state is gate.GateState.FAILURE
    assert "edits the ClusterImagePolicy" in decision.description
    unchanged = gate.decide(
        promotion_policy.own(head, "nonprod"),
        lookups=NONPROD_LOOKUPS,
        verifications={},
        now=NOW,
        public_key=PUBLIC_KEY,
    )
    assert unchanged.state is gate.GateState.SUCCESS


def test_the_trusted_key_is_read_from_the_setting_only(tmp_path: Path) -> None:
    assert signing_trust.public_key(load_settings()) is None
    path = tmp_path / "cosign.pub"
    path.write_bytes(PUBLIC_KEY)
    assert signing_trust.public_key(load_settings(signing_public_key=str(path))) == PUBLIC_KEY
    with pytest.raises(PermanentError, match=r"LAYERING_SIGNING_PUBLIC_KEY: cannot read"):
        signing_trust.public_key(load_settings(signing_public_key=str(tmp_path / "gone.pub")))
    path.write_bytes(b"A" * (signing_trust.MAX_BYTES + 1))
    with pytest.raises(PermanentError, match=r"LAYERING_SIGNING_PUBLIC_KEY: .* over 8192 bytes"):
        signing_trust.public_key(load_settings(signing_public_key=str(path)))
