"""One layer's entries read from containers/storage's tar-split metadata
(`<driver>-layers/<layer-id>.tar-split.gz`): the layer tar's own bytes without the file bodies,
one JSON object a line (type 2: a segment of raw tar bytes, base64 in "payload"; type 1: a file
body of "size" bytes, not kept). The segments and zero runs in place of the bodies make a
forward-seekable stream that tarfile reads as the tar itself, so PAX and GNU long names, link
targets and the raw bytes of names that are not UTF-8 come out as the layer has them, and no
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


class Unreadable(Exception):
    """The file is not tar-split as containers/storage writes it."""


class _Segments:
    """The layer tar as a stream: segment bytes, and a run of zeros where each body was. Seeks
    only forward (what tarfile's "r:" reading does), so a body is skipped, never produced."""

    def __init__(self, source: IO[bytes], *, max_bytes: int) -> None:
        self._source = source
        self._max_bytes = max_bytes
        self._read = 0  # decompressed tar-split bytes
        self._position = 0
        self._chunk = b""  # the rest of the current segment
        self._zeros = 0  # the rest of the current body

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = 0) -> int:
        target = offset if whence == 0 else self._position + offset
        if target < self._position:
            raise Unreadable(f"tar reader asked to seek back to {target}")
        self._skip(target - self._position)
        return self._position

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            raise Unreadable("tar reader asked for the whole stream")
        parts: list[bytes] = []
        while size > 0 and self._fill():
            if self._chunk:
                part, self._chunk = self._chunk[:size], self._chunk[size:]
            else:
                count = min(size, self._zeros)
                part, self._zeros = bytes(count), self._zeros - count
            parts.append(part)
            size -= len(part)
            self._position += len(part)
        return b"".join(parts)

    def _skip(self, count: int) -> None:
        while count > 0 and self._fill():
            if self._chunk:
                step = min(count, len(self._chunk))
                self._chunk = self._chunk[step:]
            else:
                step = min(count, self._zeros)
                self._zeros -= step
            count -= step
            self._position += step

    def _fill(self) -> bool:
        """Whether there is more to read: the next line taken when the current one is used up."""
        while not self._chunk and not self._zeros:
            line = self._source.readline(MAX_LINE)
            if not line:
                return False
            self._read += len(line)
            if self._read > self._max_bytes:
                raise Unreadable(f"tar-split over {self._max_bytes} bytes decompressed")
            if not line.endswith(b"\n") and len(line) >= MAX_LINE:
                raise Unreadable(f"a tar-split line over {MAX_LINE} bytes")
            try:
                record = json.loads(line)
                if record["type"] == SEGMENT:
                    self._chunk = base64.b64decode(record.get("payload") or b"", validate=True)
                elif record["type"] == FILE:
                    self._zeros = int(record.get("size") or 0)
                else:
                    raise Unreadable(f"unknown tar-split entry type {record['type']!r}")
            except (ValueError, KeyError, TypeError, binascii.Error) as exc:
                raise Unreadable(f"not a tar-split line ({exc})") from None
        return True


def read(path: Path, *, layer: str, max_entries: int, max_bytes: int) -> list[LayerChange]:
    """The changes of the layer whose tar-split is at `path`, sorted so a directory comes before
    what it holds. PermanentError naming the layer when it is over a bound or not tar-split;
    OSError (FileNotFoundError when the layer vanished) is left to the caller."""
    changes: dict[str, LayerChange] = {}
    sizes: dict[str, int] = {}
    try:
        with gzip.open(path, "rb") as source:
            stream = _Segments(cast(IO[bytes], source), max_bytes=max_bytes)
            with tarfile.open(
                fileobj=cast(IO[bytes], stream),
                mode="r:",
                encoding="utf-8",
                errors="surrogateescape",
            ) as archive:
                for count, info in enumerate(_members(archive), start=1):
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


def _members(archive: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while (info := archive.next()) is not None:
        # read once, forward: tarfile's list of what it read would only cost memory
        archive.members.clear()  # type: ignore[attr-defined]
        yield info


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
