"""Session fixtures: real services on loopback ports, stopped by PID. Under CI=true a missing
tool fails the run instead of skipping (no integration test may skip in CI)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import services

pytest_plugins = [
    "tests.plugins.gitrepos",
    "tests.plugins.builds",
    "tests.plugins.github",
    "tests.plugins.kube",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def require_tools(*tools: str) -> None:
    missing = services.tool_missing(*tools)
    if not missing:
        return
    message = f"missing tools: {', '.join(missing)} (run `make test`, which installs them)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.RedisServer]:
    require_tools("redis-server")
    server = services.RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.Registry]:
    require_tools("docker-registry")
    server = services.Registry(tmp_path_factory.mktemp("registry")).start()
    yield server
    server.stop()
