"""Pipeline overhead of a build: enqueue -> recorded digest through a real Celery worker, against
raw `buildah bud` + `buildah push` of the same Containerfile, on the same storage and registry.

Each round gives both paths fresh content (a new nonce in a RUN step), so neither is a cache
hit and both pull nothing (the base is already in the shared storage). Prints the figures and
the ratio; no timed asserts. Run: `.venv/bin/python tests/bench/build_overhead.py [ROUNDS]`.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.core import containerfile
from tests import services
from tests.plugins import builds as fixtures

CONTAINERFILE = """\
FROM quay.io/fedora/fedora-coreos:stable
RUN echo {nonce} > /etc/nonce && mkdir -p /usr/lib/bench && cp -r /bin /usr/lib/bench/
RUN ostree container commit
"""


def main(rounds: int) -> None:
    missing = services.tool_missing("buildah", "skopeo", "redis-server", "docker-registry")
    if missing:
        sys.exit(f"missing tools: {', '.join(missing)} (run `make setup`)")
    with tempfile.TemporaryDirectory(prefix="layering-bench-") as scratch:
        root = Path(scratch)
        redis_server = services.RedisServer(root / "redis").start()
        registry = services.Registry(root / "registry").start()
        storage = fixtures.BuildahStorage(root / "storage" / "root", root / "storage" / "run")
        worker: fixtures.Worker | None = None
        try:
            env = {"CONTAINERS_REGISTRIES_CONF": str(registry.registries_conf)}
            os.environ.update(env)
            base = fixtures.push_base_image(
                root / "base", registry=registry, storage=storage, env=env
            )
            worker_env = fixtures.make_worker_env(
                root / "worker", redis_url=redis_server.url, registry=registry, storage=storage
            )
            worker = fixtures.launch_worker(worker_env, "bench", pool="solo", concurrency=1)
            checkout = root / "gitops"
            fixtures.write_repository(
                checkout,
                base=base,
                registry=f"{registry.host}/bench",
                images={"bench": {"Containerfile": "FROM x\n"}},
                clusters={"dev": {"pools": {"worker": "bench"}}},
            )
            piped: list[float] = []
            raw: list[float] = []
            run_raw(root, storage, registry, base, "warm-up")  # first vfs use, both paths
            run_worker(worker, checkout, "warm-up")
            for _ in range(rounds):
                raw.append(run_raw(root, storage, registry, base, uuid.uuid4().hex))
                piped.append(run_worker(worker, checkout, uuid.uuid4().hex))
            report(piped, raw)
        finally:
            if worker is not None:
                worker.stop()
            registry.stop()
            redis_server.stop()
            subprocess.run(["chmod", "-R", "u+w", str(root)], check=False)


def run_worker(worker: fixtures.Worker, checkout: Path, nonce: str) -> float:
    (checkout / "images" / "bench" / "Containerfile").write_text(CONTAINERFILE.format(nonce=nonce))
    start = time.perf_counter()
    build_id = fixtures.submit_build(
        worker.app,
        worker.settings,
        source=str(checkout),
        commit_sha=None,
        image="bench",
        cluster="dev",
    )
    record = worker.wait_for_build(build_id, poll=0.005)
    elapsed = time.perf_counter() - start
    if record["state"] != "succeeded":
        raise RuntimeError(f"worker build {record['state']}: {record['error']}")
    return elapsed


def run_raw(
    root: Path,
    storage: fixtures.BuildahStorage,
    registry: services.Registry,
    base: fixtures.BaseImage,
    nonce: str,
) -> float:
    context = root / "raw" / nonce
    context.mkdir(parents=True)
    pinned = containerfile.pin_final_from(CONTAINERFILE.format(nonce=nonce), base.ref)
    (context / "Containerfile").write_text(pinned)
    target = f"{registry.host}/raw/bench:{nonce[:20]}"
    buildah = storage.argv()
    start = time.perf_counter()
    subprocess.run(
        [
            *buildah,
            "bud",
            "--isolation",
            "chroot",
            "-f",
            str(context / "Containerfile"),
            "-t",
            target,
            str(context),
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [*buildah, "push", "--digestfile", str(context / "digest"), target, f"docker://{target}"],
        check=True,
        capture_output=True,
    )
    elapsed = time.perf_counter() - start
    subprocess.run([*buildah, "rmi", target], check=False, capture_output=True)
    return elapsed


def report(piped: list[float], raw: list[float]) -> None:
    print(f"rounds: {len(piped)} (fresh content each; base image already in storage)")
    print(f"raw buildah bud + push:   median {statistics.median(raw):.3f}s  {fmt(raw)}")
    print(f"worker enqueue -> digest: median {statistics.median(piped):.3f}s  {fmt(piped)}")
    # buildah's own times here are bimodal (about 1 s apart, on both paths), so the minimum
    # is shown beside the median
    for name, pick in (("median", statistics.median), ("min", min)):
        worker, bare = pick(piped), pick(raw)
        print(
            f"overhead ({name}): {worker - bare:+.3f}s, ratio {worker / bare:.2f}x "
            f"({(worker - bare) / bare:+.1%}); target: < 0.5 s or < 15 %"
        )


def fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
