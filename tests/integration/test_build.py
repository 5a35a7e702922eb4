"""Builds through a real Celery worker, Redis, buildah and docker-registry (SPEC section 4)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.adapters import build_records
from pipeline.adapters import git as gitadapter
from pipeline.core import content_address, tasks
from tests import services
from tests.plugins.builds import (
    FAKE_REGISTRY_PASSWORD,
    FAKE_TOKEN,
    BaseImage,
    StartWorker,
    Worker,
    WorkerEnv,
    git_commit_all,
    submit_build,
    write_repository,
)

pytestmark = pytest.mark.integration

# Shell metacharacters and a credential-bearing URL: must reach the RUN step literally, and the
# URL's password must never be stored in a log.
GREETING = "$(touch /pwned) `id`; echo \"x\" && exit 7 | cat > /y 'q' https://bob:pw-in-url-123@git.example.com/r"

HELLO = """\
ARG BASE_IMAGE=quay.io/fedora/fedora-coreos:stable
FROM ${BASE_IMAGE}
ARG GREETING
RUN echo "$GREETING" > /etc/greeting && rpm-ostree install vim > /etc/shim-output
RUN ostree container commit
"""

BROKEN = """\
FROM quay.io/fedora/fedora-coreos:stable
RUN echo step-two-ran
RUN echo about-to-fail && false
RUN ostree container commit
"""

SLOW = """\
FROM quay.io/fedora/fedora-coreos:stable
RUN sleep 1.5 && echo slow > /etc/slow
RUN ostree container commit
"""


@dataclass(frozen=True)
class Checkout:
    root: Path
    commit_sha: str
    registry: str  # host/path prefix images are pushed to on cluster "dev"
    dead_registry: str  # the same on cluster "down": nothing listens there


@pytest.fixture(scope="module")
def checkout(
    tmp_path_factory: pytest.TempPathFactory,
    base_image: BaseImage,
    registry: services.Registry,
) -> Checkout:
    root = tmp_path_factory.mktemp("gitops")
    nonce = uuid.uuid4().hex  # fresh content per run: nothing is a registry hit by accident
    pushed_to = f"{registry.host}/layering"
    dead = f"127.0.0.1:{services.free_port()}/layering"
    images = {
        "hello": {
            "Containerfile": HELLO,
            "image.yaml": json.dumps({"buildArgs": {"GREETING": GREETING}}),
            "nonce": nonce,
        },
        "broken": {"Containerfile": BROKEN, "nonce": nonce},
        "slow": {"Containerfile": SLOW, "nonce": nonce},
        "local": {"Containerfile": SLOW.replace("slow", "local"), "nonce": nonce},
        "remote": {"Containerfile": SLOW.replace("slow", "remote"), "nonce": nonce},
    }
    pools = {
        "worker": "hello",
        "infra": "broken",
        "slow": "slow",
        "local": "local",
        "remote": "remote",
    }
    write_repository(
        root,
        base=base_image,
        registry=pushed_to,
        images=images,
        clusters={"dev": {"pools": pools}, "down": {"pools": pools, "registry": dead}},
    )
    return Checkout(root, git_commit_all(root), pushed_to, dead)


def submit(worker: Worker, checkout: Checkout, image: str, cluster: str = "dev") -> str:
    return submit_build(
        worker.app,
        worker.settings,
        source=str(checkout.root),
        commit_sha=checkout.commit_sha,
        image=image,
        cluster=cluster,
    )


def skopeo(*argv: str) -> bytes:
    # skopeo 1.9 ignores CONTAINERS_REGISTRIES_CONF; the flag marks the registry insecure
    conf = ["--registries-conf", os.environ["CONTAINERS_REGISTRIES_CONF"]]
    return subprocess.run(["skopeo", *conf, *argv], capture_output=True, check=True).stdout


def read_image(reference: str, directory: Path) -> tuple[dict[str, object], dict[str, bytes]]:
    """The image config and every regular file in its layers (later layers win)."""
    layout = directory / "oci"
    skopeo("copy", "--quiet", f"docker://{reference}", f"oci:{layout}:image")
    index = json.loads((layout / "index.json").read_text())

    def blob(digest: str) -> Path:
        return layout / "blobs" / "sha256" / digest.removeprefix("sha256:")

    manifest = json.loads(blob(index["manifests"][0]["digest"]).read_text())
    config = json.loads(blob(manifest["config"]["digest"]).read_text())
    files: dict[str, bytes] = {}
    for layer in manifest["layers"]:
        with tarfile.open(blob(layer["digest"]), "r:*") as tar:
            for member in tar:
                extracted = tar.extractfile(member) if member.isfile() else None
                if extracted is not None:
                    files[member.name.removeprefix("./")] = extracted.read()
    return config, files


def builds_of(worker: Worker, tag: str) -> list[str]:
    return [call for call in worker.env.buildah_calls() if " build " in f" {call} " and tag in call]


@pytest.fixture(scope="module")
def hello_build(celery_worker: Worker, checkout: Checkout) -> Iterator[dict[str, object]]:
    build_id = submit(celery_worker, checkout, "hello")
    return celery_worker.wait_for_build(build_id)


def test_build_pushes_the_recorded_digest_on_the_cluster_base(
    hello_build: dict[str, object],
    celery_worker: Worker,
    checkout: Checkout,
    base_image: BaseImage,
    tmp_path: Path,
) -> None:
    record = hello_build
    assert record["state"] == "succeeded", record["error"]
    key = str(record["build_key"])
    target = f"{checkout.registry}/hello:{content_address.tag(key)}"
    assert record["target"] == target
    assert record["commit_sha"] == checkout.commit_sha
    manifest = skopeo("inspect", "--raw", f"docker://{target}")
    assert record["digest"] == "sha256:" + hashlib.sha256(manifest).hexdigest()

    config, files = read_image(f"{checkout.registry}/hello@{record['digest']}", tmp_path)
    labels = config["config"]["Labels"]  # type: ignore[index]
    assert labels["org.opencontainers.image.base.digest"] == base_image.digest
    assert labels["org.opencontainers.image.base.name"] == base_image.ref
    assert labels["org.opencontainers.image.revision"] == checkout.commit_sha
    assert labels["layering.image"] == "hello"
    assert labels["layering.cluster-base"] == base_image.ref
    # the RUN steps ran, in the image's root, on the stand-in base
    assert files["etc/greeting"].decode() == GREETING + "\n"
    assert files["etc/shim-output"] == b"rpm-ostree (layering test shim) install vim\n"
    assert "pwned" not in files
    assert "y" not in files
    assert len(builds_of(celery_worker, content_address.tag(key))) == 1


def test_logs_are_kept_line_by_line_without_credentials(
    hello_build: dict[str, object], celery_worker: Worker
) -> None:
    lines = celery_worker.env.store().read_log(str(hello_build["id"]))
    text = "\n".join(lines)
    # buildah counts the --label instructions it appends as steps of the final stage
    assert any(re.match(r"STEP 3/\d+: RUN echo ", line) for line in lines), text
    assert any("Writing manifest" in line or "Storing signatures" in line for line in lines)
    assert "pw-in-url-123" not in text
    assert "https://***@git.example.com" in text
    for secret in (FAKE_TOKEN, FAKE_REGISTRY_PASSWORD, "pw-in-url-123"):
        assert secret not in text
        assert secret not in json.dumps(hello_build)
    assert celery_worker.env.store().read_log(str(hello_build["id"]), offset=2, limit=1) == [
        lines[2]
    ]


def test_second_build_of_a_key_is_skipped_without_buildah(
    hello_build: dict[str, object], celery_worker: Worker, checkout: Checkout
) -> None:
    calls_before = celery_worker.env.buildah_builds()
    build_id = submit(celery_worker, checkout, "hello")
    record = celery_worker.wait_for_build(build_id)
    assert record["state"] == "skipped"
    assert record["digest"] == hello_build["digest"]
    assert record["build_key"] == hello_build["build_key"]
    assert celery_worker.env.buildah_builds() == calls_before
    assert any("buildah not run" in line for line in celery_worker.env.store().read_log(build_id))


def test_concurrent_requests_for_one_key_build_once(
    celery_worker: Worker, checkout: Checkout
) -> None:
    ids: list[str] = []
    threads = [
        threading.Thread(target=lambda: ids.append(submit(celery_worker, checkout, "slow")))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records = [celery_worker.wait_for_build(build_id) for build_id in ids]
    assert sorted(str(r["state"]) for r in records) == ["skipped", "succeeded"]
    assert records[0]["digest"] == records[1]["digest"]
    assert len(builds_of(celery_worker, content_address.tag(str(records[0]["build_key"])))) == 1
    skipped = next(r for r in records if r["state"] == "skipped")
    log = celery_worker.env.store().read_log(str(skipped["id"]))
    assert any("waiting for it" in line for line in log), log


def test_failing_run_fails_at_once_naming_the_step(
    celery_worker: Worker, checkout: Checkout
) -> None:
    record = celery_worker.wait_for_build(submit(celery_worker, checkout, "broken"))
    assert record["state"] == "failed"
    assert re.fullmatch(r"STEP 3/\d+: RUN echo about-to-fail && false", str(record["failing_step"]))
    assert record["failing_line"] == 3
    assert record["attempts"] == 1  # a Containerfile error is never retried
    error = str(record["error"])
    assert error.startswith("images/broken/Containerfile:3: STEP 3/")
    assert "about-to-fail" in error.split("--- output tail ---")[1]


def test_registry_down_is_retried_then_fails_naming_it(
    celery_worker: Worker, checkout: Checkout
) -> None:
    calls_before = celery_worker.env.buildah_builds()
    build_id = submit(celery_worker, checkout, "hello", cluster="down")
    record = celery_worker.wait_for_build(build_id)
    host = checkout.dead_registry.split("/")[0]
    assert record["state"] == "failed"
    assert record["attempts"] == 3  # LAYERING_REGISTRY_RETRIES=2 retries after the first
    assert f"registry {host} unavailable" in str(record["error"])
    assert "gave up after 3 attempt(s)" in str(record["error"])
    log = celery_worker.env.store().read_log(build_id)
    assert sum("will retry" in line for line in log) == 2
    assert celery_worker.env.buildah_builds() == calls_before


@pytest.mark.parametrize("image", ["hello;touch /tmp/pwned-by-name", "$(id)", "../hello"])
def test_image_name_with_shell_metacharacters_is_rejected(
    celery_worker: Worker, checkout: Checkout, image: str
) -> None:
    calls_before = celery_worker.env.buildah_builds()
    record = celery_worker.wait_for_build(submit(celery_worker, checkout, image))
    assert record["state"] == "failed"
    assert "must be a DNS label" in str(record["error"])
    assert celery_worker.env.buildah_builds() == calls_before
    assert not Path("/tmp/pwned-by-name").exists()


def test_cli_build_runs_the_same_code_path_and_prints_the_digest(
    worker_env: WorkerEnv, checkout: Checkout
) -> None:
    env = {**os.environ, **worker_env.variables}
    argv = [sys.executable, "-m", "pipeline.cli", "build", "local", "--cluster", "dev"]
    argv += ["--repo", str(checkout.root), "--push"]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    digest = result.stdout.strip().splitlines()[-1]
    assert "STEP 2/" in result.stderr
    target = f"{checkout.registry}/local@{digest}"
    manifest = skopeo("inspect", "--raw", f"docker://{target}")
    assert digest == "sha256:" + hashlib.sha256(manifest).hexdigest()

    again = subprocess.run([*argv, "--format", "json"], env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    record = json.loads(again.stdout)
    assert (record["state"], record["digest"]) == ("skipped", digest)


def test_worker_on_another_machine_clones_the_mirror_it_is_told_to_use(
    start_worker: StartWorker, checkout: Checkout, tmp_path: Path
) -> None:
    """The event task names `<workdir>/mirrors/<hash>.git`; a worker that never fetched it (on
    another machine) clones LAYERING_REPO_URL there and fetches the commit before building."""
    repo_url = checkout.root.as_uri()
    elsewhere = start_worker(
        "elsewhere",
        pool="solo",
        queues="remote-builds",
        extra_env={"LAYERING_WORKDIR": str(tmp_path / "work"), "LAYERING_REPO_URL": repo_url},
    )
    mirror = gitadapter.mirror_path(elsewhere.settings.workdir, repo_url)
    assert not mirror.exists()
    record = build_records.BuildStore.from_settings(elsewhere.settings).create_queued(
        image="remote", cluster="dev", commit_sha=checkout.commit_sha
    )
    call = tasks.Build(
        source=str(mirror),
        commit_sha=checkout.commit_sha,
        image="remote",
        cluster="dev",
        build_id=record.id,
    ).call()
    elsewhere.app.send_task(call.name, kwargs=dict(call.kwargs), queue="remote-builds")
    result = elsewhere.wait_for_build(record.id)
    assert result["state"] == "succeeded", result["error"]
    assert (mirror / "HEAD").is_file()
    elsewhere.stop()
