"""Finding 1 end to end: a fork's pull request whose repository YAML is a bomb (aliases, merge
keys, a complex key: a few hundred bytes) is linted by a real worker through the receiver. The
worker stays up, `layering/lint` fails naming the file, and the next ordinary push builds. The
first wall is strict YAML (core/yamlfile.py); the second is the lint subprocess's limits, shown
here on its own with a legal head too big for a lowered CPU-time limit."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import hostile, services, webhook_pipeline
from tests.plugins.builds import BaseImage, StartWorker
from tests.webhook_pipeline import Pipeline

pytestmark = pytest.mark.integration

FORK = "mallory/layers"
LINT = "layering/lint"


@pytest.fixture(scope="module")
def pipeline(
    tmp_path_factory: pytest.TempPathFactory,
    registry: services.Registry,
    base_image: BaseImage,
    start_worker: StartWorker,
) -> Iterator[Pipeline]:
    with webhook_pipeline.launch(
        tmp_path_factory.mktemp("bomb"),
        registry=registry,
        base_image=base_image,
        start_worker=start_worker,
        name=f"bomb-{uuid.uuid4().hex[:6]}",
    ) as running:
        yield running


def worker_deaths(pipeline: Pipeline) -> list[str]:
    log = pipeline.worker.log.read_text(errors="replace")
    return [
        line
        for line in log.splitlines()
        if "WorkerLostError" in line or "exited prematurely" in line
    ]


def open_fork_pull_request(pipeline: Pipeline, number: int, files: dict[str, str]) -> str:
    sha = pipeline.push_pull_head(number, f"fork-{number}", files)
    opened = pipeline.pull_payload("opened", number, sha, f"fork-{number}", head_repo=FORK)
    response = pipeline.deliver(opened, event="pull_request")
    assert response.status_code == 202, response.text
    summary = pipeline.wait_task(response.json()["task_id"], timeout=120)
    assert summary["builds"] == [], summary
    return sha


def bombs(base: str, registry: str) -> list[tuple[str, str]]:
    return [
        (
            "clusters/nonprod/cluster.yaml",
            hostile.cluster_yaml_bomb(base_image=base, registry=f"{registry}/layering"),
        ),
        ("images/chrony/image.yaml", hostile.image_yaml_bomb()),
        ("clusters/nonprod/machineconfigs/99-bomb.yaml", hostile.machineconfig_bomb()),
    ]


@pytest.mark.parametrize("which", [0, 1, 2], ids=["cluster.yaml", "image.yaml", "machineconfig"])
def test_a_yaml_bomb_fails_lint_naming_the_file_and_the_worker_stays_up(
    pipeline: Pipeline, base_image: BaseImage, which: int
) -> None:
    path, bomb = bombs(base_image.ref, pipeline.registry_host)[which]
    assert len(bomb) < 700
    sha = open_fork_pull_request(
        pipeline,
        40 + which,
        {
            path: bomb,
            # an image changes too, so the head is linted (a lone MachineConfig is not)
            "images/chrony/Containerfile": pipeline.containerfile(base_image, "echo fork"),
        },
    )

    found = pipeline.wait_statuses(sha, {LINT}, timeout=120)

    status = pipeline.github.latest(sha)[LINT]
    assert found[LINT][-1] == "failure", status
    assert path in status["description"], status
    assert set(found) == {LINT}, "a fork's head is never built"
    assert pipeline.worker.process.poll() is None
    assert worker_deaths(pipeline) == []
    assert pipeline.worker.app.control.ping(timeout=2)


def test_the_next_ordinary_push_builds(pipeline: Pipeline, base_image: BaseImage) -> None:
    before = pipeline.gitops.head
    pipeline.gitops.write(
        "images/firewalld/Containerfile",
        pipeline.containerfile(base_image, "echo after-the-bombs > /etc/motd"),
    )
    after = pipeline.gitops.commit("ordinary change")
    pipeline.gitops.push()

    assert pipeline.deliver(pipeline.push_payload(before, after)).status_code == 202

    context = "layering/build/firewalld@nonprod"
    found = pipeline.wait_statuses(after, {LINT, context})
    assert found[LINT] == ["success"]
    assert found[context] == ["pending", "success"]
    assert worker_deaths(pipeline) == []


def test_the_cpu_limit_alone_stops_a_legal_head_too_big_for_it(
    tmp_path: Path,
    registry: services.Registry,
    base_image: BaseImage,
    start_worker: StartWorker,
) -> None:
    """The second wall without the first: nothing here is refused as YAML; the lint of 5000
    legal images needs far more than the (lowered) CPU-time limit."""
    with webhook_pipeline.launch(
        tmp_path,
        registry=registry,
        base_image=base_image,
        start_worker=start_worker,
        name=f"cpu-{uuid.uuid4().hex[:6]}",
        extra_env={"LAYERING_LINT_CPU_SECONDS": "1"},
    ) as small:
        sha = hostile.many_images_commit(
            small.gitops.origin,
            small.gitops.head,
            count=5000,
            containerfile=small.containerfile(base_image, "echo legal")
            + "RUN echo layer && ostree container commit\n" * 30,
            ref="refs/pull/50/head",
        )
        opened = small.pull_payload("opened", 50, sha, "many", head_repo=FORK)
        response = small.deliver(opened, event="pull_request")
        assert response.status_code == 202, response.text
        summary = small.wait_task(response.json()["task_id"], timeout=120)

        assert small.wait_statuses(sha, {LINT}, timeout=60)[LINT] == ["failure"]
        status = small.github.latest(sha)[LINT]
        assert status["description"].startswith(
            "lint stopped: exceeded the 1 s CPU-time limit (LAYERING_LINT_CPU_SECONDS) at images/"
        ), status
        assert summary == {"head": sha, "builds": [], "note": status["description"]}
        assert worker_deaths(small) == []
