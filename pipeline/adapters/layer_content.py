"""A built image's content (core/content_lint.ImageContent) read from local buildah storage's own
metadata, without a working container or a mount: `<driver>-images/images.json` names the
image's top layer, `<driver>-layers/layers.json` chains the layers, and each layer's
tar-split (adapters/tar_split.py) lists its entries. The build's layers are those above the
base's top layer; the base's side is read once per process per base (`prepare` starts that
read while buildah builds). The rpm databases are read
only when a build layer touches one: its files copied from the layers' trees (vfs keeps each
layer as a full tree, overlay each layer's diff) and queried with the host's rpm
(adapters/image_changes.py). `pulled` brings an image by reference into the same storage for
`layering lint --built`. Does file and process I/O.

    content = LayerReader(buildah.config_of(settings)).content(image_id, base=spec.base)
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.adapters import buildah_process, image_changes, registry, storage_metadata, tar_split
from pipeline.adapters.buildah import BuildahConfig
from pipeline.core import content_lint, names, rpm_packages
from pipeline.core.content_lint import LayerChange
from pipeline.core.errors import PermanentError, TemporaryError
from pipeline.core.file_index import FileEntry

log = logging.getLogger(__name__)
MAX_ENTRIES = 2_000_000  # per layer
MAX_TAR_SPLIT_BYTES = 4 * 1024**3  # decompressed, per layer: a 2,000,000-entry layer is ~2 GB
BASES_KEPT = 4
COMMAND_TIMEOUT = 600.0
RPMDB_PATHS = tuple("/" + path for path in image_changes.RPMDB_PATHS)
SKIP_LINT = storage_metadata.SKIP_LINT


@dataclass
class _Base:
    """The base's merged tree, and its packages once a build touched the rpm database."""

    layers: list[str]  # bottom first
    entries: dict[str, FileEntry]
    children: dict[str, list[str]]  # content_lint.children_index of entries
    lock: threading.Lock = field(default_factory=threading.Lock)
    packages: tuple[list[rpm_packages.Package] | None, tuple[str, ...]] | None = None


_bases: dict[tuple[str, str, str, int], _Base] = {}
_bases_lock = threading.Lock()
# one reader per base: a build's `content` waits for the read `prepare` started
_reading: dict[tuple[str, str, str, int], threading.Lock] = {}


class LayerReader:
    """The ContentReader (core/ports_content.py) over local buildah storage."""

    def __init__(
        self,
        config: BuildahConfig,
        *,
        max_entries: int = MAX_ENTRIES,
        max_tar_split_bytes: int = MAX_TAR_SPLIT_BYTES,
    ) -> None:
        self.config = config
        self.max_entries = max_entries
        self.max_bytes = max_tar_split_bytes

    def content(self, image: str, *, base: str) -> content_lint.ImageContent:
        storage = storage_metadata.of(self.config)
        chain = storage.chain(storage.image(image).get("layer"))
        base_top = storage.image(base).get("layer")
        if base_top is not None and base_top not in chain:
            raise PermanentError(
                f"image {image} is not built on {base}: the base's top layer {base_top} is "
                f"not among the image's layers; lint it against the base it was built FROM"
            )
        cut = chain.index(base_top) if base_top is not None else len(chain)
        base_side = self._base(storage, chain[cut:][::-1])
        changes = [c for layer in chain[:cut][::-1] for c in self._layer(storage, layer)]
        if not _touches_database(changes, base_side.entries):
            return content_lint.ImageContent(
                base_side.entries, changes, base_children=base_side.children
            )
        with base_side.lock:
            if base_side.packages is None:
                base_side.packages = _packages(storage, base_side.layers, base_side.entries)
            base_packages, base_notes = base_side.packages
        built = content_lint.merged(content_lint.ImageContent(base_side.entries, changes))
        built_packages, notes = _packages(storage, chain[::-1], built)
        return content_lint.ImageContent(
            base_side.entries,
            changes,
            base_packages=base_packages,
            built_packages=built_packages,
            notes=(*(f"base: {n}" for n in base_notes), *(f"image: {n}" for n in notes)),
            base_children=base_side.children,
        )

    def prepare(self, base: str) -> None:
        """Read `base`'s side on a thread of its own, overlapping the build (ports_content)."""
        try:
            storage = storage_metadata.of(self.config)
            found = storage_metadata.image_of(storage.images, base)
            if found is None or found.get("layer") is None:
                return  # not pulled yet: the build pulls it, `content` reads it
            layers = storage.chain(found["layer"])[::-1]
            if self._key(storage, layers) in _bases:
                return
        except (PermanentError, TemporaryError, OSError) as exc:
            log.debug("base %s not prepared: %s", base, exc)
            return
        threading.Thread(
            target=self._prepared, args=(storage, layers), name="layering-base-side", daemon=True
        ).start()

    def _prepared(self, storage: storage_metadata.Storage, layers: list[str]) -> None:
        try:
            self._base(storage, layers)
        except Exception as exc:  # `content` reads it again and says what went wrong
            log.warning("reading the base's layers ahead of the build failed: %s", exc)

    def _key(
        self, storage: storage_metadata.Storage, layers: list[str]
    ) -> tuple[str, str, str, int]:
        return (str(storage.root), storage.driver, layers[-1] if layers else "", self.max_entries)

    def _base(self, storage: storage_metadata.Storage, layers: list[str]) -> _Base:
        key = self._key(storage, layers)
        with _bases_lock:
            if key in _bases:
                return _bases[key]
            reading = _reading.setdefault(key, threading.Lock())
        with reading:
            with _bases_lock:
                if key in _bases:  # read meanwhile by the one that held `reading`
                    return _bases[key]
            changes = [c for layer in layers for c in self._layer(storage, layer)]
            entries = content_lint.merged(content_lint.ImageContent({}, changes))
            side = _Base(layers, entries, content_lint.children_index(entries))
            with _bases_lock:
                while len(_bases) >= BASES_KEPT:
                    del _bases[next(iter(_bases))]
                _reading.pop(key, None)
                return _bases.setdefault(key, side)

    def _layer(self, storage: storage_metadata.Storage, layer: str) -> list[LayerChange]:
        path = storage.tar_split(layer)
        try:
            return tar_split.read(
                path, layer=layer, max_entries=self.max_entries, max_bytes=self.max_bytes
            )
        except FileNotFoundError:
            current = storage_metadata.load(storage.root, storage.driver)
            if layer not in current.parents:
                raise TemporaryError(
                    f"layer {layer} was removed from {storage.root} while it was read"
                ) from None
            raise PermanentError(
                f"{path} is missing: the storage cannot be read as layers; {SKIP_LINT}"
            ) from None
        except OSError as exc:
            raise PermanentError(
                f"{path}: {exc.strerror or exc}; the storage cannot be read as layers; {SKIP_LINT}"
            ) from None


def _touches_database(changes: Sequence[LayerChange], base: dict[str, FileEntry]) -> bool:
    databases = {*RPMDB_PATHS, *filter(None, (tar_split.resolved(base, p) for p in RPMDB_PATHS))}
    for change in changes:
        for database in databases:
            if change.path == database or change.path.startswith(database + "/"):
                return True
            replaced = change.entry is None or change.opaque or change.entry.kind != "dir"
            if replaced and database.startswith(change.path + "/"):
                return True
    return False


def _database(tree: dict[str, FileEntry]) -> tuple[str, list[str]] | None:
    """The first rpm database directory in `tree` holding files, and their names."""
    for path in RPMDB_PATHS:
        real = tar_split.resolved(tree, path)
        if real is None or tree[real].kind != "dir":
            continue
        prefix = real + "/"
        files = [
            p[len(prefix) :]
            for p, e in tree.items()
            if p.startswith(prefix) and e.kind == "file" and "/" not in p[len(prefix) :]
        ]
        if any(not name.startswith(".") for name in files):
            return real, files
    return None


def _packages(
    storage: storage_metadata.Storage, layers: list[str], tree: dict[str, FileEntry]
) -> tuple[list[rpm_packages.Package] | None, tuple[str, ...]]:
    """The packages of the rpm database `tree` holds, its files taken from the topmost of
    `layers` (bottom first) that holds each; notes say what stood in the way."""
    found = _database(tree)
    if found is None:
        return None, (f"no rpm database ({', '.join(RPMDB_PATHS)})",)
    real, files = found
    # vfs keeps each layer as the full tree: the top one is all there is to read
    sources = layers[-1:] if storage.driver == "vfs" else layers
    with tempfile.TemporaryDirectory(prefix="layering-rpmdb-") as scratch:
        try:
            for layer in sources:
                directory = storage.tree(layer) / real.lstrip("/")
                # a link on the way (in a lower layer's tree) is not the image's database
                if image_changes.within(storage.tree(layer), real) == directory and (
                    directory.is_dir()
                ):
                    image_changes.copy_database(directory, Path(scratch))
            for copied in Path(scratch).iterdir():
                if copied.name not in files:
                    copied.unlink()  # removed by a layer above the one it was copied from
            return image_changes.query_database(Path(scratch)), ()
        except (image_changes.AnalysisFailed, rpm_packages.NotAPackage, OSError) as exc:
            reason = str(exc).replace(scratch, real)
            return None, (f"the rpm database {real} could not be read: {reason}",)


@contextmanager
def pulled(config: BuildahConfig, reference: str) -> Iterator[str]:
    """`reference` (by tag or digest) pulled into the configured storage; yields its image id
    and removes it afterwards unless it was there before."""
    try:
        parsed = names.parse_image_ref(reference)
    except ValueError as exc:
        raise PermanentError(f"cannot pull {reference!r}: {exc}") from None
    if reference.startswith("-") or (parsed.tag is None and parsed.digest is None):
        raise PermanentError(
            f"cannot pull {reference!r}: name the image by tag or digest (host/repo:tag)"
        )
    root = storage_metadata.storage_root(config)
    try:
        before = storage_metadata.load(root, config.storage_driver).images
    except PermanentError:
        before = []  # a storage nothing was stored in yet
    had = storage_metadata.image_of(before, reference) is not None
    argv = [config.command, *config.global_argv(), "pull", "--quiet"]
    if config.authfile is not None:
        argv += ["--authfile", str(config.authfile)]
    try:
        result = buildah_process.captured(
            [*argv, f"docker://{parsed}"], env=None, timeout=COMMAND_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise TemporaryError(
            f"registry {registry.registry_host(str(parsed))}: pull of {reference} took over "
            f"{COMMAND_TIMEOUT:.0f}s"
        ) from None
    if result.returncode != 0:
        secrets = registry.authfile_secrets(config.authfile)
        error = registry.skopeo_error(
            result.stderr, reference=str(parsed), doing=f"pull {reference}", secrets=secrets
        )
        raise error or PermanentError(
            f"{reference} is not in its registry (no such repository, tag or digest)"
        )
    image_id = result.stdout.strip().splitlines()[-1]
    try:
        yield image_id
    finally:
        if not had:
            # an image that was there under another name keeps it: untag this name only
            known = any(i.get("id") == image_id for i in before)
            _remove(config, str(parsed) if known else image_id)


def _remove(config: BuildahConfig, name: str) -> None:
    command = [config.command, *config.global_argv(), "rmi", name]
    try:
        result = buildah_process.captured(command, env=None, timeout=COMMAND_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("could not remove %s after linting it: %s", name, exc)
        return
    if result.returncode != 0:
        log.warning("could not remove %s after linting it: %s", name, result.stderr[-300:])
