"""The node OS image of an OpenShift/OKD release payload, read from the payload image without
`oc` and without pulling it. Does network I/O (the registry HTTP API, registry_http.py).

The manifest first (an index resolves to its linux/amd64 image, or the platform asked for),
then the layer blobs newest first, each streamed through tarfile and left at the first entry
that is `release-manifests/image-references`: a payload keeps that file in its top layers,
so one blob is read, and only up to that entry. Bounded: the file by a size cap, all blob
bytes read together by another. Hostile entries (links, devices, paths climbing out) are
skipped, never followed. Parsing the file is core/release_payload.py.

    payloads = ReleasePayloads.from_settings(settings)
    found = payloads.node_image("quay.io/openshift-release-dev/ocp-release:4.16.3-x86_64")
    found.image  # quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:…
"""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
import zlib
from dataclasses import dataclass, field
from http.client import HTTPException, HTTPResponse
from typing import Any

from pipeline.adapters import registry, registry_http
from pipeline.core import names, release_payload
from pipeline.core.errors import PermanentError, TemporaryError
from pipeline.core.settings import Settings

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_INDEX_TYPES = frozenset(MANIFEST_TYPES[:2])
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
# a payload's release-manifests layer is a few MiB; its base layers are hundreds. Reading
# stops at the file, so this only bounds a payload that hides it deep or not at all
MAX_READ_BYTES = 512 * 1024 * 1024
MAX_LAYERS = 128


@dataclass
class ReadStats:
    """What one lookup read: blob digests opened (newest first) and compressed bytes read."""

    blobs: list[str] = field(default_factory=list)
    bytes_read: int = 0


class _Capped:
    """A response read through a byte budget shared by every blob of one lookup."""

    def __init__(self, response: HTTPResponse, stats: ReadStats, cap: int, where: str) -> None:
        self._response = response
        self._stats = stats
        self._cap = cap
        self._where = where

    def read(self, size: int = -1) -> bytes:
        left = self._cap - self._stats.bytes_read
        if left <= 0:
            raise PermanentError(
                f"{self._where}: read {self._cap} bytes of layers without finding "
                f"{release_payload.IMAGE_REFERENCES}; not a release payload"
            )
        chunk = self._response.read(left if size < 0 else min(size, left))
        self._stats.bytes_read += len(chunk)
        return chunk


class ReleasePayloads:
    def __init__(
        self,
        client: registry_http.RegistryHttp,
        *,
        platform: tuple[str, str] = ("linux", "amd64"),
        max_read_bytes: int = MAX_READ_BYTES,
    ) -> None:
        self._client = client
        self._platform = platform
        self._max_read_bytes = max_read_bytes
        self.last_read = ReadStats()

    @classmethod
    def from_settings(cls, settings: Settings) -> ReleasePayloads:
        authfile = settings.registry_authfile
        return cls(
            registry_http.RegistryHttp(
                authfile=authfile,
                registries_conf=settings.registries_conf,
                secrets=tuple(registry.authfile_secrets(authfile)),
            )
        )

    def node_image(self, release: str, *, tag: str | None = None) -> release_payload.NodeImage:
        """The node OS image `release` (a payload by tag or digest) names (see the module)."""
        raw = self.image_references(release)
        found = release_payload.tags(raw, release=release)
        return release_payload.node_image(found, release=release, tag=tag)

    def image_references(self, release: str) -> bytes:
        try:
            ref = names.parse_image_ref(release)
        except ValueError as exc:
            raise PermanentError(f"release {release!r}: {exc}") from None
        host, _, path = ref.repository.partition("/")
        if not path or not ("." in host or ":" in host or host == "localhost"):
            raise PermanentError(
                f"release {release}: name the registry host (quay.io/openshift-release-dev/"
                "ocp-release:<version>)"
            )
        self.last_read = ReadStats()
        manifest = self._manifest(host, path, ref, release)
        layers = manifest.get("layers")
        if not isinstance(layers, list) or not layers:
            raise PermanentError(f"release {release}: its manifest lists no layers")
        where = f"release {release}"
        for layer in reversed(layers[-MAX_LAYERS:]):
            digest = layer.get("digest") if isinstance(layer, dict) else None
            if not isinstance(digest, str) or not names.is_digest(digest):
                continue
            found = self._find_in_layer(host, path, digest, str(layer.get("mediaType", "")), where)
            if found is not None:
                return found
        raise PermanentError(
            f"{where}: no {release_payload.IMAGE_REFERENCES} in its layers; not an OpenShift "
            "or OKD release payload"
        )

    def _manifest(self, host: str, path: str, ref: names.ImageRef, release: str) -> dict[str, Any]:
        reference = ref.digest or ref.tag or "latest"
        document = self._get_manifest(host, path, reference, release, expected=ref.digest)
        media_type = document.get("mediaType", "")
        if media_type in _INDEX_TYPES or "manifests" in document:
            wanted_os, wanted_arch = self._platform
            chosen = next(
                (
                    entry
                    for entry in document.get("manifests") or []
                    if isinstance(entry, dict)
                    and (entry.get("platform") or {}).get("os") == wanted_os
                    and (entry.get("platform") or {}).get("architecture") == wanted_arch
                ),
                None,
            )
            digest = chosen.get("digest") if chosen else None
            if not isinstance(digest, str) or not names.is_digest(digest):
                raise PermanentError(
                    f"release {release}: its index has no {wanted_os}/{wanted_arch} image"
                )
            document = self._get_manifest(host, path, digest, release, expected=digest)
        return document

    def _get_manifest(
        self, host: str, path: str, reference: str, release: str, *, expected: str | None
    ) -> dict[str, Any]:
        try:
            body, _ = self._client.get(
                host, path, f"manifests/{reference}", MANIFEST_TYPES, cap=MAX_MANIFEST_BYTES
            )
        except registry_http.RegistryNotFound:
            raise PermanentError(
                f"release {release}: not found in registry {host}; check the tag or digest"
            ) from None
        if expected is not None and "sha256:" + hashlib.sha256(body).hexdigest() != expected:
            raise PermanentError(
                f"release {release}: registry {host} served a manifest whose digest is not "
                f"{expected}; refused"
            )
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise PermanentError(f"release {release}: its manifest is not a JSON object")
        return document

    def _find_in_layer(
        self, host: str, path: str, digest: str, media_type: str, where: str
    ) -> bytes | None:
        self.last_read.blobs.append(digest)
        with self._client.open(host, path, f"blobs/{digest}") as response:
            capped = _Capped(response, self.last_read, self._max_read_bytes, where)
            if "zstd" in media_type:
                raise PermanentError(
                    f"{where}: layer {digest[:19]} is zstd-compressed, which this reader does "
                    "not support"
                )
            try:
                # "r|*": a stream, gzip or plain detected from the first bytes
                with tarfile.open(fileobj=capped, mode="r|*") as archive:  # type: ignore[call-overload]
                    for member in archive:
                        if not release_payload.is_image_references(member.name):
                            continue
                        if not member.isreg():
                            continue  # a link or device named like it: never followed
                        cap = release_payload.MAX_IMAGE_REFERENCES_BYTES
                        if member.size > cap:
                            raise PermanentError(
                                f"{where}: {release_payload.IMAGE_REFERENCES} is "
                                f"{member.size} bytes, over the {cap}-byte cap"
                            )
                        handle = archive.extractfile(member)
                        return handle.read(cap + 1) if handle is not None else None
            except (tarfile.TarError, gzip.BadGzipFile, zlib.error, EOFError) as exc:
                raise PermanentError(
                    f"{where}: layer {digest[:19]} is not a readable tar ({exc})"
                ) from None
            except (OSError, HTTPException) as exc:
                raise TemporaryError(f"{where}: reading layer {digest[:19]}: {exc}") from None
        return None
