"""`layering render` as a real subprocess on a copy of this project's example repository."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.adapters import fs
from pipeline.core import repo
from tests import crd
from tests.conftest import REPO_ROOT

DIGEST = "sha256:" + "5" * 64


def layering(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
    )


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    for top in (repo.IMAGES_DIR, repo.CLUSTERS_DIR):
        shutil.copytree(REPO_ROOT / top, tmp_path / top)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "add", "-A"], check=True)
    subprocess.run(
        [
            "git",
            "-C",
            str(tmp_path),
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "examples",
        ],
        check=True,
    )
    return tmp_path


def digest_args(cluster: str, root: Path) -> list[str]:
    images = sorted(set(fs.load(root).clusters[cluster].pools.values()))
    return [arg for image in images for arg in ("--digest", f"{image}={DIGEST}")]


def test_render_prints_a_valid_machineconfig_per_pool(checkout: Path) -> None:
    cluster = fs.load(checkout).clusters["prod"]
    result = layering(
        "render",
        "--repo",
        str(checkout),
        "--cluster",
        "prod",
        *digest_args("prod", checkout),
        cwd=checkout,
    )
    assert result.returncode == 0, result.stderr
    documents = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert [
        d["metadata"]["labels"]["machineconfiguration.openshift.io/role"] for d in documents
    ] == sorted(cluster.pools)
    head = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    for document in documents:
        assert crd.machineconfig_errors(document) == []
        assert document["spec"]["osImageURL"].endswith(f"@{DIGEST}")
        assert document["metadata"]["annotations"]["layering/source-commit"] == head
    again = layering(
        "render",
        "--repo",
        str(checkout),
        "--cluster",
        "prod",
        *digest_args("prod", checkout),
        cwd=checkout,
    )
    assert again.stdout == result.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--cluster", "nope"], "cluster 'nope'"),
        (["--cluster", "prod", "--digest", "worker=sha256:12"], "--digest"),
        (["--cluster", "prod", "--digest", "firewalld=" + DIGEST], "pass --digest"),
    ],
)
def test_render_bad_input_is_one_line(checkout: Path, args: list[str], expected: str) -> None:
    result = layering("render", "--repo", str(checkout), *args, cwd=checkout)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
