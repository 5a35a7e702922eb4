"""A digest eligible for the next environment opens its promotion pull request (issue 11 item 2)
with the real adapters: a bare GitOps repository, the real registry, a private Redis and the
GitHub API stand-in (every request schema-checked). nonprod's time-based verification queues
"layering.promote_downstream" (pull-request mode only); that run merges env/nonprod into
env/prod on layering/promote/prod, renders prod's MachineConfigs on the merge and opens one
pull request into env/prod; a conflicting merge opens none and says which paths conflict."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import git
import pytest
import redis

from pipeline.adapters import branch_writer, promotion_waits
from pipeline.core import machineconfig, promotion, tasks, yamlfile
from pipeline.flows import downstream as downstream_flow
from pipeline.flows import promote as promote_flow
from tests import services
from tests.conftest import require_tools
from tests.integration import pull_request_support as support
from tests.integration.promotion_support import EnvRepo, Recorder, push_targets, recorded_builds
from tests.plugins.github import GitHubStandIn

pytestmark = pytest.mark.integration

NOW = 1_800_000_000.0


@dataclass
class Queue:
    sent: list[tasks.TaskCall] = field(default_factory=list)

    def send(
        self,
        call: tasks.TaskCall,
        *,
        on_success: tasks.TaskCall | None = None,
        on_error: tasks.TaskCall | None = None,
    ) -> None:
        self.sent.append(call)

    def revoke(self, task_id: str) -> None:
        raise AssertionError("the promotion flows cancel nothing")


@pytest.fixture
def redis_client(redis_server: services.RedisServer) -> Iterator[redis.Redis[bytes]]:
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def gitops(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    registry: services.Registry,
    redis_server: services.RedisServer,
    redis_client: redis.Redis[bytes],
    github_api: GitHubStandIn,
) -> EnvRepo:
    """env/nonprod and env/prod start at root; main (firewalld on nonprod's and prod's worker
    pools, prod promotesFrom nonprod, soak 0s unless the test asks for another) is built and
    merged into env/nonprod only."""
    require_tools("git")
    gitops = EnvRepo(tmp_path / "gitops")
    gitops.commit("root")
    for branch in ("env/nonprod", "env/prod"):
        gitops.repo.git.branch(branch)
        gitops.push(branch)
    gitops.registry_prefix = f"{registry.host}/t{uuid.uuid4().hex[:12]}"
    gitops.add_image("firewalld", "firewalld")
    for name, upstream in (("nonprod", None), ("prod", "nonprod")):
        gitops.add_cluster(
            name,
            environment=name,
            registry=gitops.registry_prefix,
            pools={"worker": "firewalld"},
            promotes_from=upstream,
            soak=getattr(request, "param", "0s"),
        )
    gitops.commit("seed")
    gitops.push("main")
    model = gitops.origin_model("refs/heads/main")
    targets = promotion.targets(model, "nonprod") + promotion.targets(model, "prod")
    push_targets(registry.host, targets, built=recorded_builds(redis_server.url))
    gitops.merge_into("main", "env/nonprod")
    support.wire(github_api, gitops)
    return gitops


def open_pulls(stand_in: GitHubStandIn) -> list[int]:
    return [n for n, pull in sorted(stand_in.pulls.items()) if pull["state"] == "open"]


def promote_nonprod(
    gitops: EnvRepo, tmp_path: Path, redis_client: redis.Redis[bytes], url: str, *, pr: bool
) -> Queue:
    """nonprod promoted in commit mode (its own branch unprotected here), then promoted again:
    the branch holds it, so its time-based verification is recorded."""
    writer = branch_writer.BranchWriter(url=gitops.url, workdir=tmp_path / "commit-scratch")
    queue = Queue()
    for _ in range(2):
        promote_flow.run(
            gitops.origin_head("env/nonprod"),
            "nonprod",
            writer=writer,
            sources=support.sources(redis_client, url),
            reporter=Recorder(),
            queue=queue,
            now=lambda: NOW,
            downstream=pr,
        )
    return queue


def promote_prod(
    gitops: EnvRepo,
    tmp_path: Path,
    stand_in: GitHubStandIn,
    redis_client: redis.Redis[bytes],
    url: str,
    recorder: Recorder,
    *,
    at: float = NOW + 1,
    queue: Queue | None = None,
) -> dict[str, object]:
    waits = promotion_waits.PromotionWaits(redis_client)
    writer = support.pr_writer(gitops, tmp_path / "pr-scratch", stand_in, redis_client)
    return downstream_flow.run(
        "prod",
        "nonprod",
        writer=writer.merging("env/nonprod"),
        sources=support.sources(redis_client, url),
        reporter=recorder,
        queue=queue or Queue(),
        now=lambda: at,
        waits=waits,
    )


def parents(gitops: EnvRepo, sha: str) -> list[str]:
    return [c.hexsha for c in git.Repo(gitops.origin).commit(sha).parents]


def test_verified_upstream_opens_prod_pull_request_with_upstream_merged(
    gitops: EnvRepo,
    tmp_path: Path,
    redis_server: services.RedisServer,
    redis_client: redis.Redis[bytes],
    github_api: GitHubStandIn,
) -> None:
    queue = promote_nonprod(gitops, tmp_path, redis_client, redis_server.url, pr=True)
    assert tasks.PromoteDownstream("prod", "nonprod").call() in queue.sent

    prod_head = gitops.origin_head("env/prod")
    nonprod_head = gitops.origin_head("env/nonprod")
    summary = promote_prod(gitops, tmp_path, github_api, redis_client, redis_server.url, Recorder())
    [number] = open_pulls(github_api)
    pull = github_api.pulls[number]
    assert (pull["head"]["ref"], pull["base"]["ref"]) == ("layering/promote/prod", "env/prod")
    assert summary["pull_request"] == number
    head = pull["head"]["sha"]
    assert head == summary["commit_sha"] == support.branch_head(gitops, "layering/promote/prod")
    assert gitops.origin_head("env/prod") == prod_head  # nothing pushed to the env branch
    # a real merge of env/nonprod into env/prod, then prod's MachineConfigs rendered on it
    [merge] = parents(gitops, head)
    assert parents(gitops, merge) == [prod_head, nonprod_head]
    model = gitops.origin_model(head)
    nonprod_model = gitops.origin_model(nonprod_head)
    [target] = promotion.targets(model, "prod")
    url = yamlfile.load(model.machineconfigs[machineconfig.path_for("prod", "worker")])["spec"][
        "osImageURL"
    ]
    nonprod_url = yamlfile.load(
        nonprod_model.machineconfigs[machineconfig.path_for("nonprod", "worker")]
    )["spec"]["osImageURL"]
    assert url.startswith(target.image_repository + "@")
    assert url.rpartition("@")[2] == nonprod_url.rpartition("@")[2]  # the verified digest
    assert url.rpartition("@")[2] in pull["body"]

    # again: the same pull request, the same head (no force-push)
    again = promote_prod(gitops, tmp_path, github_api, redis_client, redis_server.url, Recorder())
    assert again["commit_sha"] == head
    assert open_pulls(github_api) == [number]
    assert github_api.attempts("pulls/create") == 1


def test_conflicting_environments_open_no_pull_request(
    gitops: EnvRepo,
    tmp_path: Path,
    redis_server: services.RedisServer,
    redis_client: redis.Redis[bytes],
    github_api: GitHubStandIn,
) -> None:
    promote_nonprod(gitops, tmp_path, redis_client, redis_server.url, pr=True)
    gitops.repo.git.fetch("origin")
    for branch in ("env/prod", "env/nonprod"):
        gitops.repo.git.checkout("-B", branch, f"origin/{branch}")
        gitops.write("NOTES.md", f"{branch} only\n")
        gitops.commit(f"{branch}: notes")
        gitops.push(branch)
        gitops.repo.git.checkout("main")
    recorder = Recorder()
    summary = promote_prod(gitops, tmp_path, github_api, redis_client, redis_server.url, recorder)
    assert summary["conflicts"] == ["NOTES.md"]
    assert open_pulls(github_api) == []
    assert support.branch_head(gitops, "layering/promote/prod") is None
    sha, _, state, description = recorder.last("layering/promote/prod")
    assert (sha, state) == (gitops.origin_head("env/prod"), "failure")
    assert "NOTES.md" in description
    assert "merge env/nonprod into env/prod" in description


def test_commit_mode_queues_no_downstream_promotion(
    gitops: EnvRepo,
    tmp_path: Path,
    redis_server: services.RedisServer,
    redis_client: redis.Redis[bytes],
    github_api: GitHubStandIn,
) -> None:
    queue = promote_nonprod(gitops, tmp_path, redis_client, redis_server.url, pr=False)
    assert all(call.name != tasks.PromoteDownstream.NAME for call in queue.sent)
    assert open_pulls(github_api) == []


@pytest.mark.parametrize("gitops", ["1h"], indirect=True)
def test_soaking_digest_waits_then_opens_the_pull_request(
    gitops: EnvRepo,
    tmp_path: Path,
    redis_server: services.RedisServer,
    redis_client: redis.Redis[bytes],
    github_api: GitHubStandIn,
) -> None:
    promote_nonprod(gitops, tmp_path, redis_client, redis_server.url, pr=True)
    queue = Queue()
    recorder = Recorder()
    early = promote_prod(
        gitops, tmp_path, github_api, redis_client, redis_server.url, recorder, queue=queue
    )
    assert early["commit_sha"] is None
    assert early["waits"] == ["prod/worker: soaking"]
    assert open_pulls(github_api) == []
    # the wait says so, and is kept where the sweep finds it should the countdown be lost
    assert recorder.states("layering/promote/prod") == ["pending"]
    kept = {w.slot: w for w in promotion_waits.PromotionWaits(redis_client).waits()}
    assert kept["prod<-nonprod"].from_upstream == "nonprod"
    # runs again by itself just after the soak's end
    again = tasks.PromoteDownstream("prod", "nonprod")
    assert queue.sent == [again.call(countdown=3600 - 1 + downstream_flow.SOAK_MARGIN_SECONDS)]
    soaked = promote_prod(
        gitops, tmp_path, github_api, redis_client, redis_server.url, Recorder(), at=NOW + 3601
    )
    [number] = open_pulls(github_api)
    assert soaked["pull_request"] == number
    slots = {w.slot for w in promotion_waits.PromotionWaits(redis_client).waits()}
    assert "prod<-nonprod" not in slots
