"""Celery tasks that handle webhook events (queue `events`): mirror fetch -> plan (from the Git
history) -> lint -> fan out "layering.build" -> commit statuses; supersede older heads; post
statuses with retries. Does I/O (Git, Redis, GitHub, Celery).

Task names and arguments (the receiver enqueues them by name, see pipeline/events.py):

- "layering.handle_push"(branch, before, after, forced, enqueued_at=None)
- "layering.handle_pull_request"(number, head_sha, head_ref, base_ref, from_fork, enqueued_at=None)
- "layering.ok_to_test"(number, user, enqueued_at=None)
- "layering.report_status"(sha, context, state, description, target_url, seq): one commit
  status, retried on TemporaryError (rate limits, 5xx) with back-off; skipped when a newer
  status for the same (sha, context) was queued meanwhile.
- "layering.report_build"(record, sha, scope): link of "layering.build": its final status.
- "layering.report_build_error"(task_id, sha, image, cluster, build_id): link_error of it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import redis
from celery import Celery, Task

from pipeline import builds, events, lint, planning, reporting
from pipeline.adapters import git as gitadapter
from pipeline.adapters import github, metrics, store
from pipeline.errors import TemporaryError
from pipeline.settings import Settings
from workers import tasks as build_tasks
from workers.app import BUILDS_QUEUE, EVENTS_QUEUE, app, settings_of

log = logging.getLogger(__name__)

REPORT_STATUS_TASK = "layering.report_status"
REPORT_BUILD_TASK = "layering.report_build"
REPORT_BUILD_ERROR_TASK = "layering.report_build_error"
HEAD_PREFIX = "layering:head:"
STATUS_SEQ_PREFIX = "layering:status-seq:"
HEAD_TTL_SECONDS = 14 * 24 * 3600
STATUS_SEQ_TTL_SECONDS = 3 * 24 * 3600
STATUS_MAX_RETRIES = 30  # ~4 hours of back-off before a status is given up


def _redis(settings: Settings) -> redis.Redis[bytes]:
    return redis.Redis.from_url(
        settings.redis_url.get_secret_value(), socket_timeout=30, socket_connect_timeout=10
    )


def mirror_path(settings: Settings, url: str) -> Path:
    """One bare mirror per repository URL under the workdir."""
    return gitadapter.mirror_path(settings.workdir, url)


def _open_mirror(settings: Settings, *refs: str) -> gitadapter.GitRepo:
    if not settings.repo_url:
        raise TemporaryError("LAYERING_REPO_URL is not set: no repository to fetch", retry_after=60)
    mirror = gitadapter.GitRepo.ensure_mirror(
        mirror_path(settings, settings.repo_url), settings.repo_url
    )
    mirror.fetch(*refs)
    return mirror


# -- statuses -------------------------------------------------------------------------------


def queue_status(
    celery_app: Celery, settings: Settings, sha: str, status: reporting.Status
) -> None:
    """Queue one commit status; a later call for the same (sha, context) wins over an earlier
    one that is still waiting for a retry."""
    client = _redis(settings)
    key = f"{STATUS_SEQ_PREFIX}{sha}:{status.context}"
    with client.pipeline() as pipe:
        pipe.incr(key)
        pipe.expire(key, STATUS_SEQ_TTL_SECONDS)
        seq = int(pipe.execute()[0])
    celery_app.send_task(
        REPORT_STATUS_TASK,
        args=[sha, status.context, status.state, status.description, status.target_url, seq],
        queue=EVENTS_QUEUE,
    )


@app.task(name=REPORT_STATUS_TASK, bind=True, queue=EVENTS_QUEUE, max_retries=STATUS_MAX_RETRIES)  # type: ignore[untyped-decorator]
def report_status(
    self: Task,
    sha: str,
    context: str,
    state: reporting.State,
    description: str,
    target_url: str | None,
    seq: int,
) -> str:
    settings = settings_of(self.app)
    latest = _redis(settings).get(f"{STATUS_SEQ_PREFIX}{sha}:{context}")
    if latest is not None and int(latest) > seq:
        return "superseded"
    client = github.GitHubClient.from_settings(settings)
    if client is None:
        log.info("no GitHub credentials: status %s=%s on %s not posted", context, state, sha[:12])
        return "no-github"
    try:
        client.set_status(
            sha, context=context, state=state, description=description, target_url=target_url
        )
    except TemporaryError as exc:
        # at least the server's Retry-After / rate-limit reset, at most an hour
        backoff = min(600.0, 2.0 ** int(self.request.retries or 0))
        raise self.retry(exc=exc, countdown=max(min(exc.retry_after, 3600.0), backoff)) from None
    finally:
        client.close()
    return "posted"


# -- heads and supersede --------------------------------------------------------------------


def _head_key(scope: str) -> str:
    return f"{HEAD_PREFIX}{scope}"


def _read_head(client: redis.Redis[bytes], scope: str) -> dict[str, Any] | None:
    raw = client.get(_head_key(scope))
    return json.loads(raw) if raw else None


def _claim_head(
    client: redis.Redis[bytes], scope: str, sha: str, enqueued_at: float
) -> tuple[bool, dict[str, Any] | None]:
    """Make `sha` the current head of `scope` unless a newer delivery already did.

    Returns (claimed, previous head document)."""
    key = _head_key(scope)
    with client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(key)
                raw = cast("bytes | None", pipe.get(key))
                previous = json.loads(raw) if raw else None
                if previous is not None and float(previous.get("enqueued_at", 0)) > enqueued_at:
                    pipe.unwatch()
                    return False, previous
                pipe.multi()
                document = {"sha": sha, "enqueued_at": enqueued_at, "builds": []}
                if previous is not None and previous.get("sha") == sha:
                    document["builds"] = previous.get("builds", [])
                pipe.set(key, json.dumps(document), ex=HEAD_TTL_SECONDS)
                pipe.execute()
                return True, previous
            except redis.WatchError:
                continue


def _record_head_builds(
    client: redis.Redis[bytes], scope: str, sha: str, head_builds: Sequence[reporting.HeadBuild]
) -> dict[str, Any] | None:
    """Add builds to the head document of `scope`; when a newer head took the scope while
    these were being queued, return its document instead (the caller cancels them)."""
    key = _head_key(scope)
    with client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(key)
                raw = cast("bytes | None", pipe.get(key))
                document = json.loads(raw) if raw else None
                if document is None or document.get("sha") != sha:
                    pipe.unwatch()
                    return document
                document["builds"] = [
                    *document.get("builds", []),
                    *(b.to_json() for b in head_builds),
                ]
                pipe.multi()
                pipe.set(key, json.dumps(document), ex=HEAD_TTL_SECONDS)
                pipe.execute()
                return None
            except redis.WatchError:
                continue


def _supersede(
    celery_app: Celery,
    settings: Settings,
    previous: dict[str, Any] | None,
    *,
    new_sha: str,
    new_keys: Sequence[str],
) -> None:
    if previous is None or previous.get("sha") == new_sha:
        return
    old_sha = str(previous["sha"])
    old_builds = [reporting.HeadBuild.from_json(b) for b in previous.get("builds", [])]
    build_store = store.BuildStore.from_settings(settings)
    for build in reporting.superseded_builds(old_builds, new_keys):
        record = build_store.get(build.build_id)
        if record is not None and record.state.terminal:
            continue
        celery_app.control.revoke(build.task_id, terminate=True, signal="SIGTERM")
        if record is not None:
            try:
                build_store.save(
                    builds.cancel(record, now=time.time(), reason=f"superseded by {new_sha}")
                )
            except builds.InvalidTransition:
                continue  # finished meanwhile: its own result is reported
        log.info("build %s of %s superseded by %s", build.build_id, old_sha[:12], new_sha[:12])
        queue_status(
            celery_app,
            settings,
            old_sha,
            reporting.superseded(
                build.context,
                by_sha=new_sha,
                target_url=reporting.log_url(settings.public_url, build.build_id),
            ),
        )


# Event tasks retry passing faults (Git fetch, Redis, GitHub) with jittered back-off.
_EVENT_TASK: dict[str, Any] = {
    "bind": True,
    "queue": EVENTS_QUEUE,
    "autoretry_for": (TemporaryError,),
    "retry_backoff": 5,
    "retry_jitter": True,
    "max_retries": 8,
}

# -- the event flow -------------------------------------------------------------------------


def _lint_findings(
    repository: Any, images: Sequence[str]
) -> dict[str, list[reporting.LintFinding]]:
    found: dict[str, list[reporting.LintFinding]] = {}
    for image in images:
        if image not in repository.images:
            continue
        found[image] = [
            reporting.LintFinding(f.id, str(f.severity), f.path, f.line)
            for f in lint.lint_image(repository, image)
        ]
    return found


def _observe_latency(settings: Settings, enqueued_at: float | None) -> None:
    if enqueued_at is not None:
        metrics.observe(
            _redis(settings),
            metrics.QUEUE_LATENCY,
            max(0.0, time.time() - enqueued_at),
            label="events",
        )


def handle_head(
    celery_app: Celery,
    settings: Settings,
    *,
    scope: str,
    from_rev: str,
    head_sha: str,
    branch: str | None,
    refs: Sequence[str],
    build: bool,
    enqueued_at: float,
) -> dict[str, Any]:
    """Plan, lint and build one head of a branch or pull request; returns a summary."""
    client = _redis(settings)
    claimed, previous = _claim_head(client, scope, head_sha, enqueued_at)
    if not claimed:
        return {"head": head_sha, "stale": True, "newer": previous.get("sha") if previous else None}
    with _open_mirror(settings, *refs) as mirror:
        plan = planning.plan_range(
            mirror,
            from_rev,
            head_sha,
            settings.default_branch,
            branch=branch,
            unknown_from="default-branch",
        )
        images = sorted(
            {target.image for target in plan.builds}
            | set(plan.changed_images) - set(plan.deleted_images)
        )
        if not plan.builds and not plan.problems and not images:
            _supersede(celery_app, settings, previous, new_sha=head_sha, new_keys=[])
            return {"head": head_sha, "builds": [], "note": plan.note or "nothing to build"}
        repository = mirror.load(head_sha)
    findings = _lint_findings(repository, images)
    problems = [reporting.LintFinding("LAY006", "error", p.path, p.line) for p in plan.problems]
    all_findings = problems + [f for image in images for f in findings.get(image, [])]
    queue_status(
        celery_app, settings, head_sha, reporting.lint_status(all_findings, fork=not build)
    )
    new_keys = [target.build_key for target in plan.builds]
    _supersede(celery_app, settings, previous, new_sha=head_sha, new_keys=new_keys if build else [])
    if not build:
        return {"head": head_sha, "builds": [], "note": "fork: lint only"}
    source = str(mirror_path(settings, settings.repo_url or ""))
    head_builds: list[reporting.HeadBuild] = []
    for target in plan.builds:
        if any(f.severity == "error" for f in findings.get(target.image, [])):
            queue_status(
                celery_app,
                settings,
                head_sha,
                reporting.not_built(
                    target.image, target.cluster, "lint errors (see layering/lint)"
                ),
            )
            continue
        record = build_tasks.create_build_record(
            settings,
            image=target.image,
            cluster=target.cluster,
            commit_sha=head_sha,
            build_key=target.build_key,
        )
        task_id = f"build-{record.id}"
        queue_status(
            celery_app,
            settings,
            head_sha,
            reporting.pending_build(
                target.image, target.cluster, build_id=record.id, public_url=settings.public_url
            ),
        )
        celery_app.send_task(
            build_tasks.BUILD_TASK,
            kwargs={
                "source": source,
                "commit_sha": head_sha,
                "image": target.image,
                "cluster": target.cluster,
                "build_key": target.build_key,
                "build_id": record.id,
            },
            queue=BUILDS_QUEUE,
            task_id=task_id,
            link=celery_app.signature(
                REPORT_BUILD_TASK, args=[head_sha, scope], queue=EVENTS_QUEUE
            ),
            link_error=celery_app.signature(
                REPORT_BUILD_ERROR_TASK,
                args=[head_sha, target.image, target.cluster, record.id],
                queue=EVENTS_QUEUE,
            ),
        )
        head_builds.append(
            reporting.HeadBuild(record.id, task_id, target.build_key, target.image, target.cluster)
        )
    newer = _record_head_builds(client, scope, head_sha, head_builds)
    if newer is not None and newer.get("sha"):
        mine = {"sha": head_sha, "builds": [b.to_json() for b in head_builds]}
        newer_keys = [str(b["build_key"]) for b in newer.get("builds", [])]
        _supersede(celery_app, settings, mine, new_sha=str(newer["sha"]), new_keys=newer_keys)
    return {"head": head_sha, "builds": [b.to_json() for b in head_builds]}


@app.task(
    name=events.HANDLE_PUSH_TASK,
    **_EVENT_TASK,
)  # type: ignore[untyped-decorator]
def handle_push(
    self: Task, branch: str, before: str, after: str, forced: bool, enqueued_at: float | None = None
) -> dict[str, Any]:
    settings = settings_of(self.app)
    _observe_latency(settings, enqueued_at)
    return handle_head(
        self.app,
        settings,
        scope=f"branch:{branch}",
        from_rev=before,
        head_sha=after,
        branch=branch,
        refs=(),
        build=True,
        enqueued_at=enqueued_at or time.time(),
    )


def _handle_pull(
    celery_app: Celery,
    settings: Settings,
    number: int,
    head_sha: str,
    base_ref: str,
    build: bool,
    enqueued_at: float | None,
) -> dict[str, Any]:
    return handle_head(
        celery_app,
        settings,
        scope=f"pr:{number}",
        from_rev=gitadapter.ZERO_SHA,
        head_sha=head_sha,
        branch=None,
        refs=(f"refs/pull/{number}/head", base_ref),
        build=build,
        enqueued_at=enqueued_at or time.time(),
    )


@app.task(
    name=events.HANDLE_PULL_REQUEST_TASK,
    **_EVENT_TASK,
)  # type: ignore[untyped-decorator]
def handle_pull_request(
    self: Task,
    number: int,
    head_sha: str,
    head_ref: str,
    base_ref: str,
    from_fork: bool,
    enqueued_at: float | None = None,
) -> dict[str, Any]:
    settings = settings_of(self.app)
    _observe_latency(settings, enqueued_at)
    return _handle_pull(self.app, settings, number, head_sha, base_ref, not from_fork, enqueued_at)


@app.task(
    name=events.OK_TO_TEST_TASK,
    **_EVENT_TASK,
)  # type: ignore[untyped-decorator]
def ok_to_test(
    self: Task, number: int, user: str, enqueued_at: float | None = None
) -> dict[str, Any]:
    settings = settings_of(self.app)
    _observe_latency(settings, enqueued_at)
    client = github.GitHubClient.from_settings(settings)
    if client is None:
        return {"ignored": "no GitHub credentials configured"}
    try:
        if not client.can_write(user):
            log.info("/ok-to-test on #%s from %s ignored: no write permission", number, user)
            return {"ignored": f"{user} has no write permission"}
        pull = client.pull_head(number)
    finally:
        client.close()
    if pull.base_ref != settings.default_branch:
        return {"ignored": f"pull request #{number} is into {pull.base_ref}"}
    return _handle_pull(self.app, settings, number, pull.head_sha, pull.base_ref, True, enqueued_at)


@app.task(name=REPORT_BUILD_TASK, bind=True, queue=EVENTS_QUEUE)  # type: ignore[untyped-decorator]
def report_build(self: Task, record: dict[str, Any], sha: str, scope: str) -> str:
    settings = settings_of(self.app)
    status = reporting.build_status(record, public_url=settings.public_url)
    if status is None:
        return "unfinished"
    finished, created = record.get("finished_at"), record.get("created_at")
    if isinstance(finished, int | float) and isinstance(created, int | float):
        metrics.observe(
            _redis(settings),
            metrics.BUILD_DURATION,
            max(0.0, finished - created),
            label=str(record.get("state")),
        )
    queue_status(self.app, settings, sha, status)
    return status.state


@app.task(name=REPORT_BUILD_ERROR_TASK, bind=True, queue=EVENTS_QUEUE)  # type: ignore[untyped-decorator]
def report_build_error(
    self: Task, task_id: str, sha: str, image: str, cluster: str, build_id: str
) -> str:
    settings = settings_of(self.app)
    record = store.BuildStore.from_settings(settings).get(build_id)
    if record is not None and record.state is builds.BuildState.CANCELLED:
        return "cancelled"
    queue_status(
        self.app,
        settings,
        sha,
        reporting.Status(
            reporting.build_context(image, cluster),
            "error",
            "build task crashed; see the build log",
            reporting.log_url(settings.public_url, build_id),
        ),
    )
    return "error"
