"""What the builds API and the dashboard read of builds (`BuildSource`), and `StoreView`, which
reads it from pipeline/adapters/build_records.py. Does network I/O (Redis) through the store it
is given.

Log lines are read by offset: a reader that remembers how many lines it has shown asks only
for the lines after them, so following a running build never re-reads its whole log. Every read
is a bounded range (`log_range`): at most LOG_MAX_LINES lines and about LOG_RESPONSE_MAX_BYTES.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from pipeline.adapters import build_records

LOG_DEFAULT_LINES = 1000
LOG_MAX_LINES = 5000
# an answer stops before this many bytes of lines (it always has at least one line to go on)
LOG_RESPONSE_MAX_BYTES = 1024 * 1024
LOG_MAX_OFFSET = 1_000_000_000


class BuildSource(Protocol):
    def list_builds(self, *, limit: int) -> list[Mapping[str, Any]]:
        """The newest builds first, as JSON documents."""
        ...

    def get_build(self, build_id: str) -> Mapping[str, Any] | None: ...

    def log_lines(self, build_id: str, *, offset: int, limit: int) -> list[str]:
        """At most `limit` lines of a build's log from line `offset` (0-based), each ending in
        a newline; [] past the end or for an unknown build."""
        ...


class StoreView:
    """The build store's records as JSON documents and its log lines newline-terminated."""

    def __init__(self, store: build_records.BuildStore) -> None:
        self._store = store

    def list_builds(self, *, limit: int) -> list[Mapping[str, Any]]:
        return [record.to_dict() for record in self._store.recent(limit)]

    def get_build(self, build_id: str) -> Mapping[str, Any] | None:
        record = self._store.get(build_id)
        return None if record is None else dict(record.to_dict())

    def log_lines(self, build_id: str, *, offset: int, limit: int) -> list[str]:
        lines = self._store.read_log(build_id, offset, limit)
        return [line if line.endswith("\n") else line + "\n" for line in lines]


def content_findings(build: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The content lint's findings of a build document (BuildRecord.to_dict), as stored."""
    found = build.get("content_findings")
    return [f for f in found if isinstance(f, Mapping)] if isinstance(found, list | tuple) else []


def range_problem(offset: int, limit: int) -> str | None:
    """Why `?offset=&limit=` cannot be read (one line naming the parameter), or None."""
    if not 0 <= offset <= LOG_MAX_OFFSET:
        return f"offset must be a line number from 0 to {LOG_MAX_OFFSET}, not {offset}"
    if limit < 1:
        return f"limit must be at least 1 (at most {LOG_MAX_LINES} are sent), not {limit}"
    return None


def log_range(
    source: BuildSource, build_id: str, *, offset: int, limit: int
) -> tuple[list[str], bool]:
    """At most `limit` lines (and LOG_MAX_LINES) from `offset`, stopped before
    LOG_RESPONSE_MAX_BYTES; and whether more may follow. Check range_problem first."""
    wanted = min(limit, LOG_MAX_LINES)
    lines = source.log_lines(build_id, offset=offset, limit=wanted)
    kept: list[str] = []
    size = 0
    for line in lines:
        size += len(line.encode("utf-8", "replace"))
        if kept and size > LOG_RESPONSE_MAX_BYTES:
            return kept, True
        kept.append(line)
    return kept, len(lines) == wanted
