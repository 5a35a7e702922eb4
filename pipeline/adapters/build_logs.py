"""Appending to a build's log in Redis under its caps (issue 10): each line is masked, cut at
LAYERING_BUILD_LOG_LINE_MAX_BYTES, and appended by one Lua script that also keeps the log under
LAYERING_BUILD_LOG_MAX_BYTES (with one marker line once it is over) and under
LAYERING_BUILD_LOG_MAX_LINES (the oldest lines go first). Does network I/O (Redis);
adapters/build_records.py is its only user.

Keys: `layering:build:<id>:log` (a list, one element per line) and `layering:build:<id>:log:bytes`
(the bytes appended so far, newline included; above the cap once the marker is written). Both
expire with the build.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

from pipeline.core import log_caps, redaction

PREFIX = "layering:build:"

# One script call per line: buildah prints many lines, so the check, the append, the trims
# and the expiries share a single round trip, and two writers of one log cannot both slip
# under the cap.
_APPEND = """
local total = tonumber(redis.call('GET', KEYS[2]) or '0')
local size = string.len(ARGV[1]) + 1
local cap = tonumber(ARGV[2])
if total + size > cap then
  if total > cap then
    return 0
  end
  redis.call('RPUSH', KEYS[1], ARGV[5])
  redis.call('SET', KEYS[2], cap + 1, 'EX', ARGV[4])
else
  redis.call('RPUSH', KEYS[1], ARGV[1])
  redis.call('SET', KEYS[2], total + size, 'EX', ARGV[4])
end
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[3]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""


def log_key(build_id: str) -> str:
    return f"{PREFIX}{build_id}:log"


def bytes_key(build_id: str) -> str:
    return f"{PREFIX}{build_id}:log:bytes"


def stored_line(line: str, *, secrets: Sequence[str], max_bytes: int) -> bytes:
    """The bytes kept of one output line: credentials masked first, then cut at `max_bytes`
    (so a secret across the cut cannot leave its first half behind)."""
    masked = redaction.scrub(log_caps.before_scrub(line, max_bytes), secrets)
    return log_caps.cut_line(masked, max_bytes).encode("utf-8", "replace")


class Appender:
    """Appends stored lines to build logs under the caps; raises redis' errors (the store
    translates them)."""

    def __init__(
        self,
        client: redis.Redis[bytes],
        *,
        retention_seconds: int,
        max_lines: int,
        max_bytes: int,
    ) -> None:
        self._script = client.register_script(_APPEND)
        self._arguments = (
            max_bytes,
            max_lines,
            retention_seconds,
            log_caps.truncation_marker(max_bytes).encode(),
        )

    def __call__(self, build_id: str, line: bytes) -> None:
        self._script(keys=[log_key(build_id), bytes_key(build_id)], args=[line, *self._arguments])
