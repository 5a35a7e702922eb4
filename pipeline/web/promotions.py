"""What the dashboard shows of promotions: per environment, the pools of its clusters (promoted
digest, verification, rollout, base) and the base drift of each cluster, as view models; and
`RepositoryPromotions`, which reads them from the env/<environment> branches of the configured
repository and from the promotion records. Does I/O: Git (a mirror of its own under
LAYERING_WORKDIR, opened once and fetched at most every few seconds) and Redis (through the
`PromotionRecords` it is given); pipeline/core/pool_status.py turns the records into rows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Protocol

from pipeline.adapters import git as gitadapter
from pipeline.core import drift, pipeline_view, pool_status, repo
from pipeline.core.errors import InputError, PipelineError
from pipeline.core.settings import Settings

FETCH_INTERVAL_SECONDS = 5.0
MODELS_KEPT = 16


@dataclass(frozen=True)
class PoolRow:
    cluster: str
    pool: str
    image: str
    digest: str
    verification: str
    rollout: str
    base: str


@dataclass(frozen=True)
class EnvironmentView:
    environment: str
    branch: str
    head: str  # "" when the branch does not exist yet
    pools: tuple[PoolRow, ...]


@dataclass(frozen=True)
class DriftRow:
    cluster: str
    expected: str
    actual: str
    release_version: str
    state: str  # "matches" | "drift" | "unknown: …"
    checked_at: float

    @property
    def badge(self) -> str:
        """The state's CSS class suffix: "matches", "drift" or "unknown"."""
        return self.state.split(":")[0]


@dataclass(frozen=True)
class PromotionsView:
    environments: tuple[EnvironmentView, ...] = ()
    drift: tuple[DriftRow, ...] = ()
    problem: str = ""  # why nothing could be read


class PromotionSource(Protocol):
    def view(self) -> PromotionsView: ...


class PromotionRecords(Protocol):
    """What the dashboard reads of the promotion store (pipeline/adapters/promotion_store.py)."""

    def pool_records(self, clusters: Collection[str]) -> pool_status.PoolRecords: ...

    def drift(self) -> Mapping[str, drift.Drift]: ...


class RepositoryPromotions:
    """PromotionsView from the configured repository's env branches and the promotion records.

    Safe to share between threads: the mirror is used by one request at a time."""

    def __init__(
        self,
        settings: Settings,
        *,
        records: PromotionRecords,
        clock: Callable[[], float] = time.time,
        fetch_interval: float = FETCH_INTERVAL_SECONDS,
    ) -> None:
        self._repo_url = settings.repo_url
        self._default_branch = settings.default_branch
        self._mirror_path = settings.workdir / "dashboard" / "mirror.git"
        self._records = records
        self._clock = clock
        self._fetch_interval = fetch_interval
        self._lock = threading.Lock()
        self._fetched_at = float("-inf")
        self._mirror: gitadapter.GitRepo | None = None
        self._models: dict[str, repo.Repository] = {}  # commit -> its model (immutable)

    def view(self) -> PromotionsView:
        try:
            drift_table = drift_rows(self._records.drift())
        except PipelineError as exc:
            return PromotionsView(problem=str(exc))
        if not self._repo_url:
            return PromotionsView(drift=drift_table, problem="LAYERING_REPO_URL is not set")
        try:
            environments = self._environments(self._repo_url)
        except PipelineError as exc:
            return PromotionsView(drift=drift_table, problem=str(exc))
        return PromotionsView(environments=environments, drift=drift_table)

    def close(self) -> None:
        with self._lock:
            if self._mirror is not None:
                self._mirror.close()
                self._mirror = None

    def _environments(self, repo_url: str) -> tuple[EnvironmentView, ...]:
        with self._lock:
            return self._read(self._fetched(repo_url))

    def _fetched(self, repo_url: str) -> gitadapter.GitRepo:
        """The mirror, fetched at most every fetch_interval; call under the lock."""
        if self._mirror is None:
            # cloned on first use, not at start-up: the service starts while the
            # repository is unreachable, and the page says why until it is reachable
            self._mirror = gitadapter.GitRepo.ensure_mirror(self._mirror_path, repo_url)
        if time.monotonic() - self._fetched_at >= self._fetch_interval:
            self._mirror.fetch()
            self._fetched_at = time.monotonic()
        return self._mirror

    def models(self) -> tuple[repo.Repository | None, dict[str, repo.Repository | None]]:
        """The default branch's model and each environment's at env/<environment>'s head
        (None: no such branch), for the pipeline view; each commit is parsed once and kept."""
        if not self._repo_url:
            raise InputError("LAYERING_REPO_URL is not set: no repository to show")
        with self._lock:
            mirror = self._fetched(self._repo_url)
            default = gitadapter.branch_commit(mirror, self._default_branch)
            if default is None:
                return None, {}
            model = self._load(mirror, default)
            branches: dict[str, repo.Repository | None] = {}
            for environment in environment_order(model):
                sha = gitadapter.branch_commit(mirror, f"env/{environment}")
                branches[environment] = self._load(mirror, sha) if sha else None
            return model, branches

    def _load(self, mirror: gitadapter.GitRepo, sha: str) -> repo.Repository:
        cached = self._models.get(sha)
        if cached is None:
            if len(self._models) >= MODELS_KEPT:
                self._models.pop(next(iter(self._models)))
            cached = self._models[sha] = mirror.load(sha)
        return cached

    def _read(self, mirror: gitadapter.GitRepo) -> tuple[EnvironmentView, ...]:
        default = gitadapter.branch_commit(mirror, self._default_branch)
        if default is None:
            return ()
        model = mirror.load(default)
        views: list[EnvironmentView] = []
        for environment in environment_order(model):
            branch = f"env/{environment}"
            head = gitadapter.branch_commit(mirror, branch)
            at_head = mirror.load(head) if head else model
            pools = tuple(
                PoolRow(
                    cluster=row["cluster"],
                    pool=row["pool"],
                    image=row["image"],
                    digest=row["digest"],
                    verification=row["verification"],
                    rollout=row["rollout"],
                    base=row["base"],
                )
                for row in pool_status.status_rows(
                    at_head, self._records.pool_records(at_head.clusters), now=self._clock()
                )
                if row["environment"] == environment
            )
            views.append(EnvironmentView(environment, branch, head or "", pools))
        return tuple(views)


environment_order = pipeline_view.environment_order


def drift_rows(checks: Mapping[str, drift.Drift]) -> tuple[DriftRow, ...]:
    rows = []
    for cluster, checked in sorted(checks.items()):
        if checked.error:
            state = f"unknown: {checked.error}"
        else:
            state = "drift" if checked.drifted else "matches"
        rows.append(
            DriftRow(
                cluster,
                checked.expected,
                checked.actual,
                checked.release_version,
                state,
                checked.checked_at,
            )
        )
    return tuple(rows)
