"""Benchmark: `plan` for a one-commit push on a generated repository (500 images, 5,000
commits) next to `git diff --name-only` for the same range. Prints figures; asserts nothing.

    .venv/bin/python tests/bench/plan_bench.py [--images 500] [--commits 5000] [--runs 50]

Target (issue 2): plan within 2x of `git diff --name-only`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `pipeline` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.adapters import git as gitadapter
from pipeline.flows import history

BASE = "quay.io/openshift-release-dev/ocp-v4.0-art-dev"
CLUSTERS = 10
POOLS_PER_CLUSTER = 5


def _blob(path: str, text: str) -> bytes:
    data = text.encode()
    return b"M 100644 inline %s\ndata %d\n%s\n" % (path.encode(), len(data), data)


def _cluster_yaml(number: int, images: int) -> str:
    pools = "".join(
        f"  pool-{pool}: img-{(number * POOLS_PER_CLUSTER + pool) % images:04d}\n"
        for pool in range(POOLS_PER_CLUSTER)
    )
    environment = "prod" if number % 2 else "nonprod"
    return (
        f"environment: {environment}\n"
        f"baseImage: {BASE}@sha256:{format(number % 16, 'x') * 64}\n"
        "registry: registry.example.com/layering\n"
        f"pools:\n{pools}"
    )


def generate(path: Path, *, images: int, commits: int) -> tuple[str, str]:
    """A repository with `images` images, 10 clusters and `commits` commits on main, made
    with `git fast-import`; returns (parent, head) of the last commit, which changes an image
    that clusters use."""
    subprocess.run(["git", "init", "-q", "--initial-branch=main", str(path)], check=True)
    stream: list[bytes] = []

    def commit(number: int, files: list[bytes]) -> None:
        message = f"commit {number}".encode()
        stream.append(b"commit refs/heads/main\nmark :%d\n" % (number + 1))
        stream.append(
            b"committer Bench <bench@layering.invalid> %d +0000\n" % (1_700_000_000 + number)
        )
        stream.append(b"data %d\n%s\n" % (len(message), message))
        if number:
            stream.append(b"from :%d\n" % number)
        stream.extend(files)
        stream.append(b"\n")

    seed = [_blob("README.md", "generated\n")]
    for image in range(images):
        name = f"images/img-{image:04d}"
        seed.append(
            _blob(
                f"{name}/Containerfile",
                f"FROM {BASE}\nRUN echo {image} && ostree container commit\n",
            )
        )
        if image % 3 == 0:
            seed.append(_blob(f"{name}/image.yaml", f"buildArgs:\n  N: '{image}'\n"))
        seed.append(_blob(f"{name}/files/etc/motd", f"image {image}\n"))
    for cluster in range(CLUSTERS):
        seed.append(_blob(f"clusters/c{cluster}/cluster.yaml", _cluster_yaml(cluster, images)))
    commit(0, seed)
    for number in range(1, commits):
        image = (number * 7) % images
        if number == commits - 1:
            image = 0  # used by cluster c0's pool-0
        if number % 10 == 0:
            files = [_blob("README.md", f"generated, revision {number}\n")]
        else:
            files = [
                _blob(f"images/img-{image:04d}/files/etc/motd", f"image {image} rev {number}\n")
            ]
        commit(number, files)
    subprocess.run(
        ["git", "-C", str(path), "fast-import", "--quiet"],
        input=b"".join(stream),
        check=True,
    )
    subprocess.run(["git", "-C", str(path), "reset", "-q", "--hard", "main"], check=True)
    subprocess.run(["git", "-C", str(path), "gc", "-q"], check=True)
    head = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "main", "main~1"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return head[1], head[0]


def median_seconds(action: Callable[[], object], runs: int) -> float:
    action()  # first call outside the figures (imports, page cache)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--commits", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="plan-bench-") as tmp:
        path = Path(tmp) / "repo"
        start = time.perf_counter()
        parent, head = generate(path, images=args.images, commits=args.commits)
        print(
            f"generated {args.images} images, {CLUSTERS} clusters, {args.commits} commits "
            f"in {time.perf_counter() - start:.2f}s"
        )

        def git_diff() -> None:
            subprocess.run(
                ["git", "-C", str(path), "diff", "--name-only", parent, head],
                check=True,
                capture_output=True,
            )

        def cold() -> None:
            with gitadapter.GitRepo.open(path) as git_repo:
                history.plan_range(git_repo, parent, head)

        with gitadapter.GitRepo.open(path) as git_repo:
            plan = history.plan_range(git_repo, parent, head)
            print(
                "plan: "
                + ", ".join(f"{t.image}@{t.cluster}" for t in plan.builds)
                + f"; environments {', '.join(plan.environments)}"
            )

            def warm() -> None:
                git_repo.clear_cache()  # keep the process, not the parsed objects
                history.plan_range(git_repo, parent, head)

            warm_s = median_seconds(warm, args.runs)
        cold_s = median_seconds(cold, args.runs)
        diff_s = median_seconds(git_diff, args.runs)

    print(f"git diff --name-only (subprocess), median of {args.runs}: {diff_s * 1000:7.2f} ms")
    print(
        f"plan, warm (repo open, no cache),  median of {args.runs}: {warm_s * 1000:7.2f} ms"
        f"  ratio {warm_s / diff_s:.2f}x"
    )
    print(
        f"plan, cold (open + plan + close),  median of {args.runs}: {cold_s * 1000:7.2f} ms"
        f"  ratio {cold_s / diff_s:.2f}x"
    )
    print("target: plan within 2x of git diff --name-only")
    return 0


if __name__ == "__main__":
    sys.exit(main())
