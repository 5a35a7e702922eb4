"""Commit statuses GitHub did not take within their task's retries, parked in Redis until beat
sends them again (pipeline/flows/status_delivery.py, run by "layering.resend_statuses"): the
ParkedStatusStore port. Does network I/O (Redis).

Keys: `layering:status-parked` (a sorted set of slots by due time), `layering:status-parked:docs`
(a hash slot -> the parked status as JSON). A slot is one (sha, context): only the newest status
of a slot is kept. Newer is decided by the slot's sequence counter, `layering:status-seq:<sha>:
<context>` (incremented for every status queued): a status older than the counter, or than the
status already parked, is not parked. Parking extends the counter's life to the parking time,
so a counter never restarts below a parked status. Every check-and-write is one Lua script.
`layering:lock:resend-statuses` is held while parked statuses are resent (one sender at a time).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import redis

from pipeline.core import commit_status
from pipeline.core.errors import TemporaryError

DUE = "layering:status-parked"
DOCS = "layering:status-parked:docs"
SEQ_PREFIX = "layering:status-seq:"
RESEND_LOCK = "layering:lock:resend-statuses"
# longer than one resend run (a batch of slow GitHub calls), so that runs never overlap
RESEND_LOCK_SECONDS = 600

# KEYS: due zset, docs hash, seq counter. ARGV: member, document, seq, due, keep seconds.
_PARK = """
local latest = tonumber(redis.call('GET', KEYS[3]) or '0')
local seq = tonumber(ARGV[3])
if latest > seq then return 0 end
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old and tonumber(cjson.decode(old)['seq']) > seq then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
if latest < seq then redis.call('SET', KEYS[3], seq) end
if redis.call('TTL', KEYS[3]) < tonumber(ARGV[5]) then
  redis.call('EXPIRE', KEYS[3], ARGV[5])
end
return 1
"""

# KEYS: due zset, docs hash. ARGV: member, seq, new document or '' to delete, due.
_UPDATE = """
local old = redis.call('HGET', KEYS[2], ARGV[1])
if not old or tonumber(cjson.decode(old)['seq']) ~= tonumber(ARGV[2]) then return 0 end
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
end
return 1
"""


def seq_key(sha: str, context: str) -> str:
    return f"{SEQ_PREFIX}{sha}:{context}"


class ParkedStatuses:
    def __init__(self, client: redis.Redis[bytes], *, keep_seconds: int) -> None:
        self._client = client
        self._keep_seconds = keep_seconds
        self._park = client.register_script(_PARK)
        self._update = client.register_script(_UPDATE)

    def park(self, status: commit_status.ParkedStatus, *, due: float) -> bool:
        """Keep `status` until `due`; False when a newer status of its slot exists."""
        document = json.dumps(status.to_json())
        keys = [DUE, DOCS, seq_key(status.sha, status.context)]
        argv = [status.member, document, status.seq, due, self._keep_seconds]
        try:
            return bool(self._park(keys=keys, args=argv))
        except redis.RedisError as exc:
            raise TemporaryError(
                f"parking status {status.context} on {status.sha[:12]}: Redis unavailable "
                f"({type(exc).__name__})",
                retry_after=60,
            ) from exc

    def due(self, now: float, *, limit: int = 100) -> list[commit_status.ParkedStatus]:
        """Parked statuses due by `now`, the earliest first."""
        members = self._client.zrangebyscore(DUE, "-inf", now, start=0, num=limit)
        if not members:
            return []
        found: list[commit_status.ParkedStatus] = []
        for slot, raw in zip(members, self._client.hmget(DOCS, members), strict=True):
            if raw is None:
                self._client.zrem(DUE, slot)  # a slot without its document: nothing to send
                continue
            found.append(commit_status.ParkedStatus.from_json(json.loads(raw)))
        return found

    def reschedule(self, status: commit_status.ParkedStatus, *, due: float) -> bool:
        """Try `status` again at `due` (unless a newer status replaced it meanwhile)."""
        document = json.dumps(status.to_json())
        argv = [status.member, status.seq, document, due]
        return bool(self._update(keys=[DUE, DOCS], args=argv))

    def remove(self, status: commit_status.ParkedStatus) -> bool:
        """Forget `status` (sent, or outdated) unless a newer status replaced it meanwhile."""
        return bool(self._update(keys=[DUE, DOCS], args=[status.member, status.seq, "", 0]))

    def latest_seq(self, sha: str, context: str) -> int | None:
        raw = self._client.get(seq_key(sha, context))
        return int(raw) if raw is not None else None

    def count(self) -> int:
        return int(self._client.zcard(DUE))

    @contextlib.contextmanager
    def sending(self) -> Iterator[bool]:
        """Hold the resend lock while the block runs; False when another run holds it."""
        lock = self._client.lock(RESEND_LOCK, timeout=RESEND_LOCK_SECONDS)
        if not lock.acquire(blocking=False):
            yield False
            return
        try:
            yield True
        finally:
            with contextlib.suppress(redis.exceptions.LockError):
                lock.release()
