"""Issue 16: the pipeline view, the dashboard's home page, in real headless Chromium. The web
service (over HTTP) reads a real bare Git repository with env/nonprod and env/prod branches and
a real Redis holding what the workers would have written through their own adapters: promoted
images, a verification on nonprod whose soak before prod is in progress, a gate waiting on a
promotion pull request, the head of main with a failed build (a content-lint error) and a
running one. The cells say all of it in text; finishing the running build (its record saved
as a worker saves it) changes the open page without a reload; once the gate passes, its
verdict stays on the cell (its pass kept, bounded). Screenshots go to the test artifacts."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import httpx
import pytest
import redis

from pipeline.adapters import head_store, promotion_store, promotion_waits
from pipeline.core import (
    builds,
    commit_status,
    gate,
    head,
    post_push,
    reconcile,
    rollout,
    verification,
)
from pipeline.core.settings import Settings
from pipeline.web import server as web
from tests import receiver, services
from tests.browser import Chromium
from tests.conftest import require_tools
from tests.integration.promotion_support import EnvRepo, recorded_builds
from tests.plugins.builds import VERIFICATION_KEY

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("LAYERING_TEST_ARTIFACTS") or REPO_ROOT / "test-artifacts")
REGISTRY = "registry.example.com/layering"
NEW = "sha256:" + "a" * 64  # verified on nonprod ten minutes ago, soaking before prod
OLD = "sha256:" + "b" * 64  # what prod still runs
SAME = "sha256:" + "c" * 64  # htop: the same on both


def _promote(
    store: promotion_store.PromotionStore,
    cluster: str,
    pool: str,
    image: str,
    digest: str,
    sha: str,
) -> None:
    store.record_promoted(
        verification.Promoted(
            cluster, pool, image, digest, f"{REGISTRY}/{image}@{digest}", "k" * 64, sha, 0.0
        )
    )


def test_the_pipeline_view_shows_each_image_per_environment_and_changes_live(
    tmp_path: Path,
) -> None:
    require_tools("redis-server", "git")
    gitops = EnvRepo(tmp_path / "gitops")
    gitops.commit("root")
    for branch in ("env/nonprod", "env/prod"):
        gitops.repo.git.branch(branch)
        gitops.push(branch)
    gitops.add_image("firewalld", "firewalld")
    gitops.add_image("htop", "htop")
    pools = {"worker": "firewalld", "infra": "htop"}
    gitops.add_cluster("nonprod", environment="nonprod", registry=REGISTRY, pools=pools)
    gitops.add_cluster(
        "prod",
        environment="prod",
        registry=REGISTRY,
        pools=pools,
        promotes_from="nonprod",
        soak="1h",
    )
    main = gitops.commit("seed")
    gitops.push("main")

    server = services.RedisServer(tmp_path / "redis").start()
    try:
        client = redis.Redis.from_url(server.url)
        now = time.time()
        records = promotion_store.PromotionStore(client, key=VERIFICATION_KEY.encode())
        _promote(records, "nonprod", "worker", "firewalld", NEW, main)
        _promote(records, "nonprod", "infra", "htop", SAME, main)
        _promote(records, "prod", "worker", "firewalld", OLD, "d" * 40)
        _promote(records, "prod", "infra", "htop", SAME, main)
        for cluster, digest, age in (("nonprod", NEW, 600), ("nonprod", SAME, 9000)):
            records.record_verification(
                verification.Verification(
                    cluster, digest, now - age, verification.VerificationMethod.ROLLOUT
                )
            )
        records.record_rollout(
            rollout.RolloutRecord(
                "nonprod", "worker", main, f"{REGISTRY}/firewalld@{NEW}", "Updated", 3, 3, "", now
            )
        )
        records.watch_gate(
            gate.WatchedGate(
                "e" * 40, "prod", 7, state="pending", description="soaking: 50m left in nonprod"
            )
        )
        promotion_waits.PromotionWaits(client).record_wait(
            reconcile.EnvironmentWait("prod", main, due=now + 3000, recorded_at=now)
        )

        store = recorded_builds(server.url)
        failed = store.create_queued(image="firewalld", cluster="nonprod", commit_sha=main)
        failed = builds.fail(
            builds.start(failed, now=now), error="content lint: LAY101 /var/run", now=now
        )
        finding = {"id": "LAY101", "severity": "error", "path": "/var/run", "line": None}
        message = "/var/run is not a symlink to /run"
        store.save(dataclasses.replace(failed, content_findings=({**finding, "message": message},)))
        running = store.create_queued(image="htop", cluster="nonprod", commit_sha=main)
        store.save(builds.start(running, now=now))
        heads = head_store.RedisHeadStore(client)
        heads.claim("branch:main", main, now)
        # what the head's lint recorded (flows/head): a warning on firewalld, htop clean
        warning = commit_status.LintFinding(
            "LAY009", "warning", "images/firewalld/Containerfile", 2, "dnf update"
        )
        # chrony's lint error held its builds back: no build, shown as held
        error = commit_status.LintFinding(
            "LAY010", "error", "images/chrony/Containerfile", 3, "rpm-ostree kargs"
        )
        heads.record_lint(main, {"firewalld": [warning], "htop": [], "chrony": [error]})
        heads.record_builds(
            "branch:main",
            main,
            [
                head.HeadBuild(b.id, head.task_id(b.id), "k" * 64, b.image, b.cluster)
                for b in (failed, running)
            ],
        )

        settings = Settings(
            webhook_secret="pipeline-view-secret",
            redis_url=server.url,
            repo_url=gitops.url,
            workdir=tmp_path / "work",
            verification_key=VERIFICATION_KEY,
            github_repository="acme/layers",
        )
        with receiver.serving(web.service_app(settings)) as served:
            document = httpx.get(f"{served.url}/api/pipeline").json()
            assert document["environments"] == ["nonprod", "prod"]
            assert [row["image"] for row in document["rows"]] == ["firewalld", "htop"]
            held = [b for b in document["commits"][0]["builds"] if b["state"] == "held"]
            assert [(b["image"], b["build_id"]) for b in held] == [("chrony", "")]
            with Chromium.start(tmp_path) as browser:
                page = browser.page()
                page.navigate(f"{served.url}/")
                cells = ("firewalld-nonprod", "firewalld-prod", "htop-prod")
                texts = page.wait_for(
                    "document.getElementById('cell-htop-prod') && ["
                    + ", ".join(f"document.getElementById('cell-{c}').innerText" for c in cells)
                    + "]"
                )
                nonprod, prod, htop = texts
                assert "promoted" in nonprod
                assert "sha256:aaaaaaaaaaaa" in nonprod
                assert "verified: rolled out 3/3, 10m" in nonprod
                assert "sha256:bbbbbbbbbbbb" in prod
                assert "soaking sha256:aaaaaaaaaaaa from nonprod: 50m" in prod
                assert "left of 1h" in prod
                assert "gate pending: soaking: 50m left in nonprod" in prod
                assert "PR #7" in prod
                assert "waits for the soak, due in 50m" in prod
                assert "differs from nonprod (sha256:aaaaaaaaaaaa)" in prod
                assert "differs" not in htop
                link = "document.querySelector('#cell-firewalld-prod a')"
                assert page.evaluate(f"{link}.href") == "https://github.com/acme/layers/pull/7"
                progress = page.evaluate(
                    "document.querySelector('#cell-firewalld-prod progress').value"
                )
                assert 0.1 < progress < 0.25
                headers = page.evaluate(
                    "[...document.querySelectorAll('#pipeline th[scope]')].map(th => "
                    "th.getAttribute('scope') + ':' + th.innerText)"
                )
                assert headers[:3] == ["col:image", "col:nonprod", "col:prod"]
                assert "row:firewalld" in headers
                commit = page.evaluate("document.querySelector('#commits .commit').innerText")
                assert main[:12] in commit
                assert "main" in commit
                assert "lint failed on 2 of 3 builds" in commit
                assert "chrony: no build held lint failed: 1 error, 0 warnings" in commit
                assert (
                    "firewalld@nonprod failed lint passed, 1 warning; "
                    "content lint failed: LAY101 /var/run"
                ) in commit
                assert "htop@nonprod running lint passed; content lint not run yet" in commit
                page.screenshot(ARTIFACTS / "pipeline-view.png")

                current = store.get(running.id)
                assert current is not None
                store.save(builds.succeed(current, digest=SAME, now=time.time()))
                row = f"document.querySelector('li[data-build-id=\"{running.id}\"]')"
                page.wait_for(f"{row}.innerText.includes('succeeded')", timeout=15)
                assert "content lint passed" in page.evaluate(f"{row}.innerText")
                page.screenshot(ARTIFACTS / "pipeline-view-live.png")
                page.close()

            # the gate passes: no longer watched, its verdict still shown with the pull request
            promotion_waits.PromotionWaits(client).save_post_push(
                post_push.PostPush("prod", "e" * 40, "f" * 40, (), ("prod",), pull_request=7)
            )
            passed = "1 pool(s) verified upstream and soaked"
            records.record_gate_pass(
                gate.WatchedGate("e" * 40, "prod", 7, state="success", description=passed)
            )
            records.unwatch_gate("prod", 7)
            document = httpx.get(f"{served.url}/api/pipeline").json()
            (cell,) = [c for c in document["rows"][0]["cells"] if c["environment"] == "prod"]
            assert (cell["gate"], cell["pull_request"]) == (f"gate success: {passed}", 7)
            assert cell["pull_request_url"] == "https://github.com/acme/layers/pull/7"
        # kept bounded: past the bound the oldest pull requests' passes go first
        for number in range(100, 100 + promotion_store.MAX_GATE_PASSES):
            records.record_gate_pass(gate.WatchedGate("e" * 40, "nonprod", number))
        kept = sorted(g.pr_number for g in records.gate_passes())
        assert kept == list(range(100, 100 + promotion_store.MAX_GATE_PASSES))
    finally:
        server.stop()
