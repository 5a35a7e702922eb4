"""Builds on a large base: a one-line change through a real Celery worker against raw buildah,
side by side, on the same overlay storage and the same registry.

The base is generated: the stand-in OS (static busybox and shims, adapters/standin.py) plus
FILES files of FILE_BYTES pseudo-random bytes each (>= 350 MB, >= 30,000 files; a fixed seed,
so the same base every run, and random content, so it does not compress to nothing), pushed to
a private docker-registry. Then, in one run:

- cold: the worker's first build (its storage is empty: it pulls the base);
- each round, a new `RUN echo N > /etc/x`: through the worker (enqueue -> the record says
  succeeded, the pipeline's whole path: dispatch, checkout, registry check, build, push,
  record writes, discard) and raw `buildah build` + `buildah push` of the same change to the
  same registry, with the worker's flags (chroot isolation, --pull=missing).

Prints every figure, the ratio and the targets (worker within 1.3x raw, under 2 s); no timed
asserts. Run: `.venv/bin/python tests/bench/build_scale_bench.py [ROUNDS]`.
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.adapters import standin
from pipeline.core import containerfile
from tests import services
from tests.plugins import builds as fixtures

FILES = 30_720
FILE_BYTES = 12 * 1024  # 30,720 x 12 KiB = 377 MB
SEED = 20261201
CONTAINERFILE = "FROM quay.io/fedora/fedora-coreos:stable\nRUN echo {n} > /etc/x\n"


def generate_rootfs(directory: Path) -> tuple[int, int]:
    """The stand-in root plus the bulk files; (files, bytes) of the bulk."""
    standin.make_rootfs(directory)
    bulk = directory / "usr" / "share" / "bulk"
    generator = random.Random(SEED)
    written = 0
    for index in range(FILES):
        folder = bulk / f"d{index // 256:03d}"
        if index % 256 == 0:
            folder.mkdir(parents=True)
        (folder / f"f{index:05d}").write_bytes(generator.randbytes(FILE_BYTES))
        written += FILE_BYTES
    return FILES, written


def push_large_base(
    work: Path, registry: services.Registry, env: dict[str, str]
) -> standin.BaseImage:
    storage = fixtures.BuildahStorage(work / "root", work / "run", "overlay")
    buildah = storage.argv()
    started = time.perf_counter()
    files, size = generate_rootfs(work / "rootfs")
    generated = time.perf_counter()
    container = run(buildah, "from", "--quiet", "scratch", env=env).strip()
    run(buildah, "copy", "--quiet", container, f"{work / 'rootfs'}/", "/", env=env)
    local = "localhost/large-base:latest"
    run(buildah, "commit", "--quiet", "--rm", container, local, env=env)
    repository = f"{registry.host}/os/large-base"
    run(
        buildah,
        "push",
        "--digestfile",
        str(work / "digest"),
        local,
        f"docker://{repository}:latest",
        env=env,
    )
    done = time.perf_counter()
    print(
        f"base: {files:,} files + the stand-in OS, {size / 1e6:.0f} MB of pseudo-random bytes; "
        f"generated in {generated - started:.1f}s, committed and pushed in {done - generated:.1f}s"
    )
    digest = (work / "digest").read_text().strip()
    # the worker starts cold: nothing of the base in its storage
    run(buildah, "rmi", "--all", env=env)
    services.unmount_under(work)
    shutil.rmtree(work, ignore_errors=True)
    return standin.BaseImage(repository, digest)


def run(buildah: list[str], *argv: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [*buildah, *argv], capture_output=True, text=True, check=False, env={**os.environ, **env}
    )
    if result.returncode != 0:
        sys.exit(f"{argv[:2]} failed: {result.stderr[-2000:]}")
    return result.stdout


def main(rounds: int) -> None:
    missing = services.tool_missing("buildah", "skopeo", "redis-server", "docker-registry")
    if missing:
        sys.exit(f"missing tools: {', '.join(missing)} (run `make setup`)")
    with tempfile.TemporaryDirectory(prefix="layering-scale-") as scratch:
        root = Path(scratch)
        redis_server = services.RedisServer(root / "redis").start()
        registry = services.Registry(root / "registry").start()
        worker: fixtures.Worker | None = None
        try:
            env = {"CONTAINERS_REGISTRIES_CONF": str(registry.registries_conf)}
            os.environ.update(env)
            base = push_large_base(root / "base", registry, env)
            storage = fixtures.BuildahStorage(
                root / "storage" / "root", root / "storage" / "run", "overlay"
            )
            worker_env = fixtures.make_worker_env(
                root / "worker", redis_url=redis_server.url, registry=registry, storage=storage
            )
            worker = fixtures.launch_worker(
                worker_env,
                "scale",
                pool="solo",
                concurrency=1,
                queues="builds",
                extra_env={"LAYERING_BUILDAH_STORAGE_DRIVER": "auto"},
            )
            checkout = root / "gitops"
            fixtures.write_repository(
                checkout,
                base=base,
                registry=f"{registry.host}/scale",
                images={"scale": {"Containerfile": "FROM x\n"}},
                clusters={"dev": {"pools": {"worker": "scale"}}},
            )
            cold = run_worker(worker, checkout, 0)
            print(
                f"cold build through the worker (pulls the base): {cold[0]:.2f}s "
                f"(build + push {cold[1]:.2f}s)"
            )
            raw_build: list[float] = []
            raw_total: list[float] = []
            piped: list[float] = []
            piped_step: list[float] = []
            for n in range(1, rounds + 1):
                total, step = run_worker(worker, checkout, n)
                piped.append(total)
                piped_step.append(step)
                built, pushed = run_raw(root, storage, registry, base, n)
                raw_build.append(built)
                raw_total.append(built + pushed)
            report(piped, piped_step, raw_total, raw_build)
            if "buildah storage driver overlay" not in worker.log.read_text():
                print("note: the worker did not report overlay storage")
        finally:
            if worker is not None:
                worker.stop()
            registry.stop()
            redis_server.stop()
            services.unmount_under(root)


BEFORE_BUILDAH: list[float] = []  # the record's created -> started, per worker build


def run_worker(worker: fixtures.Worker, checkout: Path, n: int) -> tuple[float, float]:
    """(enqueue -> record succeeded, the record's started -> finished: build and push); the
    record's created -> started (dispatch, checkout, registry check, lock) goes to
    BEFORE_BUILDAH."""
    (checkout / "images" / "scale" / "Containerfile").write_text(CONTAINERFILE.format(n=n))
    start = time.perf_counter()
    build_id = fixtures.submit_build(
        worker.app,
        worker.settings,
        source=str(checkout),
        commit_sha=None,
        image="scale",
        cluster="dev",
    )
    record = worker.wait_for_build(build_id, timeout=900, poll=0.005)
    elapsed = time.perf_counter() - start
    if record["state"] != "succeeded":
        sys.exit(f"worker build {record['state']}: {record['error']}")
    times = {name: float(record[name] or 0) for name in ("created_at", "started_at", "finished_at")}  # type: ignore[arg-type]
    BEFORE_BUILDAH.append(times["started_at"] - times["created_at"])
    return elapsed, times["finished_at"] - times["started_at"]


def run_raw(
    root: Path,
    storage: fixtures.BuildahStorage,
    registry: services.Registry,
    base: standin.BaseImage,
    n: int,
) -> tuple[float, float]:
    """(buildah build, buildah push) of the same change, same storage, same registry."""
    context = root / "raw" / str(n)
    context.mkdir(parents=True)
    pinned = containerfile.pin_final_from(CONTAINERFILE.format(n=f"raw-{n}"), base.ref)
    (context / "Containerfile").write_text(pinned)
    target = f"{registry.host}/raw/scale:{n}"
    buildah = storage.argv()
    start = time.perf_counter()
    subprocess.run(
        [
            *buildah,
            "build",
            "--isolation",
            "chroot",
            "--pull=missing",
            "-f",
            str(context / "Containerfile"),
            "-t",
            target,
            str(context),
        ],
        check=True,
        capture_output=True,
    )
    built = time.perf_counter()
    subprocess.run(
        [*buildah, "push", "--digestfile", str(context / "digest"), target, f"docker://{target}"],
        check=True,
        capture_output=True,
    )
    pushed = time.perf_counter()
    subprocess.run([*buildah, "rmi", target], check=False, capture_output=True)
    return built - start, pushed - built


def report(piped: list[float], step: list[float], raw: list[float], raw_build: list[float]) -> None:
    print(f"rounds: {len(piped)} (a one-line RUN change each; base already in the storage)")
    for label, values in (
        ("raw buildah build", raw_build),
        ("raw buildah build + push", raw),
        ("worker build + push (record)", step),
        ("worker enqueue -> succeeded", piped),
        ("worker before buildah", BEFORE_BUILDAH[1:]),
    ):
        print(f"{label:<30} median {statistics.median(values):.3f}s  {fmt(values)}")
    for name, pick in (("median", statistics.median), ("min", min)):
        worker, bare = pick(piped), pick(raw)
        print(
            f"ratio ({name}): worker {worker:.3f}s / raw {bare:.3f}s = {worker / bare:.2f}x "
            f"(overhead {worker - bare:+.3f}s); targets: <= 1.3x and < 2 s"
        )


def fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
