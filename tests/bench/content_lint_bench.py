"""What the content lint (LAY101..LAY113) adds to a build, on the busybox stand-in base and on a
generated base of >= 350 MB / 30,000 files (tests/bench/build_scale_bench.py's), both on overlay
storage as a worker resolves it where the host allows.

Each round builds a new one-line change the way a worker does (`buildah build`, chroot
isolation, --pull=missing), runs the content stage on it exactly as flows/content_check.py
does (adapters/layer_content.LayerReader reads the build's layers from local storage, then
core/content_rules.check), and pushes it. The stage's share is its time over build + push. The
first stage on a base also reads the base's side, once per worker process and base (started
while buildah builds, `LayerReader.prepare`, when the base is already in storage): printed
apart. Prints every figure and the target (under 10 % of the build); no timed
asserts. Run: `.venv/bin/python tests/bench/content_lint_bench.py [ROUNDS]`.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.adapters import layer_content, standin
from pipeline.adapters.buildah import BuildahConfig
from pipeline.core import containerfile, content_rules
from tests import services
from tests.bench import build_scale_bench as scale
from tests.plugins import builds as fixtures

CONTAINERFILE = (
    "FROM quay.io/fedora/fedora-coreos:stable\n"
    "RUN echo {n} > /etc/x && mkdir -p /usr/lib/bench && echo {n} > /usr/lib/bench/n\n"
)


def main(rounds: int) -> None:
    missing = services.tool_missing("buildah", "skopeo", "rpm", "docker-registry")
    if missing:
        sys.exit(f"missing tools: {', '.join(missing)} (run `make setup`)")
    with tempfile.TemporaryDirectory(prefix="layering-content-bench-") as scratch:
        root = Path(scratch)
        registry = services.Registry(root / "registry").start()
        try:
            env = {"CONTAINERS_REGISTRIES_CONF": str(registry.registries_conf)}
            os.environ.update(env)
            storage = fixtures.BuildahStorage(root / "root", root / "run", "overlay")
            small = fixtures.push_base_image(
                root / "standin", registry=registry, storage=storage, env=env
            )
            measure("busybox stand-in", small, root / "small", storage, registry, rounds)
            large = scale.push_large_base(root / "large", registry, env)
            measure("generated 377 MB base", large, root / "big", storage, registry, rounds)
        finally:
            registry.stop()
            services.unmount_under(root)


def measure(
    label: str,
    base: standin.BaseImage,
    work: Path,
    storage: fixtures.BuildahStorage,
    registry: services.Registry,
    rounds: int,
) -> None:
    config = BuildahConfig(storage_driver="overlay", root=storage.root, runroot=storage.runroot)
    # round 0 pulls the base: its stage reads the base's side after the build ("cold"). Round 1
    # has the base in storage but a reader that has not read it (another entry bound: another
    # cache key), so its stage shows what is left once the read overlapped the build ("ahead").
    readers = [
        layer_content.LayerReader(config),
        layer_content.LayerReader(config, max_entries=layer_content.MAX_ENTRIES - 1),
    ]
    builds: list[float] = []
    stages: list[float] = []
    cold = ahead = ahead_share = 0.0
    for n in range(rounds + 2):
        reader = readers[0] if n == 0 else readers[1]
        reader.prepare(base.ref)  # as flows/build.py does: the base's side read meanwhile
        target, built = build(work, storage, registry, base, n)
        start = time.perf_counter()
        report = content_rules.check(reader.content(target, base=base.ref), ())
        stage = time.perf_counter() - start
        pushed = push(storage, target, work / f"digest-{n}")
        if report.errors:
            sys.exit(f"{label}: unexpected content errors: {report.headline()}")
        if n == 0:
            cold = stage
        elif n == 1:
            ahead, ahead_share = stage, stage / (built + pushed) * 100
        else:
            builds.append(built + pushed)
            stages.append(stage)
    build_median = statistics.median(builds)
    stage_median = statistics.median(stages)
    share = stage_median / build_median * 100
    print(
        f"{label}: build + push median {build_median:.3f}s over {rounds} rounds; "
        f"content stage median {stage_median * 1000:.1f} ms (min {min(stages) * 1000:.1f}, "
        f"max {max(stages) * 1000:.1f}) = {share:.1f} % of the build "
        f"(target < 10 %: {'met' if share < 10 else 'NOT met'}); "
        f"first stage on a base (its side read once per worker process and base): "
        f"{cold * 1000:.0f} ms when the build pulled the base, {ahead * 1000:.0f} ms "
        f"({ahead_share:.1f} % of that build) when it was read while buildah built"
    )


def build(
    work: Path,
    storage: fixtures.BuildahStorage,
    registry: services.Registry,
    base: standin.BaseImage,
    n: int,
) -> tuple[str, float]:
    context = work / str(n)
    context.mkdir(parents=True)
    text = containerfile.pin_final_from(CONTAINERFILE.format(n=n), base.ref)
    (context / "Containerfile").write_text(text)
    target = f"{registry.host}/bench/content:{n}"
    argv = ["build", "--isolation", "chroot", "--pull=missing", "-f"]
    start = time.perf_counter()
    run(storage, *argv, str(context / "Containerfile"), "-t", target, str(context))
    return target, time.perf_counter() - start


def push(storage: fixtures.BuildahStorage, target: str, digestfile: Path) -> float:
    start = time.perf_counter()
    run(storage, "push", "--digestfile", str(digestfile), target, f"docker://{target}")
    elapsed = time.perf_counter() - start
    run(storage, "rmi", target)
    return elapsed


def run(storage: fixtures.BuildahStorage, *argv: str) -> None:
    result = subprocess.run([*storage.argv(), *argv], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"buildah {argv[0]} failed: {result.stderr[-2000:]}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
