"""What the promotion stage remembers, in Redis: verifications of digests per cluster, what each
pool was promoted to, the last rollout state per pool, base drift per cluster, and the gates to
re-evaluate when a verification changes. Does network I/O (Redis).

Nothing here expires: a restart (of workers, or of Redis with persistence on, as
docker-compose.yml configures it) loses no verification. Keys (hashes, one JSON value a field):
`layering:verifications:<cluster>` (digest ->), `layering:promoted:<cluster>` (pool ->),
`layering:rollouts:<cluster>` (pool ->), `layering:drift` (cluster ->), `layering:gates`
(`<environment>#<pr>` ->).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import redis

from pipeline.core import promotion, rollout
from pipeline.core.errors import TemporaryError

VERIFICATIONS = "layering:verifications:"
PROMOTED = "layering:promoted:"
ROLLOUTS = "layering:rollouts:"
DRIFT = "layering:drift"
GATES = "layering:gates"


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


@dataclass(frozen=True)
class RolloutRecord:
    cluster: str
    pool: str
    commit_sha: str
    os_image_url: str
    phase: str
    updated: int
    total: int
    message: str
    observed_at: float


@dataclass(frozen=True)
class Drift:
    cluster: str
    expected: str  # cluster.yaml baseImage
    actual: str  # the ConfigMap's baseOSContainerImage
    release_version: str
    checked_at: float
    error: str = ""

    @property
    def drifted(self) -> bool:
        return not self.error and self.actual != self.expected


@dataclass(frozen=True)
class WatchedGate:
    head_sha: str
    environment: str
    pr_number: int


class PromotionStore:
    def __init__(self, client: redis.Redis[bytes]) -> None:
        self._client = client

    @property
    def client(self) -> redis.Redis[bytes]:
        return self._client

    @classmethod
    def from_url(cls, url: str) -> PromotionStore:
        return cls(redis.Redis.from_url(url))

    def _call(self, action: str, *args: Any) -> Any:
        try:
            return getattr(self._client, action)(*args)
        except redis.RedisError as exc:
            raise TemporaryError(f"promotion store (Redis) unavailable: {exc}") from exc

    def _load_hash(self, key: str) -> dict[str, dict[str, Any]]:
        raw: dict[bytes, bytes] = self._call("hgetall", key)
        return {field.decode(): json.loads(value) for field, value in raw.items()}

    # -- verifications ----------------------------------------------------------------------

    def record_verification(self, verification: promotion.Verification) -> bool:
        """Store it; True when it changes what the store said (gates then re-evaluate)."""
        key = f"{VERIFICATIONS}{verification.cluster}"
        value = json.dumps(asdict(verification), sort_keys=True)
        previous: bytes | None = self._call("hget", key, verification.digest)
        if previous is not None:
            old = json.loads(previous)
            if old["healthy"] and verification.healthy:
                return False  # the first healthy time stands: soak counts from there
        self._call("hset", key, verification.digest, value)
        return True

    def verifications(
        self, clusters: Iterable[str]
    ) -> dict[tuple[str, str], promotion.Verification]:
        found: dict[tuple[str, str], promotion.Verification] = {}
        for cluster in sorted(set(clusters)):
            for digest, value in self._load_hash(f"{VERIFICATIONS}{cluster}").items():
                value["method"] = promotion.VerificationMethod(value["method"])
                found[(cluster, digest)] = promotion.Verification(**value)
        return found

    # -- promoted images and rollouts -------------------------------------------------------

    def record_promoted(self, promoted: Promoted) -> None:
        value = json.dumps(asdict(promoted), sort_keys=True)
        self._call("hset", f"{PROMOTED}{promoted.cluster}", promoted.pool, value)

    def forget_promoted(self, cluster: str, pool: str) -> None:
        self._call("hdel", f"{PROMOTED}{cluster}", pool)
        self._call("hdel", f"{ROLLOUTS}{cluster}", pool)

    def promoted_clusters(self) -> list[str]:
        """Clusters with at least one promoted pool."""
        try:
            keys = list(self._client.scan_iter(match=f"{PROMOTED}*", count=500))
        except redis.RedisError as exc:
            raise TemporaryError(f"promotion store (Redis) unavailable: {exc}") from exc
        return sorted(key.decode().removeprefix(PROMOTED) for key in keys)

    def promoted(self, cluster: str) -> dict[str, Promoted]:
        return {
            pool: Promoted(**value)
            for pool, value in self._load_hash(f"{PROMOTED}{cluster}").items()
        }

    def record_rollout(self, record: RolloutRecord) -> None:
        value = json.dumps(asdict(record), sort_keys=True)
        self._call("hset", f"{ROLLOUTS}{record.cluster}", record.pool, value)

    def rollouts(self, cluster: str) -> dict[str, RolloutRecord]:
        return {
            pool: RolloutRecord(**value)
            for pool, value in self._load_hash(f"{ROLLOUTS}{cluster}").items()
        }

    # -- base drift -------------------------------------------------------------------------

    def record_drift(self, drift: Drift) -> None:
        self._call("hset", DRIFT, drift.cluster, json.dumps(asdict(drift), sort_keys=True))

    def drift(self) -> dict[str, Drift]:
        return {cluster: Drift(**value) for cluster, value in self._load_hash(DRIFT).items()}

    # -- gates waiting for verifications ----------------------------------------------------

    def watch_gate(self, gate: WatchedGate) -> None:
        field = f"{gate.environment}#{gate.pr_number}"
        self._call("hset", GATES, field, json.dumps(asdict(gate), sort_keys=True))

    def unwatch_gate(self, environment: str, pr_number: int) -> None:
        self._call("hdel", GATES, f"{environment}#{pr_number}")

    def watched_gates(self) -> list[WatchedGate]:
        return [WatchedGate(**value) for _, value in sorted(self._load_hash(GATES).items())]


def rollout_record(
    *,
    cluster: str,
    pool: str,
    commit_sha: str,
    os_image_url: str,
    state: rollout.RolloutState,
    observed_at: float,
) -> RolloutRecord:
    return RolloutRecord(
        cluster=cluster,
        pool=pool,
        commit_sha=commit_sha,
        os_image_url=os_image_url,
        phase=state.phase.value,
        updated=state.updated,
        total=state.total,
        message=state.message,
        observed_at=observed_at,
    )
