"""Signing a pushed image: a sigstore signature over the manifest digest `buildah push`
reported, stored in the registry the way containers/image and cosign store it (what a node's
`sigstoreSigned` policy reads with registries.d `use-sigstore-attachments`): the tag
`sha256-<hex>.sig` next to the image, an OCI manifest whose one layer is the simple-signing
payload (`critical.image.docker-manifest-digest` = the digest, `critical.identity` = the pushed
reference) with its ECDSA P-256 signature, base64, in the annotation
`dev.cosignproject.cosign/signature`. Does file, process and network I/O.

Why not `skopeo copy --sign-by-sigstore-private-key`: Debian's skopeo 1.9.3 is built with
sigstore disabled, for signing and verifying alike ("Debian-local change: sigstore disabled").
So the key (LAYERING_SIGNING_KEY, opened with LAYERING_SIGNING_PASSPHRASE_FILE: the passphrase
is read from its file by this process, never put on an argv or in an environment) signs here,
with `cryptography`, and the signature image is written as an OCI layout in the push's scratch
directory and sent with `skopeo copy --preserve-digests` (byte for byte: the annotations are
kept), through the host's registries.conf and the authfile like every push. The image itself
is pushed by `buildah push` as before, so its digest is the one an unsigned push gives.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.adapters import registry as registry_adapter
from pipeline.adapters import signing_keys
from pipeline.core import redaction
from pipeline.core.errors import PermanentError, TemporaryError
from pipeline.core.settings import Settings

PAYLOAD_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
UPLOAD_TIMEOUT_SECONDS = 300


@dataclass(frozen=True)
class Signing:
    private_key: Path
    passphrase_file: Path
    skopeo: str = "skopeo"


def of(settings: Settings) -> Signing | None:
    """How pushes are signed; None when LAYERING_SIGNING_KEY is not set (pushes unsigned)."""
    if settings.signing_key is None or settings.signing_passphrase_file is None:
        return None
    return Signing(
        private_key=settings.signing_key,
        passphrase_file=settings.signing_passphrase_file,
        skopeo=settings.skopeo_command,
    )


def opened(signing: Signing) -> ec.EllipticCurvePrivateKey:
    """The key, opened once per process while neither file changes: scrypt costs 0.13 s, over
    half of what signing adds to a push (tests/bench/signing_bench.py)."""
    try:
        stamps = (
            signing.private_key.stat().st_mtime_ns,
            signing.passphrase_file.stat().st_mtime_ns,
        )
    except OSError:
        stamps = (0, 0)  # load names the file it cannot read
    return _opened(signing.private_key, signing.passphrase_file, stamps)


@functools.lru_cache(maxsize=4)
def _opened(
    private_key: Path, passphrase_file: Path, _stamps: tuple[int, int]
) -> ec.EllipticCurvePrivateKey:
    return signing_keys.load(private_key, passphrase_file)


def payload(reference: str, digest: str, *, timestamp: int) -> bytes:
    """The simple-signing payload containers/image writes (and its policy checks exactly: only
    `critical` and `optional`), for `digest` pushed as `reference`."""
    document = {
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": {"creator": "coreos-layering-pipeline", "timestamp": timestamp},
    }
    return json.dumps(document, separators=(",", ":")).encode()


def signature_tag(repository: str, digest: str) -> str:
    """Where the signatures of `digest` live: `<repository>:sha256-<hex>.sig`."""
    return f"{repository}:{digest.replace(':', '-')}.sig"


def write_layout(directory: Path, signed: bytes, signature: bytes) -> str:
    """An OCI layout in `directory` holding the signature image (tag `sig`); its digest."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def blob(content: bytes) -> str:
        hexdigest = hashlib.sha256(content).hexdigest()
        (blobs / hexdigest).write_bytes(content)
        return f"sha256:{hexdigest}"

    payload_digest = blob(signed)
    config = _compact(
        {
            "architecture": "",
            "os": "",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [payload_digest]},
        }
    )
    manifest = _compact(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": blob(config)},
            "layers": [
                {
                    "mediaType": PAYLOAD_MEDIA_TYPE,
                    "size": len(signed),
                    "digest": payload_digest,
                    "annotations": {SIGNATURE_ANNOTATION: base64.b64encode(signature).decode()},
                }
            ],
        }
    )
    manifest_digest = blob(manifest)
    (directory / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "size": len(manifest),
                "digest": manifest_digest,
                "annotations": {"org.opencontainers.image.ref.name": "sig"},
            }
        ],
    }
    (directory / "index.json").write_bytes(_compact(index))
    return manifest_digest


def _compact(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def upload_argv(
    signing: Signing,
    *,
    layout: Path,
    tag: str,
    registries_conf: Path | None,
    authfile: Path | None,
) -> list[str]:
    """skopeo's argument list sending the layout's signature image to `tag`: paths only."""
    argv = [signing.skopeo]
    if registries_conf is not None:
        argv += ["--registries-conf", str(registries_conf)]
    # the policy guards images taken from a source; this source is the layout written here
    argv += ["--insecure-policy", "copy", "--preserve-digests", "--retry-times", "2"]
    if authfile is not None:
        argv += ["--authfile", str(authfile)]
    argv += [f"oci:{layout}:sig", f"docker://{tag}"]
    return argv


def sign(
    signing: Signing,
    *,
    target: str,
    repository: str,
    digest: str,
    scratch: Path,
    registries_conf: Path | None,
    authfile: Path | None,
    host: str,
    secrets: tuple[str, ...] = (),
) -> str:
    """Sign `digest` (pushed as `target`) and store the signature next to it; the tag it is
    stored under. PermanentError naming the setting for a key that does not open; the
    registry's faults as a push's."""
    key = opened(signing)
    signed = payload(target, digest, timestamp=int(time.time()))
    signature = key.sign(signed, ec.ECDSA(hashes.SHA256()))
    layout = scratch / "signature"
    write_layout(layout, signed, signature)
    tag = signature_tag(repository, digest)
    argv = upload_argv(
        signing, layout=layout, tag=tag, registries_conf=registries_conf, authfile=authfile
    )
    try:
        result = subprocess.run(
            argv,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            check=False,
            timeout=UPLOAD_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired:
        raise TemporaryError(
            f"registry {host}: storing the signature of {target} took over "
            f"{UPLOAD_TIMEOUT_SECONDS}s"
        ) from None
    except OSError as exc:
        raise PermanentError(f"cannot run {signing.skopeo}: {exc}") from None
    if result.returncode != 0:
        output = result.stderr.decode(errors="replace")
        last = (output.strip().splitlines() or ["no output"])[-1]
        error = registry_adapter.skopeo_error(
            output, reference=tag, doing=f"store the signature {tag}", secrets=secrets
        )
        # "not found" while storing is no missing image: the registry refused the upload
        raise error or PermanentError(
            f"registry {host}: could not store the signature {tag}: "
            f"{redaction.scrub(last[-600:], secrets)}"
        )
    return tag
