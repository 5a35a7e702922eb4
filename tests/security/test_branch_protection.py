"""Branch protection (issue 11 item 2), emulated by a pre-receive hook on the bare repository
that refuses every push to env/* that is not the merge of the environment's promotion branch
(its second parent is the tip of layering/promote/<environment>), the way GitHub refuses a
direct push to a branch that requires pull requests and the gate (GH006).

- pull-request mode: the promotion lands through a pull request the test merges (the stand-in's
  merge pushes the merge commit GitHub would make, through the hook);
- commit mode: the direct push is refused and the error tells the operator to switch to
  LAYERING_PROMOTION_MODE=pull-request.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import git
import pytest
import redis

from pipeline.adapters import branch_writer, promotion_requests
from pipeline.core import machineconfig, yamlfile
from pipeline.core.errors import PermanentError
from tests import services
from tests.conftest import require_tools
from tests.integration import pull_request_support as support
from tests.integration.promotion_support import EnvRepo, Recorder
from tests.plugins.github import GitHubStandIn

pytestmark = pytest.mark.integration

HOOK = """#!/bin/sh
# GitHub branch protection, emulated: env/* takes only merges of layering/promote/<env>
status=0
while read -r old new ref; do
    case "$ref" in
    refs/heads/env/*)
        environment=${ref#refs/heads/env/}
        tip=$(git rev-parse --verify -q "refs/heads/layering/promote/$environment")
        second=$(git rev-parse --verify -q "$new^2")
        if [ -z "$tip" ] || [ "$second" != "$tip" ]; then
            echo "error: GH006: Protected branch update failed for $ref." >&2
            echo "error: Required status check layering/gate/$environment is expected." >&2
            status=1
        fi
        ;;
    esac
done
exit $status
"""


@pytest.fixture
def redis_client(redis_server: services.RedisServer) -> Iterator[redis.Redis[bytes]]:
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def protected(
    tmp_path: Path,
    registry: services.Registry,
    redis_server: services.RedisServer,
    redis_client: redis.Redis[bytes],
    github_api: GitHubStandIn,
) -> EnvRepo:
    """main merged into env/nonprod and built, then env/* protected by the hook."""
    require_tools("git")
    gitops = support.nonprod_repo(tmp_path / "gitops", registry.host, redis_server.url)
    support.wire(github_api, gitops)
    hook = gitops.origin / "hooks" / "pre-receive"
    hook.write_text(HOOK)
    hook.chmod(0o755)
    return gitops


def test_a_direct_push_is_refused_by_the_hook(protected: EnvRepo) -> None:
    protected.repo.git.checkout("-B", "env/nonprod", "origin/env/nonprod")
    protected.commit("a direct change")
    status, _, stderr = protected.repo.git.execute(
        ["git", "push", "origin", "env/nonprod"], with_exceptions=False, with_extended_output=True
    )
    assert status != 0
    assert "GH006" in stderr
    assert "pre-receive hook declined" in stderr
    protected.repo.git.checkout("main")


def test_commit_mode_is_refused_and_names_pull_request_mode(
    protected: EnvRepo,
    tmp_path: Path,
    redis_server: services.RedisServer,
    redis_client: redis.Redis[bytes],
) -> None:
    head = protected.origin_head("env/nonprod")
    writer = branch_writer.BranchWriter(
        url=protected.url,
        workdir=tmp_path / "scratch",
        lock=branch_writer.RedisBranchLock(redis_client),
    )
    recorder = Recorder()
    with pytest.raises(PermanentError) as refused:
        support.promote(protected, writer, redis_client, redis_server.url, recorder)
    promote_statuses = [s for s in recorder.statuses if s[1].startswith("layering/promote/")]
    assert promote_statuses, recorder.statuses
    assert {state for _, _, state, _ in promote_statuses} == {"failure"}
    assert all("LAYERING_PROMOTION_MODE=pull-request" in d for *_, d in promote_statuses)
    message = str(refused.value)
    assert "LAYERING_PROMOTION_MODE=pull-request" in message
    assert "branch protection" in message
    assert "env/nonprod" in message
    assert protected.origin_head("env/nonprod") == head


def test_pull_request_mode_promotes_through_the_merged_pull_request(
    protected: EnvRepo,
    tmp_path: Path,
    redis_server: services.RedisServer,
    redis_client: redis.Redis[bytes],
    github_api: GitHubStandIn,
) -> None:
    writer = support.pr_writer(protected, tmp_path / "scratch", github_api, redis_client)
    opened = support.promote(protected, writer, redis_client, redis_server.url, Recorder())
    assert opened.commit_sha is not None
    [number] = [n for n, p in github_api.pulls.items() if p["state"] == "open"]

    # the test merges the pull request (through the API, as a reviewer's merge button would)
    requests = promotion_requests.GitHubPromotionRequests(support.client(github_api))
    assert requests.merge(number, head_sha=opened.commit_sha)
    merged = protected.origin_head("env/nonprod")
    assert [p.hexsha for p in git.Repo(protected.origin).commit(merged).parents][1] == (
        opened.commit_sha
    )
    model = protected.origin_model(merged)
    raw = model.machineconfigs[machineconfig.path_for("nonprod", "worker")]
    assert "@sha256:" in yamlfile.load(raw)["spec"]["osImageURL"]

    # the merge's own promotion run has nothing left to write: no push the hook would refuse
    recorder = Recorder()
    after = support.promote(protected, writer, redis_client, redis_server.url, recorder)
    assert after.commit_sha is None
    assert recorder.last("layering/promote/nonprod")[2] == "success"
    assert protected.origin_head("env/nonprod") == merged
