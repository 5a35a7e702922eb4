"""Git's raw objects read as data: tree entries, a commit's tree and parents, the paths that
differ between two trees, and the repository model's files gathered from a commit's tree into
a repo.TreeListing. No I/O of its own: GitRepo (git.py) hands in the functions that read
objects through its `cat-file` processes.

A listing asks for each file's size before reading it (`ReadSize`, git's object header): a
blob over its size cap (core/repo_limits.py) is listed as oversized and never read."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection

from pipeline.core import repo, repo_limits

TREE_MODE = 0o040000
# one entry; each part ends at a byte it cannot hold (` `, NUL), so a match never backtracks far
_TREE_ENTRY = re.compile(rb"([0-7]+) ([^\0]*)\0(.{20})", re.DOTALL)
# the modes Git writes are few; a hostile tree's made-up ones are not kept
_MODES: dict[bytes, int] = {}
_MODES_KEPT = 16

Entries = dict[str, tuple[int, str]]  # name -> (mode, object sha) of one tree
ReadTree = Callable[[str], Entries]  # a tree's sha -> its entries
ReadBlob = Callable[[str], bytes | None]  # a `git cat-file` name -> the blob, or None
ReadSize = Callable[[str], int | None]  # a `git cat-file` name -> the blob's size, or None


def tree_entries(data: bytes) -> Entries:
    """name -> (mode, sha) of a raw tree object: `<octal mode> <name>\\0<20-byte sha>`...

    GitPython's parser validates every name on the way; this one only splits (the images/ tree
    of a large repository has hundreds of entries, read on every plan). The pattern is matched
    at each entry's start, never searched for, so the time is linear in the object whatever it
    holds, and a malformed entry ends the listing (`findall` searching past garbage was
    quadratic: 60 s on a hostile 128 KiB tree)."""
    entries: Entries = {}
    position, end = 0, len(data)
    while position < end:
        match = _TREE_ENTRY.match(data, position)
        if match is None:
            break
        raw_mode, name, sha = match.groups()
        mode = _MODES.get(raw_mode)
        if mode is None:
            mode = int(raw_mode, 8)
            if len(_MODES) < _MODES_KEPT:
                _MODES[raw_mode] = mode
        entries[name.decode("utf-8", "surrogateescape")] = (mode, sha.hex())
        position = match.end()
    return entries


def commit_header(data: bytes) -> tuple[str, list[str]]:
    """(tree, parents) of a raw commit object, read from its header."""
    tree = ""
    parents: list[str] = []
    for line in data.split(b"\n"):
        if not line:
            break
        if line.startswith(b"tree "):
            tree = line[5:].decode()
        elif line.startswith(b"parent "):
            parents.append(line[7:].decode())
    return tree, parents


def changed_paths(
    read_tree: ReadTree, tree_a: str, tree_b: str, *, prefixes: Collection[str] | None
) -> list[str]:
    """Files that differ between two trees, sorted (as `git diff --name-only --no-renames`);
    with `prefixes` (top-level directory names) only below those directories. Descends only
    into subtrees whose ids differ."""
    out: list[str] = []
    _diff(read_tree, tree_a, tree_b, "", out, prefixes)
    return sorted(out)


def _diff(
    read_tree: ReadTree,
    tree_a: str | None,
    tree_b: str | None,
    prefix: str,
    out: list[str],
    top: Collection[str] | None,
) -> None:
    entries_a = read_tree(tree_a) if tree_a else {}
    entries_b = read_tree(tree_b) if tree_b else {}
    for name in entries_a.keys() | entries_b.keys():
        if top is not None and name not in top:
            continue
        old, new = entries_a.get(name), entries_b.get(name)
        if old == new:
            continue
        path = f"{prefix}{name}"
        old_tree = old[1] if old and old[0] == TREE_MODE else None
        new_tree = new[1] if new and new[0] == TREE_MODE else None
        if old_tree or new_tree:
            _diff(read_tree, old_tree, new_tree, f"{path}/", out, None)
        # a file on either side (file replaced by a directory or the reverse counts too)
        if (old and old[0] != TREE_MODE) or (new and new[0] != TREE_MODE):
            out.append(path)


def subtree(read_tree: ReadTree, tree: str, path: str) -> str | None:
    """The tree at `path` (`a/b`) below `tree`, or None when there is no such directory."""
    for part in path.split("/"):
        entry = read_tree(tree).get(part)
        if entry is None or entry[0] != TREE_MODE:
            return None
        tree = entry[1]
    return tree


class _Reader:
    """Reads the model's files into `files`, each only when its size is within its cap."""

    def __init__(
        self,
        read_tree: ReadTree,
        read_blob: ReadBlob,
        read_size: ReadSize | None,
        caps: repo_limits.FileCaps,
    ) -> None:
        self.read_tree = read_tree
        self.read_blob = read_blob
        self.read_size = read_size
        self.caps = caps
        self.files: dict[str, bytes] = {}
        self.oversized: dict[str, int] = {}

    def read(self, name: str, path: str) -> None:
        """The blob `name` (any `git cat-file` name) as the file at `path`, if it exists."""
        cap = self.caps.cap_for(path)
        if self.read_size is not None:
            size = self.read_size(name)
            if size is None:
                return
            if size > cap:
                self.oversized[path] = size
                return
        found = self.read_blob(name)
        if found is not None:
            self.files[path] = found


def listing(
    read_tree: ReadTree,
    read_blob: ReadBlob,
    root_tree: str,
    *,
    images: Collection[str] | None,
    machineconfigs: bool,
    read_size: ReadSize | None = None,
    caps: repo_limits.FileCaps = repo_limits.DEFAULT_CAPS,
) -> repo.TreeListing:
    """What the repository model reads in `root_tree`. Every image directory is listed with
    its tree id; `images` limits whose Containerfile and image.yaml are read (None: all);
    `machineconfigs=False` skips clusters/*/machineconfigs/. With `read_size`, a file over its
    cap in `caps` is listed as oversized and not read (without it, repo.parse refuses it after
    it was read)."""
    root = read_tree(root_tree)
    image_dirs: dict[str, str | None] = {}
    cluster_dirs: list[str] = []
    reader = _Reader(read_tree, read_blob, read_size, caps)
    unread: set[str] = set()
    top = root.get(repo.IMAGES_DIR)
    if top and top[0] == TREE_MODE:
        for name, (mode, sha) in sorted(read_tree(top[1]).items()):
            if mode != TREE_MODE:
                continue
            image_dirs[name] = sha
            if images is not None and name not in images:
                unread.add(name)
                continue
            _read_files(reader, sha, f"{repo.IMAGES_DIR}/{name}", nested=False)
    top = root.get(repo.CLUSTERS_DIR)
    if top and top[0] == TREE_MODE:
        for name, (mode, sha) in sorted(read_tree(top[1]).items()):
            if mode != TREE_MODE:
                continue
            cluster_dirs.append(name)
            prefix = f"{repo.CLUSTERS_DIR}/{name}"
            _read_files(reader, sha, prefix, nested=machineconfigs)
    return repo.TreeListing(
        image_dirs,
        cluster_dirs,
        reader.files,
        frozenset(unread),
        oversized=reader.oversized,
        caps=caps,
    )


def _read_files(reader: _Reader, tree: str, prefix: str, *, nested: bool) -> None:
    if not nested:
        # Containerfile, image.yaml, cluster.yaml: look them up by path (one round trip
        # each) instead of reading the directory first
        for name in (repo.CONTAINERFILE, repo.IMAGE_SETTINGS, repo.CLUSTER_FILE):
            path = f"{prefix}/{name}"
            if repo.interesting(path):
                reader.read(f"{tree}:{name}", path)
        if not prefix.endswith(f"/{repo.MACHINECONFIGS_DIR}"):
            return
    for name, (mode, sha) in sorted(reader.read_tree(tree).items()):
        path = f"{prefix}/{name}"
        if mode == TREE_MODE:
            if nested and name == repo.MACHINECONFIGS_DIR:
                _read_files(reader, sha, path, nested=False)
            continue
        if repo.interesting(path):
            reader.read(sha, path)
