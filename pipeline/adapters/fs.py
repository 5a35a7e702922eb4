"""Read a watched repository from a directory on disk into a repo.TreeListing. Does file I/O.

A file the repository model reads is `stat`ed before it is read: one over its size cap
(core/repo_limits.py) is listed as oversized and never read, and a read stops one byte past the
cap, so a file that grows meanwhile cannot make it read more."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pipeline.core import content_address, repo, repo_limits
from pipeline.core.errors import InputError

_SKIP_DIRS = {".git"}


def directory_tree_id(directory: Path) -> str:
    """The Git tree id of a directory's files (as `git add -A && git write-tree` would give)."""
    files: dict[str, content_address.TreeFile] = {}
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in filenames:
            path = Path(dirpath, name)
            relative = path.relative_to(directory).as_posix()
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                files[relative] = content_address.TreeFile(
                    content_address.SYMLINK_MODE, os.readlink(path).encode()
                )
            elif stat.S_ISREG(info.st_mode):
                mode = (
                    content_address.EXECUTABLE_MODE
                    if info.st_mode & 0o100
                    else content_address.FILE_MODE
                )
                files[relative] = content_address.TreeFile(mode, path.read_bytes())
    return content_address.tree_id(files)


def _read_capped(path: Path, cap: int) -> bytes | int:
    """The file's bytes, or its size when that is over `cap` (then it is not read)."""
    size = path.stat().st_size
    if size > cap:
        return size
    with path.open("rb") as handle:
        content = handle.read(cap + 1)
    return content if len(content) <= cap else max(size, len(content))


def listing(root: Path, caps: repo_limits.FileCaps = repo_limits.DEFAULT_CAPS) -> repo.TreeListing:
    """Gather images/, clusters/ and the files the repository model reads, each at most its
    size cap."""
    if not root.is_dir():
        raise InputError(f"{root}: not a directory; pass --repo with a checkout of the repository")
    images_dir = root / repo.IMAGES_DIR
    clusters_dir = root / repo.CLUSTERS_DIR
    if not images_dir.is_dir() and not clusters_dir.is_dir():
        raise InputError(
            f"{root}: has neither images/ nor clusters/; is this the GitOps repository?"
        )
    image_dirs: dict[str, str | None] = {}
    cluster_dirs: list[str] = []
    files: dict[str, bytes] = {}
    oversized: dict[str, int] = {}
    if images_dir.is_dir():
        for entry in sorted(images_dir.iterdir()):
            if entry.is_dir():
                image_dirs[entry.name] = directory_tree_id(entry)
    if clusters_dir.is_dir():
        cluster_dirs = sorted(entry.name for entry in clusters_dir.iterdir() if entry.is_dir())
    for top in (images_dir, clusters_dir):
        if not top.is_dir():
            continue
        for path in sorted(top.rglob("*")):
            relative = path.relative_to(root).as_posix()
            if not repo.interesting(relative):
                continue
            if path.is_symlink():
                # A symlink could make the service read files outside the repository.
                raise InputError(f"{relative}: is a symbolic link; commit the file itself")
            if path.is_file():
                try:
                    found = _read_capped(path, caps.cap_for(relative))
                except OSError as exc:
                    raise InputError(f"{relative}: cannot be read ({exc.strerror})") from None
                if isinstance(found, int):
                    oversized[relative] = found
                else:
                    files[relative] = found
    return repo.TreeListing(image_dirs, cluster_dirs, files, oversized=oversized, caps=caps)


def load(root: Path, caps: repo_limits.FileCaps = repo_limits.DEFAULT_CAPS) -> repo.Repository:
    return repo.parse(listing(root, caps))
