"""`/retest` and `/retest <image>@<cluster>` on a pull request, decided as data. No I/O.

A command is read as `/ok-to-test` is (core/events.py): the first word of the comment's first
line, case-sensitive, then at most one argument; the rest of the comment is free text. The
argument names one build, `<image>@<cluster>`, both DNS labels (core/names.py), lower-cased.

What runs again is decided against the pull request as GitHub reports it now and the head the
service recorded for its scope (core/head.py `Head`): both must be the same commit, and the one
that was the head as of the comment. `/retest` re-runs that head's failed builds (a build that
crashed has its record failed too: flows/build.py, flows/poison.py); `/retest <image>@<cluster>`
re-runs one finished build. A fork's head no `/ok-to-test` approved has no builds, so nothing
of it runs. A re-run replaces the old build in the head's record (`with_rerun`), so a later
push supersedes it like any build of the head.

Replies quote only what was checked: the parsed target, shas, numbers and the login (when it is
one GitHub could have issued).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from pipeline.core import builds, head, names

COMMAND = "/retest"
USAGE = (
    "`/retest` re-runs the failed builds of the pull request's head; "
    "`/retest <image>@<cluster>` (e.g. `/retest firewalld@nonprod`) re-runs that one build"
)
# GitHub logins: alphanumerics and single hyphens, at most 39; apps answer as `<name>[bot]`
_LOGIN = re.compile(r"[A-Za-z0-9](?:-?[A-Za-z0-9]){0,38}(?:\[bot\])?")
RUNNING = frozenset({builds.BuildState.QUEUED, builds.BuildState.RUNNING})


@dataclass(frozen=True)
class Target:
    """One build of a head: `image` on `cluster`."""

    image: str
    cluster: str

    def __str__(self) -> str:
        return f"{self.image}@{self.cluster}"


def parse_target(text: str) -> Target | None:
    """`<image>@<cluster>` (any case), or None when it is not two DNS labels around one `@`."""
    image, at, cluster = text.lower().partition("@")
    if not at or not names.is_dns_label(image) or not names.is_dns_label(cluster):
        return None
    return Target(image, cluster)


@dataclass(frozen=True)
class Command:
    """A `/retest`: every failed build (`target` None) or one."""

    target: Target | None = None


@dataclass(frozen=True)
class Malformed:
    """A `/retest` whose argument is not one `<image>@<cluster>`: the reply shows USAGE."""


def parse(body: str) -> Command | Malformed | None:
    """The command on the first line of a comment; None when that line is no `/retest`."""
    lines = body.strip().splitlines()
    words = lines[0].split() if lines else []
    if not words or words[0] != COMMAND:
        return None
    if len(words) == 1:
        return Command()
    target = parse_target(words[1]) if len(words) == 2 else None
    return Command(target) if target is not None else Malformed()


# -- the decision ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rerun:
    """Send these builds of head `sha` again (each as a new build, replacing the old one)."""

    sha: str
    builds: tuple[head.HeadBuild, ...]


@dataclass(frozen=True)
class Nothing:
    """Nothing runs; `reason` says why (it goes into the reply)."""

    reason: str


def is_fork(pull: head.PullHead, repository: str | None) -> bool:
    """A head in another repository (or a deleted one) than `repository` (`owner/name`)."""
    return (
        pull.head_repository is None
        or repository is None
        or pull.head_repository.lower() != repository.lower()
    )


def decide(
    pull: head.PullHead,
    recorded: head.Head | None,
    states: Mapping[str, builds.BuildState],
    *,
    target: Target | None,
    as_of: str | None,
    default_branch: str,
    fork: bool,
) -> Rerun | Nothing:
    """What a `/retest` (of `target`, or every failed build) re-runs of `pull` as GitHub
    reports it now. `recorded`: the head the service recorded for the pull request's scope;
    `states`: build id -> the state its record holds (a build without a record is left out);
    `as_of`: the head as of the comment (None: not known); `fork`: the head is a fork's."""
    number, current = pull.number, pull.head_sha
    if pull.state != "open":
        return Nothing(f"pull request #{number} is closed")
    if pull.base_ref != default_branch:
        return Nothing(f"pull request #{number} is not into {default_branch}")
    if recorded is None or recorded.closed or recorded.sha != current:
        return Nothing(
            f"the head of #{number} is {current[:12]}, which the service has not planned yet; "
            "comment again once its checks appear"
        )
    if as_of is not None and as_of != current:
        return Nothing(
            f"#{number} moved to {current[:12]} after the comment; comment again to re-run "
            "its builds"
        )
    if not recorded.builds:
        if fork:
            return Nothing(
                f"{current[:12]} is a fork's commit that no /ok-to-test approved: it has no "
                "builds to re-run"
            )
        return Nothing(f"{current[:12]} has no builds to re-run")
    latest = latest_builds(recorded.builds)
    if target is None:
        failed = tuple(
            build
            for build in latest.values()
            if states.get(build.build_id) is builds.BuildState.FAILED
        )
        if not failed:
            return Nothing(f"no failed builds on {current[:12]}")
        return Rerun(current, failed)
    build = latest.get((target.image, target.cluster))
    state = states.get(build.build_id) if build is not None else None
    if build is None or state is None:
        return Nothing(f"no such build on {current[:12]}: {target}")
    if state in RUNNING:
        return Nothing(f"{target} is already running on {current[:12]}")
    return Rerun(current, (build,))


def latest_builds(recorded: Sequence[head.HeadBuild]) -> dict[tuple[str, str], head.HeadBuild]:
    """(image, cluster) -> the build of a head sent last (a redelivered event sends again)."""
    return {(build.image, build.cluster): build for build in recorded}


def with_rerun(
    current: head.Head | None,
    *,
    sha: str,
    replaced: Collection[str],
    builds: Sequence[head.HeadBuild],
) -> head.Head | None:
    """`current` with the builds whose ids are `replaced` swapped for `builds`; None when the
    scope is no longer head `sha` (a push or a close came first: the caller cancels `builds`).
    A build another /retest replaced meanwhile is gone already: both re-runs are kept."""
    if current is None or current.sha != sha or current.closed:
        return None
    kept = tuple(build for build in current.builds if build.build_id not in replaced)
    return head.Head(current.sha, current.enqueued_at, (*kept, *builds), current.closed)


# -- the reply ------------------------------------------------------------------------------


def mention(user: str) -> str:
    """`@login` for a login GitHub could have issued; anything else is not echoed."""
    return f"@{user}" if _LOGIN.fullmatch(user) else "someone"


def reply(user: str, outcome: Rerun | Nothing) -> str:
    """The comment that answers a /retest of `user`."""
    who = mention(user)
    if isinstance(outcome, Nothing):
        return f"/retest by {who}: nothing re-run: {outcome.reason}."
    listed = ", ".join(f"`{build.image}@{build.cluster}`" for build in outcome.builds)
    return f"/retest by {who}: re-running {listed} on {outcome.sha[:12]}."


def not_allowed(user: str) -> Nothing:
    return Nothing(f"{mention(user)} has no write access to this repository")


def malformed() -> Nothing:
    return Nothing(f"its argument is not one `<image>@<cluster>`; {USAGE}")
