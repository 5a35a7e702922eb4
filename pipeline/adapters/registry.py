"""Read-only registry queries through skopeo (so the host's registries.conf, certificates and the
authfile apply): does a tag exist, what is its manifest digest, is a digest still served, and
what labels does an image's config carry, without pulling. Does I/O.

    Registry.from_settings(settings).digest_of("host/repo:tag") -> "sha256:…" | None
    registry.digest_of("host/repo@sha256:…") -> the same digest while the registry serves it
    registry.image_of("host/repo:tag") -> RegistryImage(digest, labels) | None

Errors: a missing tag or repository -> None; 5xx, refused, reset, timeouts -> TemporaryError
naming the registry; credentials refused -> PermanentError. Messages carry a scrubbed tail of
skopeo's stderr, never credentials.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from pipeline.core import buildah_output, builds, names, redaction
from pipeline.core.errors import PermanentError, TemporaryError
from pipeline.core.settings import Settings

INSPECT_TIMEOUT_SECONDS = 120


class SkopeoClient:
    """How skopeo reaches the registries: the auth file (its credentials masked in every
    error), registries.conf, the command and a time limit per call. Registry and
    signatures.Signatures are both one."""

    TIMEOUT_SECONDS = INSPECT_TIMEOUT_SECONDS

    def __init__(
        self,
        *,
        authfile: Path | None = None,
        registries_conf: Path | None = None,
        command: str = "skopeo",
        secrets: Sequence[str] = (),
        timeout: float | None = None,
    ) -> None:
        self.authfile = authfile
        self.registries_conf = registries_conf
        self.command = command
        self.secrets = [*secrets, *authfile_secrets(authfile)]
        self.timeout = self.TIMEOUT_SECONDS if timeout is None else timeout

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(
            authfile=settings.registry_authfile,
            registries_conf=settings.registries_conf,
            command=settings.skopeo_command,
        )


class Registry(SkopeoClient):
    def digest_of(self, reference: str) -> str | None:
        """The sha256 of the manifest bytes `reference` names (what a push by digest gives)."""
        manifest = self._inspect(reference, "--raw")
        return None if manifest is None else _sha256(manifest)

    def image_of(self, reference: str) -> builds.RegistryImage | None:
        """The manifest digest under `reference` and the labels of its config, the config read
        by that digest (so a tag moved in between cannot mix two images). A manifest without a
        config (an index) has no labels: it is not an image a build pushed."""
        manifest = self._inspect(reference, "--raw")
        if manifest is None:
            return None
        digest = _sha256(manifest)
        try:
            document = json.loads(manifest)
        except ValueError:
            document = None
        config = document.get("config") if isinstance(document, dict) else None
        if not isinstance(config, dict) or not config.get("digest"):
            return builds.RegistryImage(digest, {})
        ref = names.parse_image_ref(reference)
        raw = self._inspect(f"{ref.repository}@{digest}", "--config", "--raw")
        try:
            found = json.loads(raw) if raw is not None else {}
        except ValueError:
            found = {}
        labels = ((found if isinstance(found, dict) else {}).get("config") or {}).get("Labels")
        if not isinstance(labels, dict):
            return builds.RegistryImage(digest, {})
        return builds.RegistryImage(
            digest, {str(k): str(v) for k, v in labels.items() if isinstance(v, str)}
        )

    def _inspect(self, reference: str, *flags: str) -> bytes | None:
        """What `skopeo inspect FLAGS` prints for `reference`; None when it does not exist."""
        ref = names.parse_image_ref(reference)
        argv = []
        if self.registries_conf is not None:
            argv += ["--registries-conf", str(self.registries_conf)]
        argv += ["inspect", *flags, "--retry-times", "0"]
        if self.authfile is not None:
            argv += ["--authfile", str(self.authfile)]
        argv.append(f"docker://{ref}")
        # subprocess, not `sh`: sh's timeout thread ends in 0.1 s steps, which made this check
        # 0.11 s instead of skopeo's 0.03 s on every build (tests/bench/build_scale_bench.py)
        try:
            result = subprocess.run(
                [self.command, *argv],
                capture_output=True,
                stdin=subprocess.DEVNULL,
                check=False,
                timeout=self.timeout,
            )
        except subprocess.TimeoutExpired:
            raise TemporaryError(
                f"registry {registry_host(str(ref))}: no answer within {self.timeout:.0f}s "
                f"while inspecting {ref}"
            ) from None
        output: bytes = result.stdout
        if result.returncode != 0:
            error = skopeo_error(
                result.stderr.decode(errors="replace"),
                reference=str(ref),
                doing=f"inspect {ref}",
                secrets=self.secrets,
            )
            if error is None:
                return None
            raise error from None
        return output


def skopeo_error(
    stderr: str, *, reference: str, doing: str, secrets: Sequence[str]
) -> TemporaryError | PermanentError | None:
    """What a failed skopeo call on `reference` means, `doing` saying what it tried ("inspect
    …"): None when the image or tag does not exist, TemporaryError for a registry fault worth
    retrying, PermanentError otherwise (refused credentials name LAYERING_REGISTRY_AUTHFILE).
    The registry's words are kept, secrets masked."""
    kind = buildah_output.classify(stderr)
    if kind is buildah_output.Failure.MISSING:
        return None
    detail = redaction.scrub(stderr.strip()[-600:], secrets)
    host = registry_host(reference)
    if kind is buildah_output.Failure.AUTH:
        return PermanentError(
            f"registry {host} refused the credentials to {doing}: {detail}; "
            "check LAYERING_REGISTRY_AUTHFILE"
        )
    if kind is buildah_output.Failure.TEMPORARY:
        return TemporaryError(f"registry {host} unavailable, could not {doing}: {detail}")
    return PermanentError(f"registry {host}: could not {doing}: {detail}")


def _sha256(manifest: bytes) -> str:
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


def registry_host(reference: str) -> str:
    first = reference.split("/", 1)[0]
    if "/" in reference and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def authfile_secrets(authfile: Path | None) -> list[str]:
    """Values in a containers auth.json that must never be shown: each `auth` (base64 of
    user:password), its password, and identity/registry tokens."""
    if authfile is None or not authfile.is_file():
        return []
    try:
        document = json.loads(authfile.read_text())
    except (OSError, ValueError):
        return []
    found: list[str] = []
    auths = document.get("auths", {}) if isinstance(document, dict) else {}
    for entry in auths.values() if isinstance(auths, dict) else []:
        if not isinstance(entry, dict):
            continue
        for key in ("auth", "identitytoken", "registrytoken", "password"):
            value = entry.get(key)
            if isinstance(value, str) and value:
                found.append(value)
        auth = entry.get("auth")
        if isinstance(auth, str):
            try:
                decoded = base64.b64decode(auth).decode()
            except ValueError:
                continue
            found.append(decoded.partition(":")[2])
    return [value for value in found if value]
