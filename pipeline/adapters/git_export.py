"""One directory of a commit written to disk from the repository's objects, read through its
open `cat-file` process (GitRepo.export in git.py): what `git archive | tar x` did, without
two more processes, a tar file on disk and `sh`'s 0.1 s polling. Does file I/O.

What tarfile's "data" filter guaranteed the archive holds here too:

- A name is one path component: empty, `.`, `..`, or one holding `/` or NUL is refused.
- Entries are created below directories this export made, through a directory descriptor,
  with O_EXCL and O_NOFOLLOW: nothing is ever written through a symlink.
- A symlink stays a symlink. An absolute target is refused, and so is one that resolves
  outside the destination once everything is written (following the export's other links).
- Modes: regular files 0644, executables 0755, symlinks, directories 0755; a submodule
  (gitlink) is an empty directory, as git archive writes it; any other mode is refused.
- A file the repository model reads (Containerfile, image.yaml) over its size cap
  (core/repo_limits.py) is refused unread; every file is streamed in parts, never held whole.
- Times are the commit's, as git archive gives them, so a rebuild copies the same bytes.

Unlike git archive, `.gitattributes` (export-ignore, export-subst) is not applied: the
context is exactly the tree whose id the build key is computed from.

A refusal is a PermanentError naming the path and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from pipeline.adapters import git_trees
from pipeline.adapters.git_objects import BlobStream
from pipeline.core import repo, repo_limits
from pipeline.core.errors import PermanentError

OpenBlob = Callable[[str], tuple[int, BlobStream]]  # blob sha -> (size, content stream)

FILE_MODES = {0o100644: 0o644, 0o100664: 0o644, 0o100755: 0o755}
SYMLINK_MODE = 0o120000
GITLINK_MODE = 0o160000
_CHUNK = 1 << 20
# a hostile tree can nest deep or name one subtree many times (its size grows exponentially);
# a real image directory is far from either bound
MAX_DEPTH = 64
MAX_ENTRIES = 100_000
_LINK_MAX = 4096  # PATH_MAX: no longer symlink target can be followed
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def commit_time(raw_commit: bytes) -> int:
    """The committer time of a raw commit object (what git archive gives every entry)."""
    for line in raw_commit.split(b"\n"):
        if not line:
            break
        if line.startswith(b"committer "):
            try:
                return int(line.rsplit(b" ", 2)[-2])
            except (IndexError, ValueError):
                return 0
    return 0


class _Export:
    def __init__(
        self,
        read_tree: git_trees.ReadTree,
        open_blob: OpenBlob,
        read_size: git_trees.ReadSize,
        *,
        caps: repo_limits.FileCaps,
        mtime: int,
    ) -> None:
        self.read_tree = read_tree
        self.open_blob = open_blob
        self.read_size = read_size
        self.caps = caps
        self.times = (mtime, mtime)
        self.links: list[str] = []  # repository paths of the symlinks written
        self.entries = 0

    def directory(self, tree: str, fd: int, path: str, depth: int = 0) -> None:
        """Write the entries of `tree` (the directory at repository path `path`) into `fd`."""
        if depth > MAX_DEPTH:
            raise PermanentError(
                f"{path}: directories nest deeper than {MAX_DEPTH} levels; flatten them"
            )
        for name, (mode, sha) in sorted(self.read_tree(tree).items()):
            entry = f"{path}/{_check_name(name, path)}"
            self.entries += 1
            if self.entries > MAX_ENTRIES:
                raise PermanentError(
                    f"{path}: the image directory holds more than {MAX_ENTRIES} entries; "
                    "keep large trees out of the build context"
                )
            if mode in (git_trees.TREE_MODE, GITLINK_MODE):
                child = self._mkdir(fd, name, entry)
                try:
                    if mode == git_trees.TREE_MODE:
                        self.directory(sha, child, entry, depth + 1)
                    os.utime(child, self.times)  # its entries are written: nothing changes it
                finally:
                    os.close(child)
            elif mode in FILE_MODES:
                self._file(fd, name, entry, sha, FILE_MODES[mode])
            elif mode == SYMLINK_MODE:
                self._symlink(fd, name, entry, sha)
            else:
                raise PermanentError(
                    f"{entry}: Git mode {mode:o} is not a file, executable, symlink or "
                    "directory; remove it from the repository"
                )

    def _mkdir(self, fd: int, name: str, path: str) -> int:
        try:
            os.mkdir(name, 0o755, dir_fd=fd)
            return os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            raise _refused(path, exc) from None

    def _file(self, fd: int, name: str, path: str, sha: str, mode: int) -> None:
        if repo.interesting(path):
            size = self.read_size(sha)
            cap = self.caps.cap_for(path)
            if size is not None and size > cap:
                message = repo_limits.oversize_message(path, size, self.caps)
                raise PermanentError(f"{path} {message}")
        size, stream = self.open_blob(sha)
        try:
            out = os.open(name, _NEW_FILE, 0o600, dir_fd=fd)
        except OSError as exc:
            _drain(stream)
            raise _refused(path, exc) from None
        try:
            while chunk := stream.read(_CHUNK):
                _write_all(out, chunk)
            os.fchmod(out, mode)
            os.utime(out, self.times)
        except OSError as exc:
            raise _refused(path, exc) from None
        finally:
            _drain(stream)
            os.close(out)

    def _symlink(self, fd: int, name: str, path: str, sha: str) -> None:
        size, stream = self.open_blob(sha)
        if size > _LINK_MAX:
            _drain(stream)
            raise PermanentError(
                f"{path}: symlink target of {size} bytes is longer than {_LINK_MAX}; "
                "point it at a path inside the image directory"
            )
        target = stream.read()
        _drain(stream)
        if target.startswith(b"/") or b"\0" in target:
            raise PermanentError(
                f"{path}: symlink to the absolute path {target.decode(errors='replace')!r}; "
                "make it a relative link inside the image directory"
            )
        try:
            os.symlink(os.fsdecode(target), name, dir_fd=fd)
            os.utime(name, self.times, dir_fd=fd, follow_symlinks=False)
        except OSError as exc:
            raise _refused(path, exc) from None
        self.links.append(path)

    def check_links(self, destination: Path) -> None:
        """Refuse a symlink that resolves outside `destination`, now that every entry (and so
        every link it may lead through) is written."""
        boundary = os.path.realpath(destination)
        for path in self.links:
            resolved = os.path.realpath(os.path.join(boundary, path))
            if os.path.commonpath([resolved, boundary]) != boundary:
                raise PermanentError(
                    f"{path}: symlink leads outside the image's checkout; make it a relative "
                    "link to a path inside the image directory"
                )


def export(
    read_tree: git_trees.ReadTree,
    open_blob: OpenBlob,
    read_size: git_trees.ReadSize,
    tree: str,
    destination: Path,
    *,
    path: str,
    caps: repo_limits.FileCaps = repo_limits.DEFAULT_CAPS,
    mtime: int = 0,
) -> Path:
    """Write `tree`, the directory at repository path `path` (`images/<name>`), to
    `destination / path`; `destination` is an empty directory of the caller's. Returns the
    written directory."""
    for part in path.split("/"):
        _check_name(part, path)
    target = destination / path
    target.mkdir(parents=True, mode=0o755)
    writer = _Export(read_tree, open_blob, read_size, caps=caps, mtime=mtime)
    fd = os.open(target, _DIR_FLAGS)
    try:
        writer.directory(tree, fd, path)
        writer.check_links(destination)
        os.utime(fd, writer.times)
    finally:
        os.close(fd)
    return target


def _check_name(name: str, where: str) -> str:
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise PermanentError(
            f"{where}: holds an entry named {name!r}, which is not a file name; "
            "rewrite the commit without it"
        )
    return name


def _drain(stream: BlobStream) -> None:
    """Read what is left of a blob, so the cat-file pipe is ready for the next object."""
    while stream.read(_CHUNK):
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _refused(path: str, exc: OSError) -> PermanentError:
    return PermanentError(f"{path}: cannot be written to the build context: {exc.strerror}")
