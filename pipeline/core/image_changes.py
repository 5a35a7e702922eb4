"""What a layered image changes against its base, as data: RPMs added, removed and replaced
(read from both rpm databases), and files added, changed and removed under /etc and /usr (from
bounded walks of both root filesystems); its JSON form (checked on the way back from Redis) and
the short Markdown section a build's check run shows. No I/O: adapters/image_changes.py reads
the images.

    changes = image_changes.compare(base_packages=..., built_packages=...,
                                    base_files=[...], built_files=[...], base=spec.base)
    record = dataclasses.replace(record, changes=changes.to_json())
    image_changes.summary_markdown(image_changes.ImageChanges.from_json(record.changes))

Package names, versions and paths come from the image: they are checked against rpm's naming
rules (packages) or shown with control characters escaped (paths), and the Markdown puts them
in code spans, so an image cannot write links, mentions or HTML into a check run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.core import file_index, rpm_packages

VERSION = 1
TREES = ("/etc", "/usr")
FIRST_PATHS = 20  # paths kept per list (the record stays small)
MAX_PACKAGES = 500  # package changes kept per list; the count says how many there were
MAX_TEXT = 1024
MAX_NOTES = 10
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InvalidChanges(ValueError):
    """A stored or parsed document that is not an ImageChanges; the message names the field."""


@dataclass(frozen=True)
class PackageChange:
    name: str
    old: str = ""  # evr.arch in the base ("" when added)
    new: str = ""  # evr.arch in the image ("" when removed)


@dataclass(frozen=True)
class PackageList:
    count: int = 0
    first: tuple[PackageChange, ...] = ()


@dataclass(frozen=True)
class PathList:
    count: int = 0
    first: tuple[str, ...] = ()


@dataclass(frozen=True)
class TreeChanges:
    root: str
    added: PathList = PathList()
    changed: PathList = PathList()
    removed: PathList = PathList()


@dataclass(frozen=True)
class ImageChanges:
    """`error`: the analysis failed (nothing else is known); `notes`: what limits the result
    (no rpm database, a walk's bound reached); `packages_read`: both rpm databases were read."""

    base: str = ""
    error: str = ""
    notes: tuple[str, ...] = ()
    packages_read: bool = False
    added: PackageList = PackageList()
    removed: PackageList = PackageList()
    replaced: PackageList = PackageList()
    trees: tuple[TreeChanges, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "base": self.base,
            "error": self.error,
            "notes": list(self.notes),
            "packages_read": self.packages_read,
            "packages": {
                kind: {
                    "count": listed.count,
                    "first": [{"name": c.name, "old": c.old, "new": c.new} for c in listed.first],
                }
                for kind, listed in package_lists(self)
            },
            "files": [
                {
                    "root": tree.root,
                    **{
                        kind: {"count": listed.count, "first": list(listed.first)}
                        for kind, listed in path_lists(tree)
                    },
                }
                for tree in self.trees
            ],
        }

    @classmethod
    def from_json(cls, document: object) -> ImageChanges:
        """The changes in a stored document; InvalidChanges naming the first bad field."""
        top = _mapping(document, "changes")
        if top.get("version") != VERSION:
            raise InvalidChanges(f"changes.version: expected {VERSION}, got {top.get('version')!r}")
        packages = _mapping(top.get("packages"), "changes.packages")
        files = top.get("files")
        if not isinstance(files, list) or len(files) > len(TREES):
            raise InvalidChanges("changes.files: expected a list of at most 2 trees")
        notes = top.get("notes")
        if not isinstance(notes, list) or len(notes) > MAX_NOTES:
            raise InvalidChanges(f"changes.notes: expected a list of at most {MAX_NOTES}")
        packages_read = top.get("packages_read")
        if not isinstance(packages_read, bool):
            raise InvalidChanges("changes.packages_read: expected true or false")
        return cls(
            base=_text(top.get("base"), "changes.base"),
            error=_text(top.get("error"), "changes.error"),
            notes=tuple(_text(n, f"changes.notes[{i}]") for i, n in enumerate(notes)),
            packages_read=packages_read,
            added=_package_list(packages.get("added"), "changes.packages.added"),
            removed=_package_list(packages.get("removed"), "changes.packages.removed"),
            replaced=_package_list(packages.get("replaced"), "changes.packages.replaced"),
            trees=tuple(_tree(tree, f"changes.files[{i}]") for i, tree in enumerate(files)),
        )


def package_lists(changes: ImageChanges) -> tuple[tuple[str, PackageList], ...]:
    return (("added", changes.added), ("removed", changes.removed), ("replaced", changes.replaced))


def path_lists(tree: TreeChanges) -> tuple[tuple[str, PathList], ...]:
    return (("added", tree.added), ("changed", tree.changed), ("removed", tree.removed))


def failed(reason: str, *, base: str = "") -> ImageChanges:
    """The changes of an image that could not be analysed, and why."""
    return ImageChanges(base=base, error=_cut(printable(reason) or "unknown error"))


def compare(
    *,
    base_packages: Sequence[rpm_packages.Package] | None,
    built_packages: Sequence[rpm_packages.Package] | None,
    base_files: Sequence[file_index.FileIndex],
    built_files: Sequence[file_index.FileIndex],
    base: str = "",
    notes: Iterable[str] = (),
    first: int = FIRST_PATHS,
) -> ImageChanges:
    """What `built` changes against `base`. A package list of None means that image has no
    readable rpm database (a note says which); a walk cut by its bound is compared only up to
    where the shorter of the two walks stopped, and a note says so."""
    kept_notes = [printable(note) for note in notes]
    packages_read = base_packages is not None and built_packages is not None
    added: list[PackageChange] = []
    removed: list[PackageChange] = []
    replaced: list[PackageChange] = []
    if base_packages is not None and built_packages is not None:
        old, new = _by_name(base_packages), _by_name(built_packages)
        for name in sorted(old.keys() | new.keys()):
            before, after = old.get(name, ""), new.get(name, "")
            if not before:
                added.append(PackageChange(name, new=after))
            elif not after:
                removed.append(PackageChange(name, old=before))
            elif before != after:
                replaced.append(PackageChange(name, old=before, new=after))
    bases = {index.root: index for index in base_files}
    trees: list[TreeChanges] = []
    for index in built_files:
        tree, note = _compare_tree(bases.get(index.root), index, first=first)
        trees.append(tree)
        if note:
            kept_notes.append(note)
    return ImageChanges(
        base=_cut(base),
        notes=tuple(_cut(note) for note in kept_notes[:MAX_NOTES]),
        packages_read=packages_read,
        added=PackageList(len(added), tuple(added[:MAX_PACKAGES])),
        removed=PackageList(len(removed), tuple(removed[:MAX_PACKAGES])),
        replaced=PackageList(len(replaced), tuple(replaced[:MAX_PACKAGES])),
        trees=tuple(trees),
    )


def _by_name(packages: Sequence[rpm_packages.Package]) -> dict[str, str]:
    """name -> "evr.arch" (several, comma-separated, for multilib or install-only kernels)."""
    grouped: dict[str, list[str]] = {}
    for package in packages:
        grouped.setdefault(package.name, []).append(str(package))
    return {name: ", ".join(sorted(set(versions))) for name, versions in grouped.items()}


def _compare_tree(
    base: file_index.FileIndex | None, built: file_index.FileIndex, *, first: int
) -> tuple[TreeChanges, str]:
    found = file_index.differences(base, built)
    note = ""
    if found.horizon is not None:
        note = (
            f"{built.root} holds more entries than the walk reads: compared up to "
            f"{printable(found.horizon)}"
        )
    lists = (_paths(found.added, first), _paths(found.changed, first))
    return TreeChanges(built.root, *lists, removed=_paths(found.removed, first)), note


def _paths(paths: Sequence[str], first: int) -> PathList:
    return PathList(len(paths), tuple(_cut(printable(path)) for path in paths[:first]))


def printable(text: str) -> str:
    """Control characters (a newline in a file name) as escapes, so one path is one line."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


# -- checking a stored document --------------------------------------------------------------


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidChanges(f"{where}: expected an object")
    return value


def _text(value: object, where: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise InvalidChanges(f"{where}: expected text of at most {MAX_TEXT} characters")
    if _CONTROL.search(value):
        raise InvalidChanges(f"{where}: control characters are not allowed")
    return value


def _count(value: object, at_least: int, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < at_least:
        raise InvalidChanges(f"{where}: expected a whole number of at least {at_least}")
    return value


def _listed(value: object, limit: int, where: str) -> tuple[int, list[Any]]:
    document = _mapping(value, where)
    items = document.get("first")
    if not isinstance(items, list) or len(items) > limit:
        raise InvalidChanges(f"{where}.first: expected a list of at most {limit}")
    return _count(document.get("count"), len(items), f"{where}.count"), items


def _package_list(value: object, where: str) -> PackageList:
    count, items = _listed(value, MAX_PACKAGES, where)
    changes = []
    for i, item in enumerate(items):
        entry = _mapping(item, f"{where}.first[{i}]")
        name = _text(entry.get("name"), f"{where}.first[{i}].name")
        if not rpm_packages.is_name(name):
            raise InvalidChanges(f"{where}.first[{i}].name: not an rpm package name")
        versions = [_text(entry.get(k), f"{where}.first[{i}].{k}") for k in ("old", "new")]
        for key, version in zip(("old", "new"), versions, strict=True):
            if version and not all(rpm_packages.is_version(v) for v in version.split(", ")):
                raise InvalidChanges(f"{where}.first[{i}].{key}: not an rpm evr.arch")
        changes.append(PackageChange(name, *versions))
    return PackageList(count, tuple(changes))


def _tree(value: object, where: str) -> TreeChanges:
    document = _mapping(value, where)
    root = document.get("root")
    if root not in TREES:
        raise InvalidChanges(f"{where}.root: expected one of {', '.join(TREES)}")
    lists = []
    for kind in ("added", "changed", "removed"):
        count, items = _listed(document.get(kind), FIRST_PATHS, f"{where}.{kind}")
        paths = tuple(_text(p, f"{where}.{kind}.first[{i}]") for i, p in enumerate(items))
        lists.append(PathList(count, paths))
    return TreeChanges(str(root), *lists)


# -- Markdown (a check run's summary) ----------------------------------------------------------


def code(text: str) -> str:
    """`text` as a CommonMark code span: fenced with more backticks than it holds (nothing in
    it is then a link, a mention or HTML)."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if longest or text.startswith(" ") or text.endswith(" ") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def headline(changes: ImageChanges) -> str:
    """One line: `2 packages added, 1 replaced; 14 files added, 3 changed under /etc and /usr`."""
    if changes.error:
        return "changes could not be read"
    parts = []
    if changes.packages_read:
        counts = [(changes.added.count, "added"), (changes.removed.count, "removed")]
        counts.append((changes.replaced.count, "replaced"))
        shown = [f"{n} {what}" for n, what in counts if n]
        parts.append(_plural(shown, "package") if shown else "no package changes")
    totals = [(sum(getattr(t, k).count for t in changes.trees), k) for k in _KINDS]
    shown = [f"{n} {what}" for n, what in totals if n]
    if changes.trees:
        roots = " and ".join(tree.root for tree in changes.trees)
        parts.append(f"{_plural(shown, 'file')} under {roots}" if shown else "no file changes")
    return "; ".join(parts) or "nothing compared"


_KINDS = ("added", "changed", "removed")


def _plural(shown: list[str], noun: str) -> str:
    number, _, rest = shown[0].partition(" ")
    first = f"{number} {noun}{'' if number == '1' else 's'} {rest}"
    return ", ".join([first, *shown[1:]])


def summary_markdown(changes: ImageChanges) -> str:
    """A short Markdown section: a table of package changes with versions, then per tree the
    file counts and the first paths; the reason instead when the changes could not be read."""
    lines = ["### What this image changes", ""]
    if changes.error:
        return "\n".join([*lines, f"The changes could not be read: {code(changes.error)}", ""])
    if changes.base:
        lines += [f"Against the base {code(changes.base)}: {headline(changes)}.", ""]
    else:
        lines += [f"{headline(changes)[:1].upper()}{headline(changes)[1:]}.", ""]
    rows = [(kind, change) for kind, listed in package_lists(changes) for change in listed.first]
    if rows:
        lines += ["| package | change | base | image |", "|---|---|---|---|"]
        lines += [
            f"| {code(c.name)} | {kind} | {code(c.old) if c.old else '-'} | "
            f"{code(c.new) if c.new else '-'} |"
            for kind, c in rows
        ]
        hidden = sum(listed.count - len(listed.first) for _, listed in package_lists(changes))
        lines += [f"| … | {hidden} more | | |"] if hidden else []
        lines.append("")
    for tree in changes.trees:
        for kind, listed in path_lists(tree):
            if not listed.count:
                continue
            lines.append(
                f"**{listed.count} {'file' if listed.count == 1 else 'files'} {kind} "
                f"under {code(tree.root)}**"
            )
            lines += [f"- {code(path)}" for path in listed.first]
            if listed.count > len(listed.first):
                lines.append(f"- … and {listed.count - len(listed.first)} more")
            lines.append("")
    lines += [f"Note: {code(note)}" for note in changes.notes]
    return "\n".join(lines).rstrip("\n") + "\n"


def summary_lines(changes: ImageChanges) -> list[str]:
    """Plain text for a terminal (`layering build`): the headline, one line per package
    change, the first changed paths per tree."""
    if changes.error:
        return [f"changes: could not be read: {changes.error}"]
    lines = [f"changes against the base: {headline(changes)}"]
    for kind, listed in package_lists(changes):
        lines += [
            f"  {kind:<8} {c.name} {c.old or ''}{' -> ' if c.old and c.new else ''}"
            f"{c.new or ''}".rstrip()
            for c in listed.first
        ]
    for tree in changes.trees:
        for kind, paths in path_lists(tree):
            lines += [f"  {kind:<8} {path}" for path in paths.first]
    return lines + [f"  note: {note}" for note in changes.notes]
