"""GitHub check runs through PyGithub, as the GitHub App's installation (GitHub refuses check
runs to tokens): the ChecksPoster port (core/ports_checks.py). Does network I/O (GitHub, Redis).

One check run per (sha, name), updated in place: its id is remembered in Redis (for as long as
a parked status may be resent); when unknown it is looked up
(`GET /repos/{o}/{r}/commits/{sha}/check-runs?check_name=`) and created only when GitHub has
none. A short Redis lock per (sha, name) keeps two workers from creating two, and the
sequence number of the last run sent is kept with the id, so an older run that arrives late is
not sent over a newer one. Annotations accumulate on a run: a run bringing annotations to one
that has some already is created anew (GitHub shows the newest run of a name).

Errors are translated as adapters/github.py does (`translate`: rate limits, 5xx and refused
credentials are TemporaryError; other 4xx PermanentError), and every text sent or raised is
masked of the configured secrets.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import redis
import requests
from github import Github, GithubException
from github.Repository import Repository

from pipeline.adapters import github as github_adapter
from pipeline.adapters import status_queue
from pipeline.core import check_runs, redaction
from pipeline.core.errors import PermanentError, TemporaryError
from pipeline.core.settings import Settings

KEY_PREFIX = "layering:check-run:"
LOCK_PREFIX = "layering:check-run-lock:"
# a post is a handful of requests of at most 15 s each; the lock outlives a slow one
LOCK_SECONDS = 120


def state_key(sha: str, name: str) -> str:
    return KEY_PREFIX + json.dumps([sha, name], separators=(",", ":"))


def lock_key(sha: str, name: str) -> str:
    return LOCK_PREFIX + json.dumps([sha, name], separators=(",", ":"))


class GitHubChecks:
    def __init__(
        self,
        github: Github,
        repository: str,
        client: redis.Redis[bytes],
        *,
        secrets: tuple[str, ...] = (),
        keep_seconds: int = status_queue.SEQ_TTL_SECONDS,
    ) -> None:
        self._github = github
        self._repo: Repository = github.get_repo(repository)
        self._client = client
        self._secrets = secrets
        self._keep_seconds = max(keep_seconds, status_queue.SEQ_TTL_SECONDS)

    @classmethod
    def from_settings(
        cls, settings: Settings, client: redis.Redis[bytes], *, secrets: tuple[str, ...] = ()
    ) -> GitHubChecks | None:
        """None unless LAYERING_GITHUB_CHECKS resolves to check-runs (a GitHub App) and the
        repository is known."""
        if settings.resolved_github_checks != "check-runs":
            return None
        auth = github_adapter.app_auth(settings)
        repository = settings.github_repo_name
        if auth is None or repository is None:
            return None
        github = github_adapter.connect(settings, auth)
        return cls(
            github,
            repository,
            client,
            secrets=secrets,
            keep_seconds=settings.status_park_seconds,
        )

    def close(self) -> None:
        self._github.close()

    # ---- the port

    def post(self, run: check_runs.CheckRun, *, seq: int) -> bool:
        run = self._masked(run)
        action = f"check run {run.name} on {run.head_sha[:12]}"
        key = state_key(run.head_sha, run.name)
        try:
            lock = self._client.lock(
                lock_key(run.head_sha, run.name), timeout=LOCK_SECONDS, blocking_timeout=60
            )
            if not lock.acquire():
                raise TemporaryError(f"{action}: another worker holds its lock", retry_after=5)
            try:
                stored = self._stored(key)
                if stored is not None and int(stored.get("seq", 0)) > seq:
                    return False
                annotations = self._send(run, stored, action=action)
                self._client.set(
                    key,
                    json.dumps({"id": annotations[0], "seq": seq, "annotations": annotations[1]}),
                    ex=self._keep_seconds,
                )
            finally:
                lock.release()
        except redis.RedisError as exc:
            raise TemporaryError(f"{action}: Redis: {type(exc).__name__}", retry_after=15) from exc
        return True

    # ---- GitHub

    def _send(
        self, run: check_runs.CheckRun, stored: dict[str, Any] | None, *, action: str
    ) -> tuple[int, int]:
        """(id, annotations on it) once `run` is on GitHub."""
        bodies = run.requests()
        count = len(run.output.annotations)
        try:
            if stored is not None:
                check_id: int | None = int(stored["id"])
                already = int(stored.get("annotations", 0))
            else:
                check_id, already = self._find(run)
            if check_id is not None and count and already:
                check_id = None  # annotations accumulate: a fresh run shows only these
            if check_id is None:
                created = self._repo.create_check_run(
                    name=run.name, head_sha=run.head_sha, **bodies[0]
                )
                check_id, already = created.id, 0
            else:
                self._repo.get_check_run(check_id).edit(**bodies[0])
            for body in bodies[1:]:
                self._repo.get_check_run(check_id).edit(**body)
        except (GithubException, requests.RequestException) as exc:
            raise self._failed(action, exc) from exc
        return check_id, already + count

    def _find(self, run: check_runs.CheckRun) -> tuple[int | None, int]:
        """(id, annotations) of the newest run of this name on the commit; (None, 0): none."""
        found = self._repo.get_commit(run.head_sha).get_check_runs(check_name=run.name)
        newest = max(found, key=lambda check: check.id, default=None)
        if newest is None:
            return None, 0
        return newest.id, int(newest.output.annotations_count or 0)

    def _stored(self, key: str) -> dict[str, Any] | None:
        raw = self._client.get(key)
        if raw is None:
            return None
        try:
            document = json.loads(raw)
        except ValueError:
            return None
        return document if isinstance(document, dict) and "id" in document else None

    # ---- masking and errors

    def _masked(self, run: check_runs.CheckRun) -> check_runs.CheckRun:
        def mask(text: str) -> str:
            return redaction.scrub(text, self._secrets)

        output = run.output
        return dataclasses.replace(
            run,
            output=check_runs.Output(
                title=mask(output.title),
                summary=mask(output.summary),
                text=mask(output.text),
                annotations=tuple(
                    dataclasses.replace(a, title=mask(a.title), message=mask(a.message))
                    for a in output.annotations
                ),
            ),
        )

    def _failed(self, action: str, exc: Exception) -> TemporaryError | PermanentError:
        if isinstance(exc, GithubException):
            error = github_adapter.translate(action, exc, now=time.time())
        else:
            error = TemporaryError(f"GitHub API: {action}: {type(exc).__name__}", retry_after=15)
        text = redaction.scrub(str(error), self._secrets)
        if isinstance(error, TemporaryError):
            return TemporaryError(text, retry_after=error.retry_after)
        return PermanentError(text)
