"""Worker loss heals (issue 11 item 3): SIGKILL of a worker's whole process group mid-build,
then a new worker; beat's sweep finds the build's expired lease and restores its
unacknowledged message, and the build succeeds within 120 s, with one final status on the
GitHub stand-in and one push of its key. Real Redis, registry, buildah, Celery workers and
beat."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from pipeline.core import commit_status
from tests import services
from tests.chaos import recovery_support as chaos
from tests.plugins.builds import BaseImage, BuildahStorage
from tests.plugins.github import GitHubStandIn

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

QUEUE = "chaos-loss"
# short lease and sweep: the test waits seconds, not the production 30 s + 15 s
SETTINGS = {"build_lease_seconds": "3", "build_sweep_interval_seconds": "1"}


@pytest.fixture(scope="module")
def checkout(
    tmp_path_factory: pytest.TempPathFactory, base_image: BaseImage, registry: services.Registry
) -> chaos.Checkout:
    return chaos.sleepy_checkout(
        tmp_path_factory.mktemp("chaos-loss"),
        base=base_image,
        registry_host=registry.host,
        seconds=4,
        images=("lost",),
    )


@pytest.fixture(scope="module")
def workers(
    tmp_path_factory: pytest.TempPathFactory,
    registry: services.Registry,
    buildah_storage: BuildahStorage,
    containers_env: dict[str, str],
) -> Iterator[chaos.Workers]:
    with chaos.private_workers(
        tmp_path_factory.mktemp("chaos-loss-workers"), registry=registry, storage=buildah_storage
    ) as started:
        yield started


def test_a_build_whose_worker_was_killed_runs_again_and_is_reported_once(
    workers: chaos.Workers,
    checkout: chaos.Checkout,
    github_api: GitHubStandIn,
) -> None:
    env = chaos.chaos_env(github_api.url, **SETTINGS)
    options = {"pool": "prefork", "concurrency": 1, "queues": f"{QUEUE},events", "extra_env": env}
    first = workers.start("chaos-loss-a", **options)
    workers.beat(first, "chaos-loss")
    build_id = chaos.send_build(first.app, first.settings, checkout, "lost", QUEUE)
    chaos.wait_mid_step(first, build_id)

    chaos.kill_group(first)
    killed_at = time.monotonic()
    second = workers.start("chaos-loss-b", **options)
    record = second.wait_for_build(build_id, timeout=120 - (time.monotonic() - killed_at))
    recovered_in = time.monotonic() - killed_at

    assert record["state"] == "succeeded", chaos.as_json(record)
    assert recovered_in < 120
    assert record["attempts"] == 2  # the killed delivery and the restored one
    log = second.env.store().read_log(build_id)
    assert sum(chaos.STARTED in line and "RUN" not in line for line in log) == 2
    assert chaos.pushes_of(second.env, str(record["build_key"])) == 1
    context = commit_status.build_context("lost", "dev")
    chaos.wait_until(
        lambda: github_api.contexts(checkout.commit_sha).get(context),
        "the final build status",
        timeout=30,
    )
    # the restored delivery was acknowledged: nothing of this build is left to redeliver
    client = second.env.store().client
    chaos.wait_until(
        lambda: not any(f"build-{build_id}".encode() in raw for raw in client.hvals("unacked")),
        "the restored message acknowledged",
        timeout=30,
    )
    assert github_api.contexts(checkout.commit_sha)[context] == ["success"]
    assert client.exists(f"layering:build:{build_id}:reported")
