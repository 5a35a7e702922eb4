"""Promotion converges by itself (issue 11, item 1) through a real worker subprocess, a private
Redis, the real registry, a bare Git origin and the GitHub API stand-in: a merge into
env/nonprod while a needed build runs is `pending`, and the promotion commit follows within
10 s of the build finishing (its report, "layering.report_build", is the trigger); a push to
env/prod during the soak is `pending` with the time left, and the promotion happens within
10 s of the soak's end with no new push (a countdown). No beat runs here: the triggers alone
converge (the sweep is covered by tests/chaos/test_promotion_post_push.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from pytest_httpserver import HTTPServer

from pipeline.adapters import build_records
from pipeline.core import builds, promotion
from tests import services
from tests.conftest import require_tools
from tests.integration.promotion_support import EnvRepo, push_targets, recorded_builds
from tests.plugins.builds import StartWorker, Worker
from tests.plugins.github import GitHubStandIn, load_operations

pytestmark = pytest.mark.integration

FULL_NAME = "acme/gitops"
SOAK_SECONDS = 5
CONVERGED_WITHIN = 10.0  # seconds after a wait ends, as issue 11 states


@dataclass
class Stage:
    gitops: EnvRepo
    github: GitHubStandIn
    worker: Worker
    builds: build_records.BuildStore
    registry_host: str

    def send(self, task: str, *args: object, queue: str = "promotions") -> None:
        self.worker.app.send_task(task, args=list(args), queue=queue)

    def wait_status(self, sha: str, context: str, state: str, *, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            latest = self.github.latest(sha).get(context)
            if latest is not None and latest["state"] == state:
                return str(latest["description"])
            time.sleep(0.05)
        raise TimeoutError(
            f"{context} on {sha[:12]} never {state}: {self.github.contexts(sha)}\n"
            + self.worker.log.read_text()[-4000:]
        )

    def wait_head_moves(self, branch: str, old: str, *, deadline: float) -> str:
        while time.monotonic() < deadline:
            head = self.gitops.origin_head(branch)
            if head != old:
                return head
            time.sleep(0.05)
        raise TimeoutError(f"{branch} still at {old[:12]}\n" + self.worker.log.read_text()[-4000:])


@pytest.fixture(scope="module")
def stage(
    tmp_path_factory: pytest.TempPathFactory,
    registry: services.Registry,
    start_worker: StartWorker,
) -> Iterator[Stage]:
    require_tools("git", "redis-server", "skopeo")
    directory = tmp_path_factory.mktemp("promotion-converges")
    private_redis = services.RedisServer(directory / "redis").start()
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    github = GitHubStandIn(server, load_operations())
    gitops = EnvRepo(directory / "repo")
    gitops.commit("root")
    for branch in ("env/nonprod", "env/prod"):
        gitops.repo.git.branch(branch)
        gitops.push(branch)
    gitops.registry_prefix = f"{registry.host}/converges"
    gitops.add_image("firewalld", "firewalld")
    # no kube anywhere: nonprod's promotion verifies by time, prod soaks from there
    gitops.add_cluster(
        "nonprod",
        environment="nonprod",
        registry=gitops.registry_prefix,
        pools={"worker": "firewalld"},
    )
    gitops.add_cluster(
        "prod",
        environment="prod",
        registry=gitops.registry_prefix,
        pools={"worker": "firewalld"},
        promotes_from="nonprod",
        soak=f"{SOAK_SECONDS}s",
    )
    gitops.commit("seed")
    gitops.push("main")
    worker = start_worker(
        "converges",
        concurrency=2,
        queues="promotions,events",
        extra_env={
            "LAYERING_REDIS_URL": private_redis.url,
            "LAYERING_REPO_URL": gitops.url,
            "LAYERING_GITHUB_REPOSITORY": FULL_NAME,
            "LAYERING_GITHUB_API_URL": github.url,
            "LAYERING_PROMOTION_MODE": "commit",
        },
    )
    store = recorded_builds(private_redis.url)
    try:
        yield Stage(gitops, github, worker, store, registry.host)
    finally:
        worker.stop()
        store.client.close()
        server.clear()
        server.stop()
        private_redis.stop()
    assert github.errors == [], "requests the GitHub API would refuse:\n" + "\n".join(github.errors)


def test_merge_while_the_build_runs_then_the_soak_promote_by_themselves(stage: Stage) -> None:
    gitops = stage.gitops
    main = gitops.origin_head("main")
    (target,) = promotion.targets(gitops.origin_model(main), "nonprod")
    # main's build of the key is running (created as the event flow creates it)
    record = stage.builds.create_queued(
        image="firewalld", cluster="nonprod", commit_sha=main, build_key=target.build_key
    )
    record = builds.start(builds.begin_attempt(record, now=time.time()), now=time.time())
    stage.builds.save(record)

    merge = gitops.merge_into("main", "env/nonprod")
    stage.send("layering.promote", merge, "nonprod")
    description = stage.wait_status(merge, "layering/promote/nonprod", "pending")
    assert description.startswith("waiting: nonprod/worker waits for the build of firewalld")
    assert gitops.origin_head("env/nonprod") == merge  # nothing committed

    # the build pushes and records its digest, then its report (the task's link) runs
    push_targets(stage.registry_host, [target], built=stage.builds)
    digest = stage.builds.built(target.build_key, target.image_repository)
    assert digest is not None
    done = builds.succeed(record, digest=digest.digest, now=time.time())
    stage.builds.save(done)
    finished = time.monotonic()
    stage.send("layering.report_build", done.to_dict(), main, "branch:main", queue="events")
    committed = stage.wait_head_moves("env/nonprod", merge, deadline=finished + CONVERGED_WITHIN)
    print(f"build finished -> promotion commit: {time.monotonic() - finished:.2f}s")
    assert gitops.origin_history("env/nonprod")[1].hexsha == merge
    stage.wait_status(merge, "layering/promote/nonprod", "success")
    assert stage.github.contexts(merge)["layering/promote/nonprod"][0] == "pending"

    # env/prod takes nonprod's digest once it has soaked there (verified by time at the
    # promotion commit): a push now is pending with the time left
    soak_ends = time.monotonic() + SOAK_SECONDS
    prod_merge = gitops.merge_into("env/nonprod", "env/prod")
    stage.send("layering.promote", prod_merge, "prod")
    description = stage.wait_status(prod_merge, "layering/promote/prod", "pending")
    assert "soaking on nonprod" in description
    assert " left" in description
    assert gitops.origin_head("env/prod") == prod_merge
    # ... and the promotion happens when the soak is over, with no new push
    promoted = stage.wait_head_moves("env/prod", prod_merge, deadline=soak_ends + CONVERGED_WITHIN)
    print(f"soak over -> promotion commit: {time.monotonic() - soak_ends:.2f}s")
    assert promoted != committed
    assert stage.wait_status(prod_merge, "layering/promote/prod", "success")
    assert len(gitops.origin_history("env/prod")) == len(gitops.origin_history("env/nonprod")) + 2
