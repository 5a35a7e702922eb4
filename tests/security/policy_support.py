"""What the policy security tests share (test_gate_policy, test_unmanaged_machineconfig,
test_own_commit, test_tag_trust, test_upstream_reread): a GitOps repository with env branches on
a bare origin; images built by a real worker (buildah, the session registry), so each build
records its digest exactly as the pipeline does; the GitHub API stand-in receiving statuses;
and helpers to open pull requests and run the gate and promotion tasks by name, as the receiver
enqueues them.

Nothing here reaches into the pipeline's storage: digests are recorded by real builds and
verifications by real promotions and rollout watches, so the tests hold whatever the stores
look like inside."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from celery.result import AsyncResult
from pytest_httpserver import HTTPServer

from pipeline.core import commit_status, machineconfig
from tests import services
from tests.integration.promotion_support import EnvRepo
from tests.plugins.builds import BaseImage, StartWorker, Worker, submit_build
from tests.plugins.github import GitHubStandIn, load_operations

FULL_NAME = "acme/gitops"
# statuses are delivered by "layering.report_status" on the events queue
WORKER_QUEUES = "promotions,events,builds"
# one registry path per test session: images built by one module are reused by the next
SESSION_PREFIX = f"sec{uuid.uuid4().hex[:10]}"


def containerfile(package: str) -> str:
    return f"FROM quay.io/fedora/fedora-coreos:stable\nRUN rpm-ostree install {package}\n"


@dataclass
class Stage:
    gitops: EnvRepo
    github: GitHubStandIn
    worker: Worker
    redis: services.RedisServer
    base: BaseImage
    prefix: str  # <registry host>/<path>: where every cluster pushes
    digests: dict[str, str]  # image -> the digest its build recorded

    # -- the repository -------------------------------------------------------------------

    def cluster(
        self,
        name: str,
        *,
        environment: str,
        pools: Mapping[str, str],
        promotes_from: str | None = None,
        soak: str = "0s",
        kube: str | None = None,
    ) -> None:
        """Write clusters/<name>/cluster.yaml on the current branch of the work tree."""
        self.gitops.add_cluster(
            name,
            environment=environment,
            registry=self.prefix,
            pools=pools,
            promotes_from=promotes_from,
            soak=soak,
            kube=kube,
            base_image=self.base.ref,
        )

    def on_main(self, change: Callable[[Stage], None], message: str) -> str:
        """Commit `change` on main and push it."""
        git = self.gitops.repo.git
        git.checkout("-q", "main")
        change(self)
        sha = self.gitops.commit(message)
        self.gitops.push("main")
        return sha

    def branch_from_main(self, branch: str) -> str:
        """env/<e> (or any branch) created at main's head, pushed: the rules now in force."""
        git = self.gitops.repo.git
        git.checkout("-q", "main")
        self.gitops.repo.remote("origin").push(f"main:refs/heads/{branch}").raise_if_error()
        return self.gitops.origin_head(branch)

    def pull_request(self, name: str, base: str, change: Callable[[Stage], None]) -> str:
        """A branch `name` from `base` with `change` committed, pushed; returns its head."""
        git = self.gitops.repo.git
        git.fetch("-q", "origin")
        git.checkout("-q", "-B", name, f"origin/{base}")
        change(self)
        head = self.gitops.commit(f"pull request {name}")
        self.gitops.push(name)
        git.checkout("-q", "main")
        return head

    def merge(self, source: str, branch: str, *, message: str) -> str:
        """Merge `source` into `branch` as a person would, with `message`, and push it."""
        git = self.gitops.repo.git
        git.fetch("-q", "origin")
        git.checkout("-q", "-B", branch, f"origin/{branch}")
        git.merge("--no-ff", "-m", message, f"origin/{source}")
        self.gitops.push(branch)
        sha = self.gitops.repo.head.commit.hexsha
        git.checkout("-q", "main")
        return sha

    def write(self, path: str, document: object) -> None:
        text = document if isinstance(document, str) else yaml.safe_dump(document)
        self.gitops.write(path, text)

    # -- images -----------------------------------------------------------------------------

    def build(self, image: str, cluster: str, *, commit_sha: str | None = None) -> dict[str, Any]:
        """Build `image` for `cluster` at main's head (or `commit_sha`) through the worker,
        as the event flow does; returns the final record."""
        build_id = submit_build(
            self.worker.app,
            self.worker.settings,
            source=str(self.gitops.origin),
            commit_sha=commit_sha or self.gitops.origin_head("main"),
            image=image,
            cluster=cluster,
        )
        record = self.worker.wait_for_build(build_id, timeout=240)
        assert record["state"] in ("succeeded", "skipped"), record
        self.digests[image] = str(record["digest"])
        return record

    # -- tasks and statuses -------------------------------------------------------------------

    def run(self, task: str, *args: object, timeout: float = 90) -> Any:
        sent = self.worker.app.send_task(task, args=list(args), queue="promotions")
        try:
            return AsyncResult(sent.id, app=self.worker.app).get(timeout=timeout)
        except Exception as exc:
            raise AssertionError(f"{task}: {exc}\n{self.worker.log.read_text()[-4000:]}") from exc

    def gate(self, head: str, environment: str, pr_number: int) -> dict[str, Any]:
        decision: dict[str, Any] = self.run("layering.gate", head, environment, pr_number)
        return decision

    def promote(self, sha: str, environment: str) -> dict[str, Any]:
        outcome: dict[str, Any] = self.run("layering.promote", sha, environment)
        return outcome

    def wait_status(self, sha: str, context: str, state: str, timeout: float = 60) -> str:
        """The description of `context` on `sha` once its latest state is `state`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            latest = self.github.latest(sha).get(context)
            if latest is not None and latest["state"] == state:
                return str(latest["description"])
            time.sleep(0.1)
        raise TimeoutError(
            f"{context} on {sha[:12]}: {self.github.contexts(sha)}; worker log:\n"
            + self.worker.log.read_text()[-4000:]
        )

    def short(self, image: str) -> str:
        return f"sha256:{commit_status.short_digest(self.digests[image])}"


def nonprod_promoted_upstream_of(stage: Stage, cluster: str) -> None:
    """nonprod runs firewalld, built and promoted (verified by time); `cluster` is an
    environment of its own, promoted from nonprod, with the same pool and image."""

    def clusters(s: Stage) -> None:
        s.cluster("nonprod", environment="nonprod", pools={"worker": "firewalld"})
        s.cluster(
            cluster, environment=cluster, pools={"worker": "firewalld"}, promotes_from="nonprod"
        )

    stage.on_main(clusters, "clusters")
    stage.build("firewalld", "nonprod")
    stage.branch_from_main("env/nonprod")
    assert stage.promote(stage.gitops.origin_head("env/nonprod"), "nonprod")["commit_sha"]


def unmanaged(name: str, *, role: str, os_image_url: str, managed: bool = False) -> dict[str, Any]:
    """A hand-written MachineConfig setting osImageURL (labelled as the pipeline's when
    `managed`: a label proves nothing)."""
    labels = {machineconfig.ROLE_LABEL: role}
    if managed:
        labels[machineconfig.MANAGED_BY_LABEL] = machineconfig.MANAGER
    return {
        "apiVersion": machineconfig.API_VERSION,
        "kind": machineconfig.KIND,
        "metadata": {"name": name, "labels": labels},
        "spec": {"osImageURL": os_image_url},
    }


@contextmanager
def stage(
    directory: Path,
    *,
    registry: services.Registry,
    base: BaseImage,
    start_worker: StartWorker,
    worker_name: str,
    prefix: str = SESSION_PREFIX,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[Stage]:
    """A private Redis, the GitHub API stand-in, a bare origin with `main` holding two images
    (firewalld, htop) and a worker (events, builds and promotions) on that Redis and origin."""
    private_redis = services.RedisServer(directory / "redis").start()
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    github = GitHubStandIn(server, load_operations())
    gitops = EnvRepo(directory / "repo")
    gitops.registry_prefix = f"{registry.host}/{prefix}"
    gitops.write("images/firewalld/Containerfile", containerfile("firewalld"))
    gitops.write("images/htop/Containerfile", containerfile("htop"))
    gitops.commit("images")
    gitops.push("main")
    worker = start_worker(
        worker_name,
        concurrency=2,
        queues=WORKER_QUEUES,
        extra_env={
            "LAYERING_REDIS_URL": private_redis.url,
            "LAYERING_REPO_URL": gitops.url,
            "LAYERING_GITHUB_REPOSITORY": FULL_NAME,
            "LAYERING_GITHUB_API_URL": github.url,
            "LAYERING_ROLLOUT_WATCH_SECONDS": "30",
            **(extra_env or {}),
        },
    )
    try:
        yield Stage(gitops, github, worker, private_redis, base, gitops.registry_prefix, {})
    finally:
        worker.stop()
        server.clear()
        server.stop()
        private_redis.stop()
    assert github.errors == [], "requests the GitHub API would refuse:\n" + "\n".join(github.errors)
