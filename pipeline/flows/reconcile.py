"""Promotion as reconciliation, the triggers (issue 11): when a wait ends the promotion runs by
itself. A build finishing sends "layering.promote" for every environment waiting on its key
(`build_finished`, from the build's report); a soak's end is a "layering.promote" the promote
flow scheduled with a countdown; and the periodic sweep (`sweep`, "layering.
reconcile_promotions" from beat) re-runs the environments whose wait is over, so a lost
trigger heals, and the promotions whose post-push steps (statuses, rollout watches) a dead
worker left pending. Does I/O only through the ports it is given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pipeline.core import builds, ports, reconcile, tasks

# a build that ended this way may end a wait: the promotion then takes its digest, or says
# that the build failed (a cancelled build is followed by a newer one, or by the sweep)
_ENDS_A_WAIT = frozenset(
    {builds.BuildState.SUCCEEDED, builds.BuildState.SKIPPED, builds.BuildState.FAILED}
)


def build_finished(
    record: Mapping[str, Any], *, waits: ports.PromotionWaits, queue: ports.TaskQueue
) -> list[str]:
    """Promote every environment waiting on the key of the build that returned `record` (a
    BuildRecord as JSON); the environments sent."""
    key = str(record.get("build_key") or "")
    state = str(record.get("state") or "")
    if not key or state not in {s.value for s in _ENDS_A_WAIT}:
        return []
    sent: list[str] = []
    for wait in reconcile.waiting_on(waits.waits(), key):
        queue.send(tasks.Promote(wait.commit_sha, wait.environment).call())
        sent.append(wait.environment)
    return sent


def sweep(
    *,
    waits: ports.PromotionWaits,
    activity: ports.BuildActivity,
    queue: ports.TaskQueue,
    now: float,
    interval: float,
) -> dict[str, list[str]]:
    """ "layering.reconcile_promotions": promote again each environment whose wait is over
    (or was not looked at for a sweep interval), and each environment with post-push steps
    pending for longer than one interval (the run that pushed died, or could not finish).
    A promotion through a pull request waits for the merge's own push, not for the sweep."""
    promoted: list[str] = []
    for wait in waits.waits():
        underway = activity.underway(wait.build_keys)
        if reconcile.wait_over(wait, underway=underway, now=now, recheck_seconds=interval):
            if wait.from_upstream:
                queue.send(tasks.PromoteDownstream(wait.environment, wait.from_upstream).call())
            else:
                queue.send(tasks.Promote(wait.commit_sha, wait.environment).call())
            promoted.append(wait.slot)
            # sent once per interval until the run records or clears it (a busy queue)
            waits.record_wait(reconcile.swept(wait, now=now, interval=interval))
    finished: list[str] = []
    for record in waits.post_pushes():
        if record.pull_request is not None or record.created_at + interval > now:
            continue
        if record.environment in promoted or record.environment in finished:
            continue
        queue.send(tasks.Promote(record.status_sha, record.environment).call())
        finished.append(record.environment)
        # once per interval (the run that completes it removes it)
        waits.save_post_push(dataclasses.replace(record, created_at=now))
    return {"waits_over": promoted, "post_push": finished}
