"""What a built image changes against its base (core/image_changes.py), read from local buildah
storage: each image's root filesystem through a working container (`buildah from --pull=never`,
`buildah mount`), its rpm database read with the host's `rpm -qa --dbpath` (the database files
copied aside first: links in an image never lead rpm out of it), and bounded walks of /etc and
/usr that never follow a link. The working containers are always unmounted and removed. The
base's side is kept per process by base reference (digest): the next build on it reads only
its own image. Does process and file I/O.

    reader = image_changes.ImageReader(buildah.config_of(settings))
    changes = reader.changes(spec)   # never raises: a failure is ImageChanges.error
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline.adapters import buildah_process
from pipeline.adapters.buildah import BuildahConfig
from pipeline.core import builds, file_index, image_changes, rpm_packages

log = logging.getLogger(__name__)
RPMDB_PATHS = ("usr/lib/sysimage/rpm", "usr/share/rpm", "var/lib/rpm")
MAX_ENTRIES = 200_000  # per tree and image: FCOS's /usr holds about 60,000
MAX_RPMDB_BYTES = 512 * 1024 * 1024
COMMAND_TIMEOUT = 300.0
MAX_LINKS = 40
BASES_KEPT = 4


@dataclass(frozen=True)
class Side:
    """What one image holds: its packages (None without a readable database), its trees."""

    packages: list[rpm_packages.Package] | None
    trees: list[file_index.FileIndex]
    notes: tuple[str, ...] = ()


_bases: dict[str, Side] = {}
_bases_lock = threading.Lock()


class AnalysisFailed(Exception):
    """buildah or rpm could not be run on an image."""


class ImageReader:
    def __init__(self, config: BuildahConfig, *, max_entries: int = MAX_ENTRIES) -> None:
        self.config = config
        self.max_entries = max_entries

    def changes(self, spec: builds.BuildSpec) -> image_changes.ImageChanges:
        """What `spec.target` (still in local storage) changes against `spec.base`; a failure
        is logged and returned as the reason the changes could not be read."""
        try:
            base = self._base(spec.base)
            built = self.side(spec.target)
        except (AnalysisFailed, OSError, subprocess.SubprocessError) as exc:
            log.warning("changes of %s not read: %s", spec.target, exc)
            return image_changes.failed(str(exc), base=spec.base)
        return image_changes.compare(
            base_packages=base.packages,
            built_packages=built.packages,
            base_files=base.trees,
            built_files=built.trees,
            base=spec.base,
            notes=[*(f"base: {n}" for n in base.notes), *(f"image: {n}" for n in built.notes)],
        )

    def _base(self, reference: str) -> Side:
        key = f"{self.config.root}|{self.max_entries}|{reference}"
        with _bases_lock:
            if key in _bases:
                return _bases[key]
        side = self.side(reference)
        with _bases_lock:
            while len(_bases) >= BASES_KEPT:
                del _bases[next(iter(_bases))]
            _bases[key] = side
        return side

    def side(self, reference: str) -> Side:
        """The packages and trees of the image `reference` in local storage."""
        with self._mounted(reference) as root:
            packages, notes = read_packages(root)
            trees = [walk(root, tree, max_entries=self.max_entries) for tree in image_changes.TREES]
        return Side(packages, trees, notes)

    def _buildah(self, *argv: str) -> str:
        command = [self.config.command, *self.config.global_argv(), *argv]
        result = buildah_process.captured(command, env=None, timeout=COMMAND_TIMEOUT)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise AnalysisFailed(f"buildah {argv[0]} failed: {last[-500:]}")
        return result.stdout.strip()

    @contextmanager
    def _mounted(self, reference: str) -> Iterator[Path]:
        container = self._buildah("from", "--pull=never", "--quiet", reference)
        try:
            yield Path(self._buildah("mount", container))
        finally:
            try:
                self._buildah("rm", container)  # unmounts it too: one process, not two
            except (AnalysisFailed, OSError, subprocess.SubprocessError) as exc:
                log.warning("could not clean up working container %s: %s", container, exc)


def read_packages(root: Path) -> tuple[list[rpm_packages.Package] | None, tuple[str, ...]]:
    """The packages in the first rpm database found under `root`, and notes on what stood in
    the way (no database, an unreadable one)."""
    for relative in RPMDB_PATHS:
        database = within(root, relative)
        if database is None or not database.is_dir():
            continue
        with tempfile.TemporaryDirectory(prefix="layering-rpmdb-") as scratch:
            copied = copy_database(database, Path(scratch))
            if not copied:
                continue
            try:
                return query_database(Path(scratch)), ()
            except (AnalysisFailed, rpm_packages.NotAPackage) as exc:
                reason = str(exc).replace(scratch, f"/{relative}")
                return None, (f"the rpm database /{relative} could not be read: {reason}",)
    return None, (f"no rpm database ({', '.join('/' + p for p in RPMDB_PATHS)})",)


def copy_database(database: Path, scratch: Path) -> bool:
    """The regular files of the database directory copied aside (never through a link),
    within MAX_RPMDB_BYTES; False when it holds none."""
    total = 0
    copied = False
    for entry in os.scandir(database):
        if not entry.is_file(follow_symlinks=False):
            continue
        total += entry.stat(follow_symlinks=False).st_size
        if total > MAX_RPMDB_BYTES:
            raise AnalysisFailed(f"rpm database {database.name} over {MAX_RPMDB_BYTES} bytes")
        flags = os.O_RDONLY | os.O_NOFOLLOW
        descriptor = os.open(entry.path, flags)
        with os.fdopen(descriptor, "rb") as source, open(scratch / entry.name, "wb") as target:
            shutil.copyfileobj(source, target)
        copied = copied or not entry.name.startswith(".")
    return copied


def query_database(database: Path) -> list[rpm_packages.Package]:
    rpm = shutil.which("rpm")
    if rpm is None:
        raise AnalysisFailed("rpm not found on this worker: install the Debian package rpm")
    result = subprocess.run(
        [rpm, "--dbpath", str(database), "-qa", "--qf", rpm_packages.QUERY_FORMAT],
        capture_output=True,
        text=True,
        errors="replace",
        check=False,
        stdin=subprocess.DEVNULL,
        timeout=COMMAND_TIMEOUT,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(database)},
    )
    errors = [
        line
        for line in result.stderr.splitlines()
        if line.startswith("error") or "rpmdb" in line.lower()
    ]
    if result.returncode != 0 or errors:
        detail = errors or result.stderr.strip().splitlines() or [f"exit {result.returncode}"]
        raise AnalysisFailed(detail[-1][:300])
    return rpm_packages.parse_query(result.stdout)


def within(root: Path, relative: str) -> Path | None:
    """`relative` resolved inside `root` as the image would see it: an absolute link leads
    back to the image's root, never the host's; None when it does not exist or loops."""
    parts = [part for part in relative.split("/") if part]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        path = root.joinpath(*resolved, part)
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            return None
        if stat.S_ISLNK(mode):
            links += 1
            if links > MAX_LINKS:
                return None
            target = os.readlink(path)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p] + parts
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def _name(raw: bytes) -> str:
    # a name that is not UTF-8 is shown with escapes, never dropped
    return raw.decode("utf-8", errors="backslashreplace")


def walk(root: Path, tree: str, *, max_entries: int) -> file_index.FileIndex:
    """The entries of `tree` (/etc, /usr) under `root`, depth first in name order, links
    recorded and never followed, at most `max_entries` (then `cut_after` says where)."""
    entries: dict[str, file_index.FileEntry] = {}
    start = os.fsencode(root / tree.lstrip("/"))
    stack: list[tuple[bytes, str]] = [(start, tree)]
    while stack:
        path, shown = stack.pop()
        if len(entries) >= max_entries:
            return file_index.FileIndex(tree, entries, cut_after=list(entries)[-1])
        try:
            info = os.lstat(path)
        except OSError:
            continue
        entry = _entry(path, info)
        entries[shown] = entry
        if entry.kind != "dir":
            continue
        try:
            with os.scandir(path) as listing:
                names = sorted((_name(e.name), e.name) for e in listing)
        except OSError:
            continue
        for name, raw in reversed(names):
            stack.append((os.path.join(path, raw), f"{shown}/{name}"))
    if tree not in entries:
        return file_index.FileIndex(tree, {})
    return file_index.FileIndex(tree, entries)


def _entry(path: bytes, info: os.stat_result) -> file_index.FileEntry:
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISLNK(info.st_mode):
        return file_index.FileEntry("link", mode, 0, 0, _name(os.readlink(path)))
    if stat.S_ISDIR(info.st_mode):
        return file_index.FileEntry("dir", mode)
    kind = "file" if stat.S_ISREG(info.st_mode) else "other"
    return file_index.FileEntry(kind, mode, info.st_size, int(info.st_mtime))
