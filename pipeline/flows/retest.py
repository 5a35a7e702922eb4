"""What `/retest` and `/retest <image>@<cluster>` do (queue `events`): check that the commenter
may write, read the pull request from GitHub and the head recorded for its scope, let
core/retest.py decide, send each re-run exactly as a head's build is sent (flows/head.py
`_send`: a new record, a pending status, "layering.build" with the callbacks that report its
final status), swap the re-runs into the head's record, and reply with a comment. I/O only
through ports.

A push or close that takes the scope while the re-runs are being sent cancels them, as it
cancels any build of the older head (`head.overtaken`). The reply to a re-run is best effort:
a GitHub outage must not make the task retry and send the builds twice.
"""

from __future__ import annotations

import logging

from pipeline.core import approval, builds, head, ports, ports_retest, retest
from pipeline.core.errors import TemporaryError
from pipeline.core.settings import Settings
from pipeline.flows import head as head_flow

log = logging.getLogger(__name__)


def retest_builds(
    adapters: head_flow.Adapters,
    heads: ports_retest.RetestHeads,
    pulls: ports.PullRequests | None,
    settings: Settings,
    *,
    number: int,
    user: str,
    target: str | None = None,
    enqueued_at: float | None = None,
    commented_at: float | None = None,
    malformed: bool = False,
) -> head_flow.Summary:
    """A `/retest` by `user` on pull request `number` (made at `commented_at`), of `target`
    (`<image>@<cluster>`) or of every failed build; `malformed`: its argument was neither."""
    adapters.observe_latency(enqueued_at)
    if pulls is None:
        return {"ignored": "no GitHub credentials configured"}
    wanted = retest.parse_target(target) if target is not None else None
    outcome: retest.Rerun | retest.Nothing
    if not pulls.can_write(user):
        outcome = retest.not_allowed(user)
    elif malformed or (target is not None and wanted is None):
        outcome = retest.malformed()
    else:
        pull = pulls.pull_head(number)
        outcome = _decide(adapters, heads, settings, pull, wanted, enqueued_at, commented_at)
        if isinstance(outcome, retest.Rerun):
            sent = _rerun(adapters, heads, settings, pull, outcome)
            log.info("/retest on #%s from %s re-runs %s", number, user, [b.context for b in sent])
            try:
                pulls.comment(number, retest.reply(user, outcome))
            except TemporaryError as exc:
                log.warning("/retest on #%s: builds sent, but the reply failed: %s", number, exc)
            return {"head": outcome.sha, "builds": [build.to_json() for build in sent]}
    log.info("/retest on #%s from %s: nothing re-run: %s", number, user, outcome.reason)
    pulls.comment(number, retest.reply(user, outcome))
    return {"ignored": outcome.reason}


def _decide(
    adapters: head_flow.Adapters,
    heads: ports_retest.RetestHeads,
    settings: Settings,
    pull: head.PullHead,
    target: retest.Target | None,
    enqueued_at: float | None,
    commented_at: float | None,
) -> retest.Rerun | retest.Nothing:
    scope = head.pull_request_scope(pull.number)
    recorded = heads.get(scope)
    states: dict[str, builds.BuildState] = {}
    for build in recorded.builds if recorded is not None else ():
        record = adapters.records.get(build.build_id)
        if record is not None:
            states[build.build_id] = record.state
    # as /ok-to-test: a comment without a time counts from when the receiver queued it, by
    # the clock that timed the heads, so without the margin for GitHub's clock
    timed = commented_at is not None
    at = commented_at if commented_at is not None else (enqueued_at or adapters.now())
    margin = approval.CLOCK_MARGIN_SECONDS if timed else 0.0
    return retest.decide(
        pull,
        recorded,
        states,
        target=target,
        as_of=approval.head_as_of(adapters.heads.timeline(scope), at - margin),
        default_branch=settings.default_branch,
        fork=retest.is_fork(pull, settings.github_repo_name),
    )


def _rerun(
    adapters: head_flow.Adapters,
    heads: ports_retest.RetestHeads,
    settings: Settings,
    pull: head.PullHead,
    outcome: retest.Rerun,
) -> list[head.HeadBuild]:
    """Send each build of `outcome` again and record the new ones in the head."""
    new = head.pull_request(
        pull.number,
        head_sha=outcome.sha,
        base_ref=pull.base_ref,
        fork=retest.is_fork(pull, settings.github_repo_name),
        enqueued_at=adapters.now(),
    )
    with adapters.mirror.fetch(*new.refs):
        pass  # the build worker checks the commit out of the mirror
    # one way to send a head's build: the same record, pending status and callbacks
    sent = [head_flow._send(adapters, settings, new, build) for build in outcome.builds]
    newer = heads.record_rerun(
        new.scope, new.sha, replaced=[build.build_id for build in outcome.builds], builds=sent
    )
    mine = head.Head(new.sha, new.enqueued_at, tuple(sent))
    head_flow._cancel(adapters, head.overtaken(mine, newer, public_url=settings.public_url))
    return sent
