"""GitHub check runs as data: the run (name, commit, status, conclusion, Details link, output),
its annotations, the requests that carry it within GitHub's limits, and how each commit status
maps to one. No I/O (adapters/github_checks.py sends them; core/check_output.py draws the lint
and build outputs).

A status's context is its check run's name, so a check run replaces the commit status of the
same name one for one: pending -> queued (a build whose buildah started -> in_progress),
success -> success, failure and error -> failure, a superseded build or one of a closed pull
request -> cancelled.

GitHub's limits (docs.github.com/rest/checks/runs): at most 50 annotations per request, more
are sent by updates of the same run, where they accumulate; summary and text of at most 65535
characters each.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.core import commit_status, redaction

CheckStatus = Literal["queued", "in_progress", "completed"]
Conclusion = Literal["success", "failure", "cancelled", "neutral", "skipped", "timed_out"]
CONCLUSIONS: frozenset[str] = frozenset(
    ("success", "failure", "cancelled", "neutral", "skipped", "timed_out")
)
Level = Literal["notice", "warning", "failure"]

MAX_ANNOTATIONS = 50
TEXT_LIMIT = 65535
# GitHub shows the title in one line of the checks list; the status description's length
TITLE_LIMIT = commit_status.DESCRIPTION_LIMIT
# an annotation's message may be 64 KB; one finding never needs more than this
MESSAGE_LIMIT = 4000
ANNOTATION_TITLE_LIMIT = 255
CUT_MARK = "\n\n… (cut: GitHub takes at most {limit} characters here)"

# lint severity -> annotation level
LEVELS: Mapping[str, Level] = {"error": "failure", "warning": "warning", "info": "notice"}


def cut(text: str, limit: int) -> str:
    """`text` within `limit` characters, saying where it was cut."""
    if len(text) <= limit:
        return text
    mark = CUT_MARK.format(limit=limit)
    return text[: limit - len(mark)] + mark


def is_check(context: str) -> bool:
    """The contexts reported as check runs in check-runs mode: lint and builds. Promote, gate
    and rollout stay commit statuses (branch protection names them as such)."""
    return context == commit_status.LINT_CONTEXT or context.startswith("layering/build/")


@dataclass(frozen=True)
class Annotation:
    path: str
    start_line: int
    end_line: int
    level: Level
    title: str
    message: str

    def __post_init__(self) -> None:
        start = max(1, self.start_line)
        object.__setattr__(self, "start_line", start)
        object.__setattr__(self, "end_line", max(start, self.end_line))
        object.__setattr__(self, "title", cut(self.title, ANNOTATION_TITLE_LIMIT))
        object.__setattr__(self, "message", cut(redaction.scrub(self.message), MESSAGE_LIMIT))

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "start_line": self.start_line,
            "end_line": self.end_line,
            "annotation_level": self.level,
            "title": self.title,
            "message": self.message,
        }


@dataclass(frozen=True)
class Output:
    """What the check run shows: a title, a Markdown summary and text, annotations."""

    title: str
    summary: str
    text: str = ""
    annotations: tuple[Annotation, ...] = ()

    def __post_init__(self) -> None:
        # credentials in URLs are masked here once for all outputs (adapters mask the
        # configured secret values too)
        title = commit_status.description(redaction.scrub(self.title))
        object.__setattr__(self, "title", title or "-")
        object.__setattr__(self, "summary", cut(redaction.scrub(self.summary), TEXT_LIMIT))
        object.__setattr__(self, "text", cut(redaction.scrub(self.text), TEXT_LIMIT))

    def to_json(self, annotations: Sequence[Annotation] = ()) -> dict[str, Any]:
        document: dict[str, Any] = {"title": self.title, "summary": self.summary}
        if self.text:
            document["text"] = self.text
        if annotations:
            document["annotations"] = [a.to_json() for a in annotations]
        return document


@dataclass(frozen=True)
class CheckRun:
    name: str
    head_sha: str
    status: CheckStatus
    conclusion: Conclusion | None
    output: Output
    details_url: str | None = None

    def __post_init__(self) -> None:
        if (self.status == "completed") != (self.conclusion is not None):
            raise ValueError(f"check run {self.name}: a conclusion goes with status completed")

    def requests(self) -> list[dict[str, Any]]:
        """The bodies that set this run (the first: create or update; PyGithub's keyword
        arguments apart from name and head_sha), then one update per further 50 annotations."""
        batches = list(_batches(self.output.annotations, MAX_ANNOTATIONS)) or [()]
        first: dict[str, Any] = {"status": self.status, "output": self.output.to_json(batches[0])}
        if self.conclusion is not None:
            first["conclusion"] = self.conclusion
        if self.details_url:
            first["details_url"] = self.details_url
        return [first, *({"output": self.output.to_json(batch)} for batch in batches[1:])]


def _batches(items: Sequence[Annotation], size: int) -> Iterator[tuple[Annotation, ...]]:
    for start in range(0, len(items), size):
        yield tuple(items[start : start + size])


def lifecycle(
    state: commit_status.State, details: commit_status.Details | None
) -> tuple[CheckStatus, Conclusion | None]:
    """The check run's status and conclusion of a commit status (see the module docstring)."""
    found = details or {}
    conclusion = found.get("conclusion")
    if isinstance(conclusion, str) and conclusion in CONCLUSIONS:
        return "completed", conclusion  # type: ignore[return-value]
    if state == "pending":
        return ("in_progress" if found.get("check_status") == "in_progress" else "queued"), None
    if state == "success":
        return "completed", "success"
    return "completed", "failure"


def plain(
    sha: str,
    status: commit_status.Status,
    *,
    summary: str | None = None,
    text: str = "",
    annotations: Sequence[Annotation] = (),
) -> CheckRun:
    """The check run of `status` on `sha`; its output says what the status says unless given."""
    check_status, conclusion = lifecycle(status.state, status.details)
    link = f"\n\n[Details]({status.target_url})" if status.target_url else ""
    return CheckRun(
        name=status.context,
        head_sha=sha,
        status=check_status,
        conclusion=conclusion,
        output=Output(
            title=status.description,
            summary=summary if summary is not None else status.description + link,
            text=text,
            annotations=tuple(annotations),
        ),
        details_url=status.target_url,
    )
