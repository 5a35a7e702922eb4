"""The probe of which buildah storage driver works here: `buildah --storage-driver overlay
--root R --runroot RR info` on the configured storage root (containers/storage mounts a test
overlay inside the root before it answers, so a root on overlayfs, a kernel without overlay or a
process that may not mount all fail here, in about 0.1 s, bounded by PROBE_TIMEOUT_SECONDS).
`resolve` turns the setting (`auto`, `overlay`, `vfs`) into the driver builds use, once per
process (a worker probes at start, before prefork children fork, so they inherit the answer).
Does process I/O (runs buildah) and lists the storage root.

    storage_probe.resolve(command="buildah", root=R, runroot=RR, setting="auto")
    # -> Choice("overlay", "auto, the probe showed native overlay diff, on extfs")
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from pipeline.adapters import buildah_process
from pipeline.core import storage_driver

PROBE_TIMEOUT_SECONDS = 30

# (command, root, runroot, registries.conf, setting) -> the choice; a process probes once
_chosen: dict[tuple[str, ...], storage_driver.Choice] = {}


def storage_argv(root: Path | None, runroot: Path | None) -> list[str]:
    argv: list[str] = []
    if root is not None:
        argv += ["--root", str(root)]
    if runroot is not None:
        argv += ["--runroot", str(runroot)]
    return argv


def probe(
    *,
    command: str,
    root: Path | None,
    runroot: Path | None,
    env: Mapping[str, str] | None = None,
) -> storage_driver.Probe:
    """Whether buildah opens `root` with the overlay driver (and how)."""
    argv: Sequence[str] = [
        command,
        "--storage-driver",
        "overlay",
        *storage_argv(root, runroot),
        "info",
    ]
    try:
        result = buildah_process.captured(argv, env=env, timeout=PROBE_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        return storage_driver.Probe(
            False, f"`buildah info` with overlay did not answer in {PROBE_TIMEOUT_SECONDS}s"
        )
    except OSError as exc:
        return storage_driver.Probe(False, f"could not run {command}: {exc}")
    if result.returncode != 0:
        return storage_driver.failed(result.stderr, result.returncode)
    return storage_driver.judged(result.stdout)


def drivers_with_images(root: Path | None) -> list[str]:
    """The drivers whose image store in `root` holds images (`<root>/<driver>-images`)."""
    if root is None or not root.is_dir():
        return []
    found: list[str] = []
    for driver in storage_driver.DRIVERS:
        images = root / f"{driver}-images" / "images.json"
        try:
            if images.is_file() and images.stat().st_size > len("[]"):
                found.append(driver)
        except OSError:
            continue
    return found


def resolve(
    *,
    command: str,
    root: Path | None,
    runroot: Path | None,
    setting: storage_driver.Setting,
    env: Mapping[str, str] | None = None,
) -> storage_driver.Choice:
    """The driver builds use (probed once per process for `auto` and `overlay`); an explicit
    `overlay` that does not work raises PermanentError naming what the host lacks."""
    key = (command, str(root), str(runroot), setting)
    chosen = _chosen.get(key)
    if chosen is None:
        found = (
            None
            if setting == "vfs"
            else probe(command=command, root=root, runroot=runroot, env=env)
        )
        chosen = _chosen[key] = storage_driver.choose(setting, found)
    return chosen


def forget() -> None:
    """Forget what was probed (a test changing the host or the root)."""
    _chosen.clear()
