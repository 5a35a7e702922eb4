"""Content addresses: Git tree ids computed in Python and the build key of SPEC section 4.
No I/O."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

# Bump when the way an image is built changes (labels, pinning, buildah flags), so that every
# image is rebuilt once; never derived from the host, so keys agree across workers.
BUILDER_VERSION = "layering-builder/1"
TAG_LENGTH = 20

FILE_MODE = "100644"
EXECUTABLE_MODE = "100755"
SYMLINK_MODE = "120000"


@dataclass(frozen=True)
class TreeFile:
    mode: str  # FILE_MODE, EXECUTABLE_MODE or SYMLINK_MODE (content is the link target)
    content: bytes


def blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content, usedforsecurity=False).hexdigest()


def tree_id(files: Mapping[str, TreeFile]) -> str:
    """The id `git write-tree` gives a directory holding `files` (relative POSIX paths)."""
    root: dict[str, object] = {}
    for path, item in files.items():
        node = root
        *parents, name = path.split("/")
        for part in parents:
            child = node.setdefault(part, {})
            assert isinstance(child, dict), f"{path}: a file and a directory share a name"
            node = child
        node[name] = item
    return _tree_of(root)


def _tree_of(node: Mapping[str, object]) -> str:
    entries: list[tuple[bytes, bytes]] = []
    for name, child in node.items():
        if isinstance(child, TreeFile):
            mode, sha = child.mode, blob_id(child.content)
            sort_name = name.encode()
        else:
            assert isinstance(child, dict)
            mode, sha = "40000", _tree_of(child)
            sort_name = name.encode() + b"/"  # git sorts trees as if named "dir/"
        entries.append(
            (sort_name, mode.encode() + b" " + name.encode() + b"\0" + bytes.fromhex(sha))
        )
    body = b"".join(entry for _, entry in sorted(entries))
    return hashlib.sha1(b"tree %d\0" % len(body) + body, usedforsecurity=False).hexdigest()


def build_key(
    *,
    tree_id: str,
    base_digest: str,
    build_args: Mapping[str, str],
    builder_version: str = BUILDER_VERSION,
) -> str:
    """sha256 over the image's tree, the cluster base digest, build args and builder version."""
    material = json.dumps(
        {
            "tree": tree_id,
            "base": base_digest,
            "args": dict(sorted(build_args.items())),
            "builder": builder_version,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(material.encode()).hexdigest()


def tag(key: str) -> str:
    """The content-addressed tag an image is pushed under."""
    return key[:TAG_LENGTH]
