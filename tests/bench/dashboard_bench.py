"""How long the pipeline view (the dashboard's home page, `/`) takes to answer, for 200 images x 3
environments (dev -> nonprod -> prod, 200 pools each, every pool's MachineConfig on its env
branch) with 1,000 build records, 20 heads, verifications, rollouts and waits in a real Redis
(target: under 100 ms). `layering serve` runs in its own process on a real bare Git repository
and is asked over HTTP (timed by curl); the model's reads, its building and the HTML rendering
are also timed apart in-process. Prints medians; no asserts.

    .venv/bin/python -m tests.bench.dashboard_bench [--runs 30]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx
import redis

from pipeline.adapters import head_store, promotion_store, promotion_waits
from pipeline.core import builds, gate, head, machineconfig, pipeline_view, reconcile, rollout
from pipeline.core import verification as verifications
from pipeline.core.settings import Settings
from pipeline.web import dashboard, pipeline_page, promotions
from tests import services
from tests.integration.promotion_support import EnvRepo, recorded_builds
from tests.plugins.builds import VERIFICATION_KEY

IMAGES = 200
ENVIRONMENTS = ("dev", "nonprod", "prod")
BUILDS = 1000
HEADS = 20
TARGET_MS = 100.0
REGISTRY = "registry.example.com/layering"


def image_name(index: int) -> str:
    return f"img-{index:03d}"


def digest(environment: str, index: int) -> str:
    # prod lags for a third of the images: their cells differ from upstream and soak
    lag = environment == "prod" and index % 3 == 0
    return "sha256:" + f"{'nonprod' if not lag else 'prod'}{index:03d}".encode().hex().ljust(
        64, "0"
    )


def seed_repository(root: Path) -> tuple[EnvRepo, str]:
    gitops = EnvRepo(root)
    for index in range(IMAGES):
        gitops.add_image(image_name(index), "htop")
    pools = {f"p{index:03d}": image_name(index) for index in range(IMAGES)}
    upstream = None
    for environment in ENVIRONMENTS:
        gitops.add_cluster(
            environment,
            environment=environment,
            registry=REGISTRY,
            pools=pools,
            promotes_from=upstream,
            soak="1h" if upstream else "0s",
        )
        upstream = environment
    main = gitops.commit("seed")
    gitops.push("main")
    for environment in ENVIRONMENTS:
        gitops.repo.git.checkout("-b", f"env/{environment}", "main")
        for index in range(IMAGES):
            image = image_name(index)
            os_image = machineconfig.OsImage(
                image, f"{REGISTRY}/{image}", digest(environment, index), "k" * 64, main, "base"
            )
            path = machineconfig.path_for(environment, f"p{index:03d}")
            gitops.write(
                path, machineconfig.render_yaml(pool=f"p{index:03d}", os_image=os_image).decode()
            )
        gitops.commit(f"promote {environment}")
        gitops.push(f"env/{environment}")
        gitops.repo.git.checkout("main")
    return gitops, main


def seed_redis(url: str, main: str) -> None:
    client = redis.Redis.from_url(url)
    now = time.time()
    records = promotion_store.PromotionStore(client, key=VERIFICATION_KEY.encode())
    for environment in ENVIRONMENTS:
        for index in range(IMAGES):
            image, pool, found = image_name(index), f"p{index:03d}", digest(environment, index)
            url_of = f"{REGISTRY}/{image}@{found}"
            records.record_promoted(
                verifications.Promoted(environment, pool, image, found, url_of, "k" * 64, main, now)
            )
            records.record_verification(
                verifications.Verification(
                    environment, found, now - 600, verifications.VerificationMethod.ROLLOUT
                )
            )
            records.record_rollout(
                rollout.RolloutRecord(environment, pool, main, url_of, "Updated", 3, 3, "", now)
            )
    records.watch_gate(gate.WatchedGate("e" * 40, "prod", 7))
    promotion_waits.PromotionWaits(client).record_wait(
        reconcile.EnvironmentWait("prod", main, due=now + 3000, recorded_at=now)
    )
    store = recorded_builds(url)
    heads = head_store.RedisHeadStore(client)
    per_head = BUILDS // HEADS
    for number in range(HEADS):
        sha = f"{number:040x}" if number else main
        scope = "branch:main" if number == 0 else f"pr:{number}"
        heads.claim(scope, sha, now - number)
        queued: list[head.HeadBuild] = []
        for index in range(per_head):
            image = image_name((number * per_head + index) % IMAGES)
            record = store.create_queued(image=image, cluster="dev", commit_sha=sha)
            record = builds.start(record, now=now)
            if index % 10 == 0:
                record = builds.fail(record, error="RUN failed", now=now)
            elif index % 10 != 1:
                record = builds.succeed(record, digest=digest("dev", index), now=now)
            store.save(record)
            queued.append(
                head.HeadBuild(record.id, head.task_id(record.id), "k" * 64, image, "dev")
            )
        heads.record_builds(scope, sha, queued)


def fetched(url: str) -> float:
    """Milliseconds from connect to the last byte, as curl measures them (a client in Python
    adds its own parsing of the 400 KiB page to the figure: httpx only without curl)."""
    curl = shutil.which("curl")
    if curl is None:
        with httpx.Client(timeout=120) as http:
            return timed(lambda: http.get(url).raise_for_status(), 1)[0]
    answer = subprocess.run(
        [curl, "-sf", "-o", "/dev/null", "-w", "%{time_total}", url],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(answer.stdout) * 1000


def timed(action: Callable[[], object], runs: int) -> list[float]:
    found = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        found.append((time.perf_counter() - started) * 1000)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dashboard-bench-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        gitops, main_sha = seed_repository(root / "gitops")
        server = services.RedisServer(root / "redis").start()
        try:
            seed_redis(server.url, main_sha)
            print(
                f"seeded in {time.perf_counter() - started:.1f}s: {IMAGES} images x "
                f"{len(ENVIRONMENTS)} environments, {BUILDS} builds, {HEADS} heads"
            )
            settings = Settings(
                webhook_secret="dashboard-bench",
                redis_url=server.url,
                repo_url=gitops.url,
                workdir=root / "work",
                verification_key=VERIFICATION_KEY,
                github_repository="acme/layers",
            )
            port = services.free_port()
            variables = {
                "LAYERING_WEBHOOK_SECRET": "dashboard-bench",
                "LAYERING_REDIS_URL": server.url,
                "LAYERING_REPO_URL": gitops.url,
                "LAYERING_WORKDIR": str(root / "work"),
                "LAYERING_VERIFICATION_KEY": VERIFICATION_KEY,
                "LAYERING_GITHUB_REPOSITORY": "acme/layers",
            }
            # `layering serve` in its own process, as deployed: the client shares no GIL with it
            layering = str(Path(sys.executable).with_name("layering"))
            serve = services.start(
                [layering, "serve", "--port", str(port)],
                log=root / "serve.log",
                env={**os.environ, **variables},
            )
            try:
                services.wait_for_port(port, process=serve)
                with httpx.Client(timeout=120) as http:
                    page = f"http://127.0.0.1:{port}/"
                    first = timed(lambda: http.get(page).raise_for_status(), 1)[0]
                    size = len(http.get(page).content)
                over_http = [fetched(page) for _ in range(args.runs)]
                json_ms = [fetched(f"{page}api/pipeline") for _ in range(args.runs)]
            finally:
                services.stop_process(serve)
            in_process(settings, args.runs)
        finally:
            server.stop()
    median = statistics.median(over_http)
    print(f"GET / first (clone, parse): {first:.0f} ms; page {size / 1024:.0f} KiB")
    print(
        f"GET / over HTTP (curl): median {median:.1f} ms, max {max(over_http):.1f} ms "
        f"over {args.runs} runs (target < {TARGET_MS:.0f} ms: "
        f"{'met' if median < TARGET_MS else 'MISSED'}, {median / TARGET_MS:.2f}x)"
    )
    print(f"GET /api/pipeline: median {statistics.median(json_ms):.1f} ms")


def in_process(settings: Settings, runs: int) -> None:
    """The same request's parts apart: reads (Git mirror, Redis), model, HTML."""
    from pipeline.adapters import build_records

    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    records = promotion_store.PromotionStore(client, key=VERIFICATION_KEY.encode())
    source = pipeline_page.StoredPipeline(
        models=promotions.RepositoryPromotions(settings, records=records),
        records=records,
        waits=promotion_waits.PromotionWaits(client),
        heads=head_store.RedisHeadStore(client),
        builds=build_records.BuildStore.from_settings(settings, client=client),
    )
    source.inputs()  # the mirror's clone and first parse
    reads = timed(source.inputs, runs)
    inputs = source.inputs()
    model = timed(lambda: pipeline_view.build(inputs, now=time.time()), runs)
    view = pipeline_view.build(inputs, now=time.time())
    html = timed(
        lambda: dashboard.render("pipeline.html.j2", title="t", nonce="n", view=view, poll_ms=1),
        runs,
    )
    print(
        f"in-process medians: reads {statistics.median(reads):.1f} ms, "
        f"model {statistics.median(model):.1f} ms, HTML {statistics.median(html):.1f} ms"
    )


if __name__ == "__main__":
    main()
