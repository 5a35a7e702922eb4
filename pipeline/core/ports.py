"""The ports: Protocols the flows depend on. Adapters implement them; tests hand in small fakes
(the unit tests of each flow) or the real adapters. No I/O.

One section per concern; a flow imports this module and the core types, never an adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

from pipeline.core import (
    approval,
    builds,
    commit_status,
    drift,
    gate,
    head,
    head_lint,
    poison,
    ports_gate,
    post_push,
    promotion_commit,
    reconcile,
    repo,
    rollout,
    tasks,
    verification,
)

# -- shared by every flow -------------------------------------------------------------------


class StatusReporter(Protocol):
    """Commit statuses, all through one path: each is queued with a sequence number (a newer
    status of the same (sha, context) wins) and delivered by "layering.report_status", which
    retries and parks it when GitHub will not take it (adapters/status_queue.py)."""

    def report(self, sha: str, status: commit_status.Status) -> None: ...


class TaskQueue(Protocol):
    """Sends tasks of the contract in core/tasks.py (adapters/task_queue.py)."""

    def send(
        self,
        call: tasks.TaskCall,
        *,
        on_success: tasks.TaskCall | None = None,
        on_error: tasks.TaskCall | None = None,
    ) -> None: ...

    def revoke(self, task_id: str) -> None: ...


# -- build: one (image, cluster) build (flows/build.py) -------------------------------------

# where a build's output goes, one line at a time (the record's log, a terminal)
LineSink = Callable[[str], None]


class SourceLoader(Protocol):
    """The inputs of one build (adapters/source.py): `source` as it is on disk, or at
    `commit_sha` when given (fetched into the worker's mirror first if it is missing there)."""

    def checkout(
        self, source: Path, *, image: str, commit_sha: str | None
    ) -> AbstractContextManager[builds.Checkout]: ...


class ImageBuilder(Protocol):
    """buildah (adapters/buildah.py)."""

    def build(self, spec: builds.BuildSpec, *, on_line: LineSink) -> str:
        """Build `spec` and tag it `spec.target`; returns the local image id."""

    def push(self, spec: builds.BuildSpec, *, on_line: LineSink) -> str:
        """Push `spec.target`; returns the manifest digest the registry stored."""

    def discard(self, spec: builds.BuildSpec, *, on_line: LineSink) -> None:
        """Drop the local copy of a pushed image (after its record is saved)."""

    def has_entitlement(self) -> bool:
        """Whether the RHEL entitlement certificates are on this machine to mount."""


class RegistryReader(Protocol):
    """skopeo (adapters/registry.py)."""

    def digest_of(self, reference: str) -> str | None:
        """The manifest digest of `reference` (a tag, or a digest: is it still served?), None
        when the registry does not serve it."""

    def image_of(self, reference: str) -> builds.RegistryImage | None:
        """The manifest digest and config labels of `reference`, None when it does not exist."""


class BuiltImages(Protocol):
    """What each build recorded it pushed, per (build key, repository)
    (adapters/build_records.py BuildStore): the digest promotion takes."""

    def record_built(self, built: builds.BuiltImage) -> None: ...

    def built(self, build_key: str, repository: str) -> builds.BuiltImage | None: ...


class BuildRecords(Protocol):
    """Build records and their logs (adapters/build_records.py; in memory for the CLI)."""

    def get(self, build_id: str) -> builds.BuildRecord | None: ...

    def save(self, record: builds.BuildRecord) -> None: ...

    def append_log(self, build_id: str, line: str) -> None: ...


class KeyLocks(Protocol):
    """One build per build key at a time (a Redis lock; free in a single process)."""

    def hold(self, build_key: str, *, on_wait: Callable[[], None]) -> AbstractContextManager[None]:
        """Hold the lock of one build key, calling `on_wait` first if another holder has it."""


class HeldLease(Protocol):
    """A running build's lease (adapters/leases.py); lost: it stops, its record untouched."""

    def held(self) -> bool: ...


class BuildLeases(Protocol):
    """Expired leases for the sweep; `claim` removes one still expired (else None)."""

    def expired(self) -> list[builds.BuildLease]: ...
    def claim(self, build_id: str) -> builds.BuildLease | None: ...


class Redelivery(Protocol):
    """`restore`: put a task's unacknowledged message back on its queue (adapters/redelivery)."""

    def restore(self, task_id: str) -> bool: ...


# -- head: what a push, pull request, /ok-to-test or close does (flows/head.py, history.py) --


class GitHistory(Protocol):
    """A Git repository's commits and trees, read only (adapters/git.py GitRepo). Unknown
    revisions raise InputError naming them."""

    def resolve(self, rev: str) -> str: ...

    def is_ancestor(self, a: str, b: str) -> bool: ...

    def merge_base(self, a: str, b: str) -> str | None: ...

    def changed_paths(
        self, a: str, b: str, *, prefixes: Collection[str] | None = None
    ) -> list[str]: ...

    def listing(
        self, rev: str, *, images: Collection[str] | None = None, machineconfigs: bool = True
    ) -> repo.TreeListing: ...


class Mirror(Protocol):
    """The worker's bare mirror of the GitOps repository (adapters/mirror_source.py)."""

    @property
    def source(self) -> str:
        """Its path on the worker's disk: the `source` of "layering.build"."""

    def fetch(self, *refs: str) -> AbstractContextManager[GitHistory]:
        """Fetch `refs` (none: everything) and open the mirror for reading."""


class HeadStore(Protocol):
    """Heads of branches and pull requests (adapters/head_store.py; `claim`, `record_builds`:
    head.claim, head.with_builds, atomic) and each commit's lint findings, for the build page."""

    def claim(
        self, scope: str, sha: str, enqueued_at: float, *, closed: bool = False
    ) -> tuple[bool, head.Head | None]:
        """(claimed, the previous head)."""

    def record_builds(
        self, scope: str, sha: str, builds: Sequence[head.HeadBuild]
    ) -> head.Head | None:
        """None once recorded; else the newer head that took the scope meanwhile."""

    def timeline(self, scope: str) -> Sequence[approval.Seen]:
        """When each head of `scope` arrived (core/approval.py: what /ok-to-test approves)."""

    def record_lint(self, sha: str, findings: head_lint.ByImage) -> None: ...


class HeadLinter(Protocol):
    """Plans and lints one head of the mirror (adapters/sandboxed_lint.py: in a subprocess
    under CPU-time and memory limits). Stopped when it did not answer; an error of the read
    itself (an unknown revision) is raised as the PipelineError it was."""

    def lint(self, request: head_lint.Request) -> head_lint.Reading | head_lint.Stopped: ...


class QueuedBuilds(Protocol):
    """The build records an event creates before it sends their builds, and cancels
    (adapters/build_records.py BuildStore)."""

    def create_queued(
        self, *, image: str, cluster: str, commit_sha: str = "", build_key: str = ""
    ) -> builds.BuildRecord: ...

    def get(self, build_id: str) -> builds.BuildRecord | None: ...

    def save(self, record: builds.BuildRecord) -> None: ...

    def request_cancel(self, build_id: str) -> None: ...


class PullRequests(Protocol):
    """GitHub's view of pull requests and collaborators (adapters/github.py)."""

    def can_write(self, user: str) -> bool: ...

    def pull_head(self, number: int) -> head.PullHead: ...

    def comment(self, number: int, text: str) -> None: ...


class EventMetrics(Protocol):
    """Histograms for /metrics (adapters/event_metrics.py): best effort, never raises. Build
    durations are counted where a record is saved finished (BuildStore.save)."""

    def queue_latency(self, seconds: float) -> None: ...


# -- poison messages: tasks whose worker kept dying (workers/app.py, flows/poison.py) --------


class ParkedTasks(Protocol):
    """Tasks parked instead of run again (adapters/poison.py)."""

    def park(self, parked: poison.ParkedTask) -> None: ...


# -- status delivery: "layering.report_status" and "layering.resend_statuses" ----------------


class StatusPoster(Protocol):
    """Posts one commit status to GitHub (adapters/github.py): TemporaryError (rate limit, 5xx,
    refused credentials) is worth retrying, PermanentError is not."""

    def set_status(
        self,
        sha: str,
        *,
        context: str,
        state: commit_status.State,
        description: str,
        target_url: str | None,
    ) -> None: ...


class ParkedStatusStore(Protocol):
    """Statuses GitHub did not take, kept until resent (adapters/parked_statuses.py)."""

    def park(self, status: commit_status.ParkedStatus, *, due: float) -> bool: ...

    def due(self, now: float, *, limit: int = 100) -> list[commit_status.ParkedStatus]: ...

    def reschedule(self, status: commit_status.ParkedStatus, *, due: float) -> bool: ...

    def remove(self, status: commit_status.ParkedStatus) -> bool: ...

    def latest_seq(self, sha: str, context: str) -> int | None:
        """The sequence number of the newest status queued for (sha, context)."""

    def sending(self) -> AbstractContextManager[bool]:
        """Held while parked statuses are resent; False when another run already sends."""


# -- promotion: promote, gate, rollout watch, base drift ------------------------------------
# (flows/promote.py, gate.py, rollout_watch.py, drift.py; digests: RegistryReader, above)


class BranchWriter(Protocol):
    """One commit to a shared branch (adapters/branch_writer.py): asks `change_for` what to
    change at the branch's current head, commits once and pushes; a push race asks again at
    the new head. A change that is None or empty commits nothing."""

    def write(
        self, branch: str, change_for: promotion_commit.ChangeFor
    ) -> promotion_commit.WriteResult: ...


class PromotionRequests(Protocol):
    """Promotion pull requests (pull-request mode, GitHub; adapters/github.py): one open pull
    request per environment, from `layering/promote/<environment>` into `env/<environment>`."""

    def merge(self, number: int, *, head_sha: str) -> bool:
        """Merge pull request `number` if its head is still `head_sha`; False when GitHub
        refuses (not mergeable, head moved, checks missing)."""

    def close(self, environment: str, *, reason: str) -> None:
        """Close the environment's open promotion pull request, if any, saying why."""


class EnvBranches(Protocol):
    """The GitOps repository as the promotion stage reads it (adapters/env_branches.py: the
    worker's bare mirror, fetched as needed)."""

    def at_commit(self, commit_sha: str, *, branch: str) -> repo.Repository:
        """The repository at `commit_sha`, fetching `branch` first when it is not there yet."""

    def at_branch(self, branch: str) -> repo.Repository:
        """The repository at the head of `branch`, freshly fetched."""

    def pull_request_merge(self, head_sha: str, *, branch: str, pr_number: int) -> gate.MergeResult:
        """What merging pull request `pr_number` (head `head_sha`) into `branch` gives."""


class ClusterReader(Protocol):
    """One cluster's Machine Config Operator (adapters/kube.py KubeCluster)."""

    def watch_rollout(
        self,
        pool: str,
        *,
        expected_os_image_url: str,
        timeout: float,
        on_change: Callable[[rollout.RolloutState], None],
    ) -> rollout.RolloutState:
        """Follow `pool` until Updated or Degraded, or `timeout` seconds (then its last state,
        still Updating); `on_change` sees every distinct state."""

    def base_image(self) -> drift.BaseImage | None:
        """The MCO's ConfigMap machine-config-osimageurl; None when it does not exist."""

    def running(self, pool: str) -> rollout.Running | None:
        """What `pool` runs now (its target rendered config's osImageURL, and whether it is
        settled there); None when the pool does not exist."""


class Clusters(Protocol):
    """Opens a ClusterReader for a kube context (adapters/kube.py KubeClusters); PermanentError
    for a context the kubeconfig does not have."""

    def connect(self, context: str) -> AbstractContextManager[ClusterReader]: ...


class PromotionStore(ports_gate.GatePasses, Protocol):
    """What the promotion stage remembers (adapters/promotion_store.py, Redis)."""

    def record_verification(self, proven: verification.Verification) -> bool:
        """True if it changes what the store said; the first healthy one stands (soak from it)."""

    def verifications(
        self, clusters: Collection[str]
    ) -> dict[tuple[str, str], verification.Verification]: ...

    def record_promoted(self, promoted: verification.Promoted) -> None: ...

    def forget_promoted(self, cluster: str, pool: str) -> None: ...

    def record_rollout(self, record: rollout.RolloutRecord) -> None: ...

    def rolling_out(self, clusters: Collection[str]) -> set[tuple[str, str]]: ...

    def record_drift(self, checked: drift.Drift) -> None: ...

    def watch_gate(self, watched: gate.WatchedGate) -> None: ...

    def unwatch_gate(self, environment: str, pr_number: int) -> None: ...

    def watched_gates(self) -> list[gate.WatchedGate]: ...


class BuildActivity(Protocol):
    """Build keys with a build queued or running (adapters/promotion_waits.py)."""

    def underway(self, build_keys: Collection[str]) -> dict[str, reconcile.BuildUnderway]: ...


class PromotionWaits(Protocol):
    """What promotions wait for, and the follow-ups of promotions that landed
    (adapters/promotion_waits.py, Redis; kept until done: core/reconcile.py, core/post_push.py)."""

    def record_wait(self, wait: reconcile.EnvironmentWait) -> None: ...

    def clear_wait(self, environment: str) -> None: ...

    def waits(self) -> list[reconcile.EnvironmentWait]: ...

    def save_post_push(self, record: post_push.PostPush) -> None: ...

    def remove_post_push(self, environment: str, base_head: str) -> None: ...

    def post_pushes(self, environment: str | None = None) -> list[post_push.PostPush]: ...
