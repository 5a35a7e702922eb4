"""The probe of how strongly this host can isolate build steps: one tiny `buildah from scratch`
container, one `buildah run --isolation oci --pid private --network private` step in it that
prints its own network and PID namespaces (the host's /bin, /usr and library directories are
mounted read-only so that it has a shell), compared with this process's. `resolve` turns the
configured mode (`auto`, `oci`, `chroot`) into the one builds use, once per process (a worker
probes at start, before it forks its children). Does process I/O (runs buildah) and reads
/proc/self/ns.

    isolation.resolve(command="buildah", global_argv=[...], mode="auto") -> "oci"
    # or PermanentError naming what the host lacks and how to opt into chroot
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from pipeline.adapters import buildah_process
from pipeline.core import isolation
from pipeline.core.errors import PermanentError

PROBE_TIMEOUT_SECONDS = 120
# host directories a scratch container needs to run /bin/sh (merged-/usr or not, any arch)
_HOST_DIRECTORIES = ("/bin", "/sbin", "/usr", "/lib", "/lib64", "/lib32", "/libx32")
_PRINT_NAMESPACES = "readlink " + " ".join(f"/proc/self/ns/{n}" for n in isolation.NAMESPACES)

# (command, global argv) -> what the probe found; a process probes once
_probed: dict[tuple[str, ...], isolation.Probe] = {}


def host_namespaces() -> dict[str, str]:
    """This process's namespaces, as `readlink /proc/self/ns/<name>` prints them."""
    return {name: os.readlink(f"/proc/self/ns/{name}") for name in isolation.NAMESPACES}


def _run(argv: Sequence[str], env: Mapping[str, str] | None) -> subprocess.CompletedProcess[str]:
    return buildah_process.captured(argv, env=env, timeout=PROBE_TIMEOUT_SECONDS)


def probe(
    *, command: str, global_argv: Sequence[str], env: Mapping[str, str] | None = None
) -> isolation.Probe:
    """Run one step with oci isolation and say whether it got namespaces of its own."""
    buildah = [command, *global_argv]
    try:
        created = _run([*buildah, "from", "--quiet", "scratch"], env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return isolation.Probe(False, f"could not run {command}: {exc}")
    if created.returncode != 0:
        return isolation.failed(created.stderr, created.returncode)
    container = created.stdout.strip().splitlines()[-1]
    mounts: list[str] = []
    for directory in _HOST_DIRECTORIES:
        if Path(directory).is_dir():
            mounts += ["--volume", f"{directory}:{directory}:ro"]
    try:
        step = _run(
            [
                *buildah,
                "run",
                *isolation.build_argv("oci"),
                *mounts,
                container,
                "--",
                "/bin/sh",
                "-c",
                _PRINT_NAMESPACES,
            ],
            env,
        )
    except subprocess.TimeoutExpired:
        return isolation.Probe(False, f"the oci step did not finish in {PROBE_TIMEOUT_SECONDS}s")
    finally:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            _run([*buildah, "rm", container], env)
    if step.returncode != 0:
        return isolation.failed(step.stderr, step.returncode)
    return isolation.judged(host_namespaces(), isolation.namespaces_of(step.stdout))


def resolve(
    *,
    command: str,
    global_argv: Sequence[str],
    mode: isolation.Mode,
    env: Mapping[str, str] | None = None,
) -> isolation.Resolved:
    """The isolation builds use: `chroot` only when asked for; `auto` and `oci` only after
    the probe showed oci works here (probed once per process), else PermanentError."""
    if mode == "chroot":
        return "chroot"
    key = (command, *global_argv)
    found = _probed.get(key)
    if found is None:
        found = _probed[key] = probe(command=command, global_argv=global_argv, env=env)
    if not found.ok:
        raise PermanentError(found.message)
    return "oci"


def forget() -> None:
    """Forget what was probed (a test changing the host's configuration)."""
    _probed.clear()
