"""The task contract: every Celery task's name, queue and arguments, as data. No I/O, and
nothing from Celery: the receiver writes these messages into Redis itself, the flows hand them
to a TaskQueue port, and the workers register their shims under the same names.

Each task has one frozen dataclass whose fields are its keyword arguments (ids, never
objects, so a message stays valid across deploys and a task run twice is harmless). `call`
turns one into a TaskCall: name, queue, keyword arguments.

Two tasks are callbacks that Celery calls with the parent's outcome put first: "layering.
report_build" (a `link`: the build record returned by "layering.build") and "layering.
report_build_error" (a `link_error`: the failed task's id). Their dataclasses declare only the
arguments we choose; `call(...).args` puts them in the order the shims take them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

EVENTS_QUEUE = "events"
BUILDS_QUEUE = "builds"
PROMOTIONS_QUEUE = "promotions"
QUEUES = (EVENTS_QUEUE, BUILDS_QUEUE, PROMOTIONS_QUEUE)
Queue = Literal["events", "builds", "promotions"]


@dataclass(frozen=True)
class TaskCall:
    """One task to send: its registered name, its queue, and its arguments."""

    name: str
    queue: Queue
    kwargs: Mapping[str, Any]
    args: tuple[Any, ...] = ()
    task_id: str | None = None
    countdown: float | None = None  # seconds to wait before it runs (a scheduled re-check)


@dataclass(frozen=True)
class _Task:
    NAME: ClassVar[str]
    QUEUE: ClassVar[Queue]
    POSITIONAL: ClassVar[bool] = False  # callbacks: Celery prepends the parent's outcome

    def call(self, *, task_id: str | None = None, countdown: float | None = None) -> TaskCall:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self.POSITIONAL:
            return TaskCall(self.NAME, self.QUEUE, {}, tuple(values.values()), task_id, countdown)
        return TaskCall(self.NAME, self.QUEUE, values, (), task_id, countdown)


# -- events: what a push or pull request does ----------------------------------------------


@dataclass(frozen=True)
class HandlePush(_Task):
    NAME: ClassVar[str] = "layering.handle_push"
    QUEUE: ClassVar[Queue] = "events"
    branch: str
    before: str
    after: str
    forced: bool
    enqueued_at: float | None = None


@dataclass(frozen=True)
class HandlePullRequest(_Task):
    NAME: ClassVar[str] = "layering.handle_pull_request"
    QUEUE: ClassVar[Queue] = "events"
    number: int
    head_sha: str
    head_ref: str
    base_ref: str
    from_fork: bool
    enqueued_at: float | None = None


@dataclass(frozen=True)
class OkToTest(_Task):
    NAME: ClassVar[str] = "layering.ok_to_test"
    QUEUE: ClassVar[Queue] = "events"
    number: int
    user: str
    enqueued_at: float | None = None
    sha: str | None = None  # the commit the comment names (`/ok-to-test <sha>`), if any
    commented_at: float | None = None  # the comment's created_at (GitHub's clock)


@dataclass(frozen=True)
class Retest(_Task):
    """`/retest` on pull request `number` (core/retest.py): its failed builds, or the one
    `target` names (`<image>@<cluster>`); `malformed`: the argument was not one, the reply
    shows the accepted forms."""

    NAME: ClassVar[str] = "layering.retest"
    QUEUE: ClassVar[Queue] = "events"
    number: int
    user: str
    target: str | None = None
    enqueued_at: float | None = None
    commented_at: float | None = None  # the comment's created_at (GitHub's clock)
    malformed: bool = False


@dataclass(frozen=True)
class ClosePullRequest(_Task):
    NAME: ClassVar[str] = "layering.close_pull_request"
    QUEUE: ClassVar[Queue] = "events"
    number: int
    head_sha: str
    enqueued_at: float | None = None


# -- statuses -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportStatus(_Task):
    """One commit status; `seq` orders the statuses of one (sha, context). `details` and
    `build_id` feed its check run in check-runs mode (commit_status.Status)."""

    NAME: ClassVar[str] = "layering.report_status"
    QUEUE: ClassVar[Queue] = "events"
    sha: str
    context: str
    state: str
    description: str
    target_url: str | None
    seq: int
    details: Mapping[str, Any] | None = None
    build_id: str | None = None


@dataclass(frozen=True)
class ResendStatuses(_Task):
    """Periodic (beat): parked statuses that are due again."""

    NAME: ClassVar[str] = "layering.resend_statuses"
    QUEUE: ClassVar[Queue] = "events"


@dataclass(frozen=True)
class ReportBuild(_Task):
    """`link` of "layering.build": Celery calls it as (record, sha, scope)."""

    NAME: ClassVar[str] = "layering.report_build"
    QUEUE: ClassVar[Queue] = "events"
    POSITIONAL: ClassVar[bool] = True
    sha: str
    scope: str


@dataclass(frozen=True)
class ReportBuildError(_Task):
    """`link_error` of "layering.build": Celery calls it as (task_id, sha, image, cluster,
    build_id)."""

    NAME: ClassVar[str] = "layering.report_build_error"
    QUEUE: ClassVar[Queue] = "events"
    POSITIONAL: ClassVar[bool] = True
    sha: str
    image: str
    cluster: str
    build_id: str


# -- builds ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Build(_Task):
    """Build one (image, cluster) at a commit. `source`: a Git repository on the worker's disk
    holding `commit_sha` (the mirror), or a checkout directory with `commit_sha=None`."""

    NAME: ClassVar[str] = "layering.build"
    QUEUE: ClassVar[Queue] = "builds"
    source: str
    commit_sha: str | None
    image: str
    cluster: str
    build_key: str | None = None
    build_id: str | None = None
    # the commit whose checks show this build (a head's build): the task reports it started
    # there, and its image changes once analysed; None for promotion and sweep builds
    status_sha: str | None = None


@dataclass(frozen=True)
class RefreshBuildCheck(_Task):
    """The build check of `build_id` on commit `sha` drawn again from its record (its image
    changes were added after it finished)."""

    NAME: ClassVar[str] = "layering.refresh_build_check"
    QUEUE: ClassVar[Queue] = "events"
    build_id: str
    sha: str


@dataclass(frozen=True)
class SweepBuilds(_Task):
    """Periodic (beat): deliver again the builds whose worker vanished (lease expired)."""

    NAME: ClassVar[str] = "layering.sweep_builds"
    QUEUE: ClassVar[Queue] = "events"


# -- promotion ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Promote(_Task):
    NAME: ClassVar[str] = "layering.promote"
    QUEUE: ClassVar[Queue] = "promotions"
    commit_sha: str
    environment: str


@dataclass(frozen=True)
class PromoteDownstream(_Task):
    """A digest verified on a cluster of env/<upstream>: open or update the promotion pull
    request of `environment` (env/<environment> merged with env/<upstream>; pull-request mode)."""

    NAME: ClassVar[str] = "layering.promote_downstream"
    QUEUE: ClassVar[Queue] = "promotions"
    environment: str
    upstream: str


@dataclass(frozen=True)
class Gate(_Task):
    NAME: ClassVar[str] = "layering.gate"
    QUEUE: ClassVar[Queue] = "promotions"
    head_sha: str
    base_environment: str
    pr_number: int
    head_ref: str = ""  # a promotion pull request (`layering/promote/<environment>`) may auto-merge


@dataclass(frozen=True)
class WatchRollout(_Task):
    NAME: ClassVar[str] = "layering.watch_rollout"
    QUEUE: ClassVar[Queue] = "promotions"
    commit_sha: str
    environment: str
    cluster: str
    started_at: float | None = None


@dataclass(frozen=True)
class ReconcilePromotions(_Task):
    """Periodic (beat): promote again the environments whose wait is over, and finish the
    post-push steps a promotion left pending (core/reconcile.py, core/post_push.py)."""

    NAME: ClassVar[str] = "layering.reconcile_promotions"
    QUEUE: ClassVar[Queue] = "promotions"


@dataclass(frozen=True)
class BaseDrift(_Task):
    """Periodic (beat): compare each watched cluster's base image with cluster.yaml."""

    NAME: ClassVar[str] = "layering.base_drift"
    QUEUE: ClassVar[Queue] = "promotions"


@dataclass(frozen=True)
class Upgrade(_Task):
    """Build ahead of a cluster upgrade (flows/upgrade.py): the node OS image of `release` as
    `cluster`'s new base, through a pull request bumping its baseImage. Queue promotions: it
    writes a branch of the watched repository, as promotions do, under the same branch lock."""

    NAME: ClassVar[str] = "layering.upgrade"
    QUEUE: ClassVar[Queue] = "promotions"
    cluster: str
    release: str
    os_tag: str | None = None


ALL: tuple[type[_Task], ...] = (
    HandlePush,
    HandlePullRequest,
    OkToTest,
    Retest,
    ClosePullRequest,
    ReportStatus,
    ResendStatuses,
    ReportBuild,
    ReportBuildError,
    Build,
    RefreshBuildCheck,
    SweepBuilds,
    Promote,
    PromoteDownstream,
    Gate,
    WatchRollout,
    BaseDrift,
    ReconcilePromotions,
    Upgrade,
)
# Event tasks accept `enqueued_at` (the queue-latency metric); the receiver stamps it.
STAMPED = frozenset(
    task.NAME for task in ALL if "enqueued_at" in {f.name for f in dataclasses.fields(task)}
)
