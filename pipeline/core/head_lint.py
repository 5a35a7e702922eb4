"""The plan and lint of one head as data: what to read (`Request`: ids and a path, all a lint
subprocess gets on its argv), what it answers (`Answer`: the head's plan and lint findings, or
the error that stopped the read, as JSON), and why it stopped when it did not answer
(`Stopped`: a limit, a crash, a timeout) with the `layering/lint` status that says so; and the
bounded form a head's findings are kept in for the build page (`stored`, `from_stored`). No I/O.

The subprocess (adapters/sandboxed_lint.py starts `python -m pipeline.cli.lint_sandbox`) sets
its own CPU-time and memory limits first, names each repository file on stderr before it parses
it (`PROGRESS` lines: a limit hit then names the file) and exits `EXIT_MEMORY` when it ran out
of memory.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pydantic

from pipeline.core import builds, changes, commit_status, names

# the subprocess's exit status when its memory limit was hit (it catches MemoryError)
EXIT_MEMORY = 3
# stderr lines naming the file about to be parsed: PROGRESS + a JSON string
PROGRESS = "layering-lint: reading "
# the largest answer read back (the subprocess cannot write more: RLIMIT_FSIZE)
ANSWER_LIMIT_BYTES = 32 * 1024 * 1024
# what a head's lint keeps of each image for the build page (adapters/head_store.record_lint):
# a repository of hostile Containerfiles cannot grow one Redis key without bound
STORED_FINDINGS = 100
STORED_IMAGES = 500
STORED_TEXT_CHARS = 1000
# image -> its lint findings (head.lint_findings); HeadStore.record_lint keeps them `stored`
ByImage = Mapping[str, Sequence[commit_status.LintFinding]]
MEMORY_SETTING = "LAYERING_LINT_MEMORY_MB"
CPU_SETTING = "LAYERING_LINT_CPU_SECONDS"


@dataclass(frozen=True)
class Request:
    """Plan and lint `sha` of the repository at `source` (a worker's mirror), compared with
    `from_rev` (all zeros: the merge base with `default_branch`); `branch` is the pushed branch
    (None for a pull request)."""

    source: str
    from_rev: str
    sha: str
    default_branch: str
    branch: str | None = None

    def argv(self) -> list[str]:
        """The subprocess's options (ids and a path only: never a secret)."""
        options = [
            "--mirror",
            self.source,
            "--from",
            self.from_rev,
            "--to",
            self.sha,
            "--default-branch",
            self.default_branch,
        ]
        return options if self.branch is None else [*options, "--branch", self.branch]


@dataclass(frozen=True)
class Reading:
    """A head's plan and its lint findings by image (see head.lint_findings)."""

    plan: changes.Plan
    findings: dict[str, list[commit_status.LintFinding]] = field(default_factory=dict)


ErrorKind = Literal["input", "permanent", "temporary"]


@dataclass(frozen=True)
class Failed:
    """The read raised a PipelineError (an unknown revision, say): its kind and message."""

    kind: ErrorKind
    message: str


@dataclass(frozen=True)
class Answer:
    """What the subprocess writes on stdout: a reading, or why there is none."""

    reading: Reading | None = None
    failed: Failed | None = None


# validates what comes back from a process that parsed hostile input: types, not trust
ANSWER = pydantic.TypeAdapter(Answer)


def encode(answer: Answer) -> bytes:
    return ANSWER.dump_json(answer)


def decode(raw: bytes) -> Answer:
    """ValueError (pydantic's ValidationError) when `raw` is not an Answer."""
    return ANSWER.validate_json(raw)


def progress_line(path: str) -> str:
    """The stderr line naming `path` (JSON-quoted: a path in Git may hold any character)."""
    return PROGRESS + json.dumps(path) + "\n"


def last_read(stderr: str) -> str | None:
    """The last file the subprocess named before it stopped (None: none)."""
    for line in reversed(stderr.splitlines()):
        if line.startswith(PROGRESS):
            try:
                path = json.loads(line.removeprefix(PROGRESS))
            except ValueError:
                continue
            if isinstance(path, str):
                return path
    return None


# -- why it stopped ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Stopped:
    """The lint stopped before it answered: `reason` names the limit (or the crash), `at` the
    file it was reading then."""

    reason: str
    at: str | None = None

    @property
    def description(self) -> str:
        # the limit first: a status description is cut at 140 characters, a path may be long
        return f"lint stopped: {self.reason}" + (f" at {self.at}" if self.at else "")


def memory_limit(megabytes: int) -> str:
    return f"exceeded the {megabytes} MiB memory limit ({MEMORY_SETTING})"


def cpu_limit(seconds: int) -> str:
    return f"exceeded the {seconds} s CPU-time limit ({CPU_SETTING})"


def timed_out(seconds: float) -> str:
    return f"took longer than {seconds:g} s (3 x {CPU_SETTING} + 30)"


def answer_too_large() -> str:
    return f"its answer exceeded {ANSWER_LIMIT_BYTES // (1024 * 1024)} MiB"


def crashed(how: str) -> str:
    return f"the lint process crashed ({how}); see the worker log"


def malformed() -> str:
    return "the lint process answered something that is not a lint answer; see the worker log"


def status(stopped: Stopped) -> commit_status.Status:
    """`layering/lint` failed: nothing is built until a new head lints."""
    return commit_status.Status(commit_status.LINT_CONTEXT, "failure", stopped.description)


# -- what the build page reads ------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """One image's lint findings of a head as kept: the first STORED_FINDINGS (errors first),
    each a lint_finding.Finding.as_dict, and how many there were."""

    findings: tuple[dict[str, Any], ...]
    count: int


# the field listing the images whose lint errors held their builds back (an image name is a
# DNS label: never `*held`)
HELD_FIELD = "*held"


def stored(findings: ByImage) -> dict[str, str]:
    """image -> the JSON of its Stored findings, for the first STORED_IMAGES images by name;
    and HELD_FIELD -> the images among them with an error (no build is sent for them)."""
    kept: dict[str, str] = {}
    held = [
        i
        for i in sorted(findings)[:STORED_IMAGES]
        if any(f.severity == "error" for f in findings[i])
    ]
    if held:
        kept[HELD_FIELD] = json.dumps(held)
    for image in sorted(findings)[:STORED_IMAGES]:
        found = sorted(findings[image], key=lambda f: f.severity != "error")
        documents = [
            {
                "id": f.id[:STORED_TEXT_CHARS],
                "severity": f.severity,
                "path": f.path[:STORED_TEXT_CHARS],
                "line": f.line,
                "message": f.message[:STORED_TEXT_CHARS],
            }
            for f in found[:STORED_FINDINGS]
        ]
        kept[image] = json.dumps({"findings": documents, "count": len(found)})
    return kept


def from_stored(raw: str | bytes | None) -> Stored | None:
    """The Stored findings of one image (None: not recorded, or unreadable); a malformed
    finding is dropped, never shown."""
    if raw is None:
        return None
    try:
        document = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(document, dict) or type(document.get("count")) is not int:
        return None
    findings = builds.finding_documents(document.get("findings"))
    return Stored(findings[:STORED_FINDINGS], max(document["count"], len(findings)))


def held_from_stored(raw: str | bytes | None) -> list[str]:
    """The images held back by lint errors (HELD_FIELD); anything malformed reads as none."""
    try:
        document = json.loads(raw) if raw is not None else []
    except ValueError:
        return []
    if not isinstance(document, list):
        return []
    return [
        name
        for name in document[:STORED_IMAGES]
        if isinstance(name, str) and names.is_dns_label(name)
    ]
