"""The whole service for end-to-end tests, with real processes: the receiver over HTTP on a
loopback port (in this process), a Celery worker subprocess, a private Redis (with a password),
a bare Git repository pushed to with GitPython, docker-registry + buildah (tests/plugins/
builds.py) and the GitHub API stand-in. Used by tests/integration/test_webhook_e2e.py and the
end-to-end tests in tests/security/.

    with webhook_pipeline.launch(directory, registry=..., base_image=...,
                                 start_worker=..., extra_env=...) as pipeline:
        pipeline.deliver(pipeline.push_payload(before, after))

The seed commit on `main` holds images firewalld and chrony on cluster nonprod.
"""

from __future__ import annotations

import datetime
import json
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis
from celery.result import AsyncResult
from pytest_httpserver import HTTPServer

from pipeline.adapters import status_queue, task_queue
from pipeline.core import commit_status
from pipeline.core.settings import Settings
from pipeline.web import server as web
from tests import receiver, services
from tests.plugins.builds import BaseImage, StartWorker, Worker
from tests.plugins.github import GitHubStandIn, load_operations
from tests.plugins.gitrepos import GitopsRepo

SECRET = "e2e-webhook-secret-value"
REDIS_PASSWORD = "e2e-redis-password-value"
FULL_NAME = "acme/layers"
BUILD_TIMEOUT = 240
PUBLIC_URL = "http://layering.example.test"


def iso(moment: float) -> str:
    """A time as GitHub writes it in payloads (`created_at`)."""
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).isoformat()


@dataclass
class Pipeline:
    gitops: GitopsRepo
    github: GitHubStandIn
    worker: Worker
    redis: services.RedisServer
    receiver_url: str
    registry_host: str
    settings: Settings
    receiver_log: Path

    def containerfile(self, base: BaseImage, text: str) -> str:
        return f"FROM {base.repository}\nRUN {text} && \\\n    ostree container commit\n"

    def deliver(
        self,
        payload: dict[str, Any],
        *,
        delivery_id: str | None = None,
        signature: str | None = None,
        event: str = "push",
    ) -> httpx.Response:
        body, headers = receiver.delivery(
            SECRET.encode(), event, payload, delivery_id=delivery_id, signature=signature
        )
        return httpx.post(
            f"{self.receiver_url}/webhook/github", content=body, headers=headers, timeout=30
        )

    def push_payload(self, before: str, after: str, branch: str = "main") -> dict[str, Any]:
        return receiver.push_payload(
            full_name=FULL_NAME,
            clone_url=self.gitops.origin.as_uri(),
            ref=f"refs/heads/{branch}",
            before=before,
            after=after,
        )

    @property
    def repository(self) -> dict[str, str]:
        return {"full_name": FULL_NAME, "clone_url": self.gitops.origin.as_uri()}

    def pull_payload(
        self, action: str, number: int, head: str, ref: str, *, head_repo: str = FULL_NAME
    ) -> dict[str, Any]:
        """A `pull_request` delivery into main; `head_repo` other than ours is a fork."""
        return {
            "action": action,
            "number": number,
            "pull_request": {
                "number": number,
                "merged": False,
                "head": {"ref": ref, "sha": head, "repo": {"full_name": head_repo}},
                "base": {"ref": "main", "sha": self.gitops.head, "repo": self.repository},
            },
            "repository": self.repository,
            "sender": {"login": head_repo.split("/")[0]},
        }

    def comment_payload(
        self,
        number: int,
        body: str,
        *,
        user: str,
        created_at: float | None = None,
        state: str = "open",
    ) -> dict[str, Any]:
        """An `issue_comment` delivery on pull request `number` (made now unless
        `created_at`)."""
        return {
            "action": "created",
            "issue": {
                "number": number,
                "state": state,
                "pull_request": {"url": f"https://api.github.com/repos/{FULL_NAME}/pulls/1"},
            },
            "comment": {
                "body": body,
                "user": {"login": user},
                "created_at": iso(time.time() if created_at is None else created_at),
            },
            "repository": self.repository,
        }

    def push_pull_head(self, number: int, branch: str, files: Mapping[str, str]) -> str:
        """Commit `files` on `branch` (from main, or where it was) and publish it as the head
        of pull request `number` (refs/pull/<n>/head, as GitHub does for forks too)."""
        gitops = self.gitops
        exists = branch in [head.name for head in gitops.repo.heads]
        gitops.checkout(branch, create=not exists, start=None if exists else "main")
        for path, text in files.items():
            gitops.write(path, text)
        sha = gitops.commit(f"change on {branch}")
        gitops.repo.remote("origin").push(f"+HEAD:refs/pull/{number}/head").raise_if_error()
        gitops.checkout("main")
        return sha

    def wait_task(self, task_id: str, timeout: float = 60) -> Any:
        return AsyncResult(task_id, app=self.worker.app).get(timeout=timeout)

    def wait_statuses(
        self, sha: str, contexts: set[str], timeout: float = BUILD_TIMEOUT
    ) -> dict[str, list[str]]:
        """Until every context has a final (non-pending) state on `sha`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.github.contexts(sha)
            if set(found) >= contexts and all(found[c][-1] != "pending" for c in contexts):
                time.sleep(0.5)  # let any stray extra status arrive before judging
                return self.github.contexts(sha)
            if self.worker.process.poll() is not None:
                raise RuntimeError(self.worker.log.read_text()[-3000:])
            time.sleep(0.1)
        raise TimeoutError(
            f"statuses on {sha[:12]}: {self.github.contexts(sha)}; worker log:\n"
            + self.worker.log.read_text()[-4000:]
        )

    def queue_status(self, sha: str, status: commit_status.Status) -> None:
        """Through the StatusReporter, as every flow does."""
        reporter = status_queue.QueuedStatuses(
            redis.Redis.from_url(self.redis.url), task_queue.CeleryTaskQueue(self.worker.app)
        )
        reporter.report(sha, status)

    def tags(self, image: str) -> list[str]:
        response = httpx.get(f"http://{self.registry_host}/v2/layering/{image}/tags/list")
        if response.status_code == 404:
            return []
        return list(response.json().get("tags") or [])


@contextmanager
def launch(
    directory: Path,
    *,
    registry: services.Registry,
    base_image: BaseImage,
    start_worker: StartWorker,
    name: str = "e2e",
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[Pipeline]:
    """The service around a fresh GitOps repository (seeded, pushed without a delivery)."""
    private_redis = services.RedisServer(directory / "redis", password=REDIS_PASSWORD).start()
    # the receiver runs in this process: its log lines (any logger) go to a file to scan
    receiver_log = directory / "receiver.log"
    handler = logging.FileHandler(receiver_log)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    github = GitHubStandIn(server, load_operations())
    gitops = GitopsRepo(directory / "work", directory / "origin.git")
    env = {
        "LAYERING_REDIS_URL": private_redis.url,
        "LAYERING_REPO_URL": gitops.origin.as_uri(),
        "LAYERING_GITHUB_REPOSITORY": FULL_NAME,
        "LAYERING_GITHUB_API_URL": github.url,
        "LAYERING_PUBLIC_URL": PUBLIC_URL,
        "LAYERING_WEBHOOK_SECRET": SECRET,
        "LAYERING_WORKDIR": str(directory / "workdir"),
        # a status is retried twice, quickly, then parked and resent by beat every second
        "LAYERING_STATUS_RETRIES": "2",
        "LAYERING_STATUS_BACKOFF_SECONDS": "0.1",
        "LAYERING_STATUS_RESEND_INTERVAL_SECONDS": "1",
        **(extra_env or {}),
    }
    worker = start_worker(name, concurrency=3, extra_env=env)
    settings = worker.settings
    http = receiver.ThreadedServer(web.service_app(settings)).start()
    gitops.write(
        "images/firewalld/Containerfile",
        f"FROM {base_image.repository}\nRUN echo firewalld > /etc/motd && \\\n"
        "    ostree container commit\n",
    )
    gitops.write(
        "images/chrony/Containerfile",
        f"FROM {base_image.repository}\nRUN echo chrony > /etc/chrony && \\\n"
        "    ostree container commit\n",
    )
    gitops.write(
        "clusters/nonprod/cluster.yaml",
        json.dumps(
            {
                "environment": "nonprod",
                "baseImage": base_image.ref,
                "registry": f"{registry.host}/layering",
                "pools": {"worker": "firewalld", "infra": "chrony"},
            }
        ),
    )
    gitops.write("README.md", "seed\n")
    gitops.commit("seed")
    gitops.push()
    try:
        yield Pipeline(
            gitops, github, worker, private_redis, http.url, registry.host, settings, receiver_log
        )
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
        http.stop()
        worker.stop()
        server.clear()
        server.stop()
        private_redis.stop()
        gitops.repo.close()
    assert github.errors == [], github.errors
