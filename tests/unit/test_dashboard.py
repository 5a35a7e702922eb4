"""The dashboard's routes with a fake build store and promotion source: hostile names and log
lines come out escaped, the log tail pages by offset, unknown builds are 404."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from pipeline.adapters.environment import load_settings
from pipeline.web import dashboard

HOSTILE = "<script>alert('x')</script>"


class FakeBuilds:
    def __init__(self) -> None:
        self.builds: dict[str, dict[str, Any]] = {}
        self.logs: dict[str, str] = {}

    def list_builds(self, *, limit: int) -> list[Mapping[str, Any]]:
        return list(self.builds.values())[:limit]

    def get_build(self, build_id: str) -> Mapping[str, Any] | None:
        return self.builds.get(build_id)

    def read_log(self, build_id: str) -> str | None:
        return self.logs.get(build_id)


class FakePromotions:
    def __init__(self, view: dashboard.PromotionsView) -> None:
        self.current = view

    def view(self) -> dashboard.PromotionsView:
        return self.current


def _build(build_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": build_id,
        "image": "htop",
        "cluster": "nonprod",
        "state": "running",
        "commit_sha": "a" * 40,
        "digest": "",
        "started_at": 100.0,
        "finished_at": None,
        "error": "",
        **fields,
    }


@pytest.fixture
def setup() -> tuple[TestClient, FakeBuilds, FakePromotions]:
    builds = FakeBuilds()
    promotions = FakePromotions(
        dashboard.PromotionsView(
            environments=(
                dashboard.EnvironmentView(
                    "nonprod",
                    "env/nonprod",
                    "b" * 40,
                    (
                        dashboard.PoolRow(
                            "nonprod", "debug", "htop", "sha256:" + "c" * 64, HOSTILE, "-", "-"
                        ),
                    ),
                ),
            ),
            drift=(
                dashboard.DriftRow("prod", "q/os@sha256:1", "q/os@sha256:2", "4.16", "drift", 0),
            ),
        )
    )
    app = FastAPI()
    app.include_router(
        dashboard.router(
            load_settings(redis_url="redis://127.0.0.1:1/0"),
            builds,
            promotions=promotions,
            clock=lambda: 112.5,
        )
    )
    return TestClient(app), builds, promotions


def test_index_escapes_everything_and_sets_a_script_policy(
    setup: tuple[TestClient, FakeBuilds, FakePromotions],
) -> None:
    client, builds, _ = setup
    builds.builds["b1"] = _build("b1", error=HOSTILE, state="failed", finished_at=103.0)
    response = client.get("/")
    assert response.status_code == 200
    text = response.text
    assert HOSTILE not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert 'href="/builds/b1"' in text
    assert "3.0s" in text  # duration of a finished build
    assert "env/nonprod" in text
    assert "state-drift" in text
    policy = response.headers["content-security-policy"]
    nonce = policy.split("'nonce-")[1].split("'")[0]
    assert f'<script nonce="{nonce}">' in text
    assert "default-src 'none'" in policy


def test_fragments_refresh_builds_and_promotions(
    setup: tuple[TestClient, FakeBuilds, FakePromotions],
) -> None:
    client, builds, promotions = setup
    assert 'id="no-builds"' in client.get("/dashboard/fragments/builds").text
    builds.builds["b2"] = _build("b2")
    fragment = client.get("/dashboard/fragments/builds").text
    assert 'data-build-id="b2"' in fragment
    assert "12.5s" in fragment  # running: measured up to now
    promotions.current = dashboard.PromotionsView(problem="git fetch failed: <b>")
    assert "git fetch failed: &lt;b&gt;" in client.get("/dashboard/fragments/promotions").text


def test_build_page_and_log_tail_by_offset(
    setup: tuple[TestClient, FakeBuilds, FakePromotions],
) -> None:
    client, builds, _ = setup
    builds.builds["b3"] = _build("b3")
    builds.logs["b3"] = f"STEP 1/2: FROM base\n{HOSTILE}\n"
    page = client.get("/builds/b3").text
    assert 'data-offset="2"' in page
    assert HOSTILE not in page
    first = client.get("/api/builds/b3/log/tail", params={"offset": 0}).json()
    assert first["lines"] == ["STEP 1/2: FROM base\n", f"{HOSTILE}\n"]
    assert first["next_offset"] == 2
    assert first["terminal"] is False
    builds.logs["b3"] += "pushed\n"
    builds.builds["b3"] = _build("b3", state="succeeded", digest="sha256:" + "d" * 64)
    later = client.get("/api/builds/b3/log/tail", params={"offset": 2}).json()
    assert later["lines"] == ["pushed\n"]
    assert later["next_offset"] == 3
    assert later["terminal"] is True
    assert later["digest"] == "sha256:" + "d" * 64


@pytest.mark.parametrize("build_id", ["nope", "../etc", "<x>"])
def test_unknown_or_bad_build_ids_are_404(
    setup: tuple[TestClient, FakeBuilds, FakePromotions], build_id: str
) -> None:
    client, _, _ = setup
    response = client.get(f"/builds/{build_id}")
    assert response.status_code == 404
    assert "<x>" not in response.text
    assert client.get(f"/api/builds/{build_id}/log/tail").status_code == 404


def test_environment_order_puts_upstream_first() -> None:
    from pipeline.core import repo

    base = "q.example/os@sha256:" + "0" * 64
    listing = repo.TreeListing(
        {},
        ["a-prod", "b-nonprod"],
        {
            "clusters/a-prod/cluster.yaml": (
                f"environment: prod\nbaseImage: {base}\nregistry: r.example/x\npools: {{}}\n"
                "promotesFrom: b-nonprod\n"
            ).encode(),
            "clusters/b-nonprod/cluster.yaml": (
                f"environment: nonprod\nbaseImage: {base}\nregistry: r.example/x\npools: {{}}\n"
            ).encode(),
        },
        frozenset(),
    )
    model = repo.parse(listing)
    assert dashboard.environment_order(model) == ["nonprod", "prod"]
