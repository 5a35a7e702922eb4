"""The promotion stage's Celery tasks enqueued by name to a real worker subprocess, as the
receiver and beat enqueue them: a private Redis, a bare Git origin with env branches, the real
registry (read with skopeo by the worker), kmock with the MCO stand-in, and the GitHub API
stand-in receiving the statuses."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis
from celery.result import AsyncResult
from pytest_httpserver import HTTPServer

from pipeline import machineconfig, promotion, yamlfile
from pipeline.adapters.promotions import PromotionStore
from tests import services
from tests.conftest import require_tools
from tests.integration.promotion_support import BASE, EnvRepo, chained_repo
from tests.plugins.builds import REPO_ROOT, StartWorker, Worker
from tests.plugins.github import GitHubStandIn, load_operations
from tests.plugins.kube import KubeServer, MachineConfigOperator

pytestmark = pytest.mark.integration

FULL_NAME = "acme/gitops"
CONTEXT = "nonprod-admin"
QUEUE = "promotions"


@dataclass
class Stage:
    gitops: EnvRepo
    github: GitHubStandIn
    worker: Worker
    store: PromotionStore
    kube: KubeServer
    digests: dict[str, str]  # tag reference -> digest
    service_env: dict[str, str]

    def metrics(self) -> str:
        """GET /metrics of a `layering serve` process with the worker's settings."""
        port = services.free_port()
        argv = [sys.executable, "-m", "pipeline.cli", "serve", "--port", str(port)]
        log = self.worker.log.with_name("serve.log")
        process = services.start(argv, log=log, env=self.service_env, cwd=REPO_ROOT)
        try:
            services.wait_for_port(port, process=process)
            answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        finally:
            services.stop_process(process)
        assert answer.status_code == 200, log.read_text()[-2000:]
        return answer.text

    def run(self, task: str, *args: object, timeout: float = 60) -> Any:
        sent = self.worker.app.send_task(task, args=list(args), queue=QUEUE)
        try:
            return AsyncResult(sent.id, app=self.worker.app).get(timeout=timeout)
        except Exception as exc:
            raise AssertionError(f"{task}: {exc}\n{self.worker.log.read_text()[-4000:]}") from exc

    def wait_status(self, sha: str, context: str, state: str, timeout: float = 60) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = self.github.contexts(sha).get(context, [])
            if states and states[-1] == state:
                return states
            time.sleep(0.1)
        raise TimeoutError(
            f"{context} on {sha[:12]}: {self.github.contexts(sha)}; worker log:\n"
            + self.worker.log.read_text()[-4000:]
        )


@pytest.fixture(scope="module")
def stage(
    tmp_path_factory: pytest.TempPathFactory,
    registry: services.Registry,
    start_worker: StartWorker,
) -> Iterator[Stage]:
    require_tools("git", "redis-server", "skopeo")
    directory = tmp_path_factory.mktemp("promotion-tasks")
    private_redis = services.RedisServer(directory / "redis").start()
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    github = GitHubStandIn(server, load_operations())
    kube = KubeServer(directory).start()
    kubeconfig = kube.kubeconfig([CONTEXT])

    def staging(gitops: EnvRepo, prefix: str) -> None:
        # kube access configured, but no such context in the kubeconfig
        gitops.add_cluster(
            "staging", environment="staging", registry=prefix, pools={}, kube="gone-admin"
        )

    gitops, digests = chained_repo(
        directory / "repo", registry.host, kube_context=CONTEXT, soak="0s", extra=staging
    )
    extra_env = {
        "LAYERING_REDIS_URL": private_redis.url,
        "LAYERING_REPO_URL": gitops.url,
        "LAYERING_GITHUB_REPOSITORY": FULL_NAME,
        "LAYERING_GITHUB_API_URL": github.url,
        "KUBECONFIG": str(kubeconfig),
        "LAYERING_ROLLOUT_WATCH_SECONDS": "30",
    }
    worker = start_worker("promotions", concurrency=2, queues=QUEUE, extra_env=extra_env)
    service_env = {**os.environ, **worker.env.variables, **extra_env, "PYTHONPATH": str(REPO_ROOT)}
    client: redis.Redis[bytes] = redis.Redis.from_url(private_redis.url)
    try:
        yield Stage(gitops, github, worker, PromotionStore(client), kube, digests, service_env)
    finally:
        worker.stop()
        client.close()
        kube.stop()
        server.clear()
        server.stop()
        private_redis.stop()
    assert github.errors == [], "requests the GitHub API would refuse:\n" + "\n".join(github.errors)


def test_promote_rollout_and_gate_through_the_worker(stage: Stage) -> None:
    gitops = stage.gitops
    main = gitops.origin_head("main")
    mco = MachineConfigOperator(stage.kube.kubeconfig([CONTEXT]), CONTEXT)
    mco.create_pool("worker", machines=2, os_image_url=BASE + "a" * 64)

    # a pull request main -> env/prod before anything was verified in nonprod
    gate = stage.run("layering.gate", main, "prod", 7)
    assert gate["state"] == "failure"
    assert stage.github.contexts(main) == {"layering/gate/prod": ["failure"]}
    description = stage.github.latest(main)["layering/gate/prod"]["description"]
    firewalld = next(d for ref, d in stage.digests.items() if "/firewalld:" in ref)
    assert firewalld[:19] in description
    assert "nonprod" in description

    # the merge into env/nonprod: one promotion commit with every nonprod pool, pushed
    merge = gitops.merge_into("main", "env/nonprod")
    outcome = stage.run("layering.promote", merge, "nonprod")
    assert outcome["refusals"] == []
    committed = outcome["commit_sha"]
    assert committed
    assert gitops.origin_head("env/nonprod") == committed
    assert gitops.origin_history("env/nonprod")[1].hexsha == merge
    promoted = gitops.origin_model(committed)
    for target in promotion.targets(promoted, "nonprod"):
        document = yamlfile.load(
            promoted.machineconfigs[machineconfig.path_for(target.cluster, target.pool)]
        )
        assert document["spec"]["osImageURL"].endswith("@" + stage.digests[target.tag_reference])
    assert len(promoted.machineconfigs) == 2
    assert {c: s[-1] for c, s in stage.github.contexts(merge).items()} == {
        "layering/promote/nonprod": "success",
        "layering/promote/nonprod-b": "success",
    }
    # the cluster without kube is verified by time; nonprod waits for its rollout
    verified = stage.store.verifications(["nonprod", "nonprod-b"])
    assert {(c, v.method) for (c, _), v in verified.items()} == {
        ("nonprod-b", promotion.VerificationMethod.TIME)
    }

    # "layering.watch_rollout" was enqueued for nonprod; the MCO rolls the pool out
    url = yamlfile.load(promoted.machineconfigs[machineconfig.path_for("nonprod", "worker")])[
        "spec"
    ]["osImageURL"]
    stage.wait_status(committed, "layering/rollout/nonprod", "pending")
    mco.start_update("worker", url)
    mco.node_updated("worker", 1)
    mco.node_updated("worker", 2)
    states = stage.wait_status(committed, "layering/rollout/nonprod", "success")
    assert set(states[:-1]) == {"pending"}
    verification = stage.store.verifications(["nonprod"])[("nonprod", firewalld)]
    assert verification.method is promotion.VerificationMethod.ROLLOUT
    assert verification.healthy

    # the verification re-evaluates the watched gate: the pull request may merge now
    # (the promotion re-evaluated it too: still failing then, nonprod had not rolled out)
    gates = stage.wait_status(main, "layering/gate/prod", "success")
    assert set(gates[:-1]) == {"failure"}
    assert stage.store.watched_gates() == []

    # a repeated promotion of the same head commits nothing
    again = stage.run("layering.promote", merge, "nonprod")
    assert again["commit_sha"] is None
    assert gitops.origin_head("env/nonprod") == committed
    mco.close()


def test_base_drift_task_records_what_kmock_serves(stage: Stage) -> None:
    mco = MachineConfigOperator(stage.kube.kubeconfig([CONTEXT]), CONTEXT)
    newer = BASE + "e" * 64
    mco.seed_base(newer, release="4.16.9")
    mco.close()
    assert stage.run("layering.base_drift") == {"nonprod": True, "staging": False}
    drift = stage.store.drift()["nonprod"]
    assert (drift.expected, drift.actual, drift.release_version) == (
        BASE + "a" * 64,
        newer,
        "4.16.9",
    )
    assert drift.drifted
    unreadable = stage.store.drift()["staging"]
    assert "'gone-admin'" in unreadable.error
    assert not unreadable.drifted

    exposed = stage.metrics()
    assert 'layering_base_drift{cluster="nonprod"} 1.0' in exposed
    assert 'layering_base_drift{cluster="staging"} 0.0' in exposed
    assert 'layering_base_drift_check_failed{cluster="staging"} 1.0' in exposed


def test_metrics_show_the_promoted_pools(stage: Stage) -> None:
    stage.run("layering.promote", stage.gitops.merge_into("main", "env/nonprod"), "nonprod")
    exposed = stage.metrics()
    firewalld = next(d for ref, d in stage.digests.items() if "/firewalld:" in ref)
    assert (
        'layering_promoted_pool_info{cluster="nonprod",digest="'
        f'{firewalld}",image="firewalld",pool="worker"}} 1.0'
    ) in exposed
    assert 'layering_promoted_pools{cluster="nonprod-b"} 1.0' in exposed
    assert 'layering_promoted_timestamp_seconds{cluster="nonprod",pool="worker"}' in exposed
