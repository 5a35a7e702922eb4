"""What signing adds to a push: the product's own push (adapters/buildah.Buildah.push)
unsigned (`buildah push`) against signed (`buildah push`, then signed_push.py: the key opened
with its passphrase, the simple-signing payload signed, and the signature image sent next to
the image with `skopeo copy --preserve-digests`), in the same run, on the same overlay storage
and registry.

The base: the stand-in OS plus BULK_FILES x BULK_BYTES of pseudo-random files in one layer,
pushed once (as a build's base is already in the registry). Each round commits two new images
with a small new layer on that base, as a one-line build does, and pushes one each way, the
order alternating. Prints every figure and the ratio; no timed asserts.
Run: `.venv/bin/python tests/bench/signing_bench.py [ROUNDS]`.
"""

from __future__ import annotations

import dataclasses
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

from pipeline.adapters import buildah, signed_push, signing_keys, standin
from pipeline.core import builds
from tests import services

BULK_FILES = 2_048
BULK_BYTES = 64 * 1024  # 2,048 x 64 KiB = 128 MiB
SEED = 20261201


def run(argv: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{argv} failed: {result.stderr[-2000:]}")
    return result.stdout.strip()


def spec(target: str, context: Path) -> builds.BuildSpec:
    return builds.BuildSpec(
        image="bench",
        cluster="dev",
        build_key="0" * 64,
        target=target,
        base="unused",
        containerfile="",
        context=context,
        build_args={},
        labels={},
    )


def commit_on_base(cli: list[str], base: str, name: str, work: Path, env: dict[str, str]) -> None:
    """`name`: the base plus one small new layer (a one-line build's result)."""
    container = run([*cli, "from", "--pull=never", base], env)
    marker = work / "marker"
    marker.write_text(os.urandom(16).hex())
    run([*cli, "copy", container, str(marker), "/etc/x"], env)
    run([*cli, "commit", "-q", container, name], env)
    run([*cli, "rm", container], env)


def main(rounds: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="signing-bench-"))
    registry = services.Registry(work / "registry").start()
    env = {**os.environ, "CONTAINERS_REGISTRIES_CONF": str(registry.registries_conf)}
    root, runroot = work / "storage" / "root", work / "storage" / "run"
    cli = ["buildah", "--storage-driver", "overlay", "--root", str(root), "--runroot", str(runroot)]
    try:
        rootfs = work / "rootfs"
        standin.make_rootfs(rootfs)
        generator = random.Random(SEED)
        bulk = rootfs / "usr" / "share" / "bulk"
        bulk.mkdir(parents=True)
        for index in range(BULK_FILES):
            (bulk / f"f{index:05d}").write_bytes(generator.randbytes(BULK_BYTES))
        base = f"{registry.host}/bench/base:1"
        container = run([*cli, "from", "scratch"], env)
        run([*cli, "copy", container, f"{rootfs}/.", "/"], env)
        run([*cli, "commit", "-q", container, base], env)
        run([*cli, "rm", container], env)
        started = time.monotonic()
        run([*cli, "push", base, f"docker://{base}"], env)
        print(
            f"base: {BULK_FILES * BULK_BYTES / 2**20:.0f} MiB pushed once in "
            f"{time.monotonic() - started:.2f}s"
        )

        keys = signing_keys.create(work / "keys")
        config = buildah.BuildahConfig(
            storage_driver="overlay",
            root=root,
            runroot=runroot,
            registries_conf=registry.registries_conf,
        )
        plain = buildah.Buildah(config)
        signing = signed_push.Signing(keys.private_key, keys.passphrase_file)
        signed = buildah.Buildah(dataclasses.replace(config, signing=signing))
        os.environ["CONTAINERS_REGISTRIES_CONF"] = str(registry.registries_conf)

        def quiet(_: str) -> None:
            return None

        times: dict[str, list[float]] = {"unsigned": [], "signed": []}
        for n in range(rounds):
            order = ["unsigned", "signed"] if n % 2 == 0 else ["signed", "unsigned"]
            for way in order:
                target = f"{registry.host}/bench/{way}:{n}"
                commit_on_base(cli, base, target, work, env)
                pusher = plain if way == "unsigned" else signed
                started = time.monotonic()
                pusher.push(spec(target, work), on_line=quiet)
                times[way].append(time.monotonic() - started)
        started = time.monotonic()
        signing_keys.load(keys.private_key, keys.passphrase_file)
        opened = time.monotonic() - started
        report(times, opened)
    finally:
        registry.stop()
        services.unmount_under(work)
        shutil.rmtree(work, ignore_errors=True)


def report(times: dict[str, list[float]], opened: float) -> None:
    unsigned = statistics.median(times["unsigned"])
    signed = statistics.median(times["signed"])
    print(f"rounds: {len(times['unsigned'])} (median, min-max, seconds)")
    for way, values in times.items():
        print(
            f"  {way:<9} {statistics.median(values):6.3f}  "
            f"({min(values):.3f}-{max(values):.3f})  {statistics.median(values) / unsigned:.2f}x"
        )
    print(f"signing adds {signed - unsigned:+.3f}s to a push ({signed / unsigned:.2f}x unsigned)")
    print(f"of which opening the key (scrypt N=32768): {opened:.3f}s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
