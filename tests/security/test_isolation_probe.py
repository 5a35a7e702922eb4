"""Finding 3 (builds share the host's namespaces): the worker, `layering build` and `/readyz`
choose and report build isolation. `auto` (the default) probes with real buildah: oci with
private PID and network namespaces where the host allows it (runc installed here), otherwise a
refusal naming what the host lacks and how to opt into chroot (a host without an OCI runtime
is a containers.conf naming a runtime that does not exist). chroot is used only when set, and
then warned about at worker start and in /readyz."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pipeline.adapters import buildah
from pipeline.adapters import isolation as isolation_probe
from pipeline.core import isolation
from pipeline.core.errors import PermanentError
from pipeline.core.settings import Settings
from pipeline.local import services as local_services
from pipeline.local import workdir
from pipeline.web import server as web
from tests import receiver, services
from tests.conftest import require_tools
from tests.plugins.builds import (
    BaseImage,
    BuildahStorage,
    WorkerEnv,
    git_commit_all,
    launch_worker,
    write_repository,
)

pytestmark = pytest.mark.integration
LAYERING = (sys.executable, "-m", "pipeline.cli")


@pytest.fixture
def no_runtime(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of a host whose buildah finds no OCI runtime."""
    conf = tmp_path / "containers.conf"
    conf.write_text(
        '[engine]\nruntime = "layering-missing"\n'
        '[engine.runtimes]\nlayering-missing = ["/nonexistent/layering-missing-runc"]\n'
    )
    isolation_probe.forget()
    yield {"CONTAINERS_CONF": str(conf)}
    isolation_probe.forget()


def test_auto_probes_oci_with_private_namespaces(buildah_storage: BuildahStorage) -> None:
    require_tools("buildah", "runc")
    argv = buildah_storage.argv()

    def containers() -> set[str]:
        listed = subprocess.run([*argv, "containers", "--quiet"], capture_output=True, text=True)
        return set(listed.stdout.split())

    # the storage is the session's: another module's killed build may have left a container
    before = containers()
    found = isolation_probe.probe(command=argv[0], global_argv=argv[1:])
    assert found == isolation.Probe(True), found.reason
    isolation_probe.forget()
    assert isolation_probe.resolve(command=argv[0], global_argv=argv[1:], mode="auto") == "oci"
    # the probe's container is gone again
    assert containers() == before


def test_without_a_runtime_auto_refuses_and_says_what_is_missing(
    buildah_storage: BuildahStorage, no_runtime: dict[str, str]
) -> None:
    require_tools("buildah")
    argv = buildah_storage.argv()
    found = isolation_probe.probe(
        command=argv[0], global_argv=argv[1:], env={**os.environ, **no_runtime}
    )
    assert not found.ok
    assert "no OCI runtime (runc or crun)" in found.reason
    assert "LAYERING_BUILDAH_ISOLATION=chroot" in found.message
    assert "\n" not in found.message
    # chroot only when asked for: never as a fallback
    assert isolation_probe.resolve(command="no-such-buildah", global_argv=[], mode="chroot") == (
        "chroot"
    )
    with pytest.raises(PermanentError, match="could not run no-such-buildah"):
        isolation_probe.resolve(command="no-such-buildah", global_argv=[], mode="auto")


def test_a_worker_with_auto_and_no_runtime_refuses_to_start(
    worker_env: WorkerEnv, no_runtime: dict[str, str]
) -> None:
    with pytest.raises(RuntimeError) as refused:
        launch_worker(
            worker_env,
            f"no-runtime-{uuid.uuid4().hex[:6]}",
            pool="solo",
            concurrency=1,
            queues="builds",
            extra_env={"LAYERING_BUILDAH_ISOLATION": "auto", **no_runtime},
        )
    message = str(refused.value)
    assert "layering worker cannot start: buildah cannot isolate build steps with oci" in message
    assert "no OCI runtime (runc or crun)" in message
    assert "LAYERING_BUILDAH_ISOLATION=chroot" in message
    assert "Traceback" not in message


def test_a_chroot_worker_warns_at_start(
    worker_env: WorkerEnv, redis_server: services.RedisServer
) -> None:
    worker = launch_worker(
        worker_env,
        f"chroot-{uuid.uuid4().hex[:6]}",
        pool="solo",
        concurrency=1,
        queues="builds",
        # a database of its own: this worker takes no build of another test
        extra_env={"LAYERING_REDIS_URL": redis_server.url.replace("/0", "/7")},
    )
    try:
        worker.stop()
        log = worker.log.read_text(errors="replace")
    finally:
        worker.stop()
    warning = next(line for line in log.splitlines() if "WARNING" in line and "chroot" in line)
    assert isolation.CHROOT_WARNING in warning
    assert "Traceback" not in log


def test_layering_build_with_auto_and_no_runtime_fails_with_the_reason(
    worker_env: WorkerEnv,
    base_image: BaseImage,
    registry: services.Registry,
    tmp_path: Path,
    no_runtime: dict[str, str],
) -> None:
    root = tmp_path / "gitops"
    write_repository(
        root,
        base=base_image,
        registry=f"{registry.host}/layering",
        images={"probe": {"Containerfile": "FROM quay.io/fedora/fedora-coreos:stable\nRUN true\n"}},
    )
    git_commit_all(root)
    env = {**os.environ, **worker_env.variables, "LAYERING_BUILDAH_ISOLATION": "auto"}
    result = subprocess.run(
        [*LAYERING, "build", "probe", "--cluster", "dev", "--repo", str(root)],
        env={**env, **no_runtime},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "buildah cannot isolate build steps with oci" in result.stderr
    assert "LAYERING_BUILDAH_ISOLATION=chroot" in result.stderr
    assert "Traceback" not in result.stderr
    assert "STEP 2/" not in result.stderr  # nothing ran less isolated than asked


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (
            "chroot",
            {"build_isolation": "chroot", "build_isolation_warning": isolation.CHROOT_WARNING},
        ),
        ("auto", {"build_isolation": "auto", "build_isolation_note": isolation.AUTO_NOTE}),
        ("oci", {"build_isolation": "oci"}),
    ],
)
def test_readyz_reports_the_build_isolation(
    redis_server: services.RedisServer, mode: str, expected: dict[str, str]
) -> None:
    settings = Settings(redis_url=redis_server.url, buildah_isolation=mode)  # type: ignore[arg-type]
    with receiver.serving(web.create_app(settings)) as server:
        response = httpx.get(f"{server.url}/readyz", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "ready", **expected}


def test_isolation_arguments_of_each_mode() -> None:
    assert isolation.build_argv("oci") == [
        "--isolation",
        "oci",
        "--pid",
        "private",
        "--network",
        "private",
    ]
    assert isolation.build_argv("chroot") == ["--isolation", "chroot"]
    config = buildah.BuildahConfig(isolation="auto")
    assert config.isolation == "auto"
    shared = isolation.judged(
        {"net": "net:[1]", "pid": "pid:[2]"}, {"net": "net:[1]", "pid": "pid:[3]"}
    )
    assert not shared.ok
    assert shared.reason.startswith("the oci step still shared the host's net namespace")
    assert isolation.judged({"net": "net:[1]", "pid": "pid:[2]"}, {}).reason.startswith(
        "the oci step still shared the host's net and pid namespace"
    )


def test_layering_up_uses_oci_where_it_works_else_says_it_chose_chroot(
    tmp_path: Path, no_runtime: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    require_tools("buildah", "runc")
    layout = workdir.Layout(tmp_path)

    def options(chosen: str | None) -> workdir.Options:
        return workdir.Options(tmp_path, {}, None, None, tmp_path, isolation=chosen)

    said: list[str] = []
    assert local_services.choose_isolation(options("chroot"), layout, said.append) == "chroot"
    assert said == ["build isolation chroot (LAYERING_BUILDAH_ISOLATION)"]
    said.clear()
    assert local_services.choose_isolation(options(None), layout, said.append) == "oci"
    assert said == ["build isolation oci: RUN steps get private PID and network namespaces"]
    said.clear()
    isolation_probe.forget()
    monkeypatch.setenv("CONTAINERS_CONF", no_runtime["CONTAINERS_CONF"])
    assert local_services.choose_isolation(options(None), layout, said.append) == "chroot"
    assert said[0].startswith("build isolation chroot: buildah cannot isolate build steps")
    assert said[1] == f"warning: {isolation.CHROOT_WARNING}"
