"""The ClusterImagePolicy (`config.openshift.io/v1`) that makes a cluster's nodes verify the
layered images the pipeline promotes to it (issue 14), and the containers-policy.json the MCO
renders from such policies for the nodes. No I/O.

One policy per cluster, scoped to the repositories its pools' images are pushed to
(`<registry>/<image>`, nothing else in the registry), of type PublicKey with the service's
signing public key, written byte-stable next to the cluster's MachineConfigs (`path_for`) so
whatever syncs them applies it in the same sync. The promotion plan writes it in the commit of
the first osImageURL that needs it (promotion.py).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.core import machineconfig, names, repo, yamlfile

API_VERSION = "config.openshift.io/v1"
KIND = "ClusterImagePolicy"
FILE_NAME = "layering-image-policy.yaml"
CLUSTER_LABEL = "layering/cluster"
# a digest reference is checked against the repository the signature names (skopeo signs the
# tag it pushes): the CRD's default, spelled out so a reader of the file sees it
MATCH_POLICY = "MatchRepoDigestOrExact"
PEM_BEGIN = b"-----BEGIN PUBLIC KEY-----"
PEM_END = b"-----END PUBLIC KEY-----"
# the CRD's bounds: keyData 68..8192 characters, at most 256 scopes of at most 512 characters
MAX_KEY_DATA = 8192
MIN_KEY_DATA = 68
MAX_SCOPES = 256
MAX_SCOPE = 512
HEADER = (
    b"# Written by coreos-layering-pipeline on promotion; do not edit by hand.\n"
    b"# Nodes pull this cluster's layered images only when signed by this key (the MCO\n"
    b"# renders it into /etc/containers/policy.json).\n"
)

# The CRD's scope rules (CEL), without tags or digests (a scope here is a repository): a host
# with a dot, or localhost, with an optional port, then lower-case path components. Written
# so that repeated parts are separated by what they cannot match: linear time.
_HOST_LABEL = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?")
_PORT = re.compile(r"[0-9]+")
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_BASE64_LINE = re.compile(r"[A-Za-z0-9+/]+={0,2}")


@dataclass(frozen=True)
class PolicyFile:
    """The policy file a promotion writes for one cluster."""

    cluster: str
    path: str
    content: bytes
    scopes: tuple[str, ...]


def name_for(cluster: str) -> str:
    return f"layering-{cluster}-os-images"


def path_for(cluster: str) -> str:
    return f"{repo.CLUSTERS_DIR}/{cluster}/{repo.MACHINECONFIGS_DIR}/{FILE_NAME}"


def key_problem(public_key: bytes) -> str | None:
    """What keeps `public_key` from being a ClusterImagePolicy's keyData: it must be one PEM
    "PUBLIC KEY" block (the CRD checks the armour lines and the length)."""
    pem = _normalised(public_key)
    lines = pem.splitlines()
    if len(lines) < 3 or lines[0] != PEM_BEGIN or lines[-1] != PEM_END:
        return (
            "is not a PEM public key (-----BEGIN PUBLIC KEY----- ... -----END PUBLIC KEY-----); "
            "use the .pub file of `layering signing-key create`"
        )
    body = b"".join(lines[1:-1])
    try:
        if not all(_BASE64_LINE.fullmatch(line.decode("ascii")) for line in lines[1:-1]):
            raise ValueError("not base64")
        base64.b64decode(body, validate=True)
    except (ValueError, binascii.Error):
        return "is not a PEM public key: the lines between the armour are not base64"
    size = len(key_data(public_key))
    if not MIN_KEY_DATA <= size <= MAX_KEY_DATA:
        return f"is {size} characters as base64; a ClusterImagePolicy takes 68 to 8192"
    return None


def key_data(public_key: bytes) -> str:
    """The CRD's keyData: the PEM, base64-encoded (one armour form, so one set of bytes)."""
    return base64.b64encode(_normalised(public_key)).decode("ascii")


def _normalised(public_key: bytes) -> bytes:
    lines = [line.strip() for line in public_key.strip().splitlines()]
    return b"\n".join(lines) + b"\n"


def scope_problem(scope: str) -> str | None:
    """What keeps a repository from being a ClusterImagePolicy scope (the CRD's rules)."""
    if len(scope) > MAX_SCOPE:
        return f"is {len(scope)} characters; a scope takes at most {MAX_SCOPE}"
    host, _, path = scope.partition("/")
    hostname, colon, port = host.partition(":")
    labels = hostname.split(".")
    if colon and not _PORT.fullmatch(port):
        return f"port {port!r} is not a number"
    if hostname != "localhost" and (
        len(labels) < 2 or not all(_HOST_LABEL.fullmatch(label) for label in labels)
    ):
        return (
            f"host {hostname!r} must be a domain with a dot (or localhost): nodes could not "
            "verify images by a short name"
        )
    if path and not all(_PATH_COMPONENT.fullmatch(part) for part in path.split("/")):
        return f"path {path!r} must be lower-case components separated by /"
    return None


def scopes(cluster: repo.Cluster) -> tuple[str, ...]:
    """The repositories the cluster's pools boot images from, sorted and once each."""
    return tuple(sorted({cluster.image_repository(image) for image in cluster.pools.values()}))


def render(*, cluster: str, scopes: Sequence[str], public_key: bytes) -> dict[str, Any]:
    """The ClusterImagePolicy; raises ValueError naming what the CRD would refuse."""
    if not names.is_dns_label(cluster):
        raise ValueError(f"cluster {cluster!r} is not a DNS label")
    problem = key_problem(public_key)
    if problem is not None:
        raise ValueError(f"the public key {problem}")
    if not scopes or len(scopes) > MAX_SCOPES:
        raise ValueError(f"{len(scopes)} scopes; a ClusterImagePolicy takes 1 to {MAX_SCOPES}")
    for scope in scopes:
        problem = scope_problem(scope)
        if problem is not None:
            raise ValueError(f"scope {scope!r} {problem}")
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name_for(cluster),
            "labels": {
                machineconfig.MANAGED_BY_LABEL: machineconfig.MANAGER,
                CLUSTER_LABEL: cluster,
            },
        },
        "spec": {
            "scopes": sorted(set(scopes)),
            "policy": {
                "rootOfTrust": {
                    "policyType": "PublicKey",
                    "publicKey": {"keyData": key_data(public_key)},
                },
                "signedIdentity": {"matchPolicy": MATCH_POLICY},
            },
        },
    }


def to_yaml(policy: Mapping[str, Any]) -> bytes:
    """Same object, same bytes (sorted keys): an unchanged policy makes no commit."""
    return HEADER + yamlfile.dump(dict(policy))


def problem(cluster: repo.Cluster, *, public_key: bytes) -> str | None:
    """What keeps the cluster's policy from being valid per the CRD, naming where to fix it."""
    wrong = key_problem(public_key)
    if wrong is not None:
        return f"the signing public key (LAYERING_SIGNING_PUBLIC_KEY) {wrong}"
    for scope in scopes(cluster):
        wrong = scope_problem(scope)
        if wrong is not None:
            return (
                f"{cluster.path}: registry: {scope} cannot be a ClusterImagePolicy scope: {wrong}"
            )
    return None


def file_for(cluster: repo.Cluster, *, public_key: bytes) -> PolicyFile:
    """The policy file of a cluster that boots layered images; raises ValueError (see render)."""
    found = scopes(cluster)
    content = to_yaml(render(cluster=cluster.name, scopes=found, public_key=public_key))
    return PolicyFile(cluster.name, path_for(cluster.name), content, found)


# How the MCO maps ClusterImagePolicy objects onto the nodes' /etc/containers/policy.json:
# openshift/machine-config-operator pkg/controller/container-runtime-config
# (container_runtime_config_controller.go getValidScopePolicies: each policy's requirement is
# appended to every one of its scopes; helpers.go policyItemFromSpec: PublicKey -> sigstoreSigned
# with keyData (and rekorPublicKeyData), signedIdentity by matchPolicy, MatchRepoDigestOrExact
# when unset; helpers.go updatePolicyJSON: the scopes go under "docker", and under "atomic" those
# with fewer than three "/"), over the template's default insecureAcceptAnything
# (templates/worker/01-worker-container-runtime/_base/files/policy.yaml). The MCO also writes
# registries.d/sigstore-registries.yaml with use-sigstore-attachments for every scope.
_IDENTITY_TYPES: Mapping[str, str] = {
    "MatchRepoDigestOrExact": "matchRepoDigestOrExact",
    "MatchRepository": "matchRepository",
    "ExactRepository": "exactRepository",
    "RemapIdentity": "remapIdentity",
}


def policy_json(policies: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The containers-policy.json the MCO renders for the nodes from these ClusterImagePolicy
    objects (PublicKey policies; raises ValueError for another root of trust)."""
    scoped: dict[str, list[dict[str, Any]]] = {}
    for policy in policies:
        spec = policy["spec"]
        requirement = _requirement(spec["policy"])
        for scope in spec["scopes"]:
            scoped.setdefault(str(scope), []).append(requirement)
    transports: dict[str, Any] = {"docker-daemon": {"": [{"type": "insecureAcceptAnything"}]}}
    if scoped:
        transports["docker"] = scoped
        transports["atomic"] = {s: r for s, r in scoped.items() if s.count("/") < 3}
    return {"default": [{"type": "insecureAcceptAnything"}], "transports": transports}


def _requirement(policy: Mapping[str, Any]) -> dict[str, Any]:
    trust = policy["rootOfTrust"]
    if trust.get("policyType") != "PublicKey":
        raise ValueError(f"policyType {trust.get('policyType')!r}: only PublicKey is rendered")
    key = trust["publicKey"]
    requirement: dict[str, Any] = {"type": "sigstoreSigned", "keyData": key["keyData"]}
    if key.get("rekorKeyData"):
        requirement["rekorPublicKeyData"] = key["rekorKeyData"]
    identity = policy.get("signedIdentity") or {"matchPolicy": MATCH_POLICY}
    match = _IDENTITY_TYPES[identity["matchPolicy"]]
    signed: dict[str, Any] = {"type": match}
    if match == "exactRepository":
        signed["dockerRepository"] = identity["exactRepository"]["repository"]
    elif match == "remapIdentity":
        signed["prefix"] = identity["remapIdentity"]["prefix"]
        signed["signedPrefix"] = identity["remapIdentity"]["signedPrefix"]
    requirement["signedIdentity"] = signed
    return requirement
