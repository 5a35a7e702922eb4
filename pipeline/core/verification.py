"""What the promotion stage knows about clusters, as data (SPEC section 7): a digest proven on a
cluster (by a watched rollout, or by time where there is no kube access) or seen failing there,
and the image each pool was last promoted to. No I/O: the promotion store keeps them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


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
