"""Build records and logs in Redis, with bounded retention, and the per-build-key lock. Does
network I/O (Redis).

Keys: `layering:build:<id>` (the record as JSON), `layering:build:<id>:log` (a list, one
element per output line, appended while buildah runs), `layering:builds` (a sorted set of ids
by creation time, for listing), `layering:builds:image:<image>` (the same, the newest
IMAGE_INDEX_LENGTH builds of one image), `layering:lock:build:<key>` (the build-key lock),
`layering:build:<id>:reported` (set once by the delivery whose outcome is reported),
`layering:build:<id>:counted` (set by the save that first records it finished: its duration
goes into layering_build_duration_seconds once, whichever path ended it: the build itself, the
task's error callback, a parked poison message),
`layering:cancel:<id>` (set when a build is cancelled; the running build polls it, and unlike
the record it is never overwritten by the build's own saves), `layering:built` (a hash:
`<repository>@<build key>` -> the digest that build pushed or reused, which promotion takes,
signed with LAYERING_VERIFICATION_KEY; never expires). Every other key expires after
LAYERING_BUILD_RETENTION_SECONDS; logs keep at most LAYERING_BUILD_LOG_MAX_LINES (the oldest go
first), each line at most
LAYERING_BUILD_LOG_LINE_MAX_BYTES and the whole log at most LAYERING_BUILD_LOG_MAX_BYTES, with a
marker where it was cut (adapters/build_logs.py). Lines are scrubbed of credentials before they
are stored.

    BuildStore.from_settings(settings)
    .create_queued(image=, cluster=, commit_sha=, build_key=) -> BuildRecord (new id, saved)
    .save(record) / .get(build_id) -> BuildRecord | None / .recent(limit=50) -> [BuildRecord]
    .of_image(image, limit) -> [BuildRecord]  # the newest builds of one image
    .append_log(build_id, line) / .read_log(build_id, offset=0, limit=1000) -> [str]
    .log_length(build_id) -> int
    .hold(build_key, on_wait=...)  # context manager: the Redis lock of one build key
    .extend_held_locks() -> bool  # the build's heartbeat: locks live as long as the lease
    .claim_report(build_id) -> bool  # True once per build id: that delivery reports it
    .request_cancel(build_id) / .cancel_requested(build_id) -> bool
    .record_built(BuiltImage) / .built(build_key, repository) -> BuiltImage | None
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import redis
from redis.exceptions import LockError, RedisError
from redis.lock import Lock

from pipeline.adapters import build_logs, metrics, redis_client
from pipeline.core import builds, redaction
from pipeline.core.errors import TemporaryError
from pipeline.core.settings import Settings

log = logging.getLogger(__name__)

PREFIX = "layering:build:"
INDEX = "layering:builds"
# the newest builds of each image, by creation time: the build page's duration chart
IMAGE_INDEX_PREFIX = "layering:builds:image:"
IMAGE_INDEX_LENGTH = 100
LOCK_PREFIX = "layering:lock:build:"
CANCEL_PREFIX = "layering:cancel:"
BUILT = "layering:built"


def _record_key(build_id: str) -> str:
    return f"{PREFIX}{build_id}"


def _image_index(image: str) -> str:
    return f"{IMAGE_INDEX_PREFIX}{image}"


def _log_key(build_id: str) -> str:
    return build_logs.log_key(build_id)


class BuildStore:
    def __init__(
        self,
        client: redis.Redis[bytes],
        *,
        retention_seconds: int,
        lock_timeout_seconds: float,
        lock_wait_seconds: float | None = None,
        log_max_lines: int = 20_000,
        log_line_max_bytes: int = 8 * 1024,
        log_max_bytes: int = 16 * 1024 * 1024,
        secrets: Sequence[str] = (),
        key: bytes | None = None,
    ) -> None:
        self.client = client
        # signs what each build recorded it pushed (LAYERING_VERIFICATION_KEY): with a key,
        # an unsigned or forged record reads as not built
        self.key = key
        self.retention_seconds = retention_seconds
        # the lock's TTL is the build lease's: the heartbeat extends it (extend_held_locks),
        # so a vanished holder's lock expires with its lease; waiting is bounded apart
        self.lock_timeout_seconds = lock_timeout_seconds
        self.lock_wait_seconds = lock_wait_seconds or lock_timeout_seconds
        self._held: dict[str, Lock] = {}
        self.log_max_lines = log_max_lines
        self.log_line_max_bytes = log_line_max_bytes
        self.secrets = list(secrets)
        self._append = build_logs.Appender(
            client,
            retention_seconds=retention_seconds,
            max_lines=log_max_lines,
            max_bytes=log_max_bytes,
        )

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
            else redis_client.sync_client(url, socket_timeout=30, socket_connect_timeout=10),
            retention_seconds=settings.build_retention_seconds,
            # expires with its holder's lease unless the build's heartbeat extends it; a waiter
            # waits for a live holder as long as a build may take
            lock_timeout_seconds=settings.build_lease_seconds,
            lock_wait_seconds=settings.build_timeout_seconds + 600,
            log_max_lines=settings.build_log_max_lines,
            log_line_max_bytes=settings.build_log_line_max_bytes,
            log_max_bytes=settings.build_log_max_bytes,
            secrets=[*secrets, url, *redaction.url_passwords(url), *redis_client.secrets(url)],
            key=(
                settings.verification_key.get_secret_value().encode()
                if settings.verification_key is not None
                else None
            ),
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
        """Also counts the build in layering_build_duration_seconds the first time it is saved
        finished (a later save, e.g. of its image changes, does not count it again)."""
        document = record.to_dict()
        document["error"] = redaction.scrub(record.error, self.secrets)
        duration = (
            max(0.0, record.finished_at - record.created_at)
            if record.finished_at is not None and record.state.value in metrics.BUILD_OUTCOMES
            else None
        )
        try:
            # claimed first, so the count lands in the record's own transaction: a reader that
            # sees the build finished sees it counted
            counted = duration is not None and bool(
                self.client.set(
                    f"{_record_key(record.id)}:counted", b"1", nx=True, ex=self.retention_seconds
                )
            )
            with self.client.pipeline() as pipe:
                pipe.set(_record_key(record.id), json.dumps(document), ex=self.retention_seconds)
                pipe.zadd(INDEX, {record.id: record.created_at})
                pipe.zremrangebyscore(INDEX, "-inf", time.time() - self.retention_seconds)
                by_image = _image_index(record.image)
                pipe.zadd(by_image, {record.id: record.created_at})
                pipe.zremrangebyrank(by_image, 0, -IMAGE_INDEX_LENGTH - 1)
                pipe.expire(by_image, self.retention_seconds)
                if counted and duration is not None:
                    label = record.state.value
                    metrics.add(pipe, metrics.BUILD_DURATION, duration, label=label)
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

    def records(self, build_ids: Sequence[str]) -> dict[str, builds.BuildRecord]:
        """The records of `build_ids` that still exist, by id, in one MGET."""
        if not build_ids:
            return {}
        try:
            raws = self.client.mget([_record_key(build_id) for build_id in build_ids])
        except RedisError as exc:
            raise _unavailable(exc) from None
        return {
            build_id: _record(raw)
            for build_id, raw in zip(build_ids, raws, strict=True)
            if raw is not None
        }

    def of_image(self, image: str, limit: int) -> list[builds.BuildRecord]:
        """The newest builds of `image` first (at most IMAGE_INDEX_LENGTH are indexed)."""
        try:
            ids = self.client.zrevrange(_image_index(image), 0, max(min(limit, 1000), 1) - 1)
            raws = self.client.mget([_record_key(i.decode()) for i in ids]) if ids else []
        except RedisError as exc:
            raise _unavailable(exc) from None
        return [builds.BuildRecord.from_dict(json.loads(raw)) for raw in raws if raw is not None]

    # -- logs -------------------------------------------------------------------------------

    def append_log(self, build_id: str, line: str) -> None:
        """Masked, cut at the line cap, and dropped (after one marker line) once the log is
        over its byte cap: one Redis call per line."""
        stored = build_logs.stored_line(
            line, secrets=self.secrets, max_bytes=self.log_line_max_bytes
        )
        try:
            self._append(build_id, stored)
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

    # -- what each build pushed: the digests promotion takes (ports.BuiltImages) -------------

    def record_built(self, built: builds.BuiltImage) -> None:
        """Kept without expiry (one small field per build key and repository): a promotion may
        come long after its build, and must never fall back to trusting the tag."""
        field = _built_field(built.build_key, built.repository)
        document = (
            builds.signed_built(self.key, built)
            if self.key is not None
            else dataclasses.asdict(built)
        )
        try:
            self.client.hset(BUILT, field, json.dumps(document, sort_keys=True))
        except RedisError as exc:
            raise _unavailable(exc) from None

    def built(self, build_key: str, repository: str) -> builds.BuiltImage | None:
        field = _built_field(build_key, repository)
        try:
            raw = self.client.hget(BUILT, field)
        except RedisError as exc:
            raise _unavailable(exc) from None
        if raw is None:
            return None
        try:
            document = json.loads(raw)
            found = (
                builds.trusted_built(self.key, document)
                if self.key is not None
                else builds.BuiltImage(**document)
            )
        except (ValueError, TypeError):
            found = None
        if found is None or (found.build_key, found.repository) != (build_key, repository):
            # unreadable, unsigned, forged, or filed under another key: not this build's
            # record; promotion refuses "not built" and the next build records it again
            log.warning("ignoring the build record %s[%s]", BUILT, field[:160])
            return None
        return found

    def claim_report(self, build_id: str) -> bool:
        """True for the first caller per build id: the delivery whose outcome is reported
        (its callbacks run); a later delivery of a finished build is not reported again."""
        try:
            return bool(
                self.client.set(
                    f"{_record_key(build_id)}:reported", b"1", nx=True, ex=self.retention_seconds
                )
            )
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
            blocking_timeout=self.lock_wait_seconds,
            # the heartbeat thread extends it: the token must not be thread-local
            thread_local=False,
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
                f"build key {build_key} stayed locked for {self.lock_wait_seconds:.0f}s; "
                "another build of it is still running: this one is retried"
            )
        self._held[build_key] = lock
        try:
            yield
        finally:
            self._held.pop(build_key, None)
            # LockError: expired (its lease was lost); nothing left to release
            with contextlib.suppress(LockError, RedisError):
                lock.release()

    def extend_held_locks(self) -> bool:
        """Renew the TTL of every build-key lock this process holds (the build's heartbeat);
        False when one was lost (expired and taken). A Redis fault reads as held."""
        for build_key, lock in list(self._held.items()):
            try:
                lock.extend(self.lock_timeout_seconds, replace_ttl=True)
            except LockError:
                if build_key in self._held:
                    log.warning("build-key lock %s lost", build_key)
                    return False
            except RedisError as exc:
                log.warning("build-key lock %s not extended: %s", build_key, exc)
        return True


@functools.lru_cache(maxsize=4096)
def _record(raw: bytes) -> builds.BuildRecord:
    """Decoded once per distinct stored bytes (a frozen record): the dashboard polls the same
    records again and again, and only those of running builds change."""
    return builds.BuildRecord.from_dict(json.loads(raw))


def _built_field(build_key: str, repository: str) -> str:
    return f"{repository}@{build_key}"


def _unavailable(exc: RedisError) -> TemporaryError:
    return TemporaryError(f"Redis unavailable: {type(exc).__name__}: {redaction.scrub(str(exc))}")
