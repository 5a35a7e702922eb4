"""What the promotion stage remembers, in Redis: verifications of digests per cluster, what each
pool was promoted to, the last rollout state per pool, base drift per cluster, and the gates to
re-evaluate when a verification changes. Does network I/O (Redis).

Nothing here expires: a restart (of workers, or of Redis with persistence on, as
docker-compose.yml configures it) loses no verification. Keys (hashes, one JSON value a field):
`layering:verifications:<cluster>` (digest ->), `layering:promoted:<cluster>` (pool ->),
`layering:rollouts:<cluster>` (pool ->), `layering:drift` (cluster ->), `layering:gates`
(`<environment>#<pr>` ->), `layering:gate-passes` (the same fields; at most MAX_GATE_PASSES);
and `layering:drift-since` (cluster -> when the drift still found was first found, a float;
gone once the base matches again: /metrics' unresolved drift).

Verifications are what the prod gate trusts, so each carries an HMAC-SHA256 (core/verification.py)
under LAYERING_VERIFICATION_KEY, a key that lives in the services' settings and never in Redis:
one written by anything without the key (a build step that reached Redis) is ignored and
logged. A store that writes refuses to be built without a key (`verification_key` says how to
make one): a key generated per process would not verify in the others. A read-only store
without a key (the dashboard, `layering status`) trusts no verification at all.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Collection, Mapping
from dataclasses import asdict
from typing import Any

import redis

from pipeline.adapters import redis_client
from pipeline.core import drift, gate, pool_status, reconcile, rollout, verification
from pipeline.core.errors import InputError, TemporaryError
from pipeline.core.settings import Settings

log = logging.getLogger(__name__)

VERIFICATIONS = "layering:verifications:"
PROMOTED = "layering:promoted:"
ROLLOUTS = "layering:rollouts:"
DRIFT = "layering:drift"
DRIFT_SINCE = "layering:drift-since"
GATES = "layering:gates"
GATE_PASSES = "layering:gate-passes"
# a pass is forgotten when its promotion lands; one never landing (a person's pull request
# merged by hand, one closed) waits here until newer pull requests push it out
MAX_GATE_PASSES = 64


def verification_key(settings: Settings) -> bytes:
    """LAYERING_VERIFICATION_KEY as bytes; InputError saying how to make one when it is
    missing or too short."""
    secret = settings.verification_key
    key = secret.get_secret_value().encode() if secret is not None else b""
    if len(key) < verification.MIN_KEY_BYTES:
        state = "is not set" if not key else f"is shorter than {verification.MIN_KEY_BYTES} bytes"
        raise InputError(
            f"LAYERING_VERIFICATION_KEY {state}: it signs the verifications the prod gate "
            "trusts. Make one with `python3 -c 'import secrets; print(secrets.token_hex(32))'` "
            "and give the same value to every worker, the web service and the CLI (a secret "
            "in compose or Kubernetes; `layering up` keeps one in its workdir); never store "
            "it in Redis"
        )
    return key


# Each stored value is decoded (and its MAC checked) once per distinct bytes: the dashboard
# reads every pool's records on each poll, and few of them change between two polls. The
# values are frozen dataclasses, safe to share.
@functools.lru_cache(maxsize=8192)
def _verified(key: bytes, value: bytes) -> verification.Verification | None:
    try:
        document = json.loads(value)
    except ValueError:
        return None
    return verification.trusted(key, document) if isinstance(document, dict) else None


@functools.lru_cache(maxsize=8192)
def _promoted(value: bytes) -> verification.Promoted:
    return verification.Promoted(**json.loads(value))


def _pr_number(field: bytes) -> int:
    """The pull request of a `<environment>#<pr>` field (-1, dropped first, if malformed)."""
    number = field.rpartition(b"#")[2]
    return int(number) if number.isdigit() else -1


@functools.lru_cache(maxsize=8192)
def _rollout(value: bytes) -> rollout.RolloutRecord:
    return rollout.RolloutRecord(**json.loads(value))


class PromotionStore:
    """The ports.PromotionStore of the workers, and what the CLI and the web process read.
    `key` signs the verifications it writes and checks those it reads; None: read-only, and
    no verification is trusted."""

    def __init__(self, client: redis.Redis[bytes], *, key: bytes | None) -> None:
        if key is not None and len(key) < verification.MIN_KEY_BYTES:
            raise InputError(
                f"a verification key of at least {verification.MIN_KEY_BYTES} bytes is needed"
            )
        self._client = client
        self._key = key

    @property
    def client(self) -> redis.Redis[bytes]:
        return self._client

    @classmethod
    def from_url(cls, url: str, *, key: bytes | None) -> PromotionStore:
        return cls(redis_client.sync_client(url), key=key)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        client: redis.Redis[bytes] | None = None,
        signing: bool = True,
    ) -> PromotionStore:
        """On `client`, else a new client for LAYERING_REDIS_URL. `signing` (a writer):
        InputError without LAYERING_VERIFICATION_KEY; a reader without one trusts nothing."""
        configured = signing or settings.verification_key is not None
        key = verification_key(settings) if configured else None
        if key is None:
            log.warning("LAYERING_VERIFICATION_KEY is not set: no verification is trusted or shown")
        url = settings.redis_url.get_secret_value()
        return cls(client or redis_client.sync_client(url), key=key)

    def _signing_key(self) -> bytes:
        if self._key is None:
            raise InputError(
                "this promotion store has no LAYERING_VERIFICATION_KEY: it cannot sign "
                "verifications"
            )
        return self._key

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
        """Store it, signed; True when it changes what the store said (gates then
        re-evaluate). A previous record that does not verify counts as none."""
        key = f"{VERIFICATIONS}{proven.cluster}"
        value = json.dumps(verification.signed(self._signing_key(), proven), sort_keys=True)
        previous: bytes | None = self._call("hget", key, proven.digest)
        old = self._trusted(key, proven.digest, previous) if previous is not None else None
        if old is not None and old.healthy and proven.healthy:
            return False  # the first healthy time stands: soak counts from there
        self._call("hset", key, proven.digest, value)
        return True

    def verifications(
        self, clusters: Collection[str]
    ) -> dict[tuple[str, str], verification.Verification]:
        """The verifications of `clusters` whose MAC verifies (the others are logged)."""
        found: dict[tuple[str, str], verification.Verification] = {}
        if self._key is None:
            return found
        for cluster in sorted(set(clusters)):
            key = f"{VERIFICATIONS}{cluster}"
            raw: dict[bytes, bytes] = self._call("hgetall", key)
            for field, value in sorted(raw.items()):
                proven = self._trusted(key, field.decode(errors="replace"), value)
                if proven is not None:
                    found[(cluster, proven.digest)] = proven
        return found

    def verifications_of(
        self, digests: Mapping[str, Collection[str]]
    ) -> dict[tuple[str, str], verification.Verification]:
        """The verifications of these digests (cluster -> digests) whose MAC verifies: one
        HMGET per cluster, however many digests it has seen over time (the dashboard)."""
        found: dict[tuple[str, str], verification.Verification] = {}
        if self._key is None:
            return found
        for cluster, wanted in sorted(digests.items()):
            names = sorted(set(wanted))
            if not names:
                continue
            key = f"{VERIFICATIONS}{cluster}"
            values: list[bytes | None] = self._call("hmget", key, names)
            for digest, value in zip(names, values, strict=True):
                proven = self._trusted(key, digest, value) if value is not None else None
                if proven is not None:
                    found[(cluster, digest)] = proven
        return found

    def _trusted(self, key: str, field: str, value: bytes) -> verification.Verification | None:
        """The stored verification when it is well-formed, signed with our key and filed under
        its own cluster and digest; else None, logged (a forged or altered record)."""
        proven = _verified(self._key, value) if self._key is not None else None
        if proven is None or (f"{VERIFICATIONS}{proven.cluster}", proven.digest) != (key, field):
            log.warning(
                "ignoring verification %s[%s]: its MAC does not verify with "
                "LAYERING_VERIFICATION_KEY (forged, altered, or written with another key)",
                key,
                field[:80],
            )
            return None
        return proven

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
        raw: dict[bytes, bytes] = self._call("hgetall", f"{PROMOTED}{cluster}")
        return {pool.decode(): _promoted(value) for pool, value in raw.items()}

    def record_rollout(self, record: rollout.RolloutRecord) -> None:
        value = json.dumps(asdict(record), sort_keys=True)
        self._call("hset", f"{ROLLOUTS}{record.cluster}", record.pool, value)

    def rollouts(self, cluster: str) -> dict[str, rollout.RolloutRecord]:
        raw: dict[bytes, bytes] = self._call("hgetall", f"{ROLLOUTS}{cluster}")
        return {pool.decode(): _rollout(value) for pool, value in raw.items()}

    def rolling_out(self, clusters: Collection[str]) -> set[tuple[str, str]]:
        """(cluster, digest) of the rollouts on `clusters` still in progress: the last state
        recorded for a pool is Updating (a promotion there waits for it)."""
        return reconcile.rollouts_in_progress(
            record
            for cluster in sorted(set(clusters))
            for record in self.rollouts(cluster).values()
        )

    # -- base drift -------------------------------------------------------------------------

    def record_drift(self, checked: drift.Drift) -> None:
        document = json.dumps(asdict(checked), sort_keys=True)
        try:
            with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(DRIFT, checked.cluster, document)
                if checked.drifted:
                    pipe.hsetnx(DRIFT_SINCE, checked.cluster, checked.checked_at)
                elif not checked.error:  # unreadable: still unresolved as far as we know
                    pipe.hdel(DRIFT_SINCE, checked.cluster)
                pipe.execute()
        except redis.RedisError as exc:
            raise TemporaryError(f"promotion store (Redis) unavailable: {exc}") from exc

    def drift_since(self) -> dict[str, float]:
        """cluster -> when its drift was first found (only clusters that drifted)."""
        raw: dict[bytes, bytes] = self._call("hgetall", DRIFT_SINCE)
        return {cluster.decode(): float(since) for cluster, since in raw.items()}

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

    # -- gates that passed: what the pipeline view says of an open promotion pull request ----

    def record_gate_pass(self, passed: gate.WatchedGate) -> None:
        """In place of the pull request's earlier pass; past MAX_GATE_PASSES the lowest pull
        request numbers (the oldest) are dropped."""
        field = f"{passed.environment}#{passed.pr_number}"
        try:
            with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(GATE_PASSES, field, json.dumps(asdict(passed), sort_keys=True))
                pipe.hkeys(GATE_PASSES)
                fields: list[bytes] = pipe.execute()[1]
            extra = len(fields) - MAX_GATE_PASSES
            if extra > 0:
                self._client.hdel(GATE_PASSES, *sorted(fields, key=_pr_number)[:extra])
        except redis.RedisError as exc:
            raise TemporaryError(f"promotion store (Redis) unavailable: {exc}") from exc

    def forget_gate_pass(self, environment: str, pr_number: int) -> None:
        self._call("hdel", GATE_PASSES, f"{environment}#{pr_number}")

    def gate_passes(self) -> list[gate.WatchedGate]:
        passes = self._load_hash(GATE_PASSES)
        return [gate.WatchedGate(**value) for _, value in sorted(passes.items())]

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
