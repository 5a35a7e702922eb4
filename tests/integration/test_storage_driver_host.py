"""The storage driver probe against real buildah: overlay on this machine's ext4, the fall-back
to vfs on a root that overlay cannot stack on (a real overlayfs mount, as a container's own root
file system is), an explicit overlay that stops the worker, what a build worker publishes for
/readyz and what `layering up` says."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from pipeline.adapters import storage_probe, worker_presence
from pipeline.core import storage_driver
from pipeline.core.errors import PermanentError
from pipeline.core.settings import Settings
from pipeline.local import services as local_services
from pipeline.local import workdir
from pipeline.web import server as web
from tests import receiver, services
from tests.conftest import require_tools
from tests.plugins.builds import BuildahStorage, launch_worker, make_worker_env

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _fresh_probe(tmp_path: Path) -> Iterator[None]:
    storage_probe.forget()
    yield
    storage_probe.forget()
    services.unmount_under(tmp_path)  # overlay storage leaves <root>/overlay mounted


@pytest.fixture
def overlayfs(tmp_path: Path) -> Iterator[Path]:
    """A directory on an overlayfs mount: where overlay storage cannot stack (the root file
    system of a container, where a worker without a volume would keep its storage)."""
    require_tools("buildah")
    for name in ("lower", "upper", "work", "merged"):
        (tmp_path / name).mkdir()
    options = (
        f"lowerdir={tmp_path / 'lower'},upperdir={tmp_path / 'upper'},workdir={tmp_path / 'work'}"
    )
    mounted = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(tmp_path / "merged")],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        message = f"cannot mount an overlayfs here (needs root): {mounted.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield tmp_path / "merged"
    finally:
        subprocess.run(["umount", "-l", str(tmp_path / "merged")], check=False)


def test_overlay_works_on_this_machines_ext4(tmp_path: Path) -> None:
    require_tools("buildah")
    started = time.monotonic()
    found = storage_probe.probe(command="buildah", root=tmp_path / "root", runroot=tmp_path / "run")
    elapsed = time.monotonic() - started
    assert found.ok, found.reason
    assert found.native_diff
    choice = storage_probe.resolve(
        command="buildah", root=tmp_path / "root", runroot=tmp_path / "run", setting="auto"
    )
    assert choice.driver == "overlay"
    assert not choice.warning
    print(f"probe took {elapsed:.3f}s")


def test_auto_falls_back_to_vfs_on_overlayfs_and_explicit_overlay_refuses(
    overlayfs: Path,
) -> None:
    root, runroot = overlayfs / "root", overlayfs / "run"
    choice = storage_probe.resolve(command="buildah", setting="auto", root=root, runroot=runroot)
    assert choice.driver == "vfs"
    assert choice.warning
    assert "a file system overlay cannot stack on" in choice.message
    assert "not supported over overlayfs" in choice.message  # buildah's own words
    with pytest.raises(PermanentError, match="LAYERING_BUILDAH_STORAGE_DRIVER=overlay, but"):
        storage_probe.resolve(command="buildah", setting="overlay", root=root, runroot=runroot)
    assert (
        storage_probe.resolve(command="buildah", setting="vfs", root=root, runroot=runroot).driver
        == "vfs"
    )


def test_a_worker_told_to_use_overlay_where_it_cannot_refuses_to_start(
    overlayfs: Path, registry: services.Registry, redis_server: services.RedisServer
) -> None:
    require_tools("buildah", "skopeo")
    storage = BuildahStorage(overlayfs / "root", overlayfs / "run", "overlay")
    env = make_worker_env(
        overlayfs.parent / "worker", redis_url=redis_server.url, registry=registry, storage=storage
    )
    with pytest.raises(RuntimeError, match="exited") as raised:
        launch_worker(env, "no-overlay", pool="solo", concurrency=1, queues="builds")
    message = str(raised.value)
    assert "layering worker cannot start: LAYERING_BUILDAH_STORAGE_DRIVER=overlay, but" in message
    assert "emptyDir" in message


def test_a_build_worker_reports_its_driver_to_readyz_until_it_stops(
    tmp_path: Path, registry: services.Registry
) -> None:
    require_tools("buildah", "skopeo", "redis-server")
    redis_server = services.RedisServer(tmp_path / "redis").start()
    storage = BuildahStorage(tmp_path / "storage" / "root", tmp_path / "storage" / "run")
    env = make_worker_env(
        tmp_path / "worker", redis_url=redis_server.url, registry=registry, storage=storage
    )
    settings = Settings(webhook_secret="s", redis_url=redis_server.url, github_repository="a/b")
    app = web.create_app(settings, build_workers=worker_presence.Reader(redis_server.url))
    try:
        with receiver.serving(app) as server:
            ready = httpx.get(f"{server.url}/readyz", timeout=10)
            assert ready.status_code == 200
            assert ready.json()["build_workers"] == []  # none seen: shown, not an error
            worker = launch_worker(
                env,
                "report",
                pool="prefork",
                concurrency=1,
                queues="builds",
                extra_env={"LAYERING_BUILDAH_STORAGE_DRIVER": "auto"},
            )
            try:
                [seen] = wait_for_workers(server.url, 1)
                assert seen["worker"].startswith("report@")
                assert seen["storage_driver"] == "overlay"
                assert seen["isolation"] == "chroot"
                stored = redis.Redis.from_url(redis_server.url).ttl(storage_driver.WORKERS_KEY)
                assert 0 < stored <= storage_driver.PRESENCE_TTL_SECONDS
                log = worker.log.read_text()
                assert "buildah storage driver overlay: auto, the probe showed" in log
            finally:
                worker.stop()
            assert wait_for_workers(server.url, 0) == []
            redis_server.stop()
            down = httpx.get(f"{server.url}/readyz", timeout=10)
            assert down.status_code == 503
            assert down.json()["status"] == "unavailable"
    finally:
        redis_server.stop()


def wait_for_workers(url: str, count: int) -> list[dict[str, str]]:
    deadline = time.monotonic() + 15
    while True:
        workers: list[dict[str, str]] = httpx.get(f"{url}/readyz", timeout=10).json()[
            "build_workers"
        ]
        if len(workers) == count or time.monotonic() > deadline:
            assert len(workers) == count, workers
            return workers
        time.sleep(0.1)


def test_layering_up_picks_overlay_here_and_says_so(tmp_path: Path) -> None:
    require_tools("buildah")
    layout = workdir.Layout(tmp_path)

    def options(driver: str | None) -> workdir.Options:
        return workdir.Options(tmp_path, {}, None, None, tmp_path, storage_driver=driver)

    said: list[str] = []
    assert local_services.choose_storage(options(None), layout, said.append) == "overlay"
    assert said == [
        "buildah storage driver overlay: auto, the probe showed native overlay diff, on extfs"
    ]
    said.clear()
    assert local_services.choose_storage(options("vfs"), layout, said.append) == "vfs"
    assert said == [
        "buildah storage driver vfs: LAYERING_BUILDAH_STORAGE_DRIVER=vfs (every layer copied "
        "in full)"
    ]
