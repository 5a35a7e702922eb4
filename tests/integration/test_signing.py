"""Signed pushes (issue 14): keys from `layering signing-key create` that skopeo signs with, a
worker's pushes signed with the sigstore signature stored in the registry, containers/image's
`sigstoreSigned` policy (what a node's policy.json holds) accepting them and refusing unsigned
images and other keys, the signature check adapter saying the same, and the passphrase kept
out of every log, argv and record. Real skopeo, buildah, docker-registry, Redis and worker."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.adapters import buildah, signatures, signed_push, signing_keys
from pipeline.core import builds
from pipeline.core.errors import InputError, PermanentError, TemporaryError
from tests import services
from tests.plugins.builds import (
    BaseImage,
    BuildahStorage,
    Worker,
    git_commit_all,
    launch_worker,
    make_worker_env,
    submit_build,
    write_repository,
)

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Keys:
    trusted: signing_keys.KeyPair
    other: signing_keys.KeyPair

    @property
    def passphrase(self) -> str:
        return self.trusted.passphrase_file.read_text()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    root = tmp_path_factory.mktemp("keys")
    assert cli.main(["signing-key", "create", "--dir", str(root / "trusted")]) == 0
    return Keys(signing_keys.paths(root / "trusted"), signing_keys.create(root / "other"))


def skopeo(*argv: str) -> subprocess.CompletedProcess[str]:
    # skopeo 1.9 ignores CONTAINERS_REGISTRIES_CONF (containers_env sets it): pass it on
    conf = os.environ.get("CONTAINERS_REGISTRIES_CONF")
    flags = ["--registries-conf", conf] if conf else []
    return subprocess.run(
        ["skopeo", *flags, *argv], capture_output=True, text=True, check=False, timeout=120
    )


def sigstore_registries_d(directory: Path, host: str) -> Path:
    """registries.d as the MCO writes it for a ClusterImagePolicy's scope: sigstore signatures
    are read from the registry, next to the image."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sigstore.yaml").write_text(
        f"docker:\n  {host}:\n    use-sigstore-attachments: true\n"
    )
    return directory


def policy(directory: Path, *, repository: str, public_key: Path) -> Path:
    """A policy.json like the one the MCO renders from a ClusterImagePolicy: images of
    `repository` need a sigstore signature by `public_key`, everything else is rejected."""
    path = directory / "policy.json"
    document = {
        "default": [{"type": "reject"}],
        "transports": {
            "docker": {
                repository: [
                    {
                        "type": "sigstoreSigned",
                        "keyPath": str(public_key),
                        "signedIdentity": {"type": "matchRepoDigestOrExact"},
                    }
                ]
            },
            "dir": {"": [{"type": "insecureAcceptAnything"}]},
        },
    }
    path.write_text(json.dumps(document))
    return path


def pulled_under_policy(
    tmp_path: Path, reference: str, *, public_key: Path, host: str
) -> subprocess.CompletedProcess[str]:
    """`skopeo copy` of `reference` as a node pulls it: under the sigstoreSigned policy."""
    directory = tmp_path / uuid.uuid4().hex[:8]
    directory.mkdir()
    return skopeo(
        "--policy",
        str(policy(directory, repository=reference.split("@", 1)[0], public_key=public_key)),
        "--registries.d",
        str(sigstore_registries_d(directory / "registries.d", host)),
        "copy",
        f"docker://{reference}",
        f"dir:{directory / 'image'}",
    )


def pushed_with(
    storage: BuildahStorage,
    target: str,
    registry: services.Registry,
    work: Path,
    signing: signed_push.Signing | None,
) -> str:
    """A small new image pushed to `target` by the product's push (signed with `signing`, or
    not); its repo@digest."""
    scratch_image(storage, target)
    config = buildah.BuildahConfig(
        storage_driver="vfs",
        root=storage.root,
        runroot=storage.runroot,
        registries_conf=registry.registries_conf,
        signing=signing,
    )
    digest = buildah.Buildah(config).push(spec_for(target, work), on_line=lambda _: None)
    return f"{target.rsplit(':', 1)[0]}@{digest}"


def scratch_image(storage: BuildahStorage, name: str) -> None:
    """A small image called `name` in `storage` (committed from scratch), to push."""
    container = subprocess.run(
        [*storage.argv(), "from", "scratch"], capture_output=True, text=True, check=True
    ).stdout.strip()
    marker = storage.root.parent / f"marker-{uuid.uuid4().hex}"
    marker.write_text(uuid.uuid4().hex)
    subprocess.run([*storage.argv(), "copy", container, str(marker), "/marker"], check=True)
    subprocess.run([*storage.argv(), "commit", "-q", container, name], check=True)
    subprocess.run([*storage.argv(), "rm", container], check=True, capture_output=True)


def spec_for(target: str, tmp_path: Path) -> builds.BuildSpec:
    return builds.BuildSpec(
        image="signed",
        cluster="dev",
        build_key="k" * 64,
        target=target,
        base="unused",
        containerfile="FROM scratch\n",
        context=tmp_path,
        build_args={},
        labels={},
    )


# --- keys -----------------------------------------------------------------------------------


def test_signing_key_create_writes_a_key_pushes_are_signed_with_and_never_overwrites_it(
    keys: Keys, tmp_path: Path, registry: services.Registry, containers_env: dict[str, str]
) -> None:
    pair = keys.trusted
    assert stat.S_IMODE(pair.private_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(pair.passphrase_file.stat().st_mode) == 0o600
    assert pair.private_key.read_text().startswith("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY")
    assert pair.public_key.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert keys.passphrase not in pair.private_key.read_text()
    envelope = signing_keys.decrypt(pair.private_key.read_bytes(), keys.passphrase.encode())
    assert envelope[:1] == b"\x30"  # PKCS#8 DER
    before = pair.private_key.read_bytes()
    with pytest.raises(InputError, match=r"holds a signing key already \(cosign\.key, .*--force"):
        signing_keys.create(pair.private_key.parent)
    assert cli.main(["signing-key", "create", "--dir", str(pair.private_key.parent)]) == 2
    assert pair.private_key.read_bytes() == before

    # a push signed with it carries a signature by it over the pushed digest
    storage = BuildahStorage(tmp_path / "s" / "root", tmp_path / "s" / "run")
    work = tmp_path / "work"
    work.mkdir()
    signing = signed_push.Signing(pair.private_key, pair.passphrase_file)
    reference = pushed_with(storage, f"{registry.host}/keytest:1", registry, work, signing)
    check = signatures.Signatures(registries_conf=registry.registries_conf)
    assert check.problem(reference, public_key=pair.public_key.read_bytes()) is None
    assert check.problem(reference, public_key=keys.other.public_key.read_bytes()) == (
        f"{reference}: signed by another key"
    )

    # --force replaces it
    assert cli.main(["signing-key", "create", "--dir", str(work / "k")]) == 0
    assert cli.main(["signing-key", "create", "--dir", str(work / "k"), "--force"]) == 0


def test_a_partial_key_directory_is_refused_rather_than_half_replaced(tmp_path: Path) -> None:
    pair, made = signing_keys.ensure(tmp_path / "signing")
    assert made
    assert signing_keys.ensure(tmp_path / "signing") == (pair, False)
    pair.passphrase_file.unlink()
    with pytest.raises(PermanentError, match=r"cosign\.password missing"):
        signing_keys.ensure(tmp_path / "signing")


def test_wrong_passphrase_is_a_clear_error_naming_the_setting(
    keys: Keys, tmp_path: Path, registry: services.Registry, containers_env: dict[str, str]
) -> None:
    wrong = tmp_path / "wrong-passphrase"
    secret = "not-the-passphrase-" + uuid.uuid4().hex
    wrong.write_text(secret)
    with pytest.raises(PermanentError) as checked:
        signing_keys.load(keys.trusted.private_key, wrong)
    assert "LAYERING_SIGNING_PASSPHRASE_FILE" in str(checked.value)
    assert secret not in str(checked.value)
    assert keys.passphrase not in str(checked.value)
    with pytest.raises(PermanentError, match="LAYERING_SIGNING_KEY: cannot read"):
        signing_keys.load(tmp_path / "absent.key", wrong)

    # the push itself, should the key change under a running worker
    storage = BuildahStorage(tmp_path / "s" / "root", tmp_path / "s" / "run")
    target = f"{registry.host}/wrongpass:1"
    scratch_image(storage, target)
    config = buildah.BuildahConfig(
        storage_driver="vfs",
        root=storage.root,
        runroot=storage.runroot,
        registries_conf=registry.registries_conf,
        signing=signed_push.Signing(private_key=keys.trusted.private_key, passphrase_file=wrong),
    )
    lines: list[str] = []
    with pytest.raises(PermanentError) as pushed:
        buildah.Buildah(config).push(spec_for(target, tmp_path), on_line=lines.append)
    message = str(pushed.value)
    assert "LAYERING_SIGNING_KEY" in message
    assert "LAYERING_SIGNING_PASSPHRASE_FILE" in message
    assert secret not in message
    assert secret not in "\n".join(lines)


# --- a worker's signed push, the policy, the adapter -----------------------------------------


@pytest.fixture(scope="module")
def signing_worker(
    tmp_path_factory: pytest.TempPathFactory,
    registry: services.Registry,
    buildah_storage: BuildahStorage,
    containers_env: dict[str, str],
    keys: Keys,
) -> Iterator[Worker]:
    """A builds worker with LAYERING_SIGNING_KEY set, on a Redis of its own (no other test's
    worker takes its builds); skopeo through a wrapper that records every argv."""
    directory = tmp_path_factory.mktemp("signing-worker")
    redis_server = services.RedisServer(directory / "redis").start()
    env = make_worker_env(
        directory / "worker", redis_url=redis_server.url, registry=registry, storage=buildah_storage
    )
    skopeo_log = directory / "skopeo-calls.log"
    wrapper = directory / "skopeo-wrapper"
    real = shutil.which("skopeo") or "skopeo"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{skopeo_log}"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    worker = launch_worker(
        env,
        "signing",
        pool="solo",
        concurrency=1,
        queues="builds",
        extra_env={
            "LAYERING_SIGNING_KEY": str(keys.trusted.private_key),
            "LAYERING_SIGNING_PASSPHRASE_FILE": str(keys.trusted.passphrase_file),
            "LAYERING_SKOPEO_COMMAND": str(wrapper),
        },
    )
    try:
        yield worker
    finally:
        worker.stop()
        redis_server.stop()


@dataclass(frozen=True)
class Pushed:
    signed: str  # repo@digest a worker pushed, signed by the trusted key
    unsigned: str  # the same image copied unsigned to a repository of its own
    other_key: str  # the same image signed by another key, in a repository of its own
    record: dict[str, object]


@pytest.fixture(scope="module")
def pushed(
    signing_worker: Worker,
    tmp_path_factory: pytest.TempPathFactory,
    registry: services.Registry,
    base_image: BaseImage,
    keys: Keys,
) -> Pushed:
    root = tmp_path_factory.mktemp("gitops-signed")
    repository = f"{registry.host}/signed-{uuid.uuid4().hex[:8]}"
    containerfile = f"FROM x\nRUN echo {uuid.uuid4().hex} > /etc/signed\n"
    write_repository(
        root,
        base=base_image,
        registry=repository,
        images={"motd": {"Containerfile": containerfile}},
        clusters={"dev": {"pools": {"worker": "motd"}}},
    )
    sha = git_commit_all(root)
    build_id = submit_build(
        signing_worker.app,
        signing_worker.settings,
        source=str(root),
        commit_sha=sha,
        image="motd",
        cluster="dev",
    )
    record = signing_worker.wait_for_build(build_id, timeout=240)
    assert record["state"] == "succeeded", record
    work = tmp_path_factory.mktemp("other-key")
    storage = BuildahStorage(work / "s" / "root", work / "s" / "run")
    other = signed_push.Signing(keys.other.private_key, keys.other.passphrase_file)
    suffix = uuid.uuid4().hex[:8]
    return Pushed(
        signed=f"{repository}/motd@{record['digest']}",
        unsigned=pushed_with(storage, f"{registry.host}/unsigned-{suffix}:1", registry, work, None),
        other_key=pushed_with(storage, f"{registry.host}/other-{suffix}:1", registry, work, other),
        record=record,
    )


def test_a_worker_build_pushes_an_image_signed_next_to_it(
    pushed: Pushed, signing_worker: Worker, keys: Keys
) -> None:
    repository, digest = pushed.signed.split("@")
    tags = skopeo("list-tags", f"docker://{repository}")
    assert f"{digest.replace(':', '-')}.sig" in tags.stdout
    log = signing_worker.env.store().read_log(str(pushed.record["id"]), limit=10_000)
    assert f"signed {digest} with {keys.trusted.private_key}: {repository}:" in "\n".join(log)
    assert "pushes are signed with the sigstore key" in signing_worker.log.read_text()


def test_the_nodes_policy_finds_the_signatures_and_refuses_an_unsigned_image(
    pushed: Pushed, keys: Keys, tmp_path: Path, registry: services.Registry
) -> None:
    """containers/image under the policy.json of a ClusterImagePolicy (sigstoreSigned, the
    registry's attachments): it refuses the unsigned image for want of a signature, and finds
    the signatures of the other two. Debian's skopeo then stops at its verification, built
    without sigstore ("Debian-local change: sigstore disabled"); the signatures adapter below
    does that verification."""
    unsigned = pulled_under_policy(
        tmp_path, pushed.unsigned, public_key=keys.trusted.public_key, host=registry.host
    )
    assert unsigned.returncode != 0
    assert "no signature exists" in unsigned.stderr
    for reference in (pushed.signed, pushed.other_key):
        found = pulled_under_policy(
            tmp_path, reference, public_key=keys.trusted.public_key, host=registry.host
        )
        assert "no signature exists" not in found.stderr, found.stderr
        assert found.returncode == 0 or "sigstore disabled" in found.stderr, found.stderr


def test_the_signature_check_says_the_same_three_things(
    pushed: Pushed, keys: Keys, containers_env: dict[str, str], registry: services.Registry
) -> None:
    check = signatures.Signatures(registries_conf=registry.registries_conf)
    public_key = keys.trusted.public_key.read_bytes()
    assert check.problem(pushed.signed, public_key=public_key) is None
    assert check.problem(pushed.unsigned, public_key=public_key) == (
        f"{pushed.unsigned}: no sigstore signature"
    )
    assert check.problem(pushed.other_key, public_key=public_key) == (
        f"{pushed.other_key}: signed by another key"
    )
    assert check.problem(pushed.other_key, public_key=keys.other.public_key.read_bytes()) is None


def test_a_signature_over_another_digest_is_named(
    pushed: Pushed, keys: Keys, tmp_path: Path, registry: services.Registry
) -> None:
    # the signed digest's signature image, copied under the tag of another image's digest
    repository, digest = pushed.signed.split("@")
    storage = BuildahStorage(tmp_path / "s" / "root", tmp_path / "s" / "run")
    target = f"{registry.host}/moved-{uuid.uuid4().hex[:8]}:1"
    moved = pushed_with(storage, target, registry, tmp_path, None)
    other_repo, other_digest = moved.split("@")
    result = skopeo(
        "--insecure-policy",
        "copy",
        "--preserve-digests",
        f"docker://{signed_push.signature_tag(repository, digest)}",
        f"docker://{signed_push.signature_tag(other_repo, other_digest)}",
    )
    assert result.returncode == 0, result.stderr
    check = signatures.Signatures(registries_conf=registry.registries_conf)
    found = check.problem(moved, public_key=keys.trusted.public_key.read_bytes())
    assert found == f"{moved}: signature is for {digest}, not {other_digest}"


def test_an_unreachable_registry_is_temporary(keys: Keys) -> None:
    dead = f"127.0.0.1:{services.free_port()}/layering/x@sha256:{'0' * 64}"
    check = signatures.Signatures()
    with pytest.raises(TemporaryError, match=r"registry 127\.0\.0\.1:\d+ unavailable"):
        check.problem(dead, public_key=keys.trusted.public_key.read_bytes())


def test_the_passphrase_is_in_no_log_argv_or_record(
    pushed: Pushed, signing_worker: Worker, keys: Keys, tmp_path: Path
) -> None:
    passphrase = keys.passphrase
    assert len(passphrase) >= 32
    log = "\n".join(signing_worker.env.store().read_log(str(pushed.record["id"]), limit=10_000))
    texts = {
        "record": json.dumps(pushed.record),
        "worker log": signing_worker.log.read_text(),
        "build log": log,
        "skopeo argv": (signing_worker.env.directory.parent / "skopeo-calls.log").read_text(),
    }
    assert "--insecure-policy copy --preserve-digests" in texts["skopeo argv"]  # the upload
    for name, text in texts.items():
        assert passphrase not in text, name
