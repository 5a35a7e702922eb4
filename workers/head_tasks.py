"""Celery tasks that handle webhook events (queue `events`): mirror fetch -> plan (from the Git
history) -> lint -> fan out "layering.build" -> commit statuses; supersede older heads; post
statuses with retries. Does I/O (Git, Redis, GitHub, Celery).

Task names and arguments (the receiver enqueues them by name, see pipeline/core/events.py):

- "layering.handle_push"(branch, before, after, forced, enqueued_at=None)
- "layering.handle_pull_request"(number, head_sha, head_ref, base_ref, from_fork, enqueued_at=None)
- "layering.ok_to_test"(number, user, enqueued_at=None)
- "layering.close_pull_request"(number, head_sha, enqueued_at=None): a pull request closed
  without merging: cancels its queued and running builds (buildah is killed) and ends their
  statuses as `error` "pull request closed"; a later reopen builds again. (A merged pull
  request is left alone: the push to the default branch builds the merge, and reuses by build
  key what the pull request's builds pushed.)
- "layering.report_status"(sha, context, state, description, target_url, seq): one commit
  status, retried on TemporaryError (rate limits, 5xx) with back-off LAYERING_STATUS_RETRIES
  times, then parked in Redis (pipeline/adapters/parked_statuses.py); skipped when a newer status
  for the same (sha, context) was queued meanwhile.
- "layering.resend_statuses"(): periodic (Celery beat, every
  LAYERING_STATUS_RESEND_INTERVAL_SECONDS): sends parked statuses that are due again, the
  newest of each (sha, context) only, until GitHub takes them or LAYERING_STATUS_PARK_SECONDS
  have passed.
- "layering.report_build"(record, sha, scope): link of "layering.build": its final status.
- "layering.report_build_error"(task_id, sha, image, cluster, build_id): link_error of it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import redis
from celery import Celery, Task

from pipeline.adapters import build_records, github, metrics, parked_statuses
from pipeline.adapters import git as gitadapter
from pipeline.core import builds, commit_status, lint, tasks
from pipeline.core.errors import PermanentError, TemporaryError
from pipeline.core.settings import Settings
from pipeline.flows import history
from workers import build_tasks
from workers.app import app, settings_of

log = logging.getLogger(__name__)

REPORT_STATUS_TASK = "layering.report_status"
REPORT_BUILD_TASK = "layering.report_build"
REPORT_BUILD_ERROR_TASK = "layering.report_build_error"
CLOSE_PULL_REQUEST_TASK = tasks.ClosePullRequest.NAME
RESEND_STATUSES_TASK = "layering.resend_statuses"
HEAD_PREFIX = "layering:head:"
STATUS_SEQ_PREFIX = parked_statuses.SEQ_PREFIX
HEAD_TTL_SECONDS = 14 * 24 * 3600
STATUS_SEQ_TTL_SECONDS = 3 * 24 * 3600
RESEND_BATCH = 100
RESEND_LOCK = "layering:lock:resend-statuses"

app.conf.beat_schedule = {
    **(app.conf.beat_schedule or {}),
    "layering-resend-statuses": {
        "task": RESEND_STATUSES_TASK,
        "schedule": settings_of(app).status_resend_interval_seconds,
        "options": {
            "queue": tasks.EVENTS_QUEUE,
            "expires": settings_of(app).status_resend_interval_seconds,
        },
    },
}


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
    celery_app: Celery, settings: Settings, sha: str, status: commit_status.Status
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
        queue=tasks.EVENTS_QUEUE,
    )


def _parked(settings: Settings) -> parked_statuses.ParkedStatuses:
    return parked_statuses.ParkedStatuses(
        _redis(settings), keep_seconds=settings.status_park_seconds
    )


@app.task(name=REPORT_STATUS_TASK, bind=True, queue=tasks.EVENTS_QUEUE, max_retries=None)  # type: ignore[untyped-decorator]
def report_status(
    self: Task,
    sha: str,
    context: str,
    state: commit_status.State,
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
        retries = int(self.request.retries or 0)
        if retries < settings.status_retries:
            countdown = commit_status.status_backoff(
                retries, base=settings.status_backoff_seconds, retry_after=exc.retry_after
            )
            raise self.retry(exc=exc, countdown=countdown) from None
        parked = commit_status.ParkedStatus(
            sha, context, state, description, target_url, seq, parked_at=time.time()
        )
        delay = commit_status.resend_delay(
            0, retry_after=exc.retry_after, interval=settings.status_resend_interval_seconds
        )
        try:
            kept = _parked(settings).park(parked, due=time.time() + delay)
        except redis.RedisError:
            raise self.retry(exc=exc, countdown=60) from None
        log.warning(
            "status %s=%s on %s not delivered after %d attempts (%s); %s",
            context,
            state,
            sha[:12],
            retries + 1,
            exc,
            "parked for resending" if kept else "a newer status is pending: dropped",
        )
        return "parked" if kept else "superseded"
    finally:
        client.close()
    return "posted"


@app.task(name=RESEND_STATUSES_TASK, bind=True, queue=tasks.EVENTS_QUEUE)  # type: ignore[untyped-decorator]
def resend_statuses(self: Task) -> dict[str, int]:
    """Send the parked statuses that are due; stop at the first GitHub still refuses."""
    settings = settings_of(self.app)
    counts = {"sent": 0, "outdated": 0, "expired": 0, "refused": 0, "waiting": 0}
    client = _redis(settings)
    lock = client.lock(RESEND_LOCK, timeout=600)
    if not lock.acquire(blocking=False):
        return counts  # the previous run is still sending
    try:
        parked = _parked(settings)
        due = parked.due(time.time(), limit=RESEND_BATCH)
        if not due:
            return counts
        github_client = github.GitHubClient.from_settings(settings)
        if github_client is None:
            return counts
        try:
            for index, status in enumerate(due):
                outcome = _resend(settings, parked, github_client, status)
                counts[outcome] += 1
                if outcome == "waiting":
                    counts["waiting"] += len(due) - index - 1
                    break
        finally:
            github_client.close()
    finally:
        with contextlib.suppress(redis.exceptions.LockError):
            lock.release()
    return counts


def _resend(
    settings: Settings,
    parked: parked_statuses.ParkedStatuses,
    client: github.GitHubClient,
    status: commit_status.ParkedStatus,
) -> str:
    now = time.time()
    latest = parked.latest_seq(status.sha, status.context)
    if latest is not None and latest > status.seq:
        parked.remove(status)
        return "outdated"
    if now - status.parked_at > settings.status_park_seconds:
        log.error(
            "status %s=%s on %s dropped: GitHub refused it for %.0f s",
            status.context,
            status.state,
            status.sha[:12],
            now - status.parked_at,
        )
        parked.remove(status)
        return "expired"
    try:
        client.set_status(
            status.sha,
            context=status.context,
            state=status.state,
            description=status.description,
            target_url=status.target_url,
        )
    except TemporaryError as exc:
        attempts = status.attempts + 1
        delay = commit_status.resend_delay(
            attempts, retry_after=exc.retry_after, interval=settings.status_resend_interval_seconds
        )
        parked.reschedule(dataclasses.replace(status, attempts=attempts), due=now + delay)
        log.info("parked status %s on %s: still refused (%s)", status.context, status.sha[:12], exc)
        return "waiting"
    except PermanentError as exc:
        log.error("parked status %s on %s refused: %s", status.context, status.sha[:12], exc)
        parked.remove(status)
        return "refused"
    parked.remove(status)
    return "sent"


# -- heads and supersede --------------------------------------------------------------------


def _head_key(scope: str) -> str:
    return f"{HEAD_PREFIX}{scope}"


def _read_head(client: redis.Redis[bytes], scope: str) -> dict[str, Any] | None:
    raw = client.get(_head_key(scope))
    return json.loads(raw) if raw else None


def _claim_head(
    client: redis.Redis[bytes], scope: str, sha: str, enqueued_at: float, *, closed: bool = False
) -> tuple[bool, dict[str, Any] | None]:
    """Make `sha` the current head of `scope` unless a newer delivery already did; `closed`
    leaves a tombstone instead (a closed pull request: no builds, and builds still being
    queued for it are cancelled; a later reopen or push claims the scope again).

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
                document: dict[str, Any] = {"sha": sha, "enqueued_at": enqueued_at, "builds": []}
                if closed:
                    document["closed"] = True
                elif previous is not None and previous.get("sha") == sha:
                    document["builds"] = previous.get("builds", [])
                pipe.set(key, json.dumps(document), ex=HEAD_TTL_SECONDS)
                pipe.execute()
                return True, previous
            except redis.WatchError:
                continue


def _record_head_builds(
    client: redis.Redis[bytes], scope: str, sha: str, head_builds: Sequence[commit_status.HeadBuild]
) -> dict[str, Any] | None:
    """Add builds to the head document of `scope`; when a newer head took the scope (or the
    pull request was closed) while these were being queued, return its document instead (the
    caller cancels them)."""
    key = _head_key(scope)
    with client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(key)
                raw = cast("bytes | None", pipe.get(key))
                document = json.loads(raw) if raw else None
                if document is None or document.get("sha") != sha or document.get("closed"):
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


def _cancel_builds(
    celery_app: Celery,
    settings: Settings,
    sha: str,
    head_builds: Sequence[commit_status.HeadBuild],
    *,
    reason: str,
    status_of: Callable[[commit_status.HeadBuild, str], commit_status.Status],
) -> None:
    """Cancel unfinished builds of head `sha`: raise each one's cancel flag (a running build
    polls it and kills buildah's process group before any push), revoke its task (a queued
    copy is dropped by the worker that receives it), record it cancelled and post its status.

    The task is revoked without `terminate`: killing the pool process would leave the build-key
    lock held until it expires, so the build stops itself instead (pipeline/adapters/buildah.py)."""
    build_store = build_records.BuildStore.from_settings(settings)
    for build in head_builds:
        record = build_store.get(build.build_id)
        if record is not None and record.state.terminal:
            continue
        build_store.request_cancel(build.build_id)
        celery_app.control.revoke(build.task_id)
        if record is not None:
            try:
                build_store.save(builds.cancel(record, now=time.time(), reason=reason))
            except builds.InvalidTransition:
                continue  # finished meanwhile: its own result is reported
        log.info("build %s of %s cancelled: %s", build.build_id, sha[:12], reason)
        target_url = commit_status.log_url(settings.public_url, build.build_id)
        queue_status(celery_app, settings, sha, status_of(build, target_url))


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
    old_builds = [commit_status.HeadBuild.from_json(b) for b in previous.get("builds", [])]
    _cancel_builds(
        celery_app,
        settings,
        str(previous["sha"]),
        commit_status.superseded_builds(old_builds, new_keys),
        reason=f"superseded by {new_sha}",
        status_of=lambda build, url: commit_status.superseded(
            build.context, by_sha=new_sha, target_url=url
        ),
    )


def _close_head(
    celery_app: Celery, settings: Settings, sha: str, head_builds: Sequence[commit_status.HeadBuild]
) -> None:
    """Cancel builds of a closed pull request's head."""
    _cancel_builds(
        celery_app,
        settings,
        sha,
        head_builds,
        reason=commit_status.PULL_REQUEST_CLOSED,
        status_of=lambda build, url: commit_status.closed(build.context, target_url=url),
    )


# Event tasks retry passing faults (Git fetch, Redis, GitHub) with jittered back-off.
_EVENT_TASK: dict[str, Any] = {
    "bind": True,
    "queue": tasks.EVENTS_QUEUE,
    "autoretry_for": (TemporaryError,),
    "retry_backoff": 5,
    "retry_jitter": True,
    "max_retries": 8,
}

# -- the event flow -------------------------------------------------------------------------


def _lint_findings(
    repository: Any, images: Sequence[str]
) -> dict[str, list[commit_status.LintFinding]]:
    found: dict[str, list[commit_status.LintFinding]] = {}
    for image in images:
        if image not in repository.images:
            continue
        found[image] = [
            commit_status.LintFinding(f.id, str(f.severity), f.path, f.line)
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
        plan = history.plan_range(
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
    problems = [commit_status.LintFinding("LAY006", "error", p.path, p.line) for p in plan.problems]
    all_findings = problems + [f for image in images for f in findings.get(image, [])]
    queue_status(
        celery_app, settings, head_sha, commit_status.lint_status(all_findings, fork=not build)
    )
    new_keys = [target.build_key for target in plan.builds]
    _supersede(celery_app, settings, previous, new_sha=head_sha, new_keys=new_keys if build else [])
    if not build:
        return {"head": head_sha, "builds": [], "note": "fork: lint only"}
    source = str(mirror_path(settings, settings.repo_url or ""))
    head_builds: list[commit_status.HeadBuild] = []
    for target in plan.builds:
        if any(f.severity == "error" for f in findings.get(target.image, [])):
            queue_status(
                celery_app,
                settings,
                head_sha,
                commit_status.not_built(
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
            commit_status.pending_build(
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
            queue=tasks.BUILDS_QUEUE,
            task_id=task_id,
            link=celery_app.signature(
                REPORT_BUILD_TASK, args=[head_sha, scope], queue=tasks.EVENTS_QUEUE
            ),
            link_error=celery_app.signature(
                REPORT_BUILD_ERROR_TASK,
                args=[head_sha, target.image, target.cluster, record.id],
                queue=tasks.EVENTS_QUEUE,
            ),
        )
        head_builds.append(
            commit_status.HeadBuild(
                record.id, task_id, target.build_key, target.image, target.cluster
            )
        )
    newer = _record_head_builds(client, scope, head_sha, head_builds)
    if newer is not None and newer.get("closed"):
        _close_head(celery_app, settings, head_sha, head_builds)
        return {"head": head_sha, "builds": [], "note": "pull request closed meanwhile"}
    if newer is not None and newer.get("sha"):
        mine = {"sha": head_sha, "builds": [b.to_json() for b in head_builds]}
        newer_keys = [str(b["build_key"]) for b in newer.get("builds", [])]
        _supersede(celery_app, settings, mine, new_sha=str(newer["sha"]), new_keys=newer_keys)
    return {"head": head_sha, "builds": [b.to_json() for b in head_builds]}


@app.task(
    name=tasks.HandlePush.NAME,
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
    name=tasks.HandlePullRequest.NAME,
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
    name=tasks.OkToTest.NAME,
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


@app.task(
    name=CLOSE_PULL_REQUEST_TASK,
    **_EVENT_TASK,
)  # type: ignore[untyped-decorator]
def close_pull_request(
    self: Task, number: int, head_sha: str, enqueued_at: float | None = None
) -> dict[str, Any]:
    settings = settings_of(self.app)
    _observe_latency(settings, enqueued_at)
    claimed, previous = _claim_head(
        _redis(settings), f"pr:{number}", head_sha, enqueued_at or time.time(), closed=True
    )
    if not claimed:
        return {"ignored": f"pull request #{number} changed after it was closed"}
    if previous is None or previous.get("closed"):
        return {"closed": number, "cancelled": []}
    head_builds = [commit_status.HeadBuild.from_json(b) for b in previous.get("builds", [])]
    _close_head(self.app, settings, str(previous["sha"]), head_builds)
    return {"closed": number, "cancelled": [b.build_id for b in head_builds]}


@app.task(name=REPORT_BUILD_TASK, bind=True, queue=tasks.EVENTS_QUEUE)  # type: ignore[untyped-decorator]
def report_build(self: Task, record: dict[str, Any], sha: str, scope: str) -> str:
    settings = settings_of(self.app)
    status = commit_status.build_status(record, public_url=settings.public_url)
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


@app.task(name=REPORT_BUILD_ERROR_TASK, bind=True, queue=tasks.EVENTS_QUEUE)  # type: ignore[untyped-decorator]
def report_build_error(
    self: Task, task_id: str, sha: str, image: str, cluster: str, build_id: str
) -> str:
    settings = settings_of(self.app)
    record = build_records.BuildStore.from_settings(settings).get(build_id)
    if record is not None and record.state is builds.BuildState.CANCELLED:
        return "cancelled"
    queue_status(
        self.app,
        settings,
        sha,
        commit_status.Status(
            commit_status.build_context(image, cluster),
            "error",
            "build task crashed; see the build log",
            commit_status.log_url(settings.public_url, build_id),
        ),
    )
    return "error"
