"""Commit statuses as data: the one `Status` type, the contexts (lint, build, promote, gate,
rollout), the statuses of lint and build results and of cancelled builds, and a status parked
when GitHub would not take it. No I/O.

Descriptions stay under GitHub's 140 characters (`description` cuts them) and never
carry secrets: they are built from ids, digests, step names and finding ids only; the adapter
scrubs them once more.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

State = Literal["pending", "success", "failure", "error"]
STATES: frozenset[str] = frozenset(("pending", "success", "failure", "error"))
# GitHub rejects longer status descriptions
DESCRIPTION_LIMIT = 140
LINT_CONTEXT = "layering/lint"
FORK_NOTE = "a maintainer must comment /ok-to-test to build this fork's pull request"


def description(text: str) -> str:
    """GitHub rejects status descriptions over 140 characters; keep the start, mark the cut."""
    text = " ".join(text.split())
    if len(text) <= DESCRIPTION_LIMIT:
        return text
    return text[: DESCRIPTION_LIMIT - 1] + "…"


def short_digest(digest: str) -> str:
    """12 hex digits name a digest in a 140-character status (`sha256:` + 12, like Git)."""
    return digest.removeprefix("sha256:")[:12]


def promote_context(cluster: str) -> str:
    return f"layering/promote/{cluster}"


def rollout_context(cluster: str) -> str:
    return f"layering/rollout/{cluster}"


def gate_context(environment: str) -> str:
    return f"layering/gate/{environment}"


def build_context(image: str, cluster: str) -> str:
    return f"layering/build/{image}@{cluster}"


def log_url(public_url: str, build_id: str) -> str:
    """The dashboard's page of a build: its record and live log (the check's Details link)."""
    return f"{public_url.rstrip('/')}/builds/{build_id}"


def state(text: str) -> State:
    """`text` as a status state; ValueError names anything else."""
    if text not in STATES:
        raise ValueError(f"unknown status state {text!r}")
    return text  # type: ignore[return-value]


# what a status says beyond its state, for its check run (core/check_runs.py): the lint
# findings and table, or `check_status`/`conclusion` where the state alone does not say it
Details = Mapping[str, Any]


@dataclass(frozen=True)
class Status:
    """`details` (JSON) and `build_id` (a build context: its check run is drawn from the build
    record at delivery) matter to check runs only; a commit status carries neither, and two
    statuses that post the same commit status are equal."""

    context: str
    state: State
    description: str
    target_url: str | None = None
    details: Details | None = field(default=None, compare=False)
    build_id: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "description", description(self.description))


@dataclass(frozen=True)
class LintFinding:
    """The parts of a lint.Finding a status and its check run need (ids, where, severity,
    the message of its annotation)."""

    id: str
    severity: str
    path: str
    line: int | None
    message: str = ""
    end_line: int | None = None


def lint_status(findings: Sequence[LintFinding], *, fork: bool = False) -> Status:
    errors = [f for f in findings if f.severity == "error"]
    warnings = [f for f in findings if f.severity != "error"]
    if errors:
        first = errors[0]
        where = first.path if first.line is None else f"{first.path}:{first.line}"
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        text = f"{len(errors)} error(s): {first.id} at {where}{more}"
        state: State = "failure"
    elif warnings:
        text = f"passed with {len(warnings)} warning(s): " + ", ".join(
            sorted({w.id for w in warnings})
        )
        state = "success"
    else:
        text = "no findings"
        state = "success"
    if fork:
        text = f"{text}; {FORK_NOTE}"
    return Status(LINT_CONTEXT, state, text)


def build_status(record: Mapping[str, Any], *, public_url: str) -> Status | None:
    """The final status of a build record (a BuildRecord.to_dict()); None while unfinished or
    cancelled (a cancelled build's status was set when it was superseded)."""
    context = build_context(str(record["image"]), str(record["cluster"]))
    build_id = str(record["id"])
    url = log_url(public_url, build_id)
    state = record.get("state")
    digest = str(record.get("digest") or "")
    found = record.get("content_findings")
    found = found if isinstance(found, list | tuple) else ()
    severities = [f.get("severity") for f in found if isinstance(f, Mapping)]
    if state == "succeeded":
        text = f"built {short_digest(digest)}"
        if warnings := severities.count("warning"):
            text += f" ({warnings} content warning{'s' if warnings != 1 else ''})"
        return Status(context, "success", text, url, build_id=build_id)
    if state == "skipped":
        return Status(
            context,
            "success",
            f"reused {short_digest(digest)} (already built)",
            url,
            build_id=build_id,
        )
    if state == "failed":
        step = str(record.get("failing_step") or "")
        line = record.get("failing_line")
        if step:
            where = f" (Containerfile line {line})" if line else ""
            return Status(context, "failure", f"failed at {step}{where}", url, build_id=build_id)
        error = str(record.get("error") or "build failed").splitlines()[0]
        # the content lint's error leads with the first finding's rule id and path
        verdict: State = "failure" if "error" in severities else "error"
        return Status(context, verdict, error, url, build_id=build_id)
    return None


def pending_build(image: str, cluster: str, *, build_id: str, public_url: str) -> Status:
    return Status(
        build_context(image, cluster),
        "pending",
        f"queued: {image} on {cluster}'s base",
        log_url(public_url, build_id),
        build_id=build_id,
    )


def build_started(image: str, cluster: str, *, build_id: str, public_url: str) -> Status:
    """buildah started: `in_progress` as a check run (a commit status would repeat pending)."""
    return Status(
        build_context(image, cluster),
        "pending",
        f"building: {image} on {cluster}'s base",
        log_url(public_url, build_id),
        details={"check_status": "in_progress", CHECK_ONLY: True},
        build_id=build_id,
    )


def crashed(image: str, cluster: str, *, build_id: str, public_url: str) -> Status:
    """A build whose task died without a result (its worker was killed, say)."""
    return Status(
        build_context(image, cluster),
        "error",
        "build task crashed; see the build log",
        log_url(public_url, build_id),
        build_id=build_id,
    )


def not_built(image: str, cluster: str, reason: str) -> Status:
    return Status(build_context(image, cluster), "failure", f"not built: {reason}")


# a cancelled build's check run concludes `cancelled` (its commit status: `error`)
CANCELLED: Details = {"conclusion": "cancelled"}
# a status only a check run shows (a build started, a build's check drawn again): as a commit
# status it would repeat the state already posted, so none is posted
CHECK_ONLY = "check_only"


def check_only(status: Status) -> bool:
    return bool(status.details and status.details.get(CHECK_ONLY))


def for_checks_only(status: Status) -> Status:
    return dataclasses.replace(status, details={**(status.details or {}), CHECK_ONLY: True})


def superseded(
    context: str, *, by_sha: str, target_url: str | None = None, build_id: str | None = None
) -> Status:
    return Status(context, "error", f"superseded by {by_sha[:12]}", target_url, CANCELLED, build_id)


PULL_REQUEST_CLOSED = "pull request closed"


def closed(context: str, *, target_url: str | None = None, build_id: str | None = None) -> Status:
    """A build of a pull request closed without merging: cancelled, and its pending status
    ends as `error` (not `failure`: nothing about the change was judged)."""
    return Status(context, "error", PULL_REQUEST_CLOSED, target_url, CANCELLED, build_id)


@dataclass(frozen=True)
class ParkedStatus:
    """A status GitHub did not take within the task's retries, kept in Redis and resent later.
    `seq` orders statuses of one (sha, context): a parked status never overwrites a newer one."""

    sha: str
    context: str
    state: State
    description: str
    target_url: str | None
    seq: int
    parked_at: float
    attempts: int = 0
    details: Details | None = None
    build_id: str | None = None

    @property
    def member(self) -> str:
        """The identity of the (sha, context) slot: one parked status per slot."""
        return member(self.sha, self.context)

    def to_json(self) -> dict[str, Any]:
        return {
            "sha": self.sha,
            "context": self.context,
            "state": self.state,
            "description": self.description,
            "target_url": self.target_url,
            "seq": self.seq,
            "parked_at": self.parked_at,
            "attempts": self.attempts,
            "details": dict(self.details) if self.details is not None else None,
            "build_id": self.build_id,
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> ParkedStatus:
        target_url = document.get("target_url")
        details, build_id = document.get("details"), document.get("build_id")
        return cls(
            sha=str(document["sha"]),
            context=str(document["context"]),
            state=state(str(document["state"])),
            description=str(document["description"]),
            target_url=str(target_url) if target_url is not None else None,
            seq=int(document["seq"]),
            parked_at=float(document["parked_at"]),
            attempts=int(document.get("attempts", 0)),
            details=dict(details) if isinstance(details, Mapping) else None,
            build_id=str(build_id) if build_id else None,
        )


def member(sha: str, context: str) -> str:
    return json.dumps([sha, context], separators=(",", ":"))
