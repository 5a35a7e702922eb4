"""Build records, logs and build-key locks kept in this process: the BuildRecords and KeyLocks
ports for `layering build`, which has no shared store and no other builder to wait for. No I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pipeline.core import builds


class MemoryRecords:
    def __init__(self) -> None:
        self.records: dict[str, builds.BuildRecord] = {}
        self.logs: dict[str, list[str]] = {}

    def get(self, build_id: str) -> builds.BuildRecord | None:
        return self.records.get(build_id)

    def save(self, record: builds.BuildRecord) -> None:
        self.records[record.id] = record

    def append_log(self, build_id: str, line: str) -> None:
        self.logs.setdefault(build_id, []).append(line)


class LocalLocks:
    """No other process to coordinate with: every lock is free."""

    @contextmanager
    def hold(self, build_key: str, *, on_wait: Callable[[], None]) -> Iterator[None]:
        yield
