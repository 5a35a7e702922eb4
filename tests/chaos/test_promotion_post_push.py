"""The steps after a promotion push are durable (issue 11, item 5), against a real worker
subprocess and beat, a Redis with AOF, the real registry, a bare Git origin, kmock with the
MCO stand-in and the GitHub API stand-in. The faults are real: SIGKILL of the worker's process
group while its push is in flight (a post-receive hook holds the push after the ref moved),
the stand-in answering 502 to every status for a while, and Redis restarted (AOF) while the
push is held. Each time the `layering/promote/nonprod` status and the rollout watch (its
`layering/rollout/nonprod` status on the promotion commit) arrive, and exactly one promotion
commit lands."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from pipeline.core import promotion
from tests import services
from tests.chaos.recovery_support import kill_group, wait_until
from tests.conftest import require_tools
from tests.integration.promotion_support import (
    BASE,
    EnvRepo,
    push_targets,
    recorded_builds,
)
from tests.plugins.builds import StartWorker, Worker, launch_beat
from tests.plugins.github import Fault, GitHubStandIn, load_operations
from tests.plugins.kube import KubeServer, MachineConfigOperator

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

CONTEXT = "nonprod-admin"
STATUSES = "repos/create-commit-status"
# holds the service's push after the ref moved, while the HOLD file exists
HOOK = """#!/bin/sh
if [ -e "{hold}" ]; then
  touch "{landed}"
  while [ -e "{hold}" ]; do sleep 0.05; done
fi
"""


@dataclass
class Stage:
    gitops: EnvRepo
    github: GitHubStandIn
    redis: services.RedisServer
    registry_host: str
    start_worker: StartWorker
    worker: Worker
    extra_env: dict[str, str]
    hold: Path
    landed: Path
    round: int = 0

    def restart_worker(self) -> None:
        self.round += 1
        self.worker = self.start_worker(
            f"post-push-{self.round}",
            concurrency=2,
            queues="promotions,events",
            extra_env=self.extra_env,
        )

    def new_version(self, package: str) -> str:
        """A new firewalld on main, built (pushed and recorded), merged into env/nonprod."""
        self.gitops.add_image("firewalld", package)
        head = self.gitops.commit(f"firewalld: {package}")
        self.gitops.push("main")
        built = recorded_builds(self.redis.url)
        push_targets(
            self.registry_host,
            promotion.targets(self.gitops.origin_model(head), "nonprod"),
            built=built,
        )
        built.client.close()
        return self.gitops.merge_into("main", "env/nonprod")

    def promote(self, merge: str) -> None:
        self.worker.app.send_task("layering.promote", args=[merge, "nonprod"], queue="promotions")

    def wait_status(self, sha: str, context: str, state: str, *, timeout: float = 60) -> None:
        wait_until(
            lambda: self.github.contexts(sha).get(context, [""])[-1] == state,
            f"{context} {state} on {sha[:12]} ({self.github.contexts(sha)}); worker log:\n"
            + self.worker.log.read_text()[-3000:],
            timeout=timeout,
            poll=0.05,
        )

    def assert_one_promotion(self, merge: str) -> str:
        """The statuses and the rollout watch arrived, on exactly one promotion commit."""
        self.wait_status(merge, "layering/promote/nonprod", "success")
        commit = self.gitops.origin_head("env/nonprod")
        history = self.gitops.origin_history("env/nonprod")
        assert history[1].hexsha == merge, "exactly one promotion commit after the merge"
        self.wait_status(commit, "layering/rollout/nonprod", "pending")
        return commit


@pytest.fixture(scope="module")
def stage(
    tmp_path_factory: pytest.TempPathFactory,
    registry: services.Registry,
    start_worker: StartWorker,
) -> Iterator[Stage]:
    require_tools("git", "redis-server", "skopeo")
    directory = tmp_path_factory.mktemp("post-push")
    redis = services.RedisServer(directory / "redis", append_only=True).start()
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    github = GitHubStandIn(server, load_operations())
    kube = KubeServer(directory).start()
    kubeconfig = kube.kubeconfig([CONTEXT])
    mco = MachineConfigOperator(kubeconfig, CONTEXT)
    mco.create_pool("worker", machines=2, os_image_url=BASE + "a" * 64)
    mco.close()

    gitops = EnvRepo(directory / "repo")
    gitops.commit("root")
    gitops.repo.git.branch("env/nonprod")
    gitops.push("env/nonprod")
    gitops.registry_prefix = f"{registry.host}/post-push"
    gitops.add_cluster(
        "nonprod",
        environment="nonprod",
        registry=gitops.registry_prefix,
        pools={"worker": "firewalld"},
        kube=CONTEXT,
    )
    hold, landed = directory / "HOLD", directory / "LANDED"
    hook = gitops.origin / "hooks" / "post-receive"
    hook.write_text(HOOK.format(hold=hold, landed=landed))
    hook.chmod(0o755)
    extra_env = {
        "LAYERING_REDIS_URL": redis.url,
        "LAYERING_REPO_URL": gitops.url,
        "LAYERING_GITHUB_REPOSITORY": "acme/gitops",
        "LAYERING_GITHUB_API_URL": github.url,
        "LAYERING_PROMOTION_MODE": "commit",
        "LAYERING_PROMOTION_SWEEP_SECONDS": "1",
        # the branch lock a killed worker held expires soon
        "LAYERING_PROMOTION_LOCK_SECONDS": "3",
        "LAYERING_STATUS_BACKOFF_SECONDS": "0.5",
        "LAYERING_STATUS_BACKOFF_CAP_SECONDS": "2",
        "LAYERING_ROLLOUT_WATCH_SECONDS": "2",
        "KUBECONFIG": str(kubeconfig),
    }
    worker = start_worker(
        "post-push-0", concurrency=2, queues="promotions,events", extra_env=extra_env
    )
    beat = launch_beat(worker, "post-push")
    stage = Stage(
        gitops, github, redis, registry.host, start_worker, worker, extra_env, hold, landed
    )
    try:
        yield stage
    finally:
        hold.unlink(missing_ok=True)
        services.stop_process(beat)
        stage.worker.stop()
        kube.stop()
        server.clear()
        server.stop()
        redis.stop()
    assert github.errors == [], "requests the GitHub API would refuse:\n" + "\n".join(github.errors)


def test_sigkill_between_the_push_and_its_statuses(stage: Stage) -> None:
    merge = stage.new_version("firewalld strace")
    stage.hold.touch()
    stage.promote(merge)
    wait_until(stage.landed.exists, "the promotion push reached the origin", timeout=60)
    kill_group(stage.worker)  # the push is still in flight: no status was queued
    stage.hold.unlink()
    stage.landed.unlink()
    assert "layering/promote/nonprod" not in stage.github.contexts(merge)
    assert stage.gitops.origin_history("env/nonprod")[1].hexsha == merge

    stage.restart_worker()
    stage.assert_one_promotion(merge)


def test_github_answering_502_after_the_push(stage: Stage) -> None:
    merge = stage.new_version("firewalld htop")
    stage.github.outage(STATUSES, Fault(502, message="Bad Gateway"))
    before = stage.github.attempts(STATUSES)
    try:
        stage.promote(merge)
        wait_until(
            lambda: stage.gitops.origin_head("env/nonprod") != merge,
            "the promotion commit",
            timeout=60,
        )
        # the statuses were tried and refused, again and again
        wait_until(lambda: stage.github.attempts(STATUSES) >= before + 4, "502s", timeout=60)
        assert "layering/promote/nonprod" not in stage.github.contexts(merge)
    finally:
        stage.github.outage(STATUSES, None)
    stage.assert_one_promotion(merge)


def test_redis_restarted_mid_promotion(stage: Stage) -> None:
    merge = stage.new_version("firewalld tmux")
    stage.hold.touch()
    stage.promote(merge)
    wait_until(stage.landed.exists, "the promotion push reached the origin", timeout=60)
    stage.redis.stop()
    stage.redis.start()  # the same port and append-only file
    stage.hold.unlink()
    stage.landed.unlink()
    stage.assert_one_promotion(merge)
