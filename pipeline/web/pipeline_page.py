"""The pipeline view at `/` (the dashboard's home page) and `/api/pipeline` (the same model as
JSON, bounded), drawn by pipeline/core/pipeline_view.py from what `StoredPipeline` reads: the
repository's default branch and env/<environment> branches (through the dashboard's mirror,
promotions.RepositoryPromotions), the promotion records and waits, the heads and their build
records, all in Redis. Each read that fails becomes a line on the page, never an error page.
The page's inline script polls /api/pipeline and updates the cells' text in place; without
JavaScript the page is complete as served. Does I/O only through the adapters it is given.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from fastapi import APIRouter
from fastapi.responses import Response

from pipeline.adapters import build_records, head_store, promotion_store, promotion_waits
from pipeline.core import (
    head,
    head_lint,
    pipeline_heads,
    pipeline_view,
    pool_status,
    repo,
    verification,
)
from pipeline.core.errors import PipelineError
from pipeline.web import dashboard

POLL_SECONDS = 3
# scopes read from the head store: more than MAX_HEADS, as closed pull requests are skipped
HEADS_READ = 4 * pipeline_heads.MAX_HEADS
IMAGES_KEPT = 16

T = TypeVar("T")


class PipelineSource(Protocol):
    def inputs(self) -> pipeline_view.Inputs: ...


class Models(Protocol):
    """promotions.RepositoryPromotions: the default branch's model and each environment's."""

    def models(self) -> tuple[repo.Repository | None, dict[str, repo.Repository | None]]: ...


class StoredPipeline:
    """A PipelineSource over the real adapters, each built once per process by server.py."""

    def __init__(
        self,
        *,
        models: Models,
        records: promotion_store.PromotionStore,
        waits: promotion_waits.PromotionWaits,
        heads: head_store.RedisHeadStore,
        builds: build_records.BuildStore,
        pull_url: str = "",
        verifying: bool = True,
    ) -> None:
        """`verifying`: the records were opened with LAYERING_VERIFICATION_KEY (without it no
        verification is trusted, and the cells say so instead of "not verified")."""
        self._models = models
        self._records = records
        self._waits = waits
        self._heads = heads
        self._builds = builds
        self._pull_url = pull_url
        self._verifying = verifying
        # what each env branch's MachineConfigs set, parsed once per commit: the Models keep
        # one object per commit, so its identity names the commit (the object is held too)
        self._images: dict[int, tuple[repo.Repository, dict[tuple[str, str], str]]] = {}
        self._lock = threading.Lock()

    def inputs(self) -> pipeline_view.Inputs:
        problems: list[str] = []

        def read(what: str, action: Callable[[], T], empty: T) -> T:
            try:
                return action()
            except PipelineError as exc:
                problems.append(f"{what} unknown: {exc}")
            except (ValueError, TypeError, KeyError) as exc:  # a stored document malformed
                problems.append(f"{what} unknown: a stored record is unreadable ({exc!r})")
            return empty

        no_models: tuple[repo.Repository | None, dict[str, repo.Repository | None]] = (None, {})
        model, branches = read("the repository", self._models.models, no_models)
        images = self._branch_images(branches)
        clusters = sorted(model.clusters) if model is not None else []
        if not self._verifying:
            problems.append(
                "verifications unknown: LAYERING_VERIFICATION_KEY is not set, so none is trusted"
            )
        unread = pool_status.PoolRecords()
        records = read(
            "verifications and rollouts", lambda: self._pool_records(clusters, images), unread
        )
        no_heads: dict[str, head.Head] = {}
        heads = read("the heads", lambda: self._heads.heads(limit=HEADS_READ), no_heads)
        # the records of the builds the page shows: the newest heads' first builds
        newest = sorted(
            (current for current in heads.values() if not current.closed),
            key=lambda current: -current.enqueued_at,
        )[: pipeline_heads.MAX_HEADS]
        wanted = list(
            dict.fromkeys(
                queued.build_id
                for current in newest
                for queued in current.builds[: pipeline_heads.MAX_HEAD_BUILDS]
            )
        )
        return pipeline_view.Inputs(
            repository=model,
            branches=images,
            records=records,
            waits=read("promotion waits", self._waits.waits, []),
            gates=read("gates", self._records.watched_gates, []),
            gate_passes=read("gates", self._records.gate_passes, []),
            post_pushes=read("promotion pull requests", self._waits.post_pushes, []),
            heads=heads,
            builds=read("builds", lambda: self._builds.records(wanted), {}),
            lint=read("lint findings", lambda: self._lint(newest), {}),
            pull_url=self._pull_url,
            problems=tuple(problems),
            records_read=records is not unread and self._verifying,
        )

    def _lint(self, newest: list[head.Head]) -> dict[tuple[str, str], head_lint.Stored]:
        """The lint findings of the images the newest heads build, by (commit, image)."""
        found: dict[tuple[str, str], head_lint.Stored] = {}
        for current in newest:
            images = {b.image for b in current.builds[: pipeline_heads.MAX_HEAD_BUILDS]}
            images.update(self._heads.held(current.sha))  # no build: its lint errors
            for image, kept in self._heads.lint_of(current.sha, images).items():
                found[(current.sha, image)] = kept
        return found

    def _pool_records(
        self, clusters: list[str], images: Mapping[str, Mapping[tuple[str, str], str]]
    ) -> pool_status.PoolRecords:
        """Promoted images and rollouts of `clusters`, and the verifications of only the
        digests they run (their hashes keep every digest ever verified)."""
        promoted = {cluster: self._records.promoted(cluster) for cluster in clusters}
        running: dict[str, set[str]] = {cluster: set() for cluster in clusters}
        for cluster, pools in promoted.items():
            running[cluster] |= {record.digest for record in pools.values() if record.digest}
        for urls in images.values():
            for (cluster, _), url in urls.items():
                if cluster in running and url:
                    running[cluster].add(verification.digest_of(url))
        return pool_status.PoolRecords(
            verifications=self._records.verifications_of(running),
            promoted=promoted,
            rollouts={cluster: self._records.rollouts(cluster) for cluster in clusters},
        )

    def _branch_images(
        self, branches: Mapping[str, repo.Repository | None]
    ) -> dict[str, Mapping[tuple[str, str], str]]:
        found: dict[str, Mapping[tuple[str, str], str]] = {}
        with self._lock:
            for environment, model in branches.items():
                if model is None:
                    continue
                kept = self._images.get(id(model))
                if kept is None or kept[0] is not model:
                    if len(self._images) >= IMAGES_KEPT:
                        self._images.pop(next(iter(self._images)))
                    kept = self._images[id(model)] = (model, pipeline_view.branch_images(model))
                found[environment] = kept[1]
        return found


def pull_url(github_repo_name: str | None) -> str:
    return f"https://github.com/{github_repo_name}/pull/" if github_repo_name else ""


_UNCONFIGURED = pipeline_view.PipelineView(
    problems=("The pipeline view is not configured (no repository or Redis given).",)
)


def router(source: PipelineSource | None, *, clock: Callable[[], float] = time.time) -> APIRouter:
    """`/` (HTML) and `/api/pipeline` (JSON): the same PipelineView."""
    routes = APIRouter()

    def current() -> pipeline_view.PipelineView:
        if source is None:
            return _UNCONFIGURED
        return pipeline_view.build(source.inputs(), now=clock())

    @routes.get("/")
    def page() -> Response:
        nonce = secrets.token_urlsafe(16)
        text = dashboard.render(
            "pipeline.html.j2",
            title="layering: pipeline",
            nonce=nonce,
            view=current(),
            poll_ms=POLL_SECONDS * 1000,
        )
        return dashboard.html_response(text, nonce=nonce)

    @routes.get("/api/pipeline")
    def document() -> Response:
        return json_response(current().to_json())

    return routes


def json_response(document: Mapping[str, Any]) -> Response:
    return Response(
        json.dumps(document, separators=(",", ":")),
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
