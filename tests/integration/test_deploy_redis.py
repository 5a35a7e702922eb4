"""deploy/'s Redis, run for real: the StatefulSet's own command and redis.conf (paths moved
into a temporary directory) start a real redis-server that refuses clients without the
Secret's password, appends to its AOF, and never has the password on an argv; its probe
command answers. And the external-redis component renders a deployment without the
StatefulSet whose every process takes LAYERING_REDIS_URL whole from a Secret."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import redis

from tests import crd, manifests, services
from tests.conftest import require_tools
from tests.manifests import Obj, container, containers, env, named

PASSWORD = "0123456789abcdef" * 4  # hex, as README says to make it


@pytest.fixture(scope="module")
def kubernetes() -> list[Obj]:
    return manifests.render(manifests.DEPLOY / "overlays" / "kubernetes")


def _moved(text: str, root: Path, port: int) -> str:
    """The pod's paths and port, moved under `root` and to a free loopback port."""
    for pod_path in ("/run/redis", "/etc/redis", "/data"):
        text = text.replace(pod_path, f"{root}{pod_path}")
    return text.replace("bind 0.0.0.0", "bind 127.0.0.1").replace("port 6379", f"port {port}")


@pytest.mark.integration
def test_the_redis_pod_command_keeps_the_password_off_argv_and_appends(
    kubernetes: list[Obj], tmp_path: Path
) -> None:
    require_tools("redis-server", "redis-cli", "sh")
    port = services.free_port()
    config = named(kubernetes, "ConfigMap", "layering-redis-config")["data"]["redis.conf"]
    assert "appendonly yes" in config.splitlines()
    for directory in ("run/redis", "etc/redis", "data"):
        (tmp_path / directory).mkdir(parents=True)
    (tmp_path / "etc/redis/redis.conf").write_text(_moved(config, tmp_path, port))
    pod = container(kubernetes, "layering-redis", "redis")
    assert env(pod)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "layering-redis",
        "key": "password",
    }
    command = [_moved(part, tmp_path, port) for part in pod["command"]]
    command[-1] = command[-1].replace("exec redis-server", f"exec {shutil.which('redis-server')}")
    process = services.start(
        command,
        log=tmp_path / "redis.log",
        env={**os.environ, "REDIS_PASSWORD": PASSWORD},
        cwd=tmp_path,
    )
    try:
        services.wait_for_port(port, process=process)
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=port).ping()
        client = redis.Redis(port=port, password=PASSWORD)
        assert client.ping()
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        client.rpush("builds", "a build")
        assert (tmp_path / "run/redis/auth.conf").stat().st_mode & 0o777 == 0o600
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()
        assert b"redis-server" in cmdline
        assert PASSWORD.encode() not in cmdline
        probe = _moved(" ".join(pod["readinessProbe"]["exec"]["command"][2:]), tmp_path, port)
        probe = probe.replace("redis-cli", f"redis-cli -p {port}")
        result = subprocess.run(
            ["sh", "-c", probe],
            env={**os.environ, "REDIS_PASSWORD": PASSWORD},
            capture_output=True,
            check=False,
        )
        assert result.returncode == 0, result
        deadline = time.monotonic() + 5
        while not list((tmp_path / "data").rglob("*.aof")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list((tmp_path / "data").rglob("*.aof")), list((tmp_path / "data").iterdir())
    finally:
        services.stop_process(process)


def _external(tmp_path: Path, overlay: str) -> list[Obj]:
    mine = tmp_path / "mine"
    mine.mkdir()
    deploy = os.path.relpath(manifests.DEPLOY, mine)
    (mine / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {deploy}/overlays/{overlay}\n"
        f"components:\n  - {deploy}/components/external-redis\n"
    )
    return manifests.render(mine)


@pytest.mark.parametrize("overlay", manifests.OVERLAYS)
def test_external_redis_component_drops_the_statefulset(overlay: str, tmp_path: Path) -> None:
    objects = _external(tmp_path, overlay)
    assert not [o for o in objects if o["metadata"]["name"].startswith("layering-redis")
                and o["kind"] != "TriggerAuthentication"]  # fmt: skip
    layering = [(w, c) for w, c in containers(objects) if "coreos-layering" in c["image"]]
    assert len(layering) == 4
    for workload, item in layering:
        variables = env(item)
        assert "REDIS_PASSWORD" not in variables, workload["metadata"]["name"]
        assert variables["LAYERING_REDIS_URL"] == {
            "name": "LAYERING_REDIS_URL",
            "valueFrom": {"secretKeyRef": {"name": "layering-redis-url", "key": "url"}},
        }
    (trigger,) = named(objects, "ScaledObject", "layering-builds")["spec"]["triggers"]
    assert "address" not in trigger["metadata"]
    auth = named(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert {(r["parameter"], r["name"]) for r in auth["spec"]["secretTargetRef"]} == {
        ("address", "layering-redis-url"),
        ("password", "layering-redis-url"),
    }
    for obj in objects:
        if obj["kind"] in crd.BY_KIND:
            assert crd.errors(crd.BY_KIND[obj["kind"]], obj) == [], obj["metadata"]["name"]
        else:
            kubernetes_validate.validate(obj, "1.33.0", strict=True)
