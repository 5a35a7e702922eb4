"""The warm layer cache and pushes of missing layers only, read from the registry's own access
log: two builds on one worker (overlay storage of its own, probed with `auto`) pull the
cluster base once, and the second push uploads none of the base's layers (buildah HEADs each
blob and finds it there)."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import services
from tests.plugins.builds import (
    BaseImage,
    BuildahStorage,
    Worker,
    git_commit_all,
    launch_worker,
    make_worker_env,
    submit_build,
    write_repository,
)

pytestmark = pytest.mark.integration

CONTAINERFILE = """\
FROM quay.io/fedora/fedora-coreos:stable
RUN echo {nonce} > /etc/layer-cache
RUN ostree container commit
"""


def base_blobs(registry: services.Registry, base: BaseImage) -> tuple[set[str], str]:
    """The base's layer digests and its config digest, from its manifest in the registry."""
    repository = base.repository.removeprefix(f"{registry.host}/")
    request = urllib.request.Request(
        f"http://{registry.host}/v2/{repository}/manifests/{base.digest}",
        headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json, "
            "application/vnd.docker.distribution.manifest.v2+json"
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        manifest = json.load(response)
    return {layer["digest"] for layer in manifest["layers"]}, manifest["config"]["digest"]


@pytest.fixture
def overlay_worker(
    tmp_path: Path, registry: services.Registry, containers_env: dict[str, str]
) -> Iterator[Worker]:
    """A worker on a Redis of its own (no other test's worker takes its builds) and a fresh
    storage root, with the storage driver left to the probe."""
    redis_server = services.RedisServer(tmp_path / "redis").start()
    storage = BuildahStorage(tmp_path / "storage" / "root", tmp_path / "storage" / "run")
    env = make_worker_env(
        tmp_path / "worker", redis_url=redis_server.url, registry=registry, storage=storage
    )
    worker = launch_worker(
        env,
        "cache",
        pool="solo",
        concurrency=1,
        queues="builds",
        extra_env={"LAYERING_BUILDAH_STORAGE_DRIVER": "auto"},
    )
    try:
        yield worker
    finally:
        worker.stop()
        redis_server.stop()
        services.unmount_under(tmp_path)


def build(worker: Worker, root: Path, image: str) -> dict[str, object]:
    (root / "images" / image / "Containerfile").write_text(
        CONTAINERFILE.format(nonce=uuid.uuid4().hex)
    )
    sha = git_commit_all(root, f"{image}: new content")
    build_id = submit_build(
        worker.app, worker.settings, source=str(root), commit_sha=sha, image=image, cluster="dev"
    )
    record = worker.wait_for_build(build_id, timeout=180)
    assert record["state"] == "succeeded", record
    return record


def test_base_is_pulled_once_per_worker_and_pushed_layers_are_not_uploaded_again(
    overlay_worker: Worker, registry: services.Registry, base_image: BaseImage, tmp_path: Path
) -> None:
    root = tmp_path / "gitops"
    target = f"{registry.host}/cache-{uuid.uuid4().hex[:8]}"
    write_repository(
        root,
        base=base_image,
        registry=target,
        images={"first": {"Containerfile": "FROM x\n"}, "second": {"Containerfile": "FROM x\n"}},
        clusters={"dev": {"pools": {"a": "first", "b": "second"}}},
    )
    layers, config = base_blobs(registry, base_image)
    base_path = "/v2/" + base_image.repository.removeprefix(f"{registry.host}/") + "/"
    mark = registry.log_size()

    build(overlay_worker, root, "first")
    after_first = registry.log_size()
    build(overlay_worker, root, "first")  # a one-line change of the same image
    after_second = registry.log_size()
    build(overlay_worker, root, "second")  # another image on the same base

    log = overlay_worker.log.read_text()
    assert "buildah storage driver overlay: auto, the probe showed" in log
    calls = overlay_worker.env.buildah_calls()
    assert all("--storage-driver overlay" in call for call in calls), calls
    assert sum(" build " in f" {call} " and "--pull=missing" in call for call in calls) == 3

    reads = [
        (method, path)
        for method, path, _ in registry.requests(since=mark)
        if path.startswith(base_path) and method in {"GET", "HEAD"}
    ]
    # the base's manifest and each blob: fetched once by the first build, never again
    assert sum(method == "GET" and "/manifests/" in path for method, path in reads) == 1, reads
    for digest in {*layers, config}:
        fetched = [path for method, path in reads if method == "GET" and path.endswith(digest)]
        assert len(fetched) == 1, (digest, reads)
    assert not [
        request
        for request in registry.requests(since=after_first)
        if request[1].startswith(base_path)
    ]

    # pushes after the first: every base blob is asked about (HEAD) and found, none uploaded
    for since in (after_first, after_second):
        pushed = registry.requests(since=since)
        uploaded = {
            path.rsplit("digest=", 1)[-1].replace("%3A", ":")
            for method, path, _ in pushed
            if method == "PUT" and "/blobs/uploads/" in path
        }
        assert not uploaded & layers, (uploaded, layers)
        heads = {
            path.rsplit("/", 1)[-1]
            for method, path, status in pushed
            if method == "HEAD" and "/blobs/" in path and status == 200
        }
        assert layers <= heads, (heads, layers)
        # the new layer (the RUN step's) was uploaded: one upload session, one PATCH
        assert len(uploaded) >= 1
