"""Webhook deliveries as data: raw headers + body -> a verified, typed event or a 4xx reason.
No I/O. What the service does about an event is pipeline/core/events.py (which re-exports this
module's public names: callers use `events`).

The signature is checked over the raw bytes before anything is parsed. Nothing here follows a
URL from a payload: clone URLs are only compared with the configured repository.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

ZERO_SHA = "0" * 40
SIGNATURE_HEADER = "x-hub-signature-256"
EVENT_HEADER = "x-github-event"
DELIVERY_HEADER = "x-github-delivery"
HOOK_ID_HEADER = "x-github-hook-id"
INSTALLATION_HEADER = "x-github-hook-installation-target-id"
# matched whole (`fullmatch`): `$` would also accept a trailing newline, and a sha is later one
# line of `git cat-file --batch`
_SHA = re.compile(r"[0-9a-f]{40}")
_DELIVERY = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_HOOK_ID = re.compile(r"[0-9]{1,20}")
# GitHub's largest ids are far below this; a number beyond it is not a pull request
MAX_NUMBER = 2**53
# how much of a sender-chosen name (ref, event name) an answer echoes back
ECHO_LIMIT = 100


# Raw payloads (only the fields we read; GitHub sends many more).


class RawOwner(TypedDict):
    login: str


class RawRepository(TypedDict):
    full_name: str
    clone_url: NotRequired[str]
    ssh_url: NotRequired[str]
    html_url: NotRequired[str]
    url: NotRequired[str]


class RawCommit(TypedDict):
    id: str
    message: str


class RawPush(TypedDict):
    ref: str
    before: str
    after: str
    created: NotRequired[bool]
    deleted: NotRequired[bool]
    forced: NotRequired[bool]
    repository: RawRepository
    pusher: NotRequired[dict[str, str]]
    head_commit: NotRequired[RawCommit | None]


class RawBranch(TypedDict):
    ref: str
    sha: str
    repo: RawRepository | None


class RawPull(TypedDict):
    number: int
    head: RawBranch
    base: RawBranch


class RawPullRequestEvent(TypedDict):
    action: str
    number: int
    pull_request: RawPull
    repository: RawRepository
    sender: NotRequired[RawOwner]


class RawComment(TypedDict):
    body: str
    user: RawOwner
    created_at: NotRequired[str]


class RawIssue(TypedDict):
    number: int
    state: NotRequired[str]
    pull_request: NotRequired[dict[str, Any]]


class RawIssueCommentEvent(TypedDict):
    action: str
    issue: RawIssue
    comment: RawComment
    repository: RawRepository


# Typed events.


@dataclass(frozen=True)
class Repository:
    full_name: str
    urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class Push:
    repository: Repository
    ref: str
    before: str
    after: str
    created: bool
    deleted: bool
    forced: bool
    pusher: str
    head_message: str | None

    @property
    def branch(self) -> str | None:
        return self.ref.removeprefix("refs/heads/") if self.ref.startswith("refs/heads/") else None


@dataclass(frozen=True)
class PullRequest:
    repository: Repository
    action: str
    number: int
    head_sha: str
    head_ref: str
    head_repository: str | None
    base_ref: str
    sender: str
    merged: bool = False

    @property
    def from_fork(self) -> bool:
        """A head in another repository (or in a deleted one) is a fork: its code is untrusted."""
        return self.head_repository is None or (
            self.head_repository.lower() != self.repository.full_name.lower()
        )


@dataclass(frozen=True)
class IssueComment:
    repository: Repository
    action: str
    number: int
    on_pull_request: bool
    body: str
    user: str
    created_at: str | None = None  # ISO 8601, GitHub's clock (what /ok-to-test is bound to)
    state: str = "open"  # the issue's (pull request's) state: "open" or "closed"


@dataclass(frozen=True)
class Ping:
    zen: str


@dataclass(frozen=True)
class Unhandled:
    """An event type the service does not act on (acknowledged with `ignored`)."""

    name: str


Event = Push | PullRequest | IssueComment | Ping | Unhandled


@dataclass(frozen=True)
class Rejection:
    """A delivery refused with a 4xx status; `reason` is safe to return to the sender."""

    status: int
    reason: str


def signature(secret: bytes, body: bytes) -> str:
    """The `X-Hub-Signature-256` value GitHub sends for `body`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def signature_valid(secret: bytes, body: bytes, header: str | None) -> bool:
    if not secret or not header or not header.startswith("sha256="):
        return False
    return hmac.compare_digest(signature(secret, body).encode(), header.strip().encode())


def delivery_key(headers: Mapping[str, str]) -> str | Rejection:
    """The dedupe key: delivery id plus the hook (or installation) id when present.

    `headers` must have lower-case names.
    """
    delivery = headers.get(DELIVERY_HEADER, "").strip()
    if not delivery:
        return Rejection(400, "missing X-GitHub-Delivery header")
    if not _DELIVERY.fullmatch(delivery):
        return Rejection(400, "malformed X-GitHub-Delivery header")
    hook = headers.get(HOOK_ID_HEADER, "").strip() or headers.get(INSTALLATION_HEADER, "").strip()
    if hook and not _HOOK_ID.fullmatch(hook):
        return Rejection(400, "malformed X-GitHub-Hook-ID header")
    return f"{hook or '-'}:{delivery}"


class _Malformed(Exception):
    pass


def _get(payload: Mapping[str, Any], *path: str) -> Any:
    value: Any = payload
    for step in path:
        if not isinstance(value, Mapping) or step not in value:
            raise _Malformed(f"missing field {'.'.join(path)}")
        value = value[step]
    return value


def _object(payload: Mapping[str, Any], *path: str) -> Mapping[str, Any]:
    value = _get(payload, *path)
    if not isinstance(value, Mapping):
        raise _Malformed(f"field {'.'.join(path)} must be an object")
    return value


def _str(payload: Mapping[str, Any], *path: str) -> str:
    value = _get(payload, *path)
    if not isinstance(value, str):
        raise _Malformed(f"field {'.'.join(path)} must be a string")
    return value


def _sha(payload: Mapping[str, Any], *path: str) -> str:
    value = _str(payload, *path)
    if not _SHA.fullmatch(value):
        raise _Malformed(f"field {'.'.join(path)} must be a 40-hex commit id")
    return value


def _int(payload: Mapping[str, Any], *path: str) -> int:
    value = _get(payload, *path)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < MAX_NUMBER:
        raise _Malformed(f"field {'.'.join(path)} must be a positive integer")
    return value


def _bool(payload: Mapping[str, Any], key: str) -> bool:
    return payload.get(key) is True


def _repository(raw: Any) -> Repository:
    if not isinstance(raw, Mapping):
        raise _Malformed("field repository must be an object")
    name = raw.get("full_name")
    if not isinstance(name, str) or not name:
        raise _Malformed("field repository.full_name must be a non-empty string")
    urls = tuple(
        raw[key]
        for key in ("clone_url", "ssh_url", "html_url", "url")
        if isinstance(raw.get(key), str)
    )
    return Repository(name, urls)


def _push(payload: Mapping[str, Any]) -> Push:
    head = payload.get("head_commit")
    head_message = head.get("message") if isinstance(head, Mapping) else None
    pusher = payload.get("pusher")
    return Push(
        repository=_repository(payload.get("repository")),
        ref=_str(payload, "ref"),
        before=_sha(payload, "before"),
        after=_sha(payload, "after"),
        created=_bool(payload, "created"),
        deleted=_bool(payload, "deleted"),
        forced=_bool(payload, "forced"),
        pusher=str(pusher.get("name", "")) if isinstance(pusher, Mapping) else "",
        head_message=head_message if isinstance(head_message, str) else None,
    )


def _pull_request(payload: Mapping[str, Any]) -> PullRequest:
    head_repo = _object(payload, "pull_request", "head").get("repo")
    sender = payload.get("sender")
    return PullRequest(
        repository=_repository(payload.get("repository")),
        action=_str(payload, "action"),
        number=_int(payload, "pull_request", "number"),
        head_sha=_sha(payload, "pull_request", "head", "sha"),
        head_ref=_str(payload, "pull_request", "head", "ref"),
        head_repository=_str(head_repo, "full_name") if isinstance(head_repo, Mapping) else None,
        base_ref=_str(payload, "pull_request", "base", "ref"),
        sender=str(sender.get("login", "")) if isinstance(sender, Mapping) else "",
        merged=_object(payload, "pull_request").get("merged") is True,
    )


def _issue_comment(payload: Mapping[str, Any]) -> IssueComment:
    issue = _get(payload, "issue")
    return IssueComment(
        repository=_repository(payload.get("repository")),
        action=_str(payload, "action"),
        number=_int(payload, "issue", "number"),
        on_pull_request=isinstance(issue, Mapping) and issue.get("pull_request") is not None,
        body=_str(payload, "comment", "body"),
        user=_str(payload, "comment", "user", "login"),
        created_at=_optional_str(payload, "comment", "created_at"),
        state=_optional_str(payload, "issue", "state") or "open",
    )


def _optional_str(payload: Mapping[str, Any], *path: str) -> str | None:
    """A string field that may be missing or null (None); any other type is malformed."""
    value = _object(payload, *path[:-1]).get(path[-1])
    if value is not None and not isinstance(value, str):
        raise _Malformed(f"field {'.'.join(path)} must be a string")
    return value


class _NotJson(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        # parsers disagree on which duplicate wins: refuse rather than guess
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _NotJson(f"body has a duplicate key {echo(key)!r}")
            seen.add(key)
    return document


def _no_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON number")


def load_json(body: bytes) -> Any:
    """Strict JSON: UTF-8 (or UTF-16/32 with GitHub's detection), no NaN/Infinity, no duplicate
    keys, bounded nesting; raises ValueError with a one-line reason."""
    try:
        return json.loads(body, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except _NotJson:
        raise
    except UnicodeDecodeError:
        raise ValueError("body is not UTF-8 JSON") from None
    except RecursionError:
        raise ValueError("body is nested too deeply") from None
    except ValueError as exc:
        raise ValueError(f"body is not JSON: {str(exc).splitlines()[0][:ECHO_LIMIT]}") from None


def echo(text: str) -> str:
    """A sender-chosen string cut short enough to quote back in an answer or a log line."""
    return text if len(text) <= ECHO_LIMIT else text[:ECHO_LIMIT] + "…"


def parse(event_name: str, body: bytes) -> Event | Rejection:
    """A verified body -> typed event. Call only after `signature_valid`."""
    try:
        payload = load_json(body)
    except ValueError as exc:
        return Rejection(400, str(exc))
    if not isinstance(payload, dict):
        return Rejection(400, "body must be a JSON object")
    try:
        if event_name == "ping":
            zen = payload.get("zen")
            return Ping(zen if isinstance(zen, str) else "")
        if event_name == "push":
            return _push(payload)
        if event_name == "pull_request":
            return _pull_request(payload)
        if event_name == "issue_comment":
            return _issue_comment(payload)
    except _Malformed as exc:
        return Rejection(400, f"{event_name} payload: {exc}")
    return Unhandled(event_name)
