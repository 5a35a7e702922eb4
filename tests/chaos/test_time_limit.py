"""Time limits stop buildah (issue 11 item 4): at Celery's soft time limit
(LAYERING_BUILD_TIMEOUT_SECONDS, here 5 s) the build's buildah process group is killed, the
record fails naming the setting, and nothing is pushed. Real Redis, registry, buildah and a
Celery worker."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.core import commit_status, content_address
from tests import services
from tests.chaos import recovery_support as chaos
from tests.plugins.builds import BaseImage, BuildahStorage
from tests.plugins.github import GitHubStandIn

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

QUEUE = "chaos-limit"


def _group_members(pgid: int) -> list[int]:
    """Processes still in process group `pgid` (field 5 of /proc/<pid>/stat)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _tags(registry: services.Registry, repository: str) -> list[str]:
    url = f"http://{registry.host}/v2/{repository}/tags/list"
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return list(json.load(answer).get("tags") or [])
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []
        raise


@pytest.fixture
def workers(
    tmp_path: Path,
    registry: services.Registry,
    buildah_storage: BuildahStorage,
    containers_env: dict[str, str],
) -> Iterator[chaos.Workers]:
    with chaos.private_workers(
        tmp_path / "workers", registry=registry, storage=buildah_storage
    ) as started:
        yield started


def test_the_soft_time_limit_kills_buildah_and_fails_the_build_without_a_push(
    tmp_path: Path,
    base_image: BaseImage,
    registry: services.Registry,
    workers: chaos.Workers,
    github_api: GitHubStandIn,
) -> None:
    checkout = chaos.sleepy_checkout(
        tmp_path / "gitops",
        base=base_image,
        registry_host=registry.host,
        seconds=60,
        images=("forever",),
    )
    env = chaos.chaos_env(github_api.url, build_timeout_seconds="5")
    worker = workers.start(
        "chaos-limit", pool="prefork", concurrency=1, queues=f"{QUEUE},events", extra_env=env
    )
    build_id = chaos.send_build(worker.app, worker.settings, checkout, "forever", QUEUE)
    record = worker.wait_for_build(build_id, timeout=60)

    assert record["state"] == "failed", chaos.as_json(record)
    error = str(record["error"])
    assert error.startswith("build stopped: exceeded LAYERING_BUILD_TIMEOUT_SECONDS (5s)"), error
    assert "nothing was pushed" in error
    log = worker.env.store().read_log(build_id)
    assert any(chaos.STARTED in line and "RUN" not in line for line in log), log
    killed = [m for line in log if (m := re.search(r"process group (\d+) killed", line))]
    assert killed, log
    pgid = int(killed[-1].group(1))
    # buildah and its 60 s RUN step are gone (a zombie may wait a moment for its reaper)
    chaos.wait_until(lambda: _group_members(pgid) == [], f"process group {pgid} gone", timeout=10)
    assert pgid != os.getpgid(0)
    assert chaos.pushes_of(worker.env, str(record["build_key"])) == 0
    tag = content_address.tag(str(record["build_key"]))
    assert tag not in _tags(registry, "chaos/forever")
    context = commit_status.build_context("forever", "dev")
    chaos.wait_until(
        lambda: github_api.contexts(checkout.commit_sha).get(context), "the status", timeout=30
    )
    # one final status, naming the setting (a failure without a failing step is "error")
    assert github_api.contexts(checkout.commit_sha)[context] == ["error"]
    description = github_api.latest(checkout.commit_sha)[context]["description"]
    assert description.startswith("build stopped: exceeded LAYERING_BUILD_TIMEOUT_SECONDS")
