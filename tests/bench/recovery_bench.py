"""Time to recovery after worker loss, and from build finish to promotion commit (issue 11).

Real Redis, registry, buildah, Celery workers and beat: a build that sleeps in a RUN step is
started, its worker's whole process group SIGKILLed mid-step, a new worker started, and the
time until the build record succeeds is printed, for the production lease and sweep settings
(LAYERING_BUILD_LEASE_SECONDS=30, LAYERING_BUILD_SWEEP_INTERVAL_SECONDS=15) and short ones.
Then the time from a build finishing to its promotion commit: a bare Git origin whose env/nonprod
was merged while the build of a needed key ran (the promotion `pending`, waiting for it), the
build recorded as finished and its report sent, and the time until the promotion commit lands
on env/nonprod (the report triggers "layering.promote"), as in
tests/integration/test_promotion_converges.py. Prints figures; asserts nothing about time.

    python -m tests.bench.recovery_bench [--quick]
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pytest_httpserver import HTTPServer

from pipeline.core import builds, promotion
from tests import services
from tests.chaos import recovery_support as chaos
from tests.integration.promotion_support import EnvRepo, push_targets, recorded_builds
from tests.plugins import builds as fixtures
from tests.plugins.github import GitHubStandIn, load_operations

QUEUE = "bench-recovery"
# the promotion commit never came: the figure is "none within" this
PROMOTION_DEADLINE_SECONDS = 60.0


def _wait(check: Callable[[], bool], *, deadline: float, what: str, log: Path) -> None:
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise TimeoutError(f"{what}\n" + log.read_text()[-4000:])


def promotion_once(env: fixtures.WorkerEnv, registry: services.Registry, root: Path) -> float:
    """Seconds from a build's finish (its record saved, its report sent) to the promotion
    commit on env/nonprod, which was merged while that build ran."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per status otherwise
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    github = GitHubStandIn(server, load_operations())
    gitops = EnvRepo(root)
    gitops.commit("root")
    gitops.repo.git.branch("env/nonprod")
    gitops.push("env/nonprod")
    gitops.registry_prefix = f"{registry.host}/bench-promotion"
    gitops.add_image("firewalld", "firewalld")
    gitops.add_cluster(
        "nonprod",
        environment="nonprod",
        registry=gitops.registry_prefix,
        pools={"worker": "firewalld"},
    )
    gitops.commit("seed")
    gitops.push("main")
    extra = {
        "LAYERING_REPO_URL": gitops.url,
        "LAYERING_GITHUB_REPOSITORY": "acme/gitops",
        "LAYERING_GITHUB_API_URL": github.url,
        "LAYERING_PROMOTION_MODE": "commit",
    }
    worker = fixtures.launch_worker(
        env, "bench-promote", concurrency=2, queues="promotions,events", extra_env=extra
    )
    store = recorded_builds(env.variables["LAYERING_REDIS_URL"])
    try:
        main = gitops.origin_head("main")
        (target,) = promotion.targets(gitops.origin_model(main), "nonprod")
        record = store.create_queued(
            image="firewalld", cluster="nonprod", commit_sha=main, build_key=target.build_key
        )
        record = builds.start(builds.begin_attempt(record, now=time.time()), now=time.time())
        store.save(record)
        merge = gitops.merge_into("main", "env/nonprod")
        worker.app.send_task("layering.promote", args=[merge, "nonprod"], queue="promotions")

        def pending() -> bool:
            latest = github.latest(merge).get("layering/promote/nonprod")
            return latest is not None and latest["state"] == "pending"

        _wait(
            pending,
            deadline=time.monotonic() + PROMOTION_DEADLINE_SECONDS,
            what="the promotion never waited for the build",
            log=worker.log,
        )
        push_targets(registry.host, [target], built=store)
        built = store.built(target.build_key, target.image_repository)
        assert built is not None, "push_targets records the digest"
        done = builds.succeed(record, digest=built.digest, now=time.time())
        store.save(done)
        finished = time.monotonic()
        worker.app.send_task(
            "layering.report_build", args=[done.to_dict(), main, "branch:main"], queue="events"
        )
        _wait(
            lambda: gitops.origin_head("env/nonprod") != merge,
            deadline=finished + PROMOTION_DEADLINE_SECONDS,
            what=f"no promotion commit within {PROMOTION_DEADLINE_SECONDS:.0f} s",
            log=worker.log,
        )
        took = time.monotonic() - finished
        if github.errors:
            print("requests the GitHub API would refuse:\n" + "\n".join(github.errors))
        return took
    finally:
        worker.stop()
        store.client.close()
        server.clear()
        server.stop()


def recover_once(
    env: fixtures.WorkerEnv, checkout: chaos.Checkout, image: str, settings: dict[str, str]
) -> tuple[float, float]:
    """(seconds from SIGKILL to the record succeeding, seconds of the build itself)."""
    extra = chaos.chaos_env(None, **settings)
    options = {"pool": "prefork", "concurrency": 1, "queues": f"{QUEUE},events", "extra_env": extra}
    first = fixtures.launch_worker(env, f"bench-a-{image}", **options)  # type: ignore[arg-type]
    beat = fixtures.launch_beat(first, f"bench-{image}")
    second = None
    try:
        build_id = chaos.send_build(first.app, first.settings, checkout, image, QUEUE)
        chaos.wait_mid_step(first, build_id)
        chaos.kill_group(first)
        killed = time.monotonic()
        second = fixtures.launch_worker(env, f"bench-b-{image}", **options)  # type: ignore[arg-type]
        record = second.wait_for_build(build_id, timeout=600)
        recovered = time.monotonic() - killed
        if record["state"] != "succeeded":
            raise RuntimeError(f"build {build_id} ended {record['state']}: {record['error']}")
        started, finished = record["started_at"], record["finished_at"]
        return recovered, float(finished) - float(started)  # type: ignore[arg-type]
    finally:
        services.stop_process(beat)
        first.stop()
        if second is not None:
            second.stop()


def main(quick: bool) -> None:
    missing = services.tool_missing("buildah", "skopeo", "redis-server", "docker-registry")
    if missing:
        sys.exit(f"missing tools: {', '.join(missing)}")
    with tempfile.TemporaryDirectory(prefix="recovery-bench-") as scratch:
        root = Path(scratch)
        redis_server = services.RedisServer(root / "redis").start()
        registry = services.Registry(root / "registry").start()
        try:
            os.environ["CONTAINERS_REGISTRIES_CONF"] = str(registry.registries_conf)
            storage = fixtures.BuildahStorage(root / "storage", root / "run")
            base = fixtures.push_base_image(
                root / "base", registry=registry, storage=storage, env={}
            )
            env = fixtures.make_worker_env(
                root / "worker", redis_url=redis_server.url, registry=registry, storage=storage
            )
            runs = {
                "short (lease 3 s, sweep 1 s)": {
                    "build_lease_seconds": "3",
                    "build_sweep_interval_seconds": "1",
                }
            }
            if not quick:
                runs["default (lease 30 s, sweep 15 s)"] = {}
            checkout = chaos.sleepy_checkout(
                root / "gitops",
                base=base,
                registry_host=registry.host,
                seconds=4,
                images=tuple(f"bench{i}" for i in range(len(runs))),
            )
            print("time to recovery after SIGKILL of the worker's process group mid-build")
            print("(kill -> new worker -> lease expires -> sweep restores -> build succeeds)")
            for number, (label, settings) in enumerate(runs.items()):
                recovered, build = recover_once(env, checkout, f"bench{number}", settings)
                print(f"  {label:34} {recovered:6.1f} s  (the build itself: {build:.1f} s)")
            promoted = promotion_once(env, registry, root / "promotion")
            print("time from build finish to promotion commit on env/nonprod")
            print("(merged while the build ran: pending -> build report -> promote -> commit)")
            print(f"  {'build finish -> promotion commit':34} {promoted:6.2f} s")
        finally:
            registry.stop()
            redis_server.stop()
            subprocess.run(["chmod", "-R", "u+w", scratch], check=False)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the short lease and sweep")
    main(parser.parse_args().quick)
