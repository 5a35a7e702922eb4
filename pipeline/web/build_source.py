"""What the builds API and the dashboard read of builds (`BuildSource`), and `StoreView`, which
reads it from pipeline/adapters/build_records.py. Does network I/O (Redis) through the store it
is given.

Log lines are read by offset: a reader that remembers how many lines it has shown asks only
for the lines after them, so following a running build never re-reads its whole log.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from pipeline.adapters import build_records


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
