"""Is an image signed by a key: the `SignatureCheck` port (core/ports_signing.py) over the
sigstore signatures a signed push stores in the registry. Does process and network I/O.

    Signatures.from_settings(settings).problem("host/repo@sha256:…", public_key=pem) -> None
    -> "host/repo@sha256:…: no sigstore signature" | "…: signed by another key" | …

The signatures of manifest sha256:<hex> live in the same repository under the tag
`sha256-<hex>.sig`: an OCI manifest whose layers are the signed simple-signing payloads
(`application/vnd.dev.cosign.simplesigning.v1+json`, a few hundred bytes each), each with its
ECDSA signature, base64, in the annotation `dev.cosignproject.cosign/signature`. One `skopeo
copy` of that small image to a `dir:` reads the manifest and the payloads (through the host's
registries.conf and the authfile, as registry.py reads). A payload counts when its signature
verifies under the public key and its `critical.image.docker-manifest-digest` is the digest
asked about, as containers/image's `sigstoreSigned` policy requires before a node pulls.

Errors: a registry that does not answer -> TemporaryError naming it; credentials refused ->
PermanentError; everything about the signatures themselves is the returned reason.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.adapters import registry as registry_adapter
from pipeline.adapters import signed_push
from pipeline.core import names
from pipeline.core.errors import PermanentError, TemporaryError

PAYLOAD_MEDIA_TYPE = signed_push.PAYLOAD_MEDIA_TYPE
SIGNATURE_ANNOTATION = signed_push.SIGNATURE_ANNOTATION
COPY_TIMEOUT_SECONDS = 120
MAX_PAYLOAD_BYTES = 64 * 1024  # a payload is a few hundred bytes; more is not ours
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class Signatures(registry_adapter.SkopeoClient):
    TIMEOUT_SECONDS = COPY_TIMEOUT_SECONDS

    def problem(self, reference: str, *, public_key: bytes) -> str | None:
        """None when `reference` (repo@sha256:…) carries a sigstore signature by `public_key`
        over that digest, else one line naming the reference and what is wrong."""
        repository, _, digest = reference.partition("@")
        if not _DIGEST.fullmatch(digest):
            raise PermanentError(f"{reference}: a signature check needs repo@sha256:<digest>")
        key = _public_key(public_key)
        with tempfile.TemporaryDirectory(prefix="layering-signatures-") as scratch:
            found = self._signatures(repository, digest, Path(scratch))
        if not found:
            return f"{reference}: no sigstore signature"
        by_key = [payload for payload, signature in found if _verifies(key, payload, signature)]
        if not by_key:
            return f"{reference}: signed by another key"
        signed = [_signed_digest(payload) for payload in by_key]
        if digest in signed:
            return None
        other = next((d for d in signed if d), "no digest")
        return f"{reference}: signature is for {other}, not {digest}"

    def _signatures(
        self, repository: str, digest: str, scratch: Path
    ) -> list[tuple[bytes, bytes]] | None:
        """(payload, signature) of each layer of the signature image; None when there is none."""
        tag = signed_push.signature_tag(repository, digest)
        names.parse_image_ref(tag)  # a hostile repository name fails here, not in skopeo
        target = scratch / "sig"
        argv = [self.command]
        if self.registries_conf is not None:
            argv += ["--registries-conf", str(self.registries_conf)]
        # the policy is for images run; this is data whose signatures are checked below
        argv += ["--insecure-policy", "copy", "--retry-times", "0"]
        if self.authfile is not None:
            argv += ["--authfile", str(self.authfile)]
        argv += [f"docker://{tag}", f"dir:{target}"]
        try:
            result = subprocess.run(
                argv,
                capture_output=True,
                stdin=subprocess.DEVNULL,
                check=False,
                timeout=self.timeout,
            )
        except subprocess.TimeoutExpired:
            host = registry_adapter.registry_host(tag)
            raise TemporaryError(
                f"registry {host}: no answer within {self.timeout:.0f}s reading the signatures "
                f"of {repository}@{digest}"
            ) from None
        if result.returncode != 0:
            self._raise(result.stderr.decode(errors="replace"), tag)
            return None
        return _read_layers(target)

    def _raise(self, stderr: str, tag: str) -> None:
        """Raise for a registry fault; return when the signature tag does not exist."""
        error = registry_adapter.skopeo_error(
            stderr, reference=tag, doing=f"read the signatures {tag}", secrets=self.secrets
        )
        if error is not None:
            raise error


def _read_layers(directory: Path) -> list[tuple[bytes, bytes]]:
    try:
        manifest = json.loads((directory / "manifest.json").read_bytes())
    except (OSError, ValueError):
        return []
    layers = manifest.get("layers") if isinstance(manifest, dict) else None
    found: list[tuple[bytes, bytes]] = []
    for layer in layers if isinstance(layers, list) else []:
        if not isinstance(layer, dict) or layer.get("mediaType") != PAYLOAD_MEDIA_TYPE:
            continue
        annotations = layer.get("annotations")
        encoded = annotations.get(SIGNATURE_ANNOTATION) if isinstance(annotations, dict) else None
        blob = str(layer.get("digest", ""))
        if not isinstance(encoded, str) or not _DIGEST.fullmatch(blob):
            continue
        path = directory / blob.removeprefix("sha256:")
        try:
            if path.stat().st_size > MAX_PAYLOAD_BYTES:
                continue
            found.append((path.read_bytes(), base64.b64decode(encoded)))
        except (OSError, ValueError):
            continue
    return found


def _public_key(pem: bytes) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise PermanentError(f"LAYERING_SIGNING_PUBLIC_KEY: not a PEM public key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise PermanentError("LAYERING_SIGNING_PUBLIC_KEY: not an ECDSA public key")
    return key


def _verifies(key: ec.EllipticCurvePublicKey, payload: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def _signed_digest(payload: bytes) -> str | None:
    try:
        document = json.loads(payload)
        digest = document["critical"]["image"]["docker-manifest-digest"]
    except (ValueError, KeyError, TypeError):
        return None
    return digest if isinstance(digest, str) else None
