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
from collections.abc import Collection
from dataclasses import asdict
from typing import Any

import redis

from pipeline.core import drift, gate, pool_status, rollout, verification
from pipeline.core.errors import TemporaryError

VERIFICATIONS = "layering:verifications:"
PROMOTED = "layering:promoted:"
ROLLOUTS = "layering:rollouts:"
DRIFT = "layering:drift"
GATES = "layering:gates"


class PromotionStore:
    """The ports.PromotionStore of the workers, and what the CLI and the web process read."""

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

    def record_verification(self, proven: verification.Verification) -> bool:
        """Store it; True when it changes what the store said (gates then re-evaluate)."""
        key = f"{VERIFICATIONS}{proven.cluster}"
        value = json.dumps(asdict(proven), sort_keys=True)
        previous: bytes | None = self._call("hget", key, proven.digest)
        if previous is not None:
            old = json.loads(previous)
            if old["healthy"] and proven.healthy:
                return False  # the first healthy time stands: soak counts from there
        self._call("hset", key, proven.digest, value)
        return True

    def verifications(
        self, clusters: Collection[str]
    ) -> dict[tuple[str, str], verification.Verification]:
        found: dict[tuple[str, str], verification.Verification] = {}
        for cluster in sorted(set(clusters)):
            for digest, value in self._load_hash(f"{VERIFICATIONS}{cluster}").items():
                value["method"] = verification.VerificationMethod(value["method"])
                found[(cluster, digest)] = verification.Verification(**value)
        return found

    # -- promoted images and rollouts -------------------------------------------------------

    def record_promoted(self, promoted: verification.Promoted) -> None:
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

    def promoted(self, cluster: str) -> dict[str, verification.Promoted]:
        return {
            pool: verification.Promoted(**value)
            for pool, value in self._load_hash(f"{PROMOTED}{cluster}").items()
        }

    def record_rollout(self, record: rollout.RolloutRecord) -> None:
        value = json.dumps(asdict(record), sort_keys=True)
        self._call("hset", f"{ROLLOUTS}{record.cluster}", record.pool, value)

    def rollouts(self, cluster: str) -> dict[str, rollout.RolloutRecord]:
        return {
            pool: rollout.RolloutRecord(**value)
            for pool, value in self._load_hash(f"{ROLLOUTS}{cluster}").items()
        }

    # -- base drift -------------------------------------------------------------------------

    def record_drift(self, checked: drift.Drift) -> None:
        self._call("hset", DRIFT, checked.cluster, json.dumps(asdict(checked), sort_keys=True))

    def drift(self) -> dict[str, drift.Drift]:
        return {cluster: drift.Drift(**value) for cluster, value in self._load_hash(DRIFT).items()}

    # -- gates waiting for verifications ----------------------------------------------------

    def watch_gate(self, watched: gate.WatchedGate) -> None:
        field = f"{watched.environment}#{watched.pr_number}"
        self._call("hset", GATES, field, json.dumps(asdict(watched), sort_keys=True))

    def unwatch_gate(self, environment: str, pr_number: int) -> None:
        self._call("hdel", GATES, f"{environment}#{pr_number}")

    def watched_gates(self) -> list[gate.WatchedGate]:
        return [gate.WatchedGate(**value) for _, value in sorted(self._load_hash(GATES).items())]

    # -- everything `layering status` and the dashboard show --------------------------------

    def pool_records(self, clusters: Collection[str]) -> pool_status.PoolRecords:
        """The verifications, promoted images and rollouts of `clusters`, and all drift."""
        names = sorted(set(clusters))
        return pool_status.PoolRecords(
            verifications=self.verifications(names),
            promoted={cluster: self.promoted(cluster) for cluster in names},
            rollouts={cluster: self.rollouts(cluster) for cluster in names},
            drift=self.drift(),
        )
