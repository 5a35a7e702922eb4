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
        # probe once the worker is up: a probe of a worker still starting waits its whole
        # --timeout for an answer
        log = tmp_path / "worker.log"
        deadline = time.monotonic() + 60
        while " ready." not in log.read_text(errors="replace"):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        result = _probe(probe, env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "pong" in result.stdout
        # another node's name gets no answer (within a shorter wait than the probe's own)
        gone = [
            part.replace("events@", "nobody@").replace("--timeout 10", "--timeout 2")
            for part in probe
        ]
        assert _probe(gone, env).returncode != 0
    finally:
        services.stop_process(process)
