"""One layer's entries read from containers/storage's tar-split metadata
(`<driver>-layers/<layer-id>.tar-split.gz`): the layer tar's own bytes without the file bodies,
one JSON object a line (type 2: a segment of raw tar bytes, base64 in "payload"; type 1: a file
body of "size" bytes, not kept). Each entry's header is the bytes between two bodies, after the
padding of the body before: a plain ustar header is read directly (nearly every entry: a 30,000
file base in under a second), one with PAX or GNU records (long names and link targets, xattrs)
by tarfile, so the raw bytes of names that are not UTF-8 come out as the layer has them. No
body is ever read. Does file I/O.

    changes = tar_split.read(path, layer=layer_id, max_entries=..., max_bytes=...)

OCI whiteouts become changes: `.wh.<name>` removes <name> (entry None), `.wh..wh..opq` makes its
directory opaque. `resolved` follows links within a tree of them merged
(core/content_lint.merged).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import json
import posixpath
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast

from pipeline.core import file_index
from pipeline.core.content_lint import LayerChange
from pipeline.core.errors import PermanentError
from pipeline.core.file_index import FileEntry

SEGMENT = 2
FILE = 1
MAX_LINE = 16 * 1024 * 1024  # one segment: a header with its PAX records (xattrs, long names)
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
MAX_LINKS = 40
BLOCK = 512
_EXTENSIONS = (b"x", b"g", b"L", b"K")  # PAX and GNU records that precede the real header
_PLAIN = (b"0", b"\0", b"")


class Unreadable(Exception):
    """The file is not tar-split as containers/storage writes it."""


def _records(source: IO[bytes], *, max_bytes: int) -> Iterator[tuple[int, bytes | int]]:
    """(SEGMENT, raw bytes) and (FILE, body size) in order, within `max_bytes` decompressed."""
    read = 0
    while line := source.readline(MAX_LINE):
        read += len(line)
        if read > max_bytes:
            raise Unreadable(f"tar-split over {max_bytes} bytes decompressed")
        if not line.endswith(b"\n") and len(line) >= MAX_LINE:
            raise Unreadable(f"a tar-split line over {MAX_LINE} bytes")
        try:
            record = json.loads(line)
            if record["type"] == SEGMENT:
                yield SEGMENT, base64.b64decode(record.get("payload") or b"", validate=True)
            elif record["type"] == FILE:
                size = int(record.get("size") or 0)
                if size < 0:
                    raise Unreadable(f"a negative body size {size}")
                yield FILE, size
            else:
                raise Unreadable(f"unknown tar-split entry type {record['type']!r}")
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise Unreadable(f"not a tar-split line ({exc})") from None


def _headers(source: IO[bytes], *, max_bytes: int) -> Iterator[tarfile.TarInfo]:
    """Each entry's header, parsed from the raw bytes between two bodies: the padding of the
    body before (under 512 bytes), then the entry's header blocks."""
    pending = bytearray()
    body = 0
    for kind, value in _records(source, max_bytes=max_bytes):
        if kind == SEGMENT:
            pending += cast(bytes, value)
            if len(pending) > MAX_LINE:
                raise Unreadable(f"over {MAX_LINE} bytes of headers for one entry")
            continue
        blocks = bytes(pending[(-body) % BLOCK :])
        pending.clear()
        body = cast(int, value)
        yield _ustar(blocks) or _extended(blocks)


def _number(field: bytes) -> int:
    return int(field.strip(b"\0 ") or b"0", 8)


def _ustar(blocks: bytes) -> tarfile.TarInfo | None:
    """One plain ustar header (what nearly every entry has), read without tarfile; None for
    anything else (PAX or GNU long-name records, base-256 numbers): `_extended` reads those."""
    if len(blocks) != BLOCK or blocks[156:157] in _EXTENSIONS:
        return None
    # the checksum counts its own field as spaces: a garbage segment is tarfile's to refuse
    try:
        if _number(blocks[148:156]) != sum(blocks[:148]) + 256 + sum(blocks[156:]):
            return None
    except ValueError:
        return None
    name = blocks[:100].split(b"\0", 1)[0]
    if blocks[257:263] == b"ustar\0":  # POSIX: a long name's start is in the prefix field
        prefix = blocks[345:500].split(b"\0", 1)[0]
        name = prefix + b"/" + name if prefix else name
    try:
        mode, size, mtime = (_number(blocks[a:b]) for a, b in ((100, 108), (124, 136), (136, 148)))
    except ValueError:
        return None
    info = tarfile.TarInfo(name.decode("utf-8", "surrogateescape"))
    kind = blocks[156:157]
    info.type = tarfile.DIRTYPE if kind in _PLAIN and name.endswith(b"/") else kind or b"0"
    info.mode, info.size, info.mtime = mode, size, mtime
    info.linkname = blocks[157:257].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    return info


def _extended(blocks: bytes) -> tarfile.TarInfo:
    """An entry with PAX or GNU records (long names and link targets, xattrs), read by tarfile."""
    with tarfile.open(
        fileobj=io.BytesIO(blocks), mode="r:", encoding="utf-8", errors="surrogateescape"
    ) as archive:
        info = archive.next()
    if info is None:
        raise Unreadable("a file entry without a tar header")
    return info


def read(path: Path, *, layer: str, max_entries: int, max_bytes: int) -> list[LayerChange]:
    """The changes of the layer whose tar-split is at `path`, sorted so a directory comes before
    what it holds. PermanentError naming the layer when it is over a bound or not tar-split;
    OSError (FileNotFoundError when the layer vanished) is left to the caller."""
    changes: dict[str, LayerChange] = {}
    sizes: dict[str, int] = {}
    try:
        with gzip.open(path, "rb") as source:
            headers = _headers(cast(IO[bytes], source), max_bytes=max_bytes)
            for count, info in enumerate(headers, start=1):
                if count > max_entries:
                    raise PermanentError(
                        f"layer {layer} holds more than {max_entries} entries "
                        f"({path}); set LAYERING_CONTENT_LINT=false to push without the "
                        "content lint"
                    )
                _add(changes, sizes, info)
    except (Unreadable, tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise PermanentError(
            f"{path}: the storage cannot be read as layers (layer {layer}: {exc}); set "
            "LAYERING_CONTENT_LINT=false to push without the content lint"
        ) from None
    return sorted(changes.values(), key=lambda change: file_index.key(change.path))


def _shown(name: str) -> tuple[str, bool]:
    """The name as text (backslash escapes where its bytes are not UTF-8) and whether it is."""
    raw = name.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("utf-8", "backslashreplace"), False


def _add(changes: dict[str, LayerChange], sizes: dict[str, int], info: tarfile.TarInfo) -> None:
    name, utf8 = _shown(info.name)
    path = posixpath.normpath("/" + name.lstrip("/"))
    if path == "/":
        return
    parent, base = posixpath.split(path)
    if base == OPAQUE:
        present = changes.get(parent)
        entry = present.entry if present is not None else None
        changes[parent] = LayerChange(
            parent, entry or FileEntry("dir", 0o755), opaque=True, utf8=utf8
        )
        return
    if base.startswith(WHITEOUT + WHITEOUT):
        return  # aufs' own bookkeeping (.wh..wh.plnk, .wh..wh.aufs): nothing in the image
    if base.startswith(WHITEOUT):
        removed = posixpath.join(parent, base[len(WHITEOUT) :])
        changes[removed] = LayerChange(removed, None, utf8=utf8)
        return
    mode = info.mode & 0o7777
    if info.isdir():
        entry = FileEntry("dir", mode)
        # the opaque marker may come before or after its directory's own entry
        opaque = path in changes and changes[path].opaque
        changes[path] = LayerChange(path, entry, opaque=opaque, utf8=utf8)
        return
    if info.issym():
        entry = FileEntry("link", mode, 0, 0, _shown(info.linkname)[0])
    elif info.islnk():
        # a hard link is the file it links to; its header carries no size
        linked = posixpath.normpath("/" + _shown(info.linkname)[0].lstrip("/"))
        entry = FileEntry("file", mode, sizes.get(linked, 0), int(info.mtime))
    elif info.isreg():
        entry = FileEntry("file", mode, info.size, int(info.mtime))
        sizes[path] = info.size
    else:
        entry = FileEntry("other", mode, 0, int(info.mtime))
    changes[path] = LayerChange(path, entry, utf8=utf8)


def resolved(tree: dict[str, FileEntry], path: str) -> str | None:
    """`path` with its links followed inside `tree` (an absolute target leads to the image's
    root, never the host's); None when it does not exist or loops."""
    parts = [p for p in path.split("/") if p]
    done = ""
    links = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            done = posixpath.dirname(done).rstrip("/")
            continue
        entry = tree.get(f"{done}/{part}")
        if entry is None:
            return None
        if entry.kind == "link":
            links += 1
            if links > MAX_LINKS:
                return None
            parts = [p for p in entry.target.split("/") if p] + parts
            if entry.target.startswith("/"):
                done = ""
            continue
        done = f"{done}/{part}"
    return done or "/"
