"""Git's objects read through one open repository's persistent `git cat-file` processes: the
`ObjectReader` base of GitRepo (git.py). A `--batch` process hands out objects (whole, or as a
stream for a blob of any size) and a `--batch-check` process their headers, so reading an
object costs a pipe round trip, not a process. Parsed trees and commits are kept (bounded):
objects never change. Not thread-safe: one reader per thread or worker process. Does process
I/O (the cat-file pipes)."""

from __future__ import annotations

from typing import Protocol

import git

from pipeline.adapters import git_trees
from pipeline.core.errors import InputError

_CACHE_SIZE = 4096


class BlobStream(Protocol):
    """The content of one blob, read in parts (GitPython's CatFileContentStream)."""

    def read(self, size: int = -1) -> bytes: ...


def _text(value: str | bytes) -> str:
    # GitPython's cat-file helpers are annotated as str but hand back bytes
    return value.decode() if isinstance(value, bytes) else value


class ObjectReader:
    """Raw objects of `repository` through its cat-file processes."""

    def __init__(self, repository: git.Repo) -> None:
        self._repo = repository
        self._trees: dict[str, git_trees.Entries] = {}
        self._commits: dict[str, tuple[str, list[str]]] = {}

    @property
    def location(self) -> str:
        """The repository's directory, to name in messages."""
        return str(self._repo.git_dir if self._repo.bare else self._repo.working_tree_dir)

    def clear_cache(self) -> None:
        """Forget parsed objects (for benchmarks; the cache is never stale)."""
        self._trees.clear()
        self._commits.clear()

    def _header(self, name: str) -> tuple[str, str] | None:
        """(sha, type) of an object named `name` (any `git cat-file` name), or None.

        Reads the object through the same `cat-file --batch` process as everything else
        rather than starting a second (`--batch-check`) one: revisions name commits, small."""
        try:
            sha, kind, _, _ = self._repo.git.get_object_data(name)
        except ValueError:
            return None
        return _text(sha), _text(kind)

    def _data(self, name: str) -> tuple[str, bytes] | None:
        """(type, content) of an object named `name` (any `git cat-file` name), or None."""
        try:
            _, kind, _, data = self._repo.git.get_object_data(name)
        except ValueError:
            return None
        return _text(kind), data

    def _blob_size(self, name: str) -> int | None:
        """The size of the blob named `name`, or None when it is missing or not a blob; asked
        of a `cat-file --batch-check` process, so an oversized blob is never read."""
        try:
            _, kind, size = self._repo.git.get_object_header(name)
        except ValueError:
            return None
        return int(size) if _text(kind) == "blob" else None

    def _blob(self, name: str) -> bytes | None:
        """The content of the blob named `name`, or None when it is missing or not a blob."""
        found = self._data(name)
        if found is None or found[0] != "blob":
            return None
        return found[1]

    def _blob_stream(self, sha: str) -> tuple[int, BlobStream]:
        """(size, stream) of the blob `sha` through the `--batch` process: read it to its end
        before the next object is asked for (what is left unread is drained then)."""
        try:
            _, kind, size, stream = self._repo.git.stream_object_data(sha)
        except ValueError:
            raise InputError(f"{sha}: no such object in {self.location}") from None
        if _text(kind) != "blob":
            stream.read()
            raise InputError(f"{sha}: not a blob in {self.location}")
        return int(size), stream

    def _tree(self, sha: str) -> git_trees.Entries:
        entries = self._trees.get(sha)
        if entries is None:
            found = self._data(sha)
            if found is None or found[0] != "tree":
                raise InputError(f"{sha}: not a tree in {self.location}")
            entries = git_trees.tree_entries(found[1])
            if len(self._trees) >= _CACHE_SIZE:
                self._trees.clear()
            self._trees[sha] = entries
        return entries

    def _commit_header(self, sha: str) -> tuple[str, list[str]]:
        """(tree, parents) of a commit, parsed from its raw header."""
        cached = self._commits.get(sha)
        if cached is not None:
            return cached
        found = self._data(sha)
        if found is None or found[0] != "commit":
            raise InputError(f"{sha}: not a commit in {self.location}")
        header = git_trees.commit_header(found[1])
        if len(self._commits) >= _CACHE_SIZE:
            self._commits.clear()
        self._commits[sha] = header
        return header
