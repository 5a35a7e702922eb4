"""`layering build` labels what it builds with where it came from, as the worker does: the
commit (`org.opencontainers.image.revision`) and the remote's URL without credentials
(`org.opencontainers.image.source`). Real buildah, docker-registry, Git and the CLI process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from pipeline.core.builds import LABEL_REVISION, LABEL_SOURCE
from tests import services
from tests.plugins.builds import BaseImage, WorkerEnv, git_commit_all, write_repository

pytestmark = pytest.mark.integration

CONTAINERFILE = """\
FROM quay.io/fedora/fedora-coreos:stable
RUN echo {nonce} > /etc/provenance
RUN ostree container commit
"""
TOKEN = "ghp_provenanceTokenValue123"


def _checkout(root: Path, base: BaseImage, registry: services.Registry) -> Path:
    nonce = uuid.uuid4().hex  # fresh content: never a registry hit by accident
    write_repository(
        root,
        base=base,
        registry=f"{registry.host}/provenance",
        images={"labelled": {"Containerfile": CONTAINERFILE.format(nonce=nonce)}},
        clusters={"dev": {"pools": {"worker": "labelled"}}},
    )
    return root


def _build(env: WorkerEnv, root: Path) -> tuple[dict[str, object], str]:
    argv = [sys.executable, "-m", "pipeline.cli", "build", "labelled", "--cluster", "dev"]
    argv += ["--repo", str(root), "--push", "--format", "json"]
    variables = {**os.environ, **env.variables}
    result = subprocess.run(argv, env=variables, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def _labels(reference: str) -> dict[str, str]:
    conf = ["--registries-conf", os.environ["CONTAINERS_REGISTRIES_CONF"]]
    raw = subprocess.run(
        ["skopeo", *conf, "inspect", "--config", f"docker://{reference}"],
        capture_output=True,
        check=True,
    ).stdout
    return dict(json.loads(raw)["config"].get("Labels") or {})


def test_a_git_checkout_gives_revision_and_source_without_credentials(
    tmp_path: Path, base_image: BaseImage, registry: services.Registry, worker_env: WorkerEnv
) -> None:
    root = _checkout(tmp_path / "repo", base_image, registry)
    sha = git_commit_all(root)
    remote = f"https://bob:{TOKEN}@git.example.com/platform/layering.git?ref=x#frag"
    subprocess.run(["git", "-C", str(root), "remote", "add", "origin", remote], check=True)
    record, stderr = _build(worker_env, root)
    labels = _labels(f"{registry.host}/provenance/labelled@{record['digest']}")
    assert labels[LABEL_REVISION] == sha
    assert labels[LABEL_SOURCE] == "https://git.example.com/platform/layering.git"
    assert TOKEN not in stderr
    assert TOKEN not in json.dumps(record)
    assert "note:" not in stderr


def test_a_directory_that_is_not_a_checkout_says_so_once_and_builds_without_them(
    tmp_path: Path, base_image: BaseImage, registry: services.Registry, worker_env: WorkerEnv
) -> None:
    root = _checkout(tmp_path / "plain", base_image, registry)
    record, stderr = _build(worker_env, root)
    assert record["state"] == "succeeded"
    assert stderr.count("is not a Git checkout") == 1, stderr
    labels = _labels(f"{registry.host}/provenance/labelled@{record['digest']}")
    assert LABEL_REVISION not in labels
    assert LABEL_SOURCE not in labels


def test_uncommitted_changes_keep_the_revision_label_off(
    tmp_path: Path, base_image: BaseImage, registry: services.Registry, worker_env: WorkerEnv
) -> None:
    root = _checkout(tmp_path / "dirty", base_image, registry)
    git_commit_all(root)
    subprocess.run(
        ["git", "-C", str(root), "remote", "add", "origin", "https://git.example.com/o/r"],
        check=True,
    )
    (root / "images" / "labelled" / "extra.conf").write_text("not committed\n")
    record, stderr = _build(worker_env, root)
    assert "uncommitted changes under images/labelled" in stderr
    labels = _labels(f"{registry.host}/provenance/labelled@{record['digest']}")
    assert LABEL_REVISION not in labels
    assert labels[LABEL_SOURCE] == "https://git.example.com/o/r"
