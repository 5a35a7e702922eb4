"""Signing without external tools: the key envelope round trip, the settings' rule, the signed
push's argument list (paths, never the passphrase) and what an unsigned worker says."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.adapters import signed_push, signing_keys
from pipeline.adapters.environment import load_settings
from pipeline.core.errors import InputError, PermanentError
from pipeline.local import services, workdir
from workers import startup


def test_the_envelope_opens_with_its_passphrase_only() -> None:
    sealed = signing_keys.encrypt(b"0\x81der", b"right")
    lines = sealed.decode().splitlines()
    assert lines[0] == "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"
    envelope = json.loads(base64.b64decode("".join(lines[1:-1])))
    assert envelope["kdf"]["name"] == "scrypt"
    assert envelope["kdf"]["params"] == {"N": 32768, "r": 8, "p": 1}
    assert envelope["cipher"]["name"] == "nacl/secretbox"
    assert len(base64.b64decode(envelope["cipher"]["nonce"])) == 24
    assert len(base64.b64decode(envelope["ciphertext"])) == len(b"0\x81der") + 16
    assert signing_keys.decrypt(sealed, b"right") == b"0\x81der"
    with pytest.raises(PermanentError, match="the passphrase does not decrypt it"):
        signing_keys.decrypt(sealed, b"wrong")
    with pytest.raises(PermanentError, match="not an encrypted sigstore private key"):
        signing_keys.decrypt(b"-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n", b"")


def test_a_key_needs_its_passphrase_file() -> None:
    with pytest.raises(InputError, match=r"LAYERING_SIGNING_KEY: .*needs LAYERING_SIGNING_PASS"):
        load_settings(signing_key="/k")
    settings = load_settings(signing_key="/k", signing_passphrase_file="/p")
    assert signed_push.of(settings) == signed_push.Signing(Path("/k"), Path("/p"))
    assert signed_push.of(load_settings()) is None


def test_an_unsigned_worker_says_so() -> None:
    assert startup.signing_note(load_settings()) == (
        "pushes are not signed: LAYERING_SIGNING_KEY is not set"
    )


def test_the_signature_is_stored_as_containers_image_reads_it(tmp_path: Path) -> None:
    digest = "sha256:" + "a" * 64
    payload = signed_push.payload("registry.example.com/layering/i:abc", digest, timestamp=1)
    assert json.loads(payload) == {
        "critical": {
            "identity": {"docker-reference": "registry.example.com/layering/i:abc"},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": {"creator": "coreos-layering-pipeline", "timestamp": 1},
    }
    assert signed_push.signature_tag("r.example.com/l/i", digest) == (
        f"r.example.com/l/i:sha256-{'a' * 64}.sig"
    )
    manifest_digest = signed_push.write_layout(tmp_path / "layout", payload, b"sig")
    blobs = tmp_path / "layout" / "blobs" / "sha256"
    manifest = json.loads((blobs / manifest_digest.removeprefix("sha256:")).read_bytes())
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    assert layer["annotations"] == {"dev.cosignproject.cosign/signature": "c2ln"}
    assert (blobs / layer["digest"].removeprefix("sha256:")).read_bytes() == payload
    signing = signed_push.Signing(tmp_path / "cosign.key", tmp_path / "cosign.password")
    argv = signed_push.upload_argv(
        signing,
        layout=tmp_path / "layout",
        tag="r.example.com/l/i:sha256-x.sig",
        registries_conf=None,
        authfile=Path("/auth.json"),
    )
    assert argv == [
        "skopeo",
        "--insecure-policy",
        "copy",
        "--preserve-digests",
        "--retry-times",
        "2",
        "--authfile",
        "/auth.json",
        f"oci:{tmp_path / 'layout'}:sig",
        "docker://r.example.com/l/i:sha256-x.sig",
    ]


def test_layering_up_makes_its_key_once_and_reuses_it(tmp_path: Path) -> None:
    layout = workdir.Layout(tmp_path)
    options = workdir.Options(
        workdir=tmp_path, ports={}, repo_url=None, webhook_secret=None, seed=tmp_path
    )
    said: list[str] = []
    pair, first = services.choose_signing(options, layout, {}, said.append)
    assert pair == signing_keys.paths(tmp_path / "signing")
    assert said[-1].startswith("pushes signed with a new sigstore key")
    key = pair.private_key.read_bytes()
    again, second = services.choose_signing(options, layout, {}, said.append)
    assert again == pair
    assert said[-1].startswith("pushes signed with the sigstore key")
    assert second == first
    assert pair.private_key.read_bytes() == key
    env = services.service_environment(
        {},
        layout=layout,
        ports={"receiver": 1},
        options=options,
        secret="s",
        redis_url="redis://",
        verification_key="v",
        build_isolation="chroot",
        signing=pair,
    )
    assert env["LAYERING_SIGNING_KEY"] == str(pair.private_key)
    assert env["LAYERING_SIGNING_PASSPHRASE_FILE"] == str(pair.passphrase_file)
    assert env["LAYERING_SIGNING_PUBLIC_KEY"] == str(pair.public_key)
    assert pair.passphrase_file.read_text() not in json.dumps(env)
    unsigned = replace(options, signing=False)
    assert services.choose_signing(unsigned, layout, {}, said.append)[0] is None
    given = {"LAYERING_SIGNING_KEY": "/elsewhere/cosign.key"}
    assert services.choose_signing(options, layout, given, said.append)[0] is None
    assert said[-1] == "pushes signed with LAYERING_SIGNING_KEY /elsewhere/cosign.key"
