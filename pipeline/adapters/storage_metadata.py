"""containers/storage's own metadata, read as buildah leaves it: the graph root (the configured
one, or `buildah info`'s), `<driver>-images/images.json` (an image by id, name or manifest
digest, and its top layer), `<driver>-layers/layers.json` (each layer's parent) and where each
layer's tar-split and files are. Used by adapters/layer_content.py. Does file and process I/O.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.adapters import buildah_process
from pipeline.adapters.buildah import BuildahConfig
from pipeline.core import names
from pipeline.core.errors import PermanentError, TemporaryError

IMAGE_ID = re.compile(r"(?:sha256:)?([0-9a-f]{64})")
SKIP_LINT = "set LAYERING_CONTENT_LINT=false to push without the content lint"
_graph_roots: dict[tuple[str, ...], Path] = {}
_graph_roots_lock = threading.Lock()


@dataclass(frozen=True)
class Storage:
    root: Path
    driver: str
    images: list[dict[str, Any]]
    parents: dict[str, str | None]

    def image(self, reference: str) -> dict[str, Any]:
        found = image_of(self.images, reference)
        if found is None:
            raise PermanentError(
                f"image {reference} is not in the local buildah storage {self.root} "
                f"({self.driver}): build or pull it there first"
            )
        return found

    def chain(self, top: str | None) -> list[str]:
        """The layers from `top` down to the bottom one."""
        layers: list[str] = []
        while top is not None:
            if top not in self.parents:
                raise PermanentError(
                    f"{self.root}/{self.driver}-layers/layers.json lacks layer {top}: the "
                    f"storage cannot be read as layers; {SKIP_LINT}"
                )
            if top in layers:
                raise PermanentError(f"layer {top} is its own ancestor in {self.root}")
            layers.append(top)
            top = self.parents[top]
        return layers

    def tar_split(self, layer: str) -> Path:
        return self.root / f"{self.driver}-layers" / f"{layer}.tar-split.gz"

    def tree(self, layer: str) -> Path:
        """Where the driver keeps the layer's files: vfs a full tree, overlay the diff."""
        if self.driver == "vfs":
            return self.root / "vfs" / "dir" / layer
        return self.root / self.driver / layer / "diff"


def storage_root(config: BuildahConfig) -> Path:
    """The configured root, or the storage's default as `buildah info` says (asked once)."""
    if config.root is not None:
        return config.root
    argv = (config.command, *config.global_argv())
    with _graph_roots_lock:
        if argv in _graph_roots:
            return _graph_roots[argv]
    command = [*argv, "info", "--format", "{{.store.GraphRoot}}"]
    try:
        result = buildah_process.captured(command, env=None, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TemporaryError(f"buildah info did not answer: {exc}") from None
    if result.returncode != 0 or not result.stdout.strip():
        raise PermanentError(
            f"buildah info could not name the storage root: {result.stderr.strip()[-300:]}; "
            "set LAYERING_BUILDAH_ROOT"
        )
    root = Path(result.stdout.strip())
    with _graph_roots_lock:
        return _graph_roots.setdefault(argv, root)


def load(root: Path, driver: str) -> Storage:
    images = _json_list(root / f"{driver}-images" / "images.json")
    layers = _json_list(root / f"{driver}-layers" / "layers.json")
    parents = {str(layer["id"]): layer.get("parent") for layer in layers if "id" in layer}
    return Storage(root, driver, images, parents)


def _json_list(path: Path) -> list[dict[str, Any]]:
    try:
        document = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise PermanentError(
            f"{path}: {exc}; the storage cannot be read as layers (is the storage driver "
            f"right?); {SKIP_LINT}"
        ) from None
    if not isinstance(document, list) or not all(isinstance(i, dict) for i in document):
        raise PermanentError(f"{path} is not a list of objects: unknown format; {SKIP_LINT}")
    return document


def image_of(images: list[dict[str, Any]], reference: str) -> dict[str, Any] | None:
    if (matched := IMAGE_ID.fullmatch(reference)) is not None:
        return next((i for i in images if i.get("id") == matched.group(1)), None)
    for wanted in (reference, f"{reference}:latest"):
        for image in images:
            if wanted in (image.get("names") or []):
                return image
    try:
        digest = names.parse_image_ref(reference).digest
        repository = names.parse_image_ref(reference).repository
    except ValueError:
        return None
    if digest is None:
        return None
    same = [i for i in images if _has_manifest(i, digest)]
    in_repository = [i for i in same if repository in map(_repository, i.get("names") or [])]
    return next(iter(in_repository or same), None)


def _has_manifest(image: dict[str, Any], digest: str) -> bool:
    """Whether the storage keeps a manifest of `image` with `digest`: buildah finds an image by
    it too, also after the name it was pulled by was removed (a `buildah rmi` of that name)."""
    kept = image.get("big-data-names") or []
    return digest in (image.get("digest"), *(image.get("digests") or [])) or (
        f"manifest-{digest}" in kept
    )


def _repository(name: str) -> str:
    try:
        return names.parse_image_ref(name).repository
    except ValueError:
        return ""


def of(config: BuildahConfig) -> Storage:
    """The metadata of the storage `config` builds in, as it is now."""
    return load(storage_root(config), config.storage_driver)
