"""Celery tasks that handle webhook events (queue `events`); the work is pipeline/flows/head.py.
Thin: build the process's adapters, call one flow, return its summary. Does I/O. Names and
arguments are the contract in pipeline/core/tasks.py (the receiver enqueues them by name):

- "layering.handle_push"(branch, before, after, forced, enqueued_at=None)
- "layering.handle_pull_request"(number, head_sha, head_ref, base_ref, from_fork, enqueued_at=None)
- "layering.ok_to_test"(number, user, enqueued_at=None, sha=None, commented_at=None)
- "layering.retest"(number, user, target=None, enqueued_at=None, commented_at=None,
  malformed=False): pipeline/flows/retest.py.
- "layering.close_pull_request"(number, head_sha, enqueued_at=None)
- "layering.report_build"(record, sha, scope): `link` of "layering.build": its final status.
- "layering.report_build_error"(task_id, sha, image, cluster, build_id): its `link_error`.

The event tasks retry TemporaryError (Git fetch, Redis, GitHub) by the app's rule (PipelineTask).
"""

from __future__ import annotations

from typing import Any

from celery import Celery, Task

from pipeline.adapters import event_metrics, head_store, mirror_source, sandboxed_lint
from pipeline.core import repo_limits, tasks
from pipeline.core.settings import Settings
from pipeline.flows import head as head_flow
from pipeline.flows import retest as retest_flow
from workers import adapters
from workers.app import app, settings_of


def _metrics(settings: Settings) -> event_metrics.RedisEventMetrics:
    return adapters.once(
        "event_metrics", lambda: event_metrics.RedisEventMetrics(adapters.redis_client(settings))
    )


def _heads(settings: Settings) -> head_store.RedisHeadStore:
    return adapters.once(
        "head_store", lambda: head_store.RedisHeadStore(adapters.redis_client(settings))
    )


def _adapters(celery_app: Celery) -> head_flow.Adapters:
    settings = settings_of(celery_app)
    return adapters.once(
        "head_flow",
        lambda: head_flow.Adapters(
            heads=_heads(settings),
            mirror=mirror_source.MirrorSource(
                settings.workdir, settings.repo_url, caps=repo_limits.from_settings(settings)
            ),
            records=adapters.build_store(settings),
            queue=adapters.task_queue(celery_app),
            statuses=adapters.status_reporter(celery_app, settings),
            metrics=_metrics(settings),
            linter=sandboxed_lint.SandboxedLinter.from_settings(settings),
        ),
    )


@app.task(name=tasks.HandlePush.NAME, bind=True)  # type: ignore[untyped-decorator]
def handle_push(
    self: Task, branch: str, before: str, after: str, forced: bool, enqueued_at: float | None = None
) -> dict[str, Any]:
    # `forced` is not needed: the Git history tells a force push (flows/history.py)
    return head_flow.handle_push(
        _adapters(self.app),
        settings_of(self.app),
        branch=branch,
        before=before,
        after=after,
        enqueued_at=enqueued_at,
    )


@app.task(name=tasks.HandlePullRequest.NAME, bind=True)  # type: ignore[untyped-decorator]
def handle_pull_request(
    self: Task,
    number: int,
    head_sha: str,
    head_ref: str,
    base_ref: str,
    from_fork: bool,
    enqueued_at: float | None = None,
) -> dict[str, Any]:
    return head_flow.handle_pull_request(
        _adapters(self.app),
        settings_of(self.app),
        number=number,
        head_sha=head_sha,
        base_ref=base_ref,
        from_fork=from_fork,
        enqueued_at=enqueued_at,
    )


@app.task(name=tasks.OkToTest.NAME, bind=True)  # type: ignore[untyped-decorator]
def ok_to_test(
    self: Task,
    number: int,
    user: str,
    enqueued_at: float | None = None,
    sha: str | None = None,
    commented_at: float | None = None,
) -> dict[str, Any]:
    settings = settings_of(self.app)
    return head_flow.ok_to_test(
        _adapters(self.app),
        adapters.github_client(settings),
        settings,
        number=number,
        user=user,
        enqueued_at=enqueued_at,
        sha=sha,
        commented_at=commented_at,
    )


@app.task(name=tasks.Retest.NAME, bind=True)  # type: ignore[untyped-decorator]
def retest(
    self: Task,
    number: int,
    user: str,
    target: str | None = None,
    enqueued_at: float | None = None,
    commented_at: float | None = None,
    malformed: bool = False,
) -> dict[str, Any]:
    settings = settings_of(self.app)
    return retest_flow.retest_builds(
        _adapters(self.app),
        _heads(settings),
        adapters.github_client(settings),
        settings,
        number=number,
        user=user,
        target=target,
        enqueued_at=enqueued_at,
        commented_at=commented_at,
        malformed=malformed,
    )


@app.task(name=tasks.ClosePullRequest.NAME, bind=True)  # type: ignore[untyped-decorator]
def close_pull_request(
    self: Task, number: int, head_sha: str, enqueued_at: float | None = None
) -> dict[str, Any]:
    return head_flow.close_pull_request(
        _adapters(self.app),
        settings_of(self.app),
        number=number,
        head_sha=head_sha,
        enqueued_at=enqueued_at,
    )


@app.task(name=tasks.ReportBuild.NAME, bind=True)  # type: ignore[untyped-decorator]
def report_build(self: Task, record: dict[str, Any], sha: str, scope: str) -> str:
    settings = settings_of(self.app)
    return head_flow.report_build(
        adapters.status_reporter(self.app, settings),
        settings,
        record,
        sha=sha,
        # a promotion waiting for this build key runs now (flows/reconcile.py)
        waits=adapters.promotion_waits_store(settings),
        queue=adapters.task_queue(self.app),
    )


@app.task(name=tasks.ReportBuildError.NAME, bind=True)  # type: ignore[untyped-decorator]
def report_build_error(
    self: Task, task_id: str, sha: str, image: str, cluster: str, build_id: str
) -> str:
    settings = settings_of(self.app)
    return head_flow.report_build_error(
        adapters.status_reporter(self.app, settings),
        adapters.build_store(settings),
        settings,
        sha=sha,
        image=image,
        cluster=cluster,
        build_id=build_id,
    )
