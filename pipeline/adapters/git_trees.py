"""Git's raw objects read as data: tree entries, a commit's tree and parents, the paths that
differ between two trees, and the repository model's files gathered from a commit's tree into
a repo.TreeListing. No I/O of its own: GitRepo (git.py) hands in the functions that read
objects through its `cat-file --batch` process."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection

from pipeline.core import repo

TREE_MODE = 0o040000
_TREE_ENTRY = re.compile(rb"([0-7]+) ([^\0]*)\0(.{20})", re.DOTALL)
_MODES: dict[bytes, int] = {}

Entries = dict[str, tuple[int, str]]  # name -> (mode, object sha) of one tree
ReadTree = Callable[[str], Entries]  # a tree's sha -> its entries
ReadBlob = Callable[[str], bytes | None]  # a `git cat-file` name -> the blob, or None


def tree_entries(data: bytes) -> Entries:
    """name -> (mode, sha) of a raw tree object: `<octal mode> <name>\\0<20-byte sha>`...

    GitPython's parser validates every name on the way; this one only splits, with one regular
    expression pass (the images/ tree of a large repository has hundreds of entries, read on
    every plan)."""
    entries: Entries = {}
    for raw_mode, name, sha in _TREE_ENTRY.findall(data):
        mode = _MODES.get(raw_mode)
        if mode is None:
            mode = _MODES[raw_mode] = int(raw_mode, 8)
        entries[name.decode("utf-8", "surrogateescape")] = (mode, sha.hex())
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


def listing(
    read_tree: ReadTree,
    read_blob: ReadBlob,
    root_tree: str,
    *,
    images: Collection[str] | None,
    machineconfigs: bool,
) -> repo.TreeListing:
    """What the repository model reads in `root_tree`. Every image directory is listed with
    its tree id; `images` limits whose Containerfile and image.yaml are read (None: all);
    `machineconfigs=False` skips clusters/*/machineconfigs/."""
    root = read_tree(root_tree)
    image_dirs: dict[str, str | None] = {}
    cluster_dirs: list[str] = []
    files: dict[str, bytes] = {}
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
            _read_files(read_tree, read_blob, sha, f"{repo.IMAGES_DIR}/{name}", files, nested=False)
    top = root.get(repo.CLUSTERS_DIR)
    if top and top[0] == TREE_MODE:
        for name, (mode, sha) in sorted(read_tree(top[1]).items()):
            if mode != TREE_MODE:
                continue
            cluster_dirs.append(name)
            prefix = f"{repo.CLUSTERS_DIR}/{name}"
            _read_files(read_tree, read_blob, sha, prefix, files, nested=machineconfigs)
    return repo.TreeListing(image_dirs, cluster_dirs, files, frozenset(unread))


def _read_files(
    read_tree: ReadTree,
    read_blob: ReadBlob,
    tree: str,
    prefix: str,
    files: dict[str, bytes],
    *,
    nested: bool,
) -> None:
    if not nested:
        # Containerfile, image.yaml, cluster.yaml: look them up by path (one round trip
        # each) instead of reading the directory first
        for name in (repo.CONTAINERFILE, repo.IMAGE_SETTINGS, repo.CLUSTER_FILE):
            path = f"{prefix}/{name}"
            if repo.interesting(path):
                found = read_blob(f"{tree}:{name}")
                if found is not None:
                    files[path] = found
        if not prefix.endswith(f"/{repo.MACHINECONFIGS_DIR}"):
            return
    for name, (mode, sha) in sorted(read_tree(tree).items()):
        path = f"{prefix}/{name}"
        if mode == TREE_MODE:
            if nested and name == repo.MACHINECONFIGS_DIR:
                _read_files(read_tree, read_blob, sha, path, files, nested=False)
            continue
        if repo.interesting(path):
            found = read_blob(sha)
            if found is not None:
                files[path] = found
