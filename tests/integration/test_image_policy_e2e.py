"""Signed images and their ClusterImagePolicy through promotion (issue 14), end to end: real Git
repositories, the real registry holding images signed by skopeo (sigstore attachments), keys
from `pipeline.adapters.signing_keys`, the real signature check adapter, a private Redis.

The acceptance: the policy.json equivalent to the written ClusterImagePolicy (what the MCO
renders for the nodes) makes `skopeo copy` accept the promoted digest, and refuse an unsigned
image and one signed by another key. Debian's skopeo 1.9.3 (this host's) ships containers/image
with sigstore patched out: it applies the policy's scopes, finds the attachments through the
registries.d and refuses an unsigned image itself, but stops at any signature it finds
("Debian-local change: sigstore disabled"); there the signature is checked by the adapter with
the policy's own keyData. A skopeo with sigstore decides all three by itself."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import yaml
from celery.result import AsyncResult
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.adapters import branch_writer, signatures, signing_keys
from pipeline.adapters.promotion_store import PromotionStore
from pipeline.core import (
    commit_status,
    gate,
    image_policy,
    machineconfig,
    promotion,
    promotion_commit,
    yamlfile,
)
from pipeline.flows import gate as gate_flow
from pipeline.flows import promote as promote_flow
from pipeline.flows import promotion_inputs
from tests import crd, services
from tests.conftest import require_tools
from tests.integration.promotion_support import (
    EnvRepo,
    HttpRegistry,
    NoClusters,
    Recorder,
    push_image,
    push_targets,
    recorded_builds,
)
from tests.plugins.builds import VERIFICATION_KEY, StartWorker

pytestmark = pytest.mark.integration
T0 = 1_800_000_000.0
CRD = "clusterimagepolicies.crd.yaml"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
# Debian's skopeo 1.9.3 (containers/image 5.23 with a Debian patch) stops here once it finds
# a sigstore signature, so it can check the policy's scopes and the attachments but not the
# signature itself
SIGSTORE_PATCHED_OUT = "Debian-local change: sigstore disabled"


@dataclass
class Promoted:
    gitops: EnvRepo
    digests: dict[tuple[str, str], str]  # (image, cluster) -> digest pushed and recorded
    redis_url: str


@dataclass(frozen=True)
class Keys:
    trusted: signing_keys.KeyPair
    other: signing_keys.KeyPair


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    root = tmp_path_factory.mktemp("keys")
    return Keys(signing_keys.create(root / "trusted"), signing_keys.create(root / "other"))


@pytest.fixture
def redis_client(redis_server: services.RedisServer) -> Iterator[redis.Redis[bytes]]:
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield client
    client.close()


def skopeo(registry: services.Registry, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["skopeo", "--registries-conf", str(registry.registries_conf), *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def registries_d(directory: Path, scopes: list[str]) -> Path:
    """What the MCO writes next to policy.json (sigstore-registries.yaml): every scope's
    signatures are attachments in the registry."""
    directory.mkdir(parents=True, exist_ok=True)
    document = {"docker": {scope: {"use-sigstore-attachments": True} for scope in scopes}}
    (directory / "sigstore-registries.yaml").write_text(yaml.safe_dump(document))
    return directory


def _put(url: str, body: bytes, content_type: str) -> urllib.request.Request:
    return urllib.request.Request(
        url, data=body, method="PUT", headers={"Content-Type": content_type}
    )


def _blob(host: str, path: str, blob: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    start = urllib.request.Request(f"http://{host}/v2/{path}/blobs/uploads/", method="POST")
    with urllib.request.urlopen(start) as answer:
        location = answer.headers["Location"]
    if location.startswith("/"):
        location = f"http://{host}{location}"
    separator = "&" if "?" in location else "?"
    with urllib.request.urlopen(
        _put(f"{location}{separator}digest={digest}", blob, "application/octet-stream")
    ):
        pass
    return digest


def sign(
    registry: services.Registry, reference: str, pair: signing_keys.KeyPair, work: Path
) -> None:
    """Store a sigstore signature of `reference` (repo@digest) by `pair` in the registry, as
    a signed push does: the simple-signing payload, its ECDSA-P256/SHA-256 signature in the
    layer's annotation, an OCI manifest at `sha256-<hex>.sig` (what containers/image reads
    with use-sigstore-attachments). Made here: this host's skopeo (Debian's 1.9.3) has
    sigstore signing patched out."""
    del work
    repository, digest = reference.split("@")
    host, _, path = repository.partition("/")
    der = signing_keys.decrypt(
        pair.private_key.read_bytes(), pair.passphrase_file.read_bytes().strip()
    )
    key = serialization.load_der_private_key(der, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    payload = json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": f"{repository}:signed"},
                "image": {"docker-manifest-digest": digest},
                "type": "cosign container image signature",
            },
            "optional": {},
        }
    ).encode()
    signature = key.sign(payload, ec.ECDSA(hashes.SHA256()))
    config = b"{}"
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "size": len(config),
                "digest": _blob(host, path, config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                    "size": len(payload),
                    "digest": _blob(host, path, payload),
                    "annotations": {
                        "dev.cosignproject.cosign/signature": base64.b64encode(signature).decode()
                    },
                }
            ],
        }
    ).encode()
    tag = digest.replace(":", "-") + ".sig"
    with urllib.request.urlopen(
        _put(f"http://{host}/v2/{path}/manifests/{tag}", manifest, OCI_MANIFEST)
    ):
        pass


def sources(
    promoted: Promoted, client: redis.Redis[bytes], registry: services.Registry, keys: Keys
) -> promotion_inputs.Sources:
    return promotion_inputs.Sources(
        registry=HttpRegistry(),
        store=PromotionStore(client, key=VERIFICATION_KEY.encode()),
        built=recorded_builds(promoted.redis_url),
        clusters=NoClusters(),
        signing=promotion_inputs.Signing(
            public_key=keys.trusted.public_key.read_bytes(),
            check=signatures.Signatures(registries_conf=registry.registries_conf),
        ),
    )


@pytest.fixture
def gitops(
    tmp_path: Path,
    registry: services.Registry,
    redis_server: services.RedisServer,
    redis_client: redis.Redis[bytes],
) -> Promoted:
    """nonprod (worker: firewalld, infra: htop) with both images pushed and recorded as built,
    unsigned so far; main merged into env/nonprod."""
    require_tools("git", "skopeo")
    env_repo = EnvRepo(tmp_path / "git")
    env_repo.add_image("firewalld", "firewalld")
    env_repo.add_image("htop", "htop")
    env_repo.registry_prefix = f"{registry.host}/t{uuid.uuid4().hex[:12]}"
    env_repo.add_cluster(
        "nonprod",
        environment="nonprod",
        registry=env_repo.registry_prefix,
        pools={"worker": "firewalld", "infra": "htop"},
    )
    env_repo.commit("seed")
    env_repo.push("main")
    model = env_repo.origin_model("refs/heads/main")
    targets = promotion.targets(model, "nonprod")
    pushed = push_targets(registry.host, targets, built=recorded_builds(redis_server.url))
    env_repo.merge_into("main", "env/nonprod")
    return Promoted(
        env_repo,
        {(t.image, t.cluster): pushed[t.tag_reference] for t in targets},
        redis_server.url,
    )


def reference(promoted: Promoted, image: str) -> str:
    return f"{promoted.gitops.registry_prefix}/{image}@{promoted.digests[(image, 'nonprod')]}"


def run_promote(
    promoted: Promoted,
    tmp_path: Path,
    client: redis.Redis[bytes],
    registry: services.Registry,
    keys: Keys,
    recorder: Recorder,
) -> promote_flow.PromotionOutcome:
    gitops = promoted.gitops
    return promote_flow.promote(
        gitops.origin_head("env/nonprod"),
        "nonprod",
        writer=branch_writer.BranchWriter(
            url=gitops.url,
            workdir=tmp_path / "scratch",
            lock=branch_writer.RedisBranchLock(client),
        ),
        sources=sources(promoted, client, registry, keys),
        reporter=recorder,
        now=lambda: T0,
    )


def test_the_promotion_commit_holds_the_machineconfigs_and_the_policy_nodes_accept(
    gitops: Promoted,
    tmp_path: Path,
    redis_client: redis.Redis[bytes],
    registry: services.Registry,
    keys: Keys,
) -> None:
    for image in ("firewalld", "htop"):
        sign(registry, reference(gitops, image), keys.trusted, tmp_path)
    before = gitops.gitops.origin_head("env/nonprod")
    outcome = run_promote(gitops, tmp_path, redis_client, registry, keys, Recorder())
    assert outcome.commit_sha is not None
    model = gitops.gitops.origin_model(outcome.commit_sha)
    path = image_policy.path_for("nonprod")
    assert path not in gitops.gitops.origin_model(before).machineconfigs
    # one commit: the policy and every pool's MachineConfig
    assert {path, *(machineconfig.path_for("nonprod", p) for p in ("worker", "infra"))} <= set(
        model.machineconfigs
    )
    (commit,) = [c for c in gitops.gitops.origin_history("env/nonprod") if c.hexsha != before][:1]
    assert commit.hexsha == outcome.commit_sha
    assert ("Layering-Image-Policy", "nonprod") in promotion_commit.trailers(str(commit.message))
    document = yamlfile.load(model.machineconfigs[path])
    assert crd.errors(CRD, document) == []
    assert document["spec"]["scopes"] == [
        f"{gitops.gitops.registry_prefix}/firewalld",
        f"{gitops.gitops.registry_prefix}/htop",
    ]
    again = run_promote(gitops, tmp_path, redis_client, registry, keys, Recorder())
    assert again.commit_sha is None

    # the acceptance: the nodes' policy.json, as the MCO renders it from the written policy
    node = tmp_path / "node"
    node.mkdir()
    policy_file = node / "policy.json"
    policy_file.write_text(json.dumps(image_policy.policy_json([document])))
    attachments = registries_d(node / "registries.d", document["spec"]["scopes"])

    def pull(image_reference: str) -> subprocess.CompletedProcess[str]:
        return skopeo(
            registry,
            "--policy",
            str(policy_file),
            "--registries.d",
            str(attachments),
            "copy",
            f"docker://{image_reference}",
            f"dir:{node / uuid.uuid4().hex[:8]}",
        )

    trusted = base64.b64decode(document["spec"]["policy"]["rootOfTrust"]["publicKey"]["keyData"])
    check = signatures.Signatures(registries_conf=registry.registries_conf)

    def verdict(image_reference: str) -> str | None:
        """The node's verdict under the policy: None when it would pull the image, else why.
        Where skopeo stops at a found signature (SIGSTORE_PATCHED_OUT), the signature is
        checked with the policy's own keyData by the adapter, as containers/image would."""
        pulled = pull(image_reference)
        if pulled.returncode == 0:
            return None
        if SIGSTORE_PATCHED_OUT in pulled.stderr:
            return check.problem(image_reference, public_key=trusted)
        return pulled.stderr

    worker = yamlfile.load(model.machineconfigs[machineconfig.path_for("nonprod", "worker")])
    promoted = str(worker["spec"]["osImageURL"])
    assert promoted == reference(gitops, "firewalld")
    assert verdict(promoted) is None

    repository = f"{gitops.gitops.registry_prefix}/firewalld"
    path_in_registry = repository.removeprefix(f"{registry.host}/")
    unsigned = push_image(registry.host, path_in_registry, "unsigned", content=b"unsigned")
    refused = verdict(f"{repository}@{unsigned}")
    assert refused is not None
    assert "A signature was required, but no signature exists" in refused

    other = push_image(registry.host, path_in_registry, "other-key", content=b"other key")
    sign(registry, f"{repository}@{other}", keys.other, tmp_path)
    refused = verdict(f"{repository}@{other}")
    assert refused is not None
    assert "signed by another key" in refused or "invalid signature" in refused

    # outside the policy's scopes the nodes' default (insecureAcceptAnything) holds
    elsewhere = f"{gitops.gitops.registry_prefix}/elsewhere"
    outside = push_image(
        registry.host, elsewhere.removeprefix(f"{registry.host}/"), "x", content=b"outside"
    )
    assert verdict(f"{elsewhere}@{outside}") is None


@pytest.mark.parametrize("signed_by", ["nobody", "another key"])
def test_the_gate_and_the_promotion_refuse_a_digest_not_signed_by_the_key_and_name_it(
    signed_by: str,
    gitops: Promoted,
    tmp_path: Path,
    redis_client: redis.Redis[bytes],
    registry: services.Registry,
    keys: Keys,
) -> None:
    sign(registry, reference(gitops, "firewalld"), keys.trusted, tmp_path)
    if signed_by == "another key":
        sign(registry, reference(gitops, "htop"), keys.other, tmp_path)
    why = "no sigstore signature" if signed_by == "nobody" else "signed by another key"
    digest = gitops.digests[("htop", "nonprod")]
    named = f"nonprod/infra (htop): sha256:{commit_status.short_digest(digest)}"

    model = gitops.gitops.origin_model("refs/heads/env/nonprod")
    recorder = Recorder()
    decision = gate_flow.judge(
        model,
        head=model,
        head_sha=gitops.gitops.origin_head("env/nonprod"),
        environment="nonprod",
        sources=sources(gitops, redis_client, registry, keys),
        reporter=recorder,
        now=T0,
    )
    assert decision.state is gate.GateState.FAILURE
    assert decision.description.startswith(named)
    assert why in decision.description
    (refusal,) = decision.refusals
    assert (refusal.kind, refusal.digest) == (promotion.RefusalKind.UNSIGNED, digest)
    assert recorder.last("layering/gate/nonprod")[2] == "failure"

    head = gitops.gitops.origin_head("env/nonprod")
    recorder = Recorder()
    outcome = run_promote(gitops, tmp_path, redis_client, registry, keys, recorder)
    assert outcome.commit_sha is None
    assert gitops.gitops.origin_head("env/nonprod") == head
    _, _, state, text = recorder.last("layering/promote/nonprod")
    assert state == "failure"
    assert named in text
    assert why in text


def test_the_promotion_worker_trusts_the_key_of_its_setting(
    gitops: Promoted,
    tmp_path: Path,
    registry: services.Registry,
    keys: Keys,
    start_worker: StartWorker,
) -> None:
    """workers/promotion_tasks.py wires LAYERING_SIGNING_PUBLIC_KEY: "layering.promote"
    refuses an unsigned digest, then, once it is signed, commits the policy with the pools."""
    require_tools("redis-server")
    sign(registry, reference(gitops, "firewalld"), keys.trusted, tmp_path)
    # a queue of its own: other workers of this test process may share the session's Redis
    # and listen on "promotions" without the signing key
    queue = f"promotions-signed-{uuid.uuid4().hex[:6]}"
    worker = start_worker(
        queue,
        concurrency=1,
        queues=queue,
        extra_env={
            "LAYERING_REDIS_URL": gitops.redis_url,
            "LAYERING_REPO_URL": gitops.gitops.url,
            "LAYERING_SIGNING_PUBLIC_KEY": str(keys.trusted.public_key),
            "LAYERING_REGISTRIES_CONF": str(registry.registries_conf),
        },
    )

    def promote() -> dict[str, object]:
        head = gitops.gitops.origin_head("env/nonprod")
        sent = worker.app.send_task("layering.promote", args=[head, "nonprod"], queue=queue)
        try:
            answer = AsyncResult(sent.id, app=worker.app).get(timeout=90)
        except Exception as exc:
            raise AssertionError(f"{exc}\n{worker.log.read_text()[-4000:]}") from exc
        assert isinstance(answer, dict)
        return answer

    refused = promote()
    assert refused["commit_sha"] is None
    digest = gitops.digests[("htop", "nonprod")]
    assert refused["refusals"] == [
        f"nonprod/infra (htop): sha256:{commit_status.short_digest(digest)} is not signed by "
        "the signing key: no sigstore signature"
    ]

    sign(registry, reference(gitops, "htop"), keys.trusted, tmp_path)
    promoted = promote()
    assert promoted["refusals"] == []
    assert promoted["commit_sha"]
    model = gitops.gitops.origin_model(str(promoted["commit_sha"]))
    document = yamlfile.load(model.machineconfigs[image_policy.path_for("nonprod")])
    assert crd.errors(CRD, document) == []
    key_data = document["spec"]["policy"]["rootOfTrust"]["publicKey"]["keyData"]
    assert base64.b64decode(key_data) == keys.trusted.public_key.read_bytes()
