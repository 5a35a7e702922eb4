"""The body of `POST /api/upgrades` -> the "layering.upgrade" task, every field checked and
named in the error. No I/O."""

from __future__ import annotations

import json

from pipeline.core import names, release_payload, tasks

MAX_BODY_BYTES = 4096
DISABLED = (
    "upgrades through the API need LAYERING_READ_TOKEN (the API's token); use `layering "
    "upgrade` meanwhile"
)
_FIELDS = frozenset({"cluster", "release", "os_tag"})


def task_for(body: bytes) -> tasks.TaskCall:
    """The task a request body asks for; ValueError saying which field is wrong and why."""
    if len(body) > MAX_BODY_BYTES:
        raise ValueError(f"body over {MAX_BODY_BYTES} bytes")
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ValueError('body: expected JSON {"cluster": …, "release": …}') from None
    if not isinstance(document, dict):
        raise ValueError('body: expected a JSON object {"cluster": …, "release": …}')
    unknown = sorted(set(document) - _FIELDS)
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown field (expected cluster, release, os_tag)")
    cluster, release, os_tag = (document.get(k) for k in ("cluster", "release", "os_tag"))
    if not isinstance(cluster, str) or not names.is_dns_label(cluster):
        raise ValueError("cluster: required, a cluster name (a DNS label)")
    if not isinstance(release, str):
        raise ValueError("release: required, the release payload image (by tag or digest)")
    try:
        names.parse_image_ref(release)
    except ValueError as exc:
        raise ValueError(f"release: {exc}") from None
    if os_tag is not None and os_tag not in release_payload.KNOWN_NODE_IMAGE_TAGS:
        known = ", ".join(release_payload.KNOWN_NODE_IMAGE_TAGS)
        raise ValueError(f"os_tag: one of {known}, or leave it out")
    return tasks.Upgrade(cluster=cluster, release=release, os_tag=os_tag).call()
