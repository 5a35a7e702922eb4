"""Issue 10, finding 4: the receiver took a push to env/<environment> whose head message carried
`Layering-*` trailers for the pipeline's own promotion commit and skipped its promotion, so a
human merge with forged trailers kept a hand-written MachineConfig in force. Now no push is
skipped for its message: the promotion always runs, finds nothing to do for the pipeline's
own commit (its files are exactly what it renders), and fails naming the hand-written file.
The real receiver (`layering serve`'s app) over HTTP, a real worker, Git origin and builds."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from pipeline.core import machineconfig, promotion_commit
from pipeline.core.settings import Settings
from pipeline.web import server as web
from tests import receiver, services
from tests.conftest import require_tools
from tests.plugins.builds import BaseImage, StartWorker
from tests.security import policy_support
from tests.security.policy_support import FULL_NAME, Stage, unmanaged

pytestmark = pytest.mark.integration

SECRET = b"own-commit-test-secret"
CLUSTER = "oc1"
BRANCH = f"env/{CLUSTER}"
EVIL = "quay.io/evil/os@sha256:" + "e" * 64


@dataclass
class Served:
    stage: Stage
    url: str

    def push(self, before: str, after: str, message: str) -> httpx.Response:
        payload = receiver.push_payload(
            full_name=FULL_NAME,
            clone_url=self.stage.gitops.url,
            ref=f"refs/heads/{BRANCH}",
            before=before,
            after=after,
            message=message,
        )
        body, headers = receiver.delivery(SECRET, "push", payload)
        return httpx.post(f"{self.url}/webhook/github", content=body, headers=headers, timeout=10)


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
    registry: services.Registry,
    base_image: BaseImage,
    start_worker: StartWorker,
) -> Iterator[Served]:
    require_tools("git", "redis-server", "skopeo", "buildah")
    directory = tmp_path_factory.mktemp("own-commit")
    with policy_support.stage(
        directory,
        registry=registry,
        base=base_image,
        start_worker=start_worker,
        worker_name="own-commit",
    ) as stage:
        policy_support.nonprod_promoted_upstream_of(stage, CLUSTER)
        settings = Settings(
            webhook_secret=SECRET.decode(),
            redis_url=stage.redis.url,
            github_repository=FULL_NAME,
            repo_url=stage.gitops.url,
            workdir=Path(directory / "web"),
        )
        with receiver.serving(web.service_app(settings)) as server:
            yield Served(stage, server.url)


def test_the_pipelines_own_promotion_commit_is_planned_and_changes_nothing(
    served: Served,
) -> None:
    stage = served.stage
    start = stage.branch_from_main(BRANCH)
    answer = served.push("0" * 40, start, "Merge main into env/oc1")
    assert answer.json()["queued"] == "layering.promote", answer.text
    stage.wait_status(start, f"layering/promote/{CLUSTER}", "success")
    own = stage.gitops.origin_head(BRANCH)
    assert own != start  # the promotion commit, pushed by the worker
    message = str(stage.gitops.origin_history(BRANCH)[0].message)
    assert (promotion_commit.TRAILER_ENVIRONMENT, CLUSTER) in promotion_commit.trailers(message)

    # its own push arrives too: planned like any other, nothing left to commit
    answer = served.push(start, own, message)
    assert answer.json()["queued"] == "layering.promote", answer.text
    description = stage.wait_status(own, f"layering/promote/{CLUSTER}", "success")
    assert description == "0 written, 0 removed, 1 unchanged"
    assert stage.gitops.origin_head(BRANCH) == own


def test_forged_trailers_do_not_make_a_human_merge_the_pipelines_own(served: Served) -> None:
    stage = served.stage
    before = stage.gitops.origin_head(BRANCH)
    path = f"clusters/{CLUSTER}/machineconfigs/99-zzz.yaml"
    stage.pull_request(
        "oc-zzz",
        BRANCH,
        lambda s: s.write(path, unmanaged("99-zzz", role="worker", os_image_url=EVIL)),
    )
    forged = (
        "Merge oc-zzz into env/oc1\n\n"
        f"{promotion_commit.TRAILER_ENVIRONMENT}: {CLUSTER}\n"
        f"{promotion_commit.TRAILER_SOURCE_COMMIT}: {before}\n"
        f"{promotion_commit.TRAILER_POOL}: {CLUSTER}/worker\n"
        f"{promotion_commit.TRAILER_DIGEST}: {EVIL.split('@')[1]}\n"
    )
    merged = stage.merge("oc-zzz", BRANCH, message=forged)
    # it looks like ours, to anyone reading the message
    assert (promotion_commit.TRAILER_ENVIRONMENT, CLUSTER) in promotion_commit.trailers(forged)

    answer = served.push(before, merged, forged)
    assert answer.status_code == 202
    assert answer.json()["queued"] == "layering.promote", answer.text
    description = stage.wait_status(merged, f"layering/promote/{CLUSTER}", "failure")
    assert description.startswith(f"not promoted: {CLUSTER}/- (-): {path}: sets osImageURL")
    assert stage.gitops.origin_head(BRANCH) == merged
    assert (
        machineconfig.path_for(CLUSTER, "worker")
        in stage.gitops.origin_model(merged).machineconfigs
    )
