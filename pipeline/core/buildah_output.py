"""Reading buildah and skopeo output: `STEP n/m: …` lines, the Containerfile line a step came
from, and whether a failure is worth retrying. No I/O."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

from pipeline.core import containerfile

# buildah prints "STEP 2/4: RUN …", prefixed with "[stage/stages] " in multi-stage builds.
_STEP = re.compile(
    r"^(?:\[(?P<stage>\d+)/(?P<stages>\d+)\]\s+)?STEP\s+(?P<number>\d+)/(?P<total>\d+):\s?(?P<instruction>.*)$"
)
_BUILDING_AT = re.compile(r'(?:error )?building at STEP "(?P<instruction>.*)": ', re.IGNORECASE)

TAIL_LINES = 40


@dataclass(frozen=True)
class Step:
    number: int
    total: int
    instruction: str
    stage: int = 1
    stages: int = 1

    def __str__(self) -> str:
        prefix = f"[{self.stage}/{self.stages}] " if self.stages > 1 else ""
        return f"{prefix}STEP {self.number}/{self.total}: {self.instruction}"


def parse_step(line: str) -> Step | None:
    match = _STEP.match(line.strip())
    if match is None:
        return None
    return Step(
        number=int(match["number"]),
        total=int(match["total"]),
        instruction=match["instruction"].strip(),
        stage=int(match["stage"] or 1),
        stages=int(match["stages"] or 1),
    )


def last_step(lines: Iterable[str]) -> Step | None:
    found: Step | None = None
    for line in lines:
        step = parse_step(line)
        if step is not None:
            found = step
    return found


def step_line(text: str, step: Step) -> int | None:
    """The 1-based Containerfile line of a step: each stage counts its FROM as step 1 and every
    instruction after it (ARG included) as one step; global ARGs before the first FROM do not
    count."""
    try:
        parsed = containerfile.parse(text)
    except containerfile.ContainerfileError:
        return None
    if not 1 <= step.stage <= len(parsed.stages):
        return None
    stage = parsed.stages[step.stage - 1]
    if step.number == 1:
        return stage.from_line
    index = step.number - 2
    if 0 <= index < len(stage.instructions):
        return stage.instructions[index].line
    return None


def failed_instruction(lines: Iterable[str]) -> str | None:
    """The instruction named in buildah's `building at STEP "…": …` error, if any."""
    found: str | None = None
    for line in lines:
        match = _BUILDING_AT.search(line)
        if match is not None:
            found = match["instruction"]
    return found


# buildah's chroot runtime re-executes itself through a sealed memfd copy before a RUN
# command starts (containers/storage pkg/unshare); these lines are that step failing, not the
# command, and the same step passes when tried again
_RUNTIME_FAULT = re.compile(
    r"sealing memfd copy: |Error during reexec\(|memfd_create\(\): |write\(anonfd\): |"
    r'read\("/proc/self/exe"\): |open\("/proc/self/exe"\): '
)


def runtime_fault(lines: Iterable[str]) -> str | None:
    """The runtime's own error when it is the first thing the failing step printed (so the
    step's command never ran), else None."""
    after_step: list[str] = []
    for line in lines:
        if parse_step(line) is not None:
            after_step = []
        elif line.strip():
            after_step.append(line.strip())
    if after_step and _RUNTIME_FAULT.search(after_step[0]):
        return after_step[0]
    return None


class Failure(enum.Enum):
    MISSING = "missing"  # manifest or repository unknown: the tag does not exist
    AUTH = "auth"  # credentials refused: fix the authfile, retrying cannot help
    TEMPORARY = "temporary"  # 5xx, refused, reset, timeouts: retry
    OTHER = "other"


_MISSING = re.compile(
    r"manifest unknown|name unknown|repository name not known|not found: manifest|"
    r"reading manifest [^\n]* not found",
    re.IGNORECASE,
)
_AUTH = re.compile(
    r"unauthorized|authentication required|denied|invalid username/password|"
    r"status(?: code)?:? 40[13]\b|401 Unauthorized|403 Forbidden",
    re.IGNORECASE,
)
_TEMPORARY = re.compile(
    r"connection refused|connection reset|broken pipe|i/o timeout|timeout|timed out|"
    r"no route to host|network is unreachable|unexpected EOF|\bEOF\b|TLS handshake|"
    r"temporary failure in name resolution|no such host|server misbehaving|too many requests|"
    r"(?:status|HTTP status|status code)[: ]+(?:429|5\d\d)\b|\b5\d\d (?:Internal Server Error|"
    r"Bad Gateway|Service Unavailable|Gateway Timeout)|toomanyrequests",
    re.IGNORECASE,
)


def classify(output: str) -> Failure:
    """What a failed registry operation's output says about retrying."""
    if _MISSING.search(output):
        return Failure.MISSING
    if _AUTH.search(output):
        return Failure.AUTH
    if _TEMPORARY.search(output):
        return Failure.TEMPORARY
    return Failure.OTHER


def tail(lines: Iterable[str], count: int = TAIL_LINES) -> str:
    kept = list(lines)[-count:]
    return "\n".join(kept)
