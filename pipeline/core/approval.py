"""What a maintainer's `/ok-to-test` approves, decided as data. No I/O.

An approval is bound to one commit: the commit the comment names (`/ok-to-test <40-hex sha>`),
else the pull request's head as of the comment, which is the last head the head store saw
arrive (a `Seen` on the scope's timeline) at or before the comment's `created_at`. That commit
is built only while it is still the head GitHub reports and the pull request is open and into
the default branch. A commit pushed after the comment is never covered: it is linted (its
pull request event does that) and waits for a new approval.

Heads are timed by the receiver's clock, comments by GitHub's (`created_at`). So that a clock
ahead of ours cannot make a push that followed the comment look older than it, the head counts
as of `CLOCK_MARGIN_SECONDS` before such a comment: a head that arrived in that window is not
approved. (A comment timed by the receiver, when the payload had no time, needs no margin.)
Neither is a head whose arrival the store never saw. Each refusal says to comment
`/ok-to-test <sha>`, which approves exactly that commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pipeline.core import head

# how many heads of one scope the timeline keeps (older ones cannot be "as of" any comment
# that arrives in time to matter)
TIMELINE_LENGTH = 100
# the receiver's and GitHub's clocks may disagree by this much (NTP keeps both far closer)
CLOCK_MARGIN_SECONDS = 2.0


@dataclass(frozen=True)
class Seen:
    """Head `sha` of a scope arrived at `at` (the delivery's enqueue time)."""

    sha: str
    at: float

    def to_json(self) -> list[object]:
        return [self.sha, self.at]

    @classmethod
    def from_json(cls, document: object) -> Seen | None:
        """None for anything that is not a [sha, time] pair."""
        if (
            isinstance(document, list)
            and len(document) == 2
            and isinstance(document[0], str)
            and isinstance(document[1], int | float)
        ):
            return cls(document[0], float(document[1]))
        return None


def arrives(previous: head.Head | None, *, sha: str, closed: bool) -> bool:
    """Whether a claim of `sha` (that won its scope) adds a `Seen` to the timeline: a new head,
    or a pull request reopened; the same head claimed again (a redelivery, an /ok-to-test)
    keeps the time it first arrived."""
    if closed:
        return False
    return previous is None or previous.closed or previous.sha != sha


def head_as_of(timeline: Iterable[Seen], at: float) -> str | None:
    """The head at time `at`: the latest arrival at or before it (None: none known)."""
    best: Seen | None = None
    for seen in timeline:
        if seen.at <= at and (best is None or seen.at >= best.at):
            best = seen
    return best.sha if best is not None else None


@dataclass(frozen=True)
class Approved:
    """Build `sha` (the pull request's head, approved)."""

    sha: str


@dataclass(frozen=True)
class Refused:
    """Nothing is built; `reason` says why (returned by the task, logged)."""

    reason: str


def approve(
    pull: head.PullHead,
    *,
    named: str | None,
    at: float,
    timeline: Sequence[Seen],
    default_branch: str,
    margin: float = CLOCK_MARGIN_SECONDS,
) -> Approved | Refused:
    """What an /ok-to-test made at `at` (naming commit `named`, or none) approves of `pull`
    as GitHub reports it now; `margin`: how far the clock of `at` may be ahead of the
    timeline's."""
    number = pull.number
    if pull.state != "open":
        return Refused(f"pull request #{number} is {pull.state}")
    if pull.base_ref != default_branch:
        return Refused(f"pull request #{number} is into {pull.base_ref}")
    current = pull.head_sha
    if named is not None:
        if named != current:
            return Refused(
                f"/ok-to-test names {named[:12]}, but the head of #{number} is {current[:12]}; "
                f"review it and comment /ok-to-test {current}"
            )
        return Approved(current)
    as_of = head_as_of(timeline, at - margin)
    if as_of is None:
        return Refused(
            f"no head of #{number} was seen before the comment; "
            f"review {current[:12]} and comment /ok-to-test {current}"
        )
    if as_of != current:
        return Refused(
            f"the comment approved {as_of[:12]}, but #{number} moved to {current[:12]} "
            f"at about that time or after it; review it and comment /ok-to-test {current}"
        )
    return Approved(current)
