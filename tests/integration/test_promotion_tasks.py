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

from pipeline.adapters.promotion_store import PromotionStore
from pipeline.core import machineconfig, promotion, verification, yamlfile
from tests import services
from tests.conftest import require_tools
from tests.integration.promotion_support import (
    BASE,
    EnvRepo,
    chained_repo,
    push_targets,
    recorded_builds,
)
from tests.plugins.builds import REPO_ROOT, VERIFICATION_KEY, StartWorker, Worker
from tests.plugins.github import GitHubStandIn, load_operations
from tests.plugins.kube import KubeServer, MachineConfigOperator

pytestmark = pytest.mark.integration

FULL_NAME = "acme/gitops"
CONTEXT = "nonprod-admin"
QUEUE = "promotions"
# statuses are delivered by "layering.report_status" on the events queue
WORKER_QUEUES = "promotions,events"


@dataclass
class Stage:
    gitops: EnvRepo
    github: GitHubStandIn
    worker: Worker
    store: PromotionStore
    kube: KubeServer
    digests: dict[str, str]  # tag reference -> digest
    service_env: dict[str, str]

    registry_host: str
    start_worker: StartWorker

    def serve(self, *paths: str) -> list[str]:
        """GET each path of one `layering serve` process with the worker's settings."""
        port = services.free_port()
        argv = [sys.executable, "-m", "pipeline.cli", "serve", "--port", str(port)]
        log = self.worker.log.with_name("serve.log")
        process = services.start(argv, log=log, env=self.service_env, cwd=REPO_ROOT)
        try:
            services.wait_for_port(port, process=process)
            answers = [httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10) for path in paths]
        finally:
            services.stop_process(process)
        for answer in answers:
            assert answer.status_code == 200, log.read_text()[-2000:]
        return [answer.text for answer in answers]

    def metrics(self) -> str:
        return self.serve("/metrics")[0]

    def digest(self, image: str) -> str:
        return next(d for ref, d in self.digests.items() if f"/{image}:" in ref)

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
        # takes what nonprod-b (no kube: time-based verification) ran for two seconds
        gitops.add_cluster(
            "canary",
            environment="canary",
            registry=prefix,
            pools={"infra": "htop"},
            promotes_from="nonprod-b",
            soak="2s",
        )

    built = recorded_builds(private_redis.url)
    gitops, digests = chained_repo(
        directory / "repo",
        registry.host,
        kube_context=CONTEXT,
        soak="0s",
        built=built,
        extra=staging,
    )
    built.client.close()
    extra_env = {
        "LAYERING_REDIS_URL": private_redis.url,
        "LAYERING_REPO_URL": gitops.url,
        "LAYERING_GITHUB_REPOSITORY": FULL_NAME,
        "LAYERING_GITHUB_API_URL": github.url,
        "KUBECONFIG": str(kubeconfig),
        "LAYERING_ROLLOUT_WATCH_SECONDS": "30",
    }
    worker = start_worker("promotions", concurrency=2, queues=WORKER_QUEUES, extra_env=extra_env)
    service_env = {**os.environ, **worker.env.variables, **extra_env, "PYTHONPATH": str(REPO_ROOT)}
    client: redis.Redis[bytes] = redis.Redis.from_url(private_redis.url)
    try:
        yield Stage(
            gitops,
            github,
            worker,
            PromotionStore(client, key=VERIFICATION_KEY.encode()),
            kube,
            digests,
            service_env,
            registry.host,
            start_worker,
        )
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
    stage.wait_status(main, "layering/gate/prod", "failure")
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
    for cluster in ("nonprod", "nonprod-b"):
        stage.wait_status(merge, f"layering/promote/{cluster}", "success")
    assert {c: s[-1] for c, s in stage.github.contexts(merge).items()} == {
        "layering/promote/nonprod": "success",
        "layering/promote/nonprod-b": "success",
    }
    # the cluster without kube is verified by time; nonprod waits for its rollout
    verified = stage.store.verifications(["nonprod", "nonprod-b"])
    assert {(c, v.method) for (c, _), v in verified.items()} == {
        ("nonprod-b", verification.VerificationMethod.TIME)
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
    proven = stage.store.verifications(["nonprod"])[("nonprod", firewalld)]
    assert proven.method is verification.VerificationMethod.ROLLOUT
    assert proven.healthy

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
    hostile = "4.16.9<script>alert(1)</script>"  # the ConfigMap is cluster data, not ours
    mco.seed_base(newer, release=hostile)
    mco.close()
    assert stage.run("layering.base_drift") == {"nonprod": True, "staging": False}
    drift = stage.store.drift()["nonprod"]
    assert (drift.expected, drift.actual, drift.release_version) == (
        BASE + "a" * 64,
        newer,
        hostile,
    )
    assert drift.drifted
    unreadable = stage.store.drift()["staging"]
    assert "'gone-admin'" in unreadable.error
    assert not unreadable.drifted

    dashboard, exposed = stage.serve("/builds", "/metrics")
    drift_section = dashboard.split('<div id="drift">', 1)[1].split("</div>", 1)[0]
    row = next(tr for tr in drift_section.split("<tr>") if tr.startswith("<td>nonprod</td>"))
    assert 'class="state state-drift">drift<' in row
    assert f"<code>{newer}</code>" in row
    assert f"<code>{BASE}{'a' * 64}</code>" in row
    assert "4.16.9&lt;script&gt;alert(1)&lt;/script&gt;" in row
    assert "<script>alert" not in dashboard
    staging = next(tr for tr in drift_section.split("<tr>") if tr.startswith("<td>staging</td>"))
    assert "unknown: " in staging
    assert "gone-admin" in staging
    # the pools of the nonprod environment say it too
    assert f"DRIFT: cluster runs {newer}" in dashboard.split('data-environment="nonprod"', 1)[1]
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


def test_gate_judges_the_merge_result_not_the_head(stage: Stage) -> None:
    gitops = stage.gitops
    git = gitops.repo.git
    # env/prod carries main (prod's worker pool runs firewalld, verified on nonprod by now)
    gitops.merge_into("main", "env/prod")
    git.checkout("-q", "-b", "feature", "main")
    gitops.write("README.md", "prod takes firewalld\n")
    head = gitops.commit("docs")
    gitops.push("feature")
    git.checkout("-q", "main")
    assert stage.run("layering.gate", head, "prod", 8)["state"] == "success"

    # a hotfix straight on env/prod gives prod an infra pool with htop, never verified on
    # nonprod: the same head alone would still pass, its merge would promote htop unverified
    git.checkout("-q", "env/prod")
    pools = {"worker": "firewalld", "infra": "htop"}
    gitops.add_cluster(
        "prod",
        environment="prod",
        registry=gitops.registry_prefix,
        pools=pools,
        promotes_from="nonprod",
    )
    gitops.commit("hotfix: prod infra pool")
    gitops.push("env/prod")
    base = gitops.repo.head.commit.hexsha
    git.checkout("-q", "main")
    computed = stage.run("layering.gate", head, "prod", 8)
    assert (computed["state"], computed["merge_source"]) == ("failure", "computed")
    stage.wait_status(head, "layering/gate/prod", "failure")
    description = stage.github.latest(head)["layering/gate/prod"]["description"]
    assert f"htop@sha256:{stage.digest('htop')[7:19]} is not verified on nonprod" in description

    # GitHub's refs/pull/<n>/merge, when it is the merge of this base and head, is used as is
    git.checkout("-q", "-b", "pull-8-merge", "env/prod")
    git.merge("--no-ff", "--no-edit", "-m", "Merge feature into env/prod", "feature")
    offered = gitops.repo.head.commit.hexsha
    assert [p.hexsha for p in gitops.repo.head.commit.parents] == [base, head]
    gitops.repo.remote("origin").push(f"{offered}:refs/pull/8/merge").raise_if_error()
    git.checkout("-q", "main")
    served = stage.run("layering.gate", head, "prod", 8)
    assert served["merge_sha"] == offered
    assert (served["state"], served["merge_source"]) == ("failure", "refs/pull/8/merge")
    assert served["merge_sha"] != computed["merge_sha"]
    # ... and not when it is the merge of an older head (GitHub recomputes it lazily)
    git.checkout("-q", "feature")
    gitops.write("README.md", "prod takes firewalld, really\n")
    newer = gitops.commit("docs again")
    gitops.push("feature")
    git.checkout("-q", "main")
    stale = stage.run("layering.gate", newer, "prod", 8)
    assert (stale["state"], stale["merge_source"]) == ("failure", "computed")

    # a pull request that cannot merge cleanly fails, naming the file
    git.checkout("-q", "-b", "conflict", "main")
    gitops.add_cluster(
        "prod",
        environment="prod",
        registry=gitops.registry_prefix,
        pools={"worker": "firewalld", "infra": "fish"},
        promotes_from="nonprod",
    )
    conflicting = gitops.commit("prod infra runs fish")
    gitops.push("conflict")
    git.checkout("-q", "main")
    conflicted = stage.run("layering.gate", conflicting, "prod", 9)
    assert (conflicted["state"], conflicted["merge_sha"]) == ("failure", None)
    stage.wait_status(conflicting, "layering/gate/prod", "failure")
    assert stage.github.latest(conflicting)["layering/gate/prod"]["description"] == (
        "merge conflicts with env/prod in clusters/prod/cluster.yaml; rebase the pull request"
    )
    for pr_number in (8, 9):
        stage.store.unwatch_gate("prod", pr_number)


def test_gate_pends_while_the_upstream_soaks_then_passes(stage: Stage) -> None:
    gitops = stage.gitops
    gitops.repo.git.push("origin", "main:refs/heads/env/canary")
    # a new htop: a new build key, a digest nobody has verified yet
    gitops.add_image("htop", "htop strace")
    head = gitops.commit("htop: add strace")
    gitops.push("main")
    model = gitops.origin_model(head)
    htop = [t for t in promotion.targets(model, "nonprod") if t.image == "htop"]
    built = recorded_builds(stage.service_env["LAYERING_REDIS_URL"])
    push_targets(stage.registry_host, htop, built=built)
    built.client.close()
    # nonprod-b has no kube: its promotion verifies the digest by time, soak counts from now
    promoted = stage.run("layering.promote", gitops.merge_into("main", "env/nonprod"), "nonprod")
    assert promoted["commit_sha"]
    assert promoted["refusals"] == []

    started = time.monotonic()
    pending = stage.run("layering.gate", head, "canary", 10)
    assert pending["state"] == "pending", pending
    assert pending["description"].startswith("soaking: 2s left; canary/infra (htop): ")
    assert "soaking on nonprod-b: 2s of 2s left" in pending["description"]
    # the task enqueued itself again for when the soak is over
    states = stage.wait_status(head, "layering/gate/canary", "success", timeout=20)
    assert states == ["pending", "success"]
    assert time.monotonic() - started >= 1.5
    assert stage.store.watched_gates() == []


def test_rollout_watch_times_out_and_fails_the_digest(stage: Stage) -> None:
    # a second worker on its own Redis database (broker and store) with short rollout limits
    redis_url = stage.service_env["LAYERING_REDIS_URL"].rsplit("/", 1)[0] + "/1"
    worker = stage.start_worker(
        "rollout-timeout",
        concurrency=1,
        queues=WORKER_QUEUES,
        extra_env={
            **{k: v for k, v in stage.service_env.items() if k.startswith("LAYERING_")},
            "KUBECONFIG": stage.service_env["KUBECONFIG"],
            "LAYERING_REDIS_URL": redis_url,
            "LAYERING_ROLLOUT_WATCH_SECONDS": "1",
            # long enough for the pending status to be delivered before the failure
            # supersedes it on a busy machine (parallel test processes)
            "LAYERING_ROLLOUT_TIMEOUT_SECONDS": "8",
        },
    )
    commit = stage.gitops.origin_head("env/nonprod")
    # the MCO is busy with another config: the promoted image is never rendered
    mco = MachineConfigOperator(stage.kube.kubeconfig([CONTEXT]), CONTEXT)
    mco.start_update("worker", BASE + "f" * 64)
    mco.close()
    try:
        worker.app.send_task(
            "layering.watch_rollout", args=[commit, "nonprod", "nonprod"], queue=QUEUE
        )
        states = stage.wait_status(commit, "layering/rollout/nonprod", "failure", timeout=30)
        assert "pending" in states
        description = stage.github.latest(commit)["layering/rollout/nonprod"]["description"]
        assert description.startswith("rollout timed out after ")
        assert "worker at 0/2 machines updated (waiting for the MCO to render the config)" in (
            description
        )
        client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
        proven = PromotionStore(client, key=VERIFICATION_KEY.encode()).verifications(["nonprod"])[
            ("nonprod", stage.digest("firewalld"))
        ]
        client.close()
        assert not proven.healthy
        assert proven.message == description
    finally:
        worker.stop()
