"""What the event handling reports and cancels, as data: status contexts and descriptions for
lint and build results, which builds a newer head supersedes or a closed pull request cancels,
and when a status GitHub would not take is sent again. No I/O.

Descriptions stay under GitHub's 140 characters (`description` cuts them) and never
carry secrets: they are built from ids, digests, step names and finding ids only; the adapter
scrubs them once more.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Status:
    context: str
    state: State
    description: str
    target_url: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "description", description(self.description))


@dataclass(frozen=True)
class LintFinding:
    """The parts of a lint.Finding a status needs (ids, where, severity)."""

    id: str
    severity: str
    path: str
    line: int | None


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
    url = log_url(public_url, str(record["id"]))
    state = record.get("state")
    digest = str(record.get("digest") or "")
    if state == "succeeded":
        return Status(context, "success", f"built {short_digest(digest)}", url)
    if state == "skipped":
        return Status(context, "success", f"reused {short_digest(digest)} (already built)", url)
    if state == "failed":
        step = str(record.get("failing_step") or "")
        line = record.get("failing_line")
        if step:
            where = f" (Containerfile line {line})" if line else ""
            return Status(context, "failure", f"failed at {step}{where}", url)
        error = str(record.get("error") or "build failed").splitlines()[0]
        return Status(context, "error", error, url)
    return None


def pending_build(image: str, cluster: str, *, build_id: str, public_url: str) -> Status:
    return Status(
        build_context(image, cluster),
        "pending",
        f"queued: {image} on {cluster}'s base",
        log_url(public_url, build_id),
    )


def not_built(image: str, cluster: str, reason: str) -> Status:
    return Status(build_context(image, cluster), "failure", f"not built: {reason}")


def superseded(context: str, *, by_sha: str, target_url: str | None = None) -> Status:
    return Status(context, "error", f"superseded by {by_sha[:12]}", target_url)


PULL_REQUEST_CLOSED = "pull request closed"


def closed(context: str, *, target_url: str | None = None) -> Status:
    """A build of a pull request closed without merging: cancelled, and its pending status
    ends as `error` (not `failure`: nothing about the change was judged)."""
    return Status(context, "error", PULL_REQUEST_CLOSED, target_url)


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
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> ParkedStatus:
        state = str(document["state"])
        if state not in ("pending", "success", "failure", "error"):
            raise ValueError(f"unknown status state {state!r}")
        target_url = document.get("target_url")
        return cls(
            sha=str(document["sha"]),
            context=str(document["context"]),
            state=state,  # type: ignore[arg-type]
            description=str(document["description"]),
            target_url=str(target_url) if target_url is not None else None,
            seq=int(document["seq"]),
            parked_at=float(document["parked_at"]),
            attempts=int(document.get("attempts", 0)),
        )


def member(sha: str, context: str) -> str:
    return json.dumps([sha, context], separators=(",", ":"))


def status_backoff(retries: int, *, base: float, retry_after: float, cap: float = 600.0) -> float:
    """Seconds before retry number `retries` of a status: base * 2**retries capped at `cap`,
    but never sooner than the server asked (Retry-After, rate-limit reset; at most an hour)."""
    return max(min(retry_after, 3600.0), min(cap, base * 2.0 ** min(retries, 32)))


def resend_delay(attempts: int, *, retry_after: float, interval: float) -> float:
    """Seconds before a parked status is tried again after `attempts` failed resends: doubling
    from the beat interval, at most an hour, at least what the server asked for."""
    return min(3600.0, max(retry_after, interval * 2.0 ** min(attempts, 16)))


@dataclass(frozen=True)
class HeadBuild:
    """A build queued for one head of a branch or pull request."""

    build_id: str
    task_id: str
    build_key: str
    image: str
    cluster: str

    @property
    def context(self) -> str:
        return build_context(self.image, self.cluster)

    def to_json(self) -> dict[str, str]:
        return {
            "build_id": self.build_id,
            "task_id": self.task_id,
            "build_key": self.build_key,
            "image": self.image,
            "cluster": self.cluster,
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> HeadBuild:
        return cls(
            **{
                k: str(document[k])
                for k in ("build_id", "task_id", "build_key", "image", "cluster")
            }
        )


def superseded_builds(old: Iterable[HeadBuild], new_keys: Iterable[str]) -> list[HeadBuild]:
    """Builds of an older head to cancel: all but those whose key the newer head also builds
    (those keep running and the newer head reuses their result)."""
    keep = set(new_keys)
    return [build for build in old if build.build_key not in keep]
