"""What a bounded walk of one tree (`/etc`, `/usr`) of a root filesystem records, and what
differs between the walks of a base and of an image built on it. No I/O: the walk itself is
adapters/image_changes.py.

The walk is depth first with names sorted, so it visits paths in the order of their components
(`key`); a walk its bound stopped covers every path up to its last one, and two walks are
compared only up to where the shorter stopped (`Differences.horizon`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class FileEntry:
    """One path: its type, permission bits, size, mtime and link target."""

    kind: str  # file | dir | link | other
    mode: int = 0
    size: int = 0
    mtime: int = 0
    target: str = ""

    def differs(self, other: FileEntry) -> bool:
        # a directory's size and mtime move whenever its entries do: only its type and
        # mode count, or every new file would also "change" its parents
        if self.kind == "dir" and other.kind == "dir":
            return self.mode != other.mode
        return self != other


@dataclass(frozen=True)
class FileIndex:
    """One tree of one root filesystem. `cut_after`: the last path recorded when the walk's
    bound stopped it (None: the whole tree)."""

    root: str
    entries: Mapping[str, FileEntry]
    cut_after: str | None = None


@dataclass(frozen=True)
class Differences:
    """Paths (in walk order) added, changed and removed; directories count only when their
    type or mode changed. `horizon`: the last path compared when a walk was cut."""

    added: list[str]
    changed: list[str]
    removed: list[str]
    horizon: str | None = None


def key(path: str) -> tuple[str, ...]:
    """The walk's order: by components (`/usr/a/b` before `/usr/a.b`)."""
    return tuple(path.split("/"))


def differences(base: FileIndex | None, built: FileIndex) -> Differences:
    """What `built` changes in its tree against `base` (None: the base lacks that tree)."""
    old: Mapping[str, FileEntry] = base.entries if base is not None else {}
    new = built.entries
    cuts = [i.cut_after for i in (base, built) if i is not None and i.cut_after is not None]
    horizon = min(cuts, key=key, default=None)

    def covered(path: str) -> bool:
        return horizon is None or key(path) <= key(horizon)

    added = [p for p, e in new.items() if p not in old and e.kind != "dir" and covered(p)]
    removed = [p for p, e in old.items() if p not in new and e.kind != "dir" and covered(p)]
    changed = [p for p, e in new.items() if p in old and old[p].differs(e) and covered(p)]
    return Differences(
        sorted(added, key=key), sorted(changed, key=key), sorted(removed, key=key), horizon
    )
