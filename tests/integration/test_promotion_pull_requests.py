"""Pull-request mode (issue 11 item 2) with the real adapters: a bare GitOps repository, the real
registry, a private Redis and the GitHub API stand-in (every request schema-checked). The
promotion is rendered onto layering/promote/nonprod and one pull request into env/nonprod is
opened, updated in place with each new change, merged through the API, and closed once
nothing is left to promote."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import git
import pytest
import redis

from pipeline.adapters import promotion_requests
from pipeline.core import machineconfig, promotion, promotion_commit, yamlfile
from tests import services
from tests.conftest import require_tools
from tests.integration import pull_request_support as support
from tests.integration.promotion_support import EnvRepo, Recorder
from tests.plugins.github import GitHubStandIn

pytestmark = pytest.mark.integration


@pytest.fixture
def redis_client(redis_server: services.RedisServer) -> Iterator[redis.Redis[bytes]]:
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def gitops(
    tmp_path: Path,
    registry: services.Registry,
    redis_server: services.RedisServer,
    redis_client: redis.Redis[bytes],
    github_api: GitHubStandIn,
) -> EnvRepo:
    require_tools("git")
    repo = support.nonprod_repo(tmp_path / "gitops", registry.host, redis_server.url)
    support.wire(github_api, repo)
    return repo


def open_pulls(stand_in: GitHubStandIn) -> list[int]:
    return [n for n, pull in sorted(stand_in.pulls.items()) if pull["state"] == "open"]


def digests_of(gitops: EnvRepo) -> dict[str, str]:
    model = gitops.origin_model("refs/heads/main")
    return {t.pool: t.build_key for t in promotion.targets(model, "nonprod")}


def test_one_pull_request_opened_updated_merged_and_closed(
    gitops: EnvRepo,
    tmp_path: Path,
    registry: services.Registry,
    redis_server: services.RedisServer,
    redis_client: redis.Redis[bytes],
    github_api: GitHubStandIn,
) -> None:
    writer = support.pr_writer(gitops, tmp_path / "scratch", github_api, redis_client)
    env_head = gitops.origin_head("env/nonprod")
    built = support.build_main(gitops, registry.host, redis_server.url)  # already built: same
    keys = digests_of(gitops)

    # 1. the merge into env/nonprod opens one pull request from layering/promote/nonprod
    recorder = Recorder()
    first = support.promote(gitops, writer, redis_client, redis_server.url, recorder)
    assert first.commit_sha is not None
    assert gitops.origin_head("env/nonprod") == env_head  # nothing pushed to the env branch
    assert support.branch_head(gitops, "layering/promote/nonprod") == first.commit_sha
    [number] = open_pulls(github_api)
    pull = github_api.pulls[number]
    assert (pull["head"]["ref"], pull["base"]["ref"]) == ("layering/promote/nonprod", "env/nonprod")
    assert pull["head"]["sha"] == first.commit_sha
    body = pull["body"]
    for digest in built.values():
        assert f"`stock image` -> `{digest}`" in body
    for key in keys.values():
        assert f"`{key}`" in body
    assert f"`{env_head}`" in body  # the source commit
    assert "first environment: no upstream verification required" in body
    assert "nonprod/worker" in body
    assert "nonprod/infra" in body
    # the promotion commit itself is what commit mode would have pushed
    model = gitops.origin_model(first.commit_sha)
    for target in promotion.targets(model, "nonprod"):
        raw = model.machineconfigs[machineconfig.path_for(target.cluster, target.pool)]
        url = yamlfile.load(raw)["spec"]["osImageURL"]
        assert url.endswith("@" + built[target.tag_reference])
    assert promotion_commit.describes_promotion(
        str(gitops.origin_history("layering/promote/nonprod")[0].message), "nonprod"
    )

    # 2. the same promotion again: the same pull request and commit, no force-push
    again = support.promote(gitops, writer, redis_client, redis_server.url, Recorder())
    assert again.commit_sha == first.commit_sha
    assert open_pulls(github_api) == [number]

    # 3. a new change updates the same pull request in place
    gitops.add_image("htop", "htop-ng")
    gitops.commit("htop: next")
    gitops.push("main")
    rebuilt = support.build_main(gitops, registry.host, redis_server.url)
    gitops.merge_into("main", "env/nonprod")
    second = support.promote(gitops, writer, redis_client, redis_server.url, Recorder())
    assert second.commit_sha not in (None, first.commit_sha)
    assert open_pulls(github_api) == [number]
    assert github_api.pulls[number]["head"]["sha"] == second.commit_sha
    assert digests_of(gitops)["infra"] in github_api.pulls[number]["body"]
    assert github_api.attempts("pulls/create") == 1
    assert github_api.attempts("pulls/update") >= 2

    # 4. merge through the API: a stale head is refused, the current one merges
    requests = promotion_requests.GitHubPromotionRequests(support.client(github_api))
    assert not requests.merge(number, head_sha=first.commit_sha)
    assert requests.merge(number, head_sha=second.commit_sha)
    merged = gitops.origin_head("env/nonprod")
    assert git_parents(gitops, merged)[1] == second.commit_sha
    assert open_pulls(github_api) == []
    # the merge is the promotion: promoting its head finds nothing to change
    recorder = Recorder()
    after = support.promote(gitops, writer, redis_client, redis_server.url, recorder)
    assert after.commit_sha is None
    assert recorder.last("layering/promote/nonprod")[2] == "success"
    assert open_pulls(github_api) == []

    # 5. the next change opens a new pull request showing old -> new digests
    gitops.add_image("firewalld", "firewalld-ng")
    gitops.commit("firewalld: next")
    gitops.push("main")
    newer = support.build_main(gitops, registry.host, redis_server.url)
    gitops.merge_into("main", "env/nonprod")
    third = support.promote(gitops, writer, redis_client, redis_server.url, Recorder())
    assert third.commit_sha is not None
    [renewed] = open_pulls(github_api)
    assert renewed != number
    old = next(d for ref, d in rebuilt.items() if "firewalld" in ref)
    new = next(d for ref, d in newer.items() if "firewalld" in ref)
    assert f"`{old}` -> `{new}`" in github_api.pulls[renewed]["body"]

    # 6. no longer needed (env/nonprod went back to what it runs): closed, saying why
    gitops.add_image("firewalld", "firewalld")
    gitops.commit("firewalld: back")
    gitops.push("main")
    gitops.merge_into("main", "env/nonprod")
    closed = support.promote(gitops, writer, redis_client, redis_server.url, Recorder())
    assert closed.commit_sha is None
    assert open_pulls(github_api) == []
    assert github_api.pulls[renewed]["state"] == "closed"
    assert not github_api.pulls[renewed].get("merged")
    assert "nothing to promote" in github_api.comments[renewed][-1]


def git_parents(gitops: EnvRepo, sha: str) -> list[str]:
    return [p.hexsha for p in git.Repo(gitops.origin).commit(sha).parents]
