"""What each build worker resolved at start (storage driver, isolation), published to Redis for
`/readyz`, which runs in another process (or pod) than the workers. Does network I/O (Redis).

Shape (core/storage_driver.py): one hash `layering:build-workers`, field = the worker's node
name, value = its report as JSON. A worker's thread refreshes its field every
PRESENCE_INTERVAL_SECONDS and removes it when the worker stops; a worker killed without a word
stops refreshing, and its report counts as gone PRESENCE_TTL_SECONDS later (three beats missed)
and is pruned by the next refresh of any worker. The hash itself expires with the last worker.
Why a periodic refresh rather than one write at start with a long TTL: a scaled-down or
crashed worker would be shown for that whole TTL; a refresh keeps /readyz within 90 s of the truth.

Times are Redis server time (`TIME` in the scripts), so clocks of other machines do not matter.
`Reader.read` is one script call: one round trip, bounded by the number of live workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

import redis
import redis.asyncio
import redis.exceptions

from pipeline.adapters import redis_client
from pipeline.core import storage_driver
from pipeline.core.errors import TemporaryError

log = logging.getLogger("layering.worker")

# KEYS[1] hash; ARGV: field, report JSON (its "seen" is set here), ttl -> server time.
# Prunes reports older than ttl (unreadable ones too) in the same call.
_PUBLISH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[3])
local report = cjson.decode(ARGV[2])
report['seen'] = now
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(report))
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local ok, other = pcall(cjson.decode, entries[i + 1])
  if not ok or type(other) ~= 'table' or tonumber(other['seen']) == nil
     or tonumber(other['seen']) < now - ttl then
    redis.call('HDEL', KEYS[1], entries[i])
  end
end
redis.call('EXPIRE', KEYS[1], ttl)
return tostring(now)
"""
# KEYS[1] hash -> {seconds, microseconds, hgetall...}
_READ = """
local t = redis.call('TIME')
return {t[1], t[2], redis.call('HGETALL', KEYS[1])}
"""


class Publisher:
    """A build worker's report, refreshed from a daemon thread until `stop`."""

    def __init__(
        self,
        client: redis.Redis[bytes],
        report: storage_driver.WorkerReport,
        *,
        interval: float = storage_driver.PRESENCE_INTERVAL_SECONDS,
        key: str = storage_driver.WORKERS_KEY,
    ) -> None:
        self._client = client
        self._report = report
        self._interval = interval
        self._key = key
        self._script = client.register_script(_PUBLISH)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    @classmethod
    def from_url(cls, redis_url: str, report: storage_driver.WorkerReport) -> Publisher:
        """A publisher with a client of its own (short timeouts: it never holds a task up)."""
        client = redis_client.sync_client(redis_url, socket_timeout=5, socket_connect_timeout=5)
        return cls(client, report)

    def publish(self) -> None:
        """Write the report now (TemporaryError when Redis does not answer)."""
        try:
            self._script(
                keys=[self._key],
                args=[
                    self._report.worker,
                    self._report.to_json(),
                    storage_driver.PRESENCE_TTL_SECONDS,
                ],
            )
        except (redis.exceptions.RedisError, OSError) as exc:
            raise TemporaryError(
                f"redis unreachable publishing worker {self._report.worker}: {type(exc).__name__}"
            ) from exc

    def _loop(self) -> None:
        while not self._stopping.wait(self._interval):
            try:
                self.publish()
                if self._failing:
                    log.info("worker report for /readyz published again")
                self._failing = False
            except TemporaryError as exc:
                if not self._failing:
                    log.warning("%s; /readyz may not list this worker until it answers", exc)
                self._failing = True

    def start(self) -> None:
        """Publish once now (best effort), then every interval from a daemon thread."""
        try:
            self.publish()
        except TemporaryError as exc:
            log.warning("%s; retrying every %.0fs", exc, self._interval)
            self._failing = True
        self._thread = threading.Thread(target=self._loop, name="worker-presence", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop refreshing and remove the report (best effort)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            self._client.hdel(self._key, self._report.worker)
        self._client.close()


class Reader:
    """The web side: the live reports in one round trip, with its own deadline."""

    def __init__(
        self,
        redis_url: str,
        *,
        timeout: float = 2.0,
        key: str = storage_driver.WORKERS_KEY,
    ) -> None:
        self._client = redis_client.async_client(
            redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._script = self._client.register_script(_READ)
        self._timeout = timeout
        self._key = key

    async def read(self) -> tuple[float, list[storage_driver.WorkerReport]]:
        """(Redis server time, the live reports by name); TemporaryError when Redis does not
        answer in time (the same Redis as the queue: /readyz's answer)."""
        try:
            async with asyncio.timeout(self._timeout):
                seconds, micros, flat = await self._script(keys=[self._key])
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            raise TemporaryError(f"redis unreachable: {type(exc).__name__}", retry_after=5) from exc
        now = int(seconds) + int(micros) / 1_000_000
        entries = dict(zip(flat[::2], flat[1::2], strict=True))
        return now, storage_driver.live_workers(entries, now)

    async def close(self) -> None:
        await self._client.aclose()  # type: ignore[attr-defined]
