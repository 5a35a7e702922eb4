"""What the content rules (LAY101..LAY113, core/content_rules.py) read of a built image: the
root filesystem of its base, and what each layer the build added changes in it. No I/O: the
adapter reads both from local buildah storage (adapters/layer_content.py).

The build's layers are read as layer diffs, the way they are pushed: an entry added or
replaced, or a path removed (an OCI whiteout) or emptied of the base's content (an opaque
directory). The rules see the merged result (`merged`) and what the build itself put there
(`added`), so a rule about "content the build added" never fires on the base's own content,
and a build reads only its own, small layers: the base's side is read once per base.

Paths are absolute as the image sees them (`/etc/hostname`). A name whose bytes are not UTF-8 is
shown with backslash escapes and `utf8` is False on its change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pipeline.core import rpm_packages
from pipeline.core.file_index import FileEntry


@dataclass(frozen=True)
class LayerChange:
    """One entry of one of the build's layer diffs. `entry` None: the path is removed (a
    whiteout). `opaque`: the directory hides everything the layers below put under it."""

    path: str
    entry: FileEntry | None
    opaque: bool = False
    utf8: bool = True


@dataclass(frozen=True)
class ImageContent:
    """A built image as the rules read it.

    - `base`: every path of the base image (its layers merged), path -> entry.
    - `changes`: the build's layers' entries, bottom layer first, each layer in its order.
    - `base_packages` / `built_packages`: the rpm databases' packages; None where there is no
      readable database, and `built_packages` None too when the build's layers leave the
      database untouched (nothing to compare).
    - `notes`: what could not be read, said in the build log (never a finding by itself).
    """

    base: Mapping[str, FileEntry]
    changes: Sequence[LayerChange]
    base_packages: Sequence[rpm_packages.Package] | None = None
    built_packages: Sequence[rpm_packages.Package] | None = None
    notes: tuple[str, ...] = ()
    # directory -> the paths directly in it, of `base` (`children_index`); the reader keeps it
    # with the base's side so a build never indexes the base again. None: made when needed
    base_children: Mapping[str, Sequence[str]] | None = None


def _parent_paths(path: str) -> list[str]:
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[:i]) for i in range(1, len(parts))]


def _index(children: dict[str, set[str]], path: str) -> None:
    """Record `path` under its parent, and its parents under theirs (a layer may omit them)."""
    while path not in ("/", ""):
        parent = path.rsplit("/", 1)[0] or "/"
        siblings = children.setdefault(parent, set())
        if path in siblings:
            return
        siblings.add(path)
        path = parent


def merged(content: ImageContent) -> dict[str, FileEntry]:
    """The built image's root filesystem: the base with the build's layers applied in order.

    Linear in the base plus the changes: each path's children are indexed, so what a change
    hides is found by walking down from it (each path is removed at most once), never by
    scanning the whole tree per change (quadratic: a build of 100,000 files)."""
    tree = dict(content.base)
    children: dict[str, set[str]] = {}
    for path in tree:
        _index(children, path)
    for change in content.changes:
        if change.entry is None or change.opaque or change.entry.kind != "dir":
            # a whiteout, an opaque directory or a non-directory replaces what was beneath
            below = [change.path]
            while below:
                for path in children.pop(below.pop(), ()):
                    tree.pop(path, None)
                    below.append(path)
        if change.entry is None:
            tree.pop(change.path, None)
        else:
            tree[change.path] = change.entry
            _index(children, change.path)
    return tree


def children_index(tree: Mapping[str, FileEntry]) -> dict[str, list[str]]:
    """Directory -> the paths directly in it, for `ImageContent.base_children`."""
    index: dict[str, list[str]] = {}
    for path in tree:
        index.setdefault(path.rsplit("/", 1)[0] or "/", []).append(path)
    return index


class Tree:
    """The built image's root filesystem read path by path: the base with the build's layers
    on top, never copied. A rule asks for a few paths and directories, so a build of a few
    files on a base of 100,000 costs a few look-ups, not a pass over the base (`merged`)."""

    def __init__(self, content: ImageContent) -> None:
        self._base = content.base
        self._base_children = content.base_children
        self._changes: dict[str, tuple[int, LayerChange]] = {}
        self._hidden_below: dict[str, int] = {}  # path -> the last change hiding its content
        self._new_children: dict[str, set[str]] = {}
        for index, change in enumerate(content.changes):
            self._changes[change.path] = (index, change)
            if change.entry is None or change.opaque or change.entry.kind != "dir":
                self._hidden_below[change.path] = index
            self._new_children.setdefault(change.path.rsplit("/", 1)[0] or "/", set()).add(
                change.path
            )

    def get(self, path: str) -> FileEntry | None:
        exact = self._changes.get(path)
        seen = exact[0] if exact is not None else -1
        if self._hidden_below and any(
            self._hidden_below.get(ancestor, -1) > seen for ancestor in _parent_paths(path)
        ):
            return None  # a later whiteout, opaque directory or file replaced a parent
        return exact[1].entry if exact is not None else self._base.get(path)

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and self.get(path) is not None

    def children(self, directory: str) -> list[str]:
        """The paths directly in `directory`, sorted."""
        if self._base_children is None:
            self._base_children = children_index(self._base)
        candidates = {
            *self._base_children.get(directory, ()),
            *self._new_children.get(directory, ()),
        }
        return sorted(path for path in candidates if path in self)

    def below(self, directory: str, *, limit: int) -> list[str]:
        """Up to `limit` paths under `directory`, depth first."""
        found: list[str] = []
        pending = [directory]
        while pending and len(found) < limit:
            for path in self.children(pending.pop()):
                found.append(path)
                pending.append(path)
        return found[:limit]


def added(content: ImageContent, tree: Tree | None = None) -> dict[str, FileEntry]:
    """What the build's layers put in the image and is still there at the end: paths the base
    lacks or whose entry the build changed (a directory only when it is new)."""
    final = tree or Tree(content)
    result: dict[str, FileEntry] = {}
    for change in content.changes:
        entry = final.get(change.path)
        if entry is None:
            continue
        before = content.base.get(change.path)
        if before is not None and (entry.kind == "dir" and before.kind == "dir"):
            continue
        if before is not None and not before.differs(entry):
            continue
        result[change.path] = entry
    return result


def not_utf8(content: ImageContent) -> list[str]:
    """The paths the build added whose names are not UTF-8 (shown escaped)."""
    return [change.path for change in content.changes if not change.utf8]
