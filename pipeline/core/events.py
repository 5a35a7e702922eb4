"""Webhook deliveries as data: raw headers + body -> a verified, typed event or a 4xx reason,
and what the service does about each event (a routing decision). No I/O.

The signature is checked over the raw bytes before anything is parsed. Nothing here follows a
URL from a payload: clone URLs are only compared with the configured repository.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

from pipeline.core import tasks

ZERO_SHA = "0" * 40
ENV_BRANCH_PREFIX = "env/"
OK_TO_TEST = "/ok-to-test"
SIGNATURE_HEADER = "x-hub-signature-256"
EVENT_HEADER = "x-github-event"
DELIVERY_HEADER = "x-github-delivery"
HOOK_ID_HEADER = "x-github-hook-id"
INSTALLATION_HEADER = "x-github-hook-installation-target-id"
BUILD_ACTIONS = frozenset({"opened", "synchronize", "reopened"})
_SHA = re.compile(r"^[0-9a-f]{40}$")
_DELIVERY = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_HOOK_ID = re.compile(r"^[0-9]{1,20}$")
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


class RawIssue(TypedDict):
    number: int
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


# What to do about an event.


@dataclass(frozen=True)
class Pong:
    pass


@dataclass(frozen=True)
class Ignore:
    reason: str


@dataclass(frozen=True)
class BuildPush:
    """Lint and build what before..after changed on the default branch."""

    branch: str
    before: str
    after: str
    forced: bool


@dataclass(frozen=True)
class BuildPullRequest:
    """Lint (and, unless from a fork, build) a pull request into the default branch."""

    number: int
    head_sha: str
    head_ref: str
    base_ref: str
    from_fork: bool


@dataclass(frozen=True)
class ClosePullRequest:
    """A pull request into the default branch closed without merging: cancel its builds."""

    number: int
    head_sha: str


@dataclass(frozen=True)
class OkToTest:
    """A maintainer asked to build a (fork) pull request; the worker checks the permission."""

    number: int
    user: str


@dataclass(frozen=True)
class Promote:
    commit_sha: str
    environment: str
    branch: str


@dataclass(frozen=True)
class Gate:
    head_sha: str
    environment: str
    number: int


Action = Pong | Ignore | BuildPush | BuildPullRequest | ClosePullRequest | OkToTest | Promote | Gate


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
    if not _DELIVERY.match(delivery):
        return Rejection(400, "malformed X-GitHub-Delivery header")
    hook = headers.get(HOOK_ID_HEADER, "").strip() or headers.get(INSTALLATION_HEADER, "").strip()
    if hook and not _HOOK_ID.match(hook):
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
    if not _SHA.match(value):
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
    )


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


def _normal_url(url: str) -> str:
    return url.strip().rstrip("/").removesuffix(".git").lower()


def is_our_repository(
    repository: Repository, *, full_name: str | None, repo_url: str | None
) -> bool:
    if full_name and repository.full_name.lower() == full_name.lower():
        return True
    if repo_url:
        wanted = _normal_url(repo_url)
        return any(_normal_url(url) == wanted for url in repository.urls)
    return False


def environment_of(branch: str) -> str | None:
    if branch.startswith(ENV_BRANCH_PREFIX):
        environment = branch.removeprefix(ENV_BRANCH_PREFIX)
        if re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", environment):
            return environment
    return None


def _never(message: str, environment: str) -> bool:
    return False


def _route_push(
    push: Push, default_branch: str, is_promotion_commit: Callable[[str, str], bool]
) -> Action:
    branch = push.branch
    if branch is None:
        return Ignore(f"push to {echo(push.ref)!r}: only branches are built")
    if push.deleted or push.after == ZERO_SHA:
        return Ignore(f"branch {echo(branch)!r} deleted")
    if branch == default_branch:
        return BuildPush(branch=branch, before=push.before, after=push.after, forced=push.forced)
    environment = environment_of(branch)
    if environment is not None:
        if push.head_message is not None and is_promotion_commit(push.head_message, environment):
            return Ignore(f"push to {branch}: the pipeline's own promotion commit")
        return Promote(commit_sha=push.after, environment=environment, branch=branch)
    return Ignore(f"push to {echo(branch)!r}: neither {default_branch} nor env/<environment>")


def _route_pull_request(pull: PullRequest, default_branch: str) -> Action:
    if pull.action == "closed" and pull.base_ref == default_branch:
        if pull.merged:
            # the push to the default branch builds the merge (reusing these builds by key)
            return Ignore(f"pull request #{pull.number} merged")
        return ClosePullRequest(number=pull.number, head_sha=pull.head_sha)
    if pull.action not in BUILD_ACTIONS:
        return Ignore(f"pull request #{pull.number} {echo(pull.action)!r}")
    if pull.base_ref == default_branch:
        return BuildPullRequest(
            number=pull.number,
            head_sha=pull.head_sha,
            head_ref=pull.head_ref,
            base_ref=pull.base_ref,
            from_fork=pull.from_fork,
        )
    environment = environment_of(pull.base_ref)
    if environment is not None:
        return Gate(head_sha=pull.head_sha, environment=environment, number=pull.number)
    return Ignore(f"pull request #{pull.number} into {echo(pull.base_ref)!r}")


def _route_comment(comment: IssueComment) -> Action:
    if comment.action != "created" or not comment.on_pull_request:
        return Ignore("comment not on a pull request")
    lines = comment.body.strip().splitlines()
    if not lines or lines[0].strip() != OK_TO_TEST:
        return Ignore("comment is not /ok-to-test")
    return OkToTest(number=comment.number, user=comment.user)


def route(
    event: Event,
    *,
    full_name: str | None,
    repo_url: str | None,
    default_branch: str,
    is_promotion_commit: Callable[[str, str], bool] = _never,
) -> Action:
    """What the service does about an event (SPEC section 3)."""
    if isinstance(event, Ping):
        return Pong()
    if isinstance(event, Unhandled):
        return Ignore(f"event {echo(event.name)!r} is not handled")
    if not is_our_repository(event.repository, full_name=full_name, repo_url=repo_url):
        return Ignore("event for another repository")
    if isinstance(event, Push):
        return _route_push(event, default_branch, is_promotion_commit)
    if isinstance(event, PullRequest):
        return _route_pull_request(event, default_branch)
    return _route_comment(event)


def event_name(action: Action) -> str:
    """A short label for metrics."""
    return type(action).__name__


def task_for(action: Action, *, enqueued_at: float) -> tasks.TaskCall | None:
    """The task an action enqueues (ids as arguments, see core/tasks.py), or None when there is
    nothing to queue. `enqueued_at` stamps event tasks for the queue-latency metric."""
    if isinstance(action, BuildPush):
        return tasks.HandlePush(
            action.branch, action.before, action.after, action.forced, enqueued_at
        ).call()
    if isinstance(action, BuildPullRequest):
        return tasks.HandlePullRequest(
            action.number,
            action.head_sha,
            action.head_ref,
            action.base_ref,
            action.from_fork,
            enqueued_at,
        ).call()
    if isinstance(action, ClosePullRequest):
        return tasks.ClosePullRequest(action.number, action.head_sha, enqueued_at).call()
    if isinstance(action, OkToTest):
        return tasks.OkToTest(action.number, action.user, enqueued_at).call()
    if isinstance(action, Promote):
        return tasks.Promote(action.commit_sha, action.environment).call()
    if isinstance(action, Gate):
        return tasks.Gate(action.head_sha, action.environment, action.number).call()
    return None
