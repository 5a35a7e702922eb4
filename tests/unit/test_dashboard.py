"""The dashboard's routes with a fake build store and promotion source: hostile names and log
lines come out escaped, the log tail pages by offset (and reads only the lines after it), unknown
builds are 404."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from pipeline.core import head_lint
from pipeline.web import dashboard, promotions

HOSTILE = "<script>alert('x')</script>"


class FakeBuilds:
    """A BuildSource; remembers which log lines were asked for."""

    def __init__(self) -> None:
        self.builds: dict[str, dict[str, Any]] = {}
        self.logs: dict[str, str] = {}
        self.log_reads: list[tuple[str, int, int]] = []  # (build id, offset, limit)

    def list_builds(self, *, limit: int) -> list[Mapping[str, Any]]:
        return list(self.builds.values())[:limit]

    def get_build(self, build_id: str) -> Mapping[str, Any] | None:
        return self.builds.get(build_id)

    def log_lines(self, build_id: str, *, offset: int, limit: int) -> list[str]:
        self.log_reads.append((build_id, offset, limit))
        lines = self.logs.get(build_id, "").splitlines(keepends=True)
        return lines[offset : offset + limit]

    def image_builds(self, image: str, *, limit: int) -> list[Mapping[str, Any]]:
        return [b for b in reversed(self.builds.values()) if b.get("image") == image][:limit]

    def lint_findings(self, commit_sha: str, image: str) -> head_lint.Stored | None:
        return None


class FakePromotions:
    def __init__(self, view: promotions.PromotionsView) -> None:
        self.current = view

    def view(self) -> promotions.PromotionsView:
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
    source = FakePromotions(
        promotions.PromotionsView(
            environments=(
                promotions.EnvironmentView(
                    "nonprod",
                    "env/nonprod",
                    "b" * 40,
                    (
                        promotions.PoolRow(
                            "nonprod", "debug", "htop", "sha256:" + "c" * 64, HOSTILE, "-", "-"
                        ),
                    ),
                ),
            ),
            drift=(
                promotions.DriftRow("prod", "q/os@sha256:1", "q/os@sha256:2", "4.16", "drift", 0),
            ),
        )
    )
    app = FastAPI()
    app.include_router(dashboard.router(builds, promotion_source=source, clock=lambda: 112.5))
    return TestClient(app), builds, source


def test_index_escapes_everything_and_sets_a_script_policy(
    setup: tuple[TestClient, FakeBuilds, FakePromotions],
) -> None:
    client, builds, _ = setup
    builds.builds["b1"] = _build("b1", error=HOSTILE, state="failed", finished_at=103.0)
    response = client.get("/builds")
    assert response.status_code == 200
    text = response.text
    assert HOSTILE not in text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in text
    assert 'href="/builds/b1"' in text
    assert "3.0s" in text  # duration of a finished build
    assert "env/nonprod" in text
    assert "state-drift" in text
    policy = response.headers["content-security-policy"]
    nonce = policy.split("'nonce-")[1].split("'")[0]
    assert f'<script nonce="{nonce}">' in text
    assert "default-src 'none'" in policy


def test_every_page_gets_a_fresh_nonce_and_fragments_run_no_script(
    setup: tuple[TestClient, FakeBuilds, FakePromotions],
) -> None:
    client, builds, _ = setup
    builds.builds["b5"] = _build("b5")
    nonces = set()
    for path in ("/builds", "/builds", "/builds/b5", "/builds/b5"):
        response = client.get(path)
        nonce = response.headers["content-security-policy"].split("'nonce-")[1].split("'")[0]
        assert response.text.count("<script") == 1
        assert f'<script nonce="{nonce}">' in response.text
        nonces.add(nonce)
    assert len(nonces) == 4
    for path in ("/dashboard/fragments/builds", "/dashboard/fragments/promotions", "/builds/x"):
        response = client.get(path)
        assert "script-src 'none'" in response.headers["content-security-policy"]
        assert "<script" not in response.text


def test_fragments_refresh_builds_and_promotions(
    setup: tuple[TestClient, FakeBuilds, FakePromotions],
) -> None:
    client, builds, source = setup
    assert 'id="no-builds"' in client.get("/dashboard/fragments/builds").text
    builds.builds["b2"] = _build("b2")
    fragment = client.get("/dashboard/fragments/builds").text
    assert 'data-build-id="b2"' in fragment
    assert "12.5s" in fragment  # running: measured up to now
    source.current = promotions.PromotionsView(problem="git fetch failed: <b>")
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


def test_each_poll_reads_only_the_lines_after_its_offset(
    setup: tuple[TestClient, FakeBuilds, FakePromotions],
) -> None:
    client, builds, _ = setup
    builds.builds["b4"] = _build("b4")
    builds.logs["b4"] = "one\ntwo\nthree\n"
    assert 'data-offset="3"' in client.get("/builds/b4").text
    assert builds.log_reads == [("b4", 0, dashboard.PAGE_LOG_LINES)]  # the page: once
    builds.log_reads.clear()
    assert client.get("/api/builds/b4/log/tail", params={"offset": 3}).json()["lines"] == []
    builds.logs["b4"] += "four\nfive\n"
    polled = client.get("/api/builds/b4/log/tail", params={"offset": 3}).json()
    assert (polled["lines"], polled["next_offset"]) == (["four\n", "five\n"], 5)
    client.get("/api/builds/b4/log/tail", params={"offset": 5})
    limit = dashboard.LOG_TAIL_LIMIT
    assert builds.log_reads == [("b4", 3, limit), ("b4", 3, limit), ("b4", 5, limit)]
    # a long log is followed in chunks, each read from where the last one ended
    builds.logs["b4"] = "".join(f"line {n}\n" for n in range(2 * limit + 10))
    builds.log_reads.clear()
    offset, chunks = 0, list[int]()
    while not chunks or chunks[-1]:
        tail = client.get("/api/builds/b4/log/tail", params={"offset": offset}).json()
        chunks.append(len(tail["lines"]))
        offset = tail["next_offset"]
    assert chunks == [limit, limit, 10, 0]
    assert [read[1] for read in builds.log_reads] == [0, limit, 2 * limit, 2 * limit + 10]


def test_log_tail_says_when_more_is_waiting_and_refuses_bad_offsets(
    setup: tuple[TestClient, FakeBuilds, FakePromotions],
) -> None:
    client, builds, _ = setup
    builds.builds["b6"] = _build("b6")
    builds.logs["b6"] = "".join(f"line {n}\n" for n in range(dashboard.LOG_TAIL_LIMIT + 5))
    full = client.get("/api/builds/b6/log/tail", params={"offset": 0}).json()
    assert (len(full["lines"]), full["more"]) == (dashboard.LOG_TAIL_LIMIT, True)
    rest = client.get("/api/builds/b6/log/tail", params={"offset": full["next_offset"]}).json()
    assert (len(rest["lines"]), rest["more"]) == (5, False)
    for offset in (-1, 10**12):
        refused = client.get("/api/builds/b6/log/tail", params={"offset": offset})
        assert refused.status_code == 400
        assert "offset must be" in refused.json()["error"]
    # the page shows a bounded first part; its script goes on from there at once
    page = client.get("/builds/b6").text
    assert f'data-offset="{dashboard.PAGE_LOG_LINES}"' in page
    assert "more ? 0 : 1000" in page


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
    assert promotions.environment_order(model) == ["nonprod", "prod"]
