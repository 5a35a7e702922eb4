"""An OpenShift/OKD release payload's node OS image, as data: the ImageStream in the payload's
`release-manifests/image-references` (what `oc adm release info --image-for` reads) -> the
reference of the node image tag by digest. No I/O: adapters/release_payload.py finds the file
in the payload's layers and hands its bytes here.

Which tag: `rhel-coreos` first (OpenShift's default node OS; OKD on CentOS Stream payloads
carry it too), then `stream-coreos` (OKD/SCOS), then `fedora-coreos` (OKD/FCOS, 4.15 and
older). `rhel-coreos-10` is never picked by default: in the releases that carry it, RHEL 10
nodes are opt-in per pool, so a default that jumped to it would move every node's major OS
version behind the user's back; ask for it with an explicit tag.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.core import names
from pipeline.core.errors import PermanentError

IMAGE_REFERENCES = "release-manifests/image-references"
NODE_IMAGE_TAGS = ("rhel-coreos", "stream-coreos", "fedora-coreos")
KNOWN_NODE_IMAGE_TAGS = (*NODE_IMAGE_TAGS, "rhel-coreos-10")
# the real file is ~60 KiB (about 200 tags); anything far larger is not one
MAX_IMAGE_REFERENCES_BYTES = 4 * 1024 * 1024
# tags listed in an error message: a hostile file can hold thousands
MAX_TAGS_SHOWN = 40


@dataclass(frozen=True)
class NodeImage:
    """The node OS image a release payload names: which tag, and its reference by digest."""

    release: str
    tag: str
    image: names.ImageRef

    def __str__(self) -> str:
        return str(self.image)


def payload_path(member_name: str) -> str | None:
    """A tar member's path inside the image (`./a/b` and `a/b` alike); None for a path that
    climbs out (`../`) or is empty, which a hostile layer may carry and is ignored."""
    name = member_name.lstrip("/")
    while name.startswith("./"):
        name = name[2:]
    if not name or name.startswith("../") or name == "..":
        return None
    normal = posixpath.normpath(name)
    if normal.startswith("../") or normal in (".", ".."):
        return None
    return normal


def is_image_references(member_name: str) -> bool:
    return payload_path(member_name) == IMAGE_REFERENCES


def tags(raw: bytes, *, release: str) -> dict[str, str]:
    """name -> image reference of every DockerImage tag in an image-references ImageStream."""
    where = f"release {release}: {IMAGE_REFERENCES}"
    if len(raw) > MAX_IMAGE_REFERENCES_BYTES:
        raise PermanentError(
            f"{where}: {len(raw)} bytes, over the {MAX_IMAGE_REFERENCES_BYTES}-byte cap; "
            "not a release payload"
        )
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PermanentError(f"{where}: not JSON ({exc}); not a release payload") from None
    if not isinstance(document, dict) or document.get("kind") != "ImageStream":
        raise PermanentError(f"{where}: not an ImageStream; not a release payload")
    spec = document.get("spec")
    entries = spec.get("tags") if isinstance(spec, dict) else None
    if not isinstance(entries, list):
        raise PermanentError(f"{where}: spec.tags is missing or not a list")
    found: dict[str, str] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        name, source = entry.get("name"), entry.get("from")
        if not isinstance(name, str) or not isinstance(source, dict):
            continue
        reference = source.get("name")
        if source.get("kind") == "DockerImage" and isinstance(reference, str):
            found.setdefault(name, reference)
    return found


def node_image(found: Mapping[str, str], *, release: str, tag: str | None = None) -> NodeImage:
    """The node OS image among a payload's tags: `tag` if given, else the first of
    NODE_IMAGE_TAGS present. Its reference must be by digest (a payload pins every image)."""
    wanted = (tag,) if tag else NODE_IMAGE_TAGS
    chosen = next((name for name in wanted if name in found), None)
    if chosen is None:
        shown = sorted(found)[:MAX_TAGS_SHOWN]
        more = f" and {len(found) - len(shown)} more" if len(found) > len(shown) else ""
        listed = ", ".join(shown) + more if shown else "none"
        raise PermanentError(
            f"release {release}: no node OS image tag {' or '.join(wanted)} in "
            f"{IMAGE_REFERENCES} (its tags: {listed}); pass --os-tag with one of them"
        )
    reference = found[chosen]
    try:
        image = names.parse_image_ref(reference)
    except ValueError as exc:
        raise PermanentError(
            f"release {release}: tag {chosen}: {exc}; a release payload names images by digest"
        ) from None
    if image.digest is None:
        raise PermanentError(
            f"release {release}: tag {chosen} names {reference} by tag; a node OS image must "
            "be named by digest (repo@sha256:…) so every build uses the same bytes"
        )
    # `repo:tag@sha256:…` names the same bytes as `repo@sha256:…`, the form baseImage takes
    return NodeImage(release=release, tag=chosen, image=image.with_digest(image.digest))
