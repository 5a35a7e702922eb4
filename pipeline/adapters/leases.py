"""Leases of running builds in Redis, and the heartbeat thread that renews one. Does network
I/O (Redis).

A build task takes the lease of its build id when it starts, renews it every third of
LAYERING_BUILD_LEASE_SECONDS from a thread while the build runs, and releases it when it ends.
A worker that vanishes (SIGKILL, OOM, node loss) stops renewing: past its deadline the beat
sweep (flows/build_sweep.py) claims the lease and delivers the build again.

Keys: `layering:build-leases` (a sorted set: build id -> deadline) and
`layering:build-lease:<id>` (JSON: task id and holder). Deadlines are Redis server time, so
the clocks of workers on other machines do not matter. Each change is one Lua script: a holder
renews only its own lease, and a sweep claims only a lease still past its deadline.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import cast

import redis
from redis.exceptions import RedisError

from pipeline.core import builds, redaction
from pipeline.core.errors import TemporaryError

log = logging.getLogger(__name__)

LEASES = "layering:build-leases"
LEASE_PREFIX = "layering:build-lease:"

_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) + tonumber(t[2]) / 1000000\n"

# KEYS: leases, lease; ARGV: build id, document, holder, ttl, keep -> 1 taken, 0 held elsewhere
_ACQUIRE = (
    _NOW
    + """
local deadline = redis.call('ZSCORE', KEYS[1], ARGV[1])
local current = redis.call('GET', KEYS[2])
if deadline and tonumber(deadline) > now and current then
  if cjson.decode(current)['holder'] ~= ARGV[3] then return 0 end
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[1])
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[5])
return 1
"""
)

# KEYS: leases, lease; ARGV: build id, holder, ttl -> 1 renewed, 0 not ours any more
_RENEW = (
    _NOW
    + """
local current = redis.call('GET', KEYS[2])
if not current or cjson.decode(current)['holder'] ~= ARGV[2] then return 0 end
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
return 1
"""
)

# KEYS: leases, lease; ARGV: build id, holder
_RELEASE = """
local current = redis.call('GET', KEYS[2])
if not current or cjson.decode(current)['holder'] ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
"""

# KEYS: leases, lease; ARGV: build id -> the lease document if it was still expired, else nil
_CLAIM = (
    _NOW
    + """
local deadline = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not deadline or tonumber(deadline) > now then return nil end
redis.call('ZREM', KEYS[1], ARGV[1])
local current = redis.call('GET', KEYS[2])
redis.call('DEL', KEYS[2])
return {current or '{}', deadline}
"""
)


def _lease_key(build_id: str) -> str:
    return f"{LEASE_PREFIX}{build_id}"


class Lease:
    """One held lease (ports.HeldLease). `lost` turns true when a renewal finds it gone."""

    def __init__(self, leases: RedisBuildLeases, build_id: str, task_id: str, holder: str) -> None:
        self.leases = leases
        self.build_id = build_id
        self.task_id = task_id
        self.holder = holder
        self._lost = threading.Event()

    def held(self) -> bool:
        return not self._lost.is_set()

    def renew(self) -> bool:
        """Push the deadline out by the lease's TTL; False (and lost) when it is not ours any
        more. A Redis fault is logged and reads as still held: the deadline decides."""
        try:
            renewed = self.leases.renew(self)
        except TemporaryError as exc:
            log.warning("build %s: lease not renewed: %s", self.build_id, exc)
            return True
        if not renewed:
            self.mark_lost()
        return renewed

    def mark_lost(self) -> None:
        if self.held():
            log.warning(
                "build %s: lease lost (expired, and the build was delivered again); "
                "stopping this run without touching its record",
                self.build_id,
            )
        self._lost.set()

    def release(self) -> None:
        try:
            self.leases.release(self)
        except TemporaryError as exc:
            log.warning("build %s: lease not released (it expires): %s", self.build_id, exc)


class RedisBuildLeases:
    """Leases of running builds (ports.BuildLeases for the sweep; `acquire` for the task)."""

    def __init__(
        self, client: redis.Redis[bytes], *, ttl_seconds: float, keep_seconds: int
    ) -> None:
        self.client = client
        self.ttl_seconds = ttl_seconds
        self.keep_seconds = keep_seconds
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._claim = client.register_script(_CLAIM)

    def acquire(self, build_id: str, *, task_id: str) -> Lease | None:
        """The lease of `build_id` for this delivery; None while another holder's is live."""
        holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        document = json.dumps({"task_id": task_id, "holder": holder})
        taken = self._call(
            self._acquire,
            build_id,
            [build_id, document, holder, self.ttl_seconds, self.keep_seconds],
        )
        return Lease(self, build_id, task_id, holder) if taken else None

    def renew(self, lease: Lease) -> bool:
        return bool(
            self._call(
                self._renew, lease.build_id, [lease.build_id, lease.holder, self.ttl_seconds]
            )
        )

    def release(self, lease: Lease) -> None:
        self._call(self._release, lease.build_id, [lease.build_id, lease.holder])

    def expired(self) -> list[builds.BuildLease]:
        """Leases past their deadline (by Redis server time), oldest first."""
        try:
            seconds, micros = self.client.time()
            ids = self.client.zrangebyscore(
                LEASES, "-inf", f"({seconds + micros / 1_000_000}", withscores=True
            )
        except RedisError as exc:
            raise _unavailable(exc) from None
        return [builds.BuildLease(i.decode(), "", "", deadline) for i, deadline in ids]

    def claim(self, build_id: str) -> builds.BuildLease | None:
        found = self._call(self._claim, build_id, [build_id])
        if not found:
            return None
        raw, deadline = cast("list[bytes]", found)
        try:
            document = json.loads(raw)
        except ValueError:
            document = {}
        return builds.BuildLease(
            build_id,
            str(document.get("task_id", "")),
            str(document.get("holder", "")),
            float(deadline),
        )

    def _call(
        self, script: redis.commands.core.Script, build_id: str, args: list[object]
    ) -> object:
        try:
            return script(keys=[LEASES, _lease_key(build_id)], args=args)
        except RedisError as exc:
            raise _unavailable(exc) from None


class Heartbeat:
    """While open, renews `lease` (and calls `also`, e.g. extending the build-key lock) every
    `every` seconds from a daemon thread; on exit stops the thread and releases the lease."""

    def __init__(self, lease: Lease, *, every: float, also: Callable[[], bool] | None = None):
        self.lease = lease
        self.every = every
        self.also = also
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"lease-{lease.build_id}", daemon=True
        )

    def __enter__(self) -> Lease:
        self._thread.start()
        return self.lease

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=self.every + 5)
        if self.lease.held():
            self.lease.release()

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            if not self.lease.renew():
                return
            # the build-key lock lives as long as the lease: a lock lost means a lease lost
            if self.also is not None and not self.also():
                self.lease.mark_lost()
                return


def _unavailable(exc: RedisError) -> TemporaryError:
    return TemporaryError(f"Redis unavailable: {type(exc).__name__}: {redaction.scrub(str(exc))}")
