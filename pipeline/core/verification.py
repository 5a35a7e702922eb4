"""What the promotion stage knows about clusters, as data (SPEC section 7): a digest proven on a
cluster (by a watched rollout, or by time where there is no kube access) or seen failing there,
and the image each pool was last promoted to; and the MAC (HMAC-SHA256) a stored verification
carries, so that one written by anything without the key (a build step that reached Redis) is
not trusted. No I/O: the promotion store keeps them."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

MAC_FIELD = "mac"
# shorter keys are refused: the key is all that separates a proven digest from a forged one
MIN_KEY_BYTES = 32


class VerificationMethod(StrEnum):
    ROLLOUT = "rollout"  # the pool was watched until Updated with the digest
    TIME = "time"  # no kube access: the promotion commit's age counts (SPEC section 7)


@dataclass(frozen=True)
class Verification:
    """A digest proven on a cluster at `verified_at` (epoch seconds), or seen failing there."""

    cluster: str
    digest: str
    verified_at: float
    method: VerificationMethod
    healthy: bool = True
    message: str = ""
    commit_sha: str = ""


@dataclass(frozen=True)
class Promoted:
    """The image a pool was last promoted to (or removed from, digest empty)."""

    cluster: str
    pool: str
    image: str
    digest: str
    os_image_url: str
    build_key: str
    commit_sha: str
    promoted_at: float


def digest_of(os_image_url: str) -> str:
    """`registry/image@sha256:…` -> `sha256:…` (empty for an empty URL)."""
    return os_image_url.rpartition("@")[2] if os_image_url else ""


def signed(key: bytes, proven: Verification) -> dict[str, Any]:
    """The stored form of a verification: its fields plus `mac` over all of them."""
    document: dict[str, Any] = asdict(proven)
    document["method"] = str(proven.method)
    document[MAC_FIELD] = _mac(key, document)
    return document


def trusted(key: bytes, stored: Mapping[str, Any]) -> Verification | None:
    """The verification in a stored document when its MAC is right, else None (unsigned,
    forged, altered, or written with another key)."""
    document = dict(stored)
    given = document.pop(MAC_FIELD, None)
    if not isinstance(given, str) or not hmac.compare_digest(given, _mac(key, document)):
        return None
    try:
        document["method"] = VerificationMethod(document["method"])
        return Verification(**document)
    except (KeyError, TypeError, ValueError):
        return None


def _mac(key: bytes, document: Mapping[str, Any]) -> str:
    # canonical JSON: the same fields always give the same bytes, whatever their order
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()
