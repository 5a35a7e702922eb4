"""Build records and logs in Redis, with bounded retention, and the per-build-key lock. Does
network I/O (Redis).

Keys: `layering:build:<id>` (the record as JSON), `layering:build:<id>:log` (a list, one
element per output line, appended while buildah runs), `layering:builds` (a sorted set of ids
by creation time, for listing), `layering:lock:build:<key>` (the build-key lock),
`layering:cancel:<id>` (set when a build is cancelled; the running build polls it, and unlike
the record it is never overwritten by the build's own saves). Every key
expires after LAYERING_BUILD_RETENTION_SECONDS; logs keep at most LAYERING_BUILD_LOG_MAX_LINES
(the oldest go first). Lines are scrubbed of credentials before they are stored.

    BuildStore.from_settings(settings)
    .create_queued(image=, cluster=, commit_sha=, build_key=) -> BuildRecord (new id, saved)
    .save(record) / .get(build_id) -> BuildRecord | None / .recent(limit=50) -> [BuildRecord]
    .append_log(build_id, line) / .read_log(build_id, offset=0, limit=1000) -> [str]
    .log_length(build_id) -> int
    .hold(build_key, on_wait=...)  # context manager: the Redis lock of one build key
    .request_cancel(build_id) / .cancel_requested(build_id) -> bool
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import redis
from redis.exceptions import LockError, RedisError

from pipeline.core import builds, redaction
from pipeline.core.errors import TemporaryError
from pipeline.core.settings import Settings

PREFIX = "layering:build:"
INDEX = "layering:builds"
LOCK_PREFIX = "layering:lock:build:"
CANCEL_PREFIX = "layering:cancel:"


def _record_key(build_id: str) -> str:
    return f"{PREFIX}{build_id}"


def _log_key(build_id: str) -> str:
    return f"{PREFIX}{build_id}:log"


class BuildStore:
    def __init__(
        self,
        client: redis.Redis[bytes],
        *,
        retention_seconds: int,
        lock_timeout_seconds: float,
        log_max_lines: int = 20_000,
        secrets: Sequence[str] = (),
    ) -> None:
        self.client = client
        self.retention_seconds = retention_seconds
        self.lock_timeout_seconds = lock_timeout_seconds
        self.log_max_lines = log_max_lines
        self.secrets = list(secrets)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        secrets: Sequence[str] = (),
        client: redis.Redis[bytes] | None = None,
    ) -> BuildStore:
        """`client`: the process's Redis client (workers/adapters.py); a new one if None."""
        url = settings.redis_url.get_secret_value()
        return cls(
            client
            if client is not None
            else redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=10),
            retention_seconds=settings.build_retention_seconds,
            # above the longest build, so a lock outlives its build and a crashed holder's
            # lock still expires
            lock_timeout_seconds=settings.build_timeout_seconds + 600,
            log_max_lines=settings.build_log_max_lines,
            secrets=[*secrets, url, *redaction.url_passwords(url)],
        )

    # -- records ----------------------------------------------------------------------------

    def create_queued(
        self, *, image: str, cluster: str, commit_sha: str = "", build_key: str = ""
    ) -> builds.BuildRecord:
        """The one place a build record is created: a new id, state queued, saved before its
        task is sent (so a status check's link works before the build starts)."""
        now = time.time()
        build_id = time.strftime("%Y%m%d%H%M%S", time.gmtime(now)) + "-" + uuid.uuid4().hex[:12]
        record = builds.queued(
            build_id,
            image=image,
            cluster=cluster,
            now=now,
            commit_sha=commit_sha,
            build_key=build_key,
        )
        self.save(record)
        return record

    def save(self, record: builds.BuildRecord) -> None:
        document = record.to_dict()
        document["error"] = redaction.scrub(record.error, self.secrets)
        try:
            with self.client.pipeline() as pipe:
                pipe.set(_record_key(record.id), json.dumps(document), ex=self.retention_seconds)
                pipe.zadd(INDEX, {record.id: record.created_at})
                pipe.zremrangebyscore(INDEX, "-inf", time.time() - self.retention_seconds)
                pipe.execute()
        except RedisError as exc:
            raise _unavailable(exc) from None

    def get(self, build_id: str) -> builds.BuildRecord | None:
        try:
            raw = self.client.get(_record_key(build_id))
        except RedisError as exc:
            raise _unavailable(exc) from None
        if raw is None:
            return None
        return builds.BuildRecord.from_dict(json.loads(raw))

    def recent(self, limit: int = 50) -> list[builds.BuildRecord]:
        """The newest builds first."""
        try:
            ids = self.client.zrevrange(INDEX, 0, max(limit, 1) - 1)
            raws = self.client.mget([_record_key(i.decode()) for i in ids]) if ids else []
        except RedisError as exc:
            raise _unavailable(exc) from None
        return [builds.BuildRecord.from_dict(json.loads(raw)) for raw in raws if raw is not None]

    # -- logs -------------------------------------------------------------------------------

    def append_log(self, build_id: str, line: str) -> None:
        key = _log_key(build_id)
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.rpush(key, redaction.scrub(line, self.secrets))
                pipe.ltrim(key, -self.log_max_lines, -1)
                pipe.expire(key, self.retention_seconds)
                pipe.execute()
        except RedisError as exc:
            raise _unavailable(exc) from None

    def read_log(self, build_id: str, offset: int = 0, limit: int = 1000) -> list[str]:
        """Lines from `offset` (0-based), at most `limit`: poll with the next offset to follow
        a running build."""
        if limit <= 0:
            return []
        try:
            lines = self.client.lrange(_log_key(build_id), max(offset, 0), offset + limit - 1)
        except RedisError as exc:
            raise _unavailable(exc) from None
        return [line.decode(errors="replace") for line in lines]

    def log_length(self, build_id: str) -> int:
        try:
            return int(self.client.llen(_log_key(build_id)))
        except RedisError as exc:
            raise _unavailable(exc) from None

    # -- cancellation -----------------------------------------------------------------------

    def request_cancel(self, build_id: str) -> None:
        try:
            self.client.set(f"{CANCEL_PREFIX}{build_id}", b"1", ex=self.retention_seconds)
        except RedisError as exc:
            raise _unavailable(exc) from None

    def cancel_requested(self, build_id: str) -> bool:
        """Polled by a running build; a Redis fault reads as "not cancelled" (keep building)."""
        try:
            return bool(self.client.exists(f"{CANCEL_PREFIX}{build_id}"))
        except RedisError:
            return False

    # -- the build-key lock -----------------------------------------------------------------

    @contextmanager
    def hold(self, build_key: str, *, on_wait: Callable[[], None]) -> Iterator[None]:
        lock = self.client.lock(
            f"{LOCK_PREFIX}{build_key}",
            timeout=self.lock_timeout_seconds,
            sleep=0.05,
            blocking_timeout=self.lock_timeout_seconds,
        )
        try:
            acquired = lock.acquire(blocking=False)
            if not acquired:
                on_wait()
                acquired = lock.acquire(blocking=True)
        except RedisError as exc:
            raise _unavailable(exc) from None
        if not acquired:
            raise TemporaryError(
                f"build key {build_key} stayed locked for {self.lock_timeout_seconds:.0f}s"
            )
        try:
            yield
        finally:
            # LockError: expired (the build outlived the lock timeout); nothing left to release
            with contextlib.suppress(LockError):
                lock.release()


def _unavailable(exc: RedisError) -> TemporaryError:
    return TemporaryError(f"Redis unavailable: {type(exc).__name__}: {redaction.scrub(str(exc))}")
