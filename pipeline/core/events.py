"""What the service does about a webhook event (a routing decision), and the task each
decision queues. No I/O.

This module is the one API of webhook handling: the verification and parsing of deliveries
(pipeline/core/deliveries.py) is re-exported below, so callers write `events.parse(...)`,
`events.signature_valid(...)` and `events.route(...)` alike.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

from pipeline.core import deliveries, retest, tasks

# -- deliveries: verification and parsing (pipeline/core/deliveries.py) -----------------------

ZERO_SHA = deliveries.ZERO_SHA
SIGNATURE_HEADER = deliveries.SIGNATURE_HEADER
EVENT_HEADER = deliveries.EVENT_HEADER
DELIVERY_HEADER = deliveries.DELIVERY_HEADER
HOOK_ID_HEADER = deliveries.HOOK_ID_HEADER
INSTALLATION_HEADER = deliveries.INSTALLATION_HEADER
Repository = deliveries.Repository
Push = deliveries.Push
PullRequest = deliveries.PullRequest
IssueComment = deliveries.IssueComment
Ping = deliveries.Ping
Unhandled = deliveries.Unhandled
Event = deliveries.Event
Rejection = deliveries.Rejection
signature = deliveries.signature
signature_valid = deliveries.signature_valid
delivery_key = deliveries.delivery_key
load_json = deliveries.load_json
echo = deliveries.echo
parse = deliveries.parse

# -- routing ----------------------------------------------------------------------------------

ENV_BRANCH_PREFIX = "env/"
OK_TO_TEST = "/ok-to-test"
_FULL_SHA = re.compile(r"[0-9a-f]{40}")
BUILD_ACTIONS = frozenset({"opened", "synchronize", "reopened"})


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
    """A maintainer asked to build a (fork) pull request: the commit `sha` names, else its head
    as of `commented_at` (core/approval.py); the worker checks the permission."""

    number: int
    user: str
    sha: str | None = None
    commented_at: float | None = None


@dataclass(frozen=True)
class Retest:
    """Someone asked to re-run builds of a pull request's head (core/retest.py): every failed
    one, or `target` (`<image>@<cluster>`); `malformed`: an argument that is neither. The worker
    checks the permission and replies."""

    number: int
    user: str
    target: str | None = None
    commented_at: float | None = None
    malformed: bool = False


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
    head_ref: str = ""


Action = (
    Pong
    | Ignore
    | BuildPush
    | BuildPullRequest
    | ClosePullRequest
    | OkToTest
    | Retest
    | Promote
    | Gate
)


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


def _route_push(push: Push, default_branch: str) -> Action:
    branch = push.branch
    if branch is None:
        return Ignore(f"push to {echo(push.ref)!r}: only branches are built")
    if push.deleted or push.after == ZERO_SHA:
        return Ignore(f"branch {echo(branch)!r} deleted")
    if branch == default_branch:
        return BuildPush(branch=branch, before=push.before, after=push.after, forced=push.forced)
    environment = environment_of(branch)
    if environment is not None:
        # every push is promoted, the pipeline's own too: a message (or its Layering-*
        # trailers) proves nothing, and the promotion of an own commit has nothing to write
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
        return Gate(
            head_sha=pull.head_sha,
            environment=environment,
            number=pull.number,
            # a fork's branch name proves nothing (flows/gate.py merges only its own)
            head_ref="" if pull.from_fork else pull.head_ref,
        )
    return Ignore(f"pull request #{pull.number} into {echo(pull.base_ref)!r}")


def _timestamp(text: str | None) -> float | None:
    """Seconds since the epoch of an ISO 8601 time (UTC when it names no zone); None when
    missing or malformed."""
    if text is None:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _route_comment(comment: IssueComment) -> Action:
    if comment.action != "created" or not comment.on_pull_request:
        return Ignore("comment not on a pull request")
    command = retest.parse(comment.body)
    if command is not None:
        return _route_retest(comment, command)
    lines = comment.body.strip().splitlines()
    words = lines[0].split() if lines else []
    if not words or words[0] != OK_TO_TEST:
        return Ignore(f"comment is neither /ok-to-test nor {retest.COMMAND}")
    if comment.state != "open":
        return Ignore(f"pull request #{comment.number} is {echo(comment.state)}: not built")
    named = words[1].lower() if len(words) == 2 else None
    if len(words) > 2 or (named is not None and not _FULL_SHA.fullmatch(named)):
        return Ignore(
            f"{OK_TO_TEST} takes nothing or one full 40-hex commit sha, "
            f"not {echo(' '.join(words[1:]))!r}"
        )
    return OkToTest(
        number=comment.number,
        user=comment.user,
        sha=named,
        commented_at=_timestamp(comment.created_at),
    )


def _route_retest(comment: IssueComment, command: retest.Command | retest.Malformed) -> Action:
    if comment.state != "open":
        return Ignore(f"pull request #{comment.number} is {echo(comment.state)}: nothing re-run")
    target = command.target if isinstance(command, retest.Command) else None
    return Retest(
        number=comment.number,
        user=comment.user,
        target=str(target) if target is not None else None,
        commented_at=_timestamp(comment.created_at),
        malformed=isinstance(command, retest.Malformed),
    )


def route(
    event: Event,
    *,
    full_name: str | None,
    repo_url: str | None,
    default_branch: str,
) -> Action:
    """What the service does about an event (SPEC section 3)."""
    if isinstance(event, Ping):
        return Pong()
    if isinstance(event, Unhandled):
        return Ignore(f"event {echo(event.name)!r} is not handled")
    if not is_our_repository(event.repository, full_name=full_name, repo_url=repo_url):
        return Ignore("event for another repository")
    if isinstance(event, Push):
        return _route_push(event, default_branch)
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
        return tasks.OkToTest(
            action.number, action.user, enqueued_at, action.sha, action.commented_at
        ).call()
    if isinstance(action, Retest):
        return tasks.Retest(
            action.number,
            action.user,
            action.target,
            enqueued_at,
            action.commented_at,
            action.malformed,
        ).call()
    if isinstance(action, Promote):
        return tasks.Promote(action.commit_sha, action.environment).call()
    if isinstance(action, Gate):
        return tasks.Gate(
            action.head_sha, action.environment, action.number, action.head_ref
        ).call()
    return None
