"""deploy/'s worker liveness probe, run for real: the events workload's own command starts a
Celery worker on a real Redis, and its probe command (`celery inspect ping` to the worker's own
node name) succeeds against it, and fails for a node that is not there."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import manifests, services
from tests.conftest import REPO_ROOT
from tests.manifests import container


def _probe(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=60
    )


@pytest.mark.integration
def test_the_worker_probe_pings_its_own_node(
    redis_server: services.RedisServer, tmp_path: Path
) -> None:
    objects = manifests.render(manifests.DEPLOY / "overlays" / "kubernetes")
    worker = container(objects, "layering-events", "worker")
    assert worker["command"][:2] == ["layering", "worker"]
    env = {
        **os.environ,
        "LAYERING_REDIS_URL": redis_server.url,
        "LAYERING_WORKDIR": str(tmp_path),
        "LAYERING_VERIFICATION_KEY": "k" * 64,
        "HOSTNAME": socket.gethostname(),  # what a pod's environment has: its own name
        # the venv's `celery`, as the image has it on PATH
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    process = services.start(
        [sys.executable, "-m", "pipeline.cli", *worker["command"][1:]],
        log=tmp_path / "worker.log",
        env=env,
        cwd=REPO_ROOT,
    )
    try:
        probe = worker["livenessProbe"]["exec"]["command"]
        assert shutil.which("celery", path=env["PATH"])
        deadline = time.monotonic() + 30
        result = _probe(probe, env)
        while result.returncode != 0 and time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "worker.log").read_text()
            result = _probe(probe, env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "pong" in result.stdout
        gone = [part.replace("events@", "nobody@") for part in probe]
        assert _probe(gone, env).returncode != 0
    finally:
        services.stop_process(process)
