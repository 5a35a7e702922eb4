"""core/promotion_request.py, LAYERING_PROMOTION_MODE and cluster.yaml's autoMerge: tables."""

from __future__ import annotations

import pytest
import yaml

from pipeline.core import promotion_commit, promotion_request, repo
from pipeline.core.settings import Settings

BASE = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "a" * 64


def cluster_yaml(environment: str, **extra: object) -> bytes:
    document = {"environment": environment, "baseImage": BASE, "registry": "r.example/t"}
    return yaml.safe_dump({**document, **extra}).encode()


def model(**clusters: bytes) -> repo.Repository:
    files = {f"clusters/{name}/cluster.yaml": raw for name, raw in clusters.items()}
    return repo.parse_files(files)


@pytest.mark.parametrize(
    ("settings", "mode"),
    [
        ({}, "commit"),
        ({"github_token": "ghp_x"}, "pull-request"),
        ({"github_token": ""}, "commit"),
        (
            {"github_app_id": 1, "github_app_private_key": "k", "github_app_installation_id": 2},
            "pull-request",
        ),
        ({"github_app_id": 1}, "commit"),
        ({"github_token": "ghp_x", "promotion_mode": "commit"}, "commit"),
        ({"promotion_mode": "pull-request"}, "pull-request"),
    ],
)
def test_promotion_mode_resolves_auto(settings: dict[str, object], mode: str) -> None:
    assert Settings.model_validate(settings).resolved_promotion_mode == mode


def test_auto_merge_defaults_by_promotes_from_and_can_be_set() -> None:
    repository = model(
        nonprod=cluster_yaml("nonprod"),
        prod=cluster_yaml("prod", promotesFrom="nonprod"),
        stage=cluster_yaml("stage", promotesFrom="nonprod", autoMerge=True),
        lab=cluster_yaml("lab", autoMerge=False),
    )
    assert repository.problems == ()
    assert promotion_request.auto_merge(repository, "nonprod")
    assert not promotion_request.auto_merge(repository, "prod")
    assert promotion_request.auto_merge(repository, "stage")
    assert not promotion_request.auto_merge(repository, "lab")
    assert not promotion_request.auto_merge(repository, "nowhere")


def test_auto_merge_must_be_a_boolean() -> None:
    repository = model(nonprod=cluster_yaml("nonprod", autoMerge="yes"))
    assert any(p.field == "autoMerge" for p in repository.problems)


@pytest.mark.parametrize(
    ("branch", "environment"),
    [("env/prod", "prod"), ("layering/promote/prod", "prod"), ("main", None), ("env/", None)],
)
def test_environment_of(branch: str, environment: str | None) -> None:
    assert promotion_request.environment_of(branch) == environment


def test_body_rows() -> None:
    repository = model(
        prod=cluster_yaml("prod", promotesFrom="nonprod", soak="24h"),
        nonprod=cluster_yaml("nonprod"),
    )
    change = promotion_commit.Change(
        "m",
        pools=(
            promotion_commit.PoolChange(
                "prod",
                "worker",
                "p",
                image="fw",
                digest="sha256:" + "b" * 64,
                build_key="k" * 64,
                source_commit="c" * 40,
            ),
            promotion_commit.PoolChange("prod", "infra", "q"),
        ),
    )
    body = promotion_request.body("prod", change, repository)
    row = (
        f"| prod/worker | fw | `stock image` -> `sha256:{'b' * 64}` | `{'k' * 64}` | "
        f"`{'c' * 40}` | verified on nonprod (nonprod), soaked 1d |"
    )
    assert row in body
    assert "| prod/infra | - | `stock image` -> `stock image (removed)`" in body
    assert promotion_request.title("prod", change) == (
        "layering: promote prod: 1 pool(s) to new images, 1 pool(s) back to the stock image"
    )
