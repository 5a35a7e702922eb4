"""adapters/tar_split.py reads a layer's entries from its tar-split as tarfile reads the tar
itself: plain ustar headers on the fast path, PAX and GNU records (long names and link targets,
xattrs, names that are not UTF-8) through tarfile; whiteouts and opaque directories; garbage
refused naming the layer. The tar-split files are made here from real tar streams the way
containers/storage stores them (raw segments, bodies left out)."""

from __future__ import annotations

import base64
import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from pipeline.adapters import tar_split
from pipeline.core.errors import PermanentError
from pipeline.core.file_index import FileEntry

# ustar holds a name of up to 255 bytes in its prefix field; PAX and GNU records hold longer
LONG = {
    tarfile.USTAR_FORMAT: "usr/share/" + "/".join(["deep" * 8] * 4) + "/file.txt",  # 150 bytes
    tarfile.GNU_FORMAT: "usr/share/" + "/".join(["deep" * 8] * 8) + "/file.txt",  # 280 bytes
    tarfile.PAX_FORMAT: "usr/share/" + "/".join(["deep" * 8] * 8) + "/file.txt",
}


def tar_of(format: int) -> bytes:
    long = LONG[format]
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w", format=format) as archive:

        def add(
            name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **extra: object
        ) -> None:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = 0o644 if kind == tarfile.REGTYPE else 0o755
            info.mtime = 1_700_000_000
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            for key, value in extra.items():
                setattr(info, key, value)
            archive.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        add("etc", tarfile.DIRTYPE)
        add("etc/motd", data=b"hello\n" * 100)  # a body that needs padding
        add("etc/empty")
        add("etc/link", tarfile.SYMTYPE, linkname="motd")
        add("etc/hard", tarfile.LNKTYPE, linkname="etc/motd")
        add("usr", tarfile.DIRTYPE)
        add(long, data=b"x" * 700)
        if format != tarfile.USTAR_FORMAT:  # a link target over 100 bytes needs the records
            add("usr/longlink", tarfile.SYMTYPE, linkname="/" + long)
        add("var/.wh.cache")  # a whiteout: var/cache removed
        add("opt/.wh..wh..opq")  # opt is opaque
        add("opt", tarfile.DIRTYPE)
        if format == tarfile.PAX_FORMAT:
            add("usr/bin/ping", data=b"ELF", pax_headers={"SCHILY.xattr.security.capability": "x"})
    return stream.getvalue()


def tar_split_of(data: bytes, path: Path) -> Path:
    """The tar-split containers/storage keeps of `data`: segments, and each body as a size."""
    lines: list[dict[str, object]] = []
    position = 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        for member in archive:
            body = member.size if member.isreg() else 0
            segment = data[position : member.offset_data]
            lines.append({"type": 2, "payload": base64.b64encode(segment).decode()})
            lines.append({"type": 1, "name": member.name, "size": body})
            position = member.offset_data + body
    lines.append({"type": 2, "payload": base64.b64encode(data[position:]).decode()})
    with gzip.open(path, "wt") as out:
        for line in lines:
            out.write(json.dumps(line) + "\n")
    return path


Read = dict[str, tuple[FileEntry | None, bool, bool]]


def read(path: Path) -> Read:
    changes = tar_split.read(path, layer="L", max_entries=10_000, max_bytes=10**8)
    return {c.path: (c.entry, c.opaque, c.utf8) for c in changes}


def entry(entries: Read, path: str) -> FileEntry:
    found = entries[path][0]
    assert found is not None, path
    return found


@pytest.mark.parametrize(
    "format", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=str
)
def test_every_tar_format_reads_the_same_entries(format: int, tmp_path: Path) -> None:
    entries = read(tar_split_of(tar_of(format), tmp_path / "layer.tar-split.gz"))
    motd = entry(entries, "/etc/motd")
    assert (motd.kind, motd.size, motd.mode) == ("file", 600, 0o644)
    assert (entry(entries, "/etc/hard").kind, entry(entries, "/etc/hard").size) == ("file", 600)
    assert (entry(entries, "/etc/link").kind, entry(entries, "/etc/link").target) == (
        "link",
        "motd",
    )
    assert entry(entries, "/" + LONG[format]).size == 700
    if format != tarfile.USTAR_FORMAT:
        assert entry(entries, "/usr/longlink").target == "/" + LONG[format]
    assert entries["/var/cache"] == (None, False, True)
    assert entries["/opt"][1] is True
    assert "/var/.wh.cache" not in entries
    assert "/opt/.wh..wh..opq" not in entries


def test_a_name_that_is_not_utf8_is_escaped_and_marked(tmp_path: Path) -> None:
    stream = io.BytesIO()
    with tarfile.open(
        fileobj=stream, mode="w", format=tarfile.GNU_FORMAT, errors="surrogateescape"
    ) as archive:
        for name in (b"etc/caf\xe9".decode("utf-8", "surrogateescape"), "etc/ok"):
            info = tarfile.TarInfo(name)
            archive.addfile(info, io.BytesIO(b""))
    entries = read(tar_split_of(stream.getvalue(), tmp_path / "l.tar-split.gz"))
    assert entries["/etc/caf\\xe9"][2] is False
    assert entries["/etc/ok"][2] is True


def test_many_plain_entries_take_the_fast_path(tmp_path: Path) -> None:
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for n in range(3000):
            info = tarfile.TarInfo(f"usr/share/bulk/f{n:05d}")
            info.size = n % 700
            archive.addfile(info, io.BytesIO(b"b" * info.size))
    entries = read(tar_split_of(stream.getvalue(), tmp_path / "l.tar-split.gz"))
    assert len(entries) == 3000
    assert entry(entries, "/usr/share/bulk/f00699").size == 699


@pytest.mark.parametrize(
    "lines",
    [
        [b"not json\n"],
        [json.dumps({"type": 9}).encode() + b"\n"],
        [json.dumps({"type": 1, "name": "x", "size": -1}).encode() + b"\n"],
        # a header block whose checksum is wrong: garbage, refused by tarfile
        [
            json.dumps({"type": 2, "payload": base64.b64encode(b"z" * 512).decode()}).encode()
            + b"\n",
            json.dumps({"type": 1, "name": "z", "size": 0}).encode() + b"\n",
        ],
    ],
    ids=["not-json", "unknown-type", "negative-size", "bad-checksum"],
)
def test_garbage_is_refused_naming_the_layer(lines: list[bytes], tmp_path: Path) -> None:
    path = tmp_path / "bad.tar-split.gz"
    with gzip.open(path, "wb") as out:
        out.writelines(lines)
    with pytest.raises(PermanentError, match="layer L"):
        read(path)


def test_the_entry_and_byte_caps_hold(tmp_path: Path) -> None:
    path = tar_split_of(tar_of(tarfile.GNU_FORMAT), tmp_path / "l.tar-split.gz")
    with pytest.raises(PermanentError, match="more than 3 entries"):
        tar_split.read(path, layer="L", max_entries=3, max_bytes=10**7)
    with pytest.raises(PermanentError, match="over 100 bytes"):
        tar_split.read(path, layer="L", max_entries=1000, max_bytes=100)
