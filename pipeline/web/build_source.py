"""What the builds API and the dashboard read of builds (`BuildSource`), and `StoreView`, which
reads it from pipeline/adapters/build_records.py. Does network I/O (Redis) through the store it
is given.

Log lines are read by offset: a reader that remembers how many lines it has shown asks only
for the lines after them, so following a running build never re-reads its whole log. Every read
is a bounded range (`log_range`): at most LOG_MAX_LINES lines and about LOG_RESPONSE_MAX_BYTES.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.adapters import build_records, head_store
from pipeline.core import head_lint

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

    def image_builds(self, image: str, *, limit: int) -> list[Mapping[str, Any]]:
        """The newest builds of `image` first, as JSON documents."""
        ...

    def lint_findings(self, commit_sha: str, image: str) -> head_lint.Stored | None:
        """`image`'s lint findings at `commit_sha`; None when no head of it linted the image."""
        ...


class StoreView:
    """The build store's records as JSON documents and its log lines newline-terminated."""

    def __init__(self, store: build_records.BuildStore) -> None:
        self._store = store
        self._heads = head_store.RedisHeadStore(store.client)

    def list_builds(self, *, limit: int) -> list[Mapping[str, Any]]:
        return [record.to_dict() for record in self._store.recent(limit)]

    def get_build(self, build_id: str) -> Mapping[str, Any] | None:
        record = self._store.get(build_id)
        return None if record is None else dict(record.to_dict())

    def log_lines(self, build_id: str, *, offset: int, limit: int) -> list[str]:
        lines = self._store.read_log(build_id, offset, limit)
        return [line if line.endswith("\n") else line + "\n" for line in lines]

    def image_builds(self, image: str, *, limit: int) -> list[Mapping[str, Any]]:
        return [record.to_dict() for record in self._store.of_image(image, limit)]

    def lint_findings(self, commit_sha: str, image: str) -> head_lint.Stored | None:
        return self._heads.lint_findings(commit_sha, image)


def content_findings(build: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The content lint's findings of a build document (BuildRecord.to_dict), as stored."""
    found = build.get("content_findings")
    return [f for f in found if isinstance(f, Mapping)] if isinstance(found, list | tuple) else []


@dataclass(frozen=True)
class FindingRow:
    """One row of the build page's findings: where it was found (`stage`), as text."""

    stage: str
    id: str
    severity: str
    where: str
    message: str


def finding_rows(
    lint: head_lint.Stored | None, content: Sequence[Mapping[str, Any]]
) -> list[FindingRow]:
    """The commit's Containerfile lint findings of the image, then the content lint's of the
    built image; errors first within each."""
    rows = [
        FindingRow("Containerfile lint", *_finding_cells(finding))
        for finding in (lint.findings if lint is not None else ())
    ] + [FindingRow("built image", *_finding_cells(finding)) for finding in content]
    return sorted(
        rows, key=lambda row: (row.stage != "Containerfile lint", row.severity != "error")
    )


def _finding_cells(finding: Mapping[str, Any]) -> tuple[str, str, str, str]:
    path, line = str(finding.get("path", "")), finding.get("line")
    where = path if line is None else f"{path}:{line}"
    return (
        str(finding.get("id", "")),
        str(finding.get("severity", "")),
        where,
        str(finding.get("message", "")),
    )


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
