"""Time from a push to env/nonprod to the promotion commit being pushed, for 10 clusters with
3 pools each (target: under 2 s). Real Git (bare origin), registry, Redis; the promotion runs
in-process exactly as the `layering.promote` task runs it (queue latency excluded).

    .venv/bin/python -m tests.bench.promote_bench [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import redis

from pipeline.adapters import branch_writer, build_records
from pipeline.adapters.promotion_store import PromotionStore
from pipeline.core import promotion
from pipeline.flows import promote as promote_flow
from pipeline.flows import promotion_inputs
from tests import services
from tests.integration.promotion_support import (
    EnvRepo,
    HttpRegistry,
    NoClusters,
    Recorder,
    push_targets,
)
from tests.plugins.builds import VERIFICATION_KEY

CLUSTERS = 10
POOLS = ("worker", "infra", "storage")
IMAGES = ("firewalld", "htop", "usbguard")


def one_run(
    root: Path, registry: services.Registry, client: redis.Redis[bytes]
) -> dict[str, float]:
    gitops = EnvRepo(root)
    for image in IMAGES:
        gitops.add_image(image, image)
    prefix = f"{registry.host}/bench{root.name[-6:].lower().replace('_', '')}"
    for index in range(CLUSTERS):
        gitops.add_cluster(
            f"np{index:02d}",
            environment="nonprod",
            registry=prefix,
            pools=dict(zip(POOLS, IMAGES, strict=True)),
            base="abcdef0123"[index],
        )
    gitops.commit("seed")
    gitops.push("main")
    model = gitops.origin_model("refs/heads/main")
    client.flushdb()
    built = build_records.BuildStore(
        client, retention_seconds=3600, lock_timeout_seconds=60, key=VERIFICATION_KEY.encode()
    )
    push_targets(registry.host, promotion.targets(model, "nonprod"), built=built)
    sources = promotion_inputs.Sources(
        registry=HttpRegistry(),
        store=PromotionStore(client, key=VERIFICATION_KEY.encode()),
        built=built,
        clusters=NoClusters(),
    )
    started = time.perf_counter()
    merge = gitops.merge_into("main", "env/nonprod")
    pushed = time.perf_counter()
    outcome = promote_flow.promote(
        merge,
        "nonprod",
        writer=branch_writer.BranchWriter(
            url=gitops.url, workdir=root / "scratch", lock=branch_writer.RedisBranchLock(client)
        ),
        sources=sources,
        reporter=Recorder(),
        now=time.time,
    )
    done = time.perf_counter()
    assert outcome.commit_sha is not None
    assert gitops.origin_head("env/nonprod") == outcome.commit_sha
    assert outcome.plan is not None
    assert len(outcome.plan.changes) == CLUSTERS * len(POOLS)
    again = time.perf_counter()
    unchanged = promote_flow.promote(
        merge,
        "nonprod",
        writer=branch_writer.BranchWriter(url=gitops.url, workdir=root / "scratch"),
        sources=sources,
        reporter=Recorder(),
        now=time.time,
    )
    assert unchanged.commit_sha is None
    return {
        "push": pushed - started,
        "promote": done - pushed,
        "unchanged": time.perf_counter() - again,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="promote-bench-") as tmp:
        root = Path(tmp)
        registry = services.Registry(root / "registry").start()
        redis_server = services.RedisServer(root / "redis").start()
        client: redis.Redis[bytes] = redis.Redis.from_url(redis_server.url)
        try:
            runs = [one_run(root / f"run{i}", registry, client) for i in range(args.runs)]
        finally:
            client.close()
            redis_server.stop()
            registry.stop()
    pools = CLUSTERS * len(POOLS)
    for key, label in (
        ("promote", f"push -> promotion commit pushed ({CLUSTERS} clusters x {len(POOLS)} pools)"),
        ("unchanged", "same promotion again (no commit)"),
        ("push", "git push of the env-branch merge (for scale)"),
    ):
        values = [run[key] for run in runs]
        print(
            f"{label}: median {statistics.median(values) * 1000:.0f} ms, "
            f"min {min(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms"
        )
    median = statistics.median(run["promote"] for run in runs)
    print(f"per pool: {median / pools * 1000:.1f} ms; target 2000 ms -> ratio {median / 2:.2f}")


if __name__ == "__main__":
    main()
