"""How build steps are isolated from the host, as data: the isolation modes a deployment can ask
for (`auto`, `oci`, `chroot`), buildah's arguments for each, what the probe of the host found
(and, when `oci` is impossible, what the host lacks and how to opt into `chroot`), and what
`/readyz` and the worker's start-up warning say. No I/O: adapters/isolation.py runs the probe.

What each mode protects (README "Security model"):

- `oci`: every RUN step gets private PID, network, mount, IPC and UTS namespaces. It sees only
  its own processes in /proc, and its loopback is its own: the host's Redis, registry and
  receiver on 127.0.0.1 are out of reach. Its outbound network is buildah's default private
  network (packages can be downloaded).
- `chroot`: only the file system is changed. A RUN step shares the host's network and PID
  namespaces: it reaches every loopback service and reads every process's argv
  (/proc/N/cmdline); /proc/N/environ and files outside the build root stay closed to it.
  Secrets must therefore never be on an argv, and Redis must require a password.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Mode = Literal["auto", "oci", "chroot"]
Resolved = Literal["oci", "chroot"]
MODES: tuple[Mode, ...] = ("auto", "oci", "chroot")
# the namespaces the probe compares between the worker and a step run with oci isolation
NAMESPACES = ("net", "pid")

CHROOT_WARNING = (
    "builds run with chroot isolation (LAYERING_BUILDAH_ISOLATION=chroot): a RUN step shares "
    "this host's network and PID namespaces, so it can connect to every service on the "
    "loopback interface (Redis, the registry, the receiver) and read every process's command "
    "line in /proc; only the Redis password and secrets kept off argv protect the control "
    "plane. Use LAYERING_BUILDAH_ISOLATION=auto (oci) where the host allows it"
)
AUTO_NOTE = (
    "each worker probes at start: oci with private PID and network namespaces, "
    "or it refuses to build"
)
OPT_IN = (
    "install an OCI runtime (runc or crun) and run the worker where it may create mount, PID "
    "and network namespaces (as root, or rootless with user namespaces); or accept the weaker "
    "boundary explicitly with LAYERING_BUILDAH_ISOLATION=chroot (RUN steps then share the "
    "host's network and PID namespaces)"
)

# what buildah's stderr says about a host that cannot run oci steps -> what the host lacks
_LACKS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"executable file not found|exec: no command|no such file or directory.*runc"),
        "no OCI runtime (runc or crun) is installed where buildah looks for it",
    ),
    (
        re.compile(r"operation not permitted|permission denied", re.I),
        "this process may not create namespaces (a container without CAP_SYS_ADMIN, or "
        "rootless without user namespaces)",
    ),
    (
        re.compile(r"cgroup", re.I),
        "the OCI runtime cannot set up cgroups here",
    ),
)


@dataclass(frozen=True)
class Probe:
    """What running one step with oci isolation on this host showed."""

    ok: bool
    reason: str = ""  # why oci is not possible (empty when ok)

    @property
    def message(self) -> str:
        """The operator's error when `auto`/`oci` cannot be honoured."""
        return (
            f"buildah cannot isolate build steps with oci on this host: {self.reason}. "
            f"To fix: {OPT_IN}"
        )


def lacks(stderr: str) -> str:
    """What the host lacks, read from buildah's stderr of a failed oci step."""
    for pattern, meaning in _LACKS:
        if pattern.search(stderr):
            return meaning
    return "the oci step failed"


def failed(stderr: str, exit_code: int) -> Probe:
    """The probe of a host where buildah could not run an oci step."""
    tail = " | ".join(line.strip() for line in stderr.strip().splitlines()[-3:] if line.strip())
    return Probe(False, f"{lacks(stderr)} (buildah exit {exit_code}: {tail[-400:]})")


def judged(host: Mapping[str, str], step: Mapping[str, str]) -> Probe:
    """Whether a step ran in namespaces of its own: `host` and `step` map a namespace name
    (`net`, `pid`) to its `readlink /proc/self/ns/<name>` as the worker and the step saw it."""
    shared = [name for name in NAMESPACES if not step.get(name) or step.get(name) == host[name]]
    if shared:
        return Probe(
            False,
            f"the oci step still shared the host's {' and '.join(shared)} namespace "
            f"(host {dict(host)}, step {dict(step)})",
        )
    return Probe(True)


def namespaces_of(output: str) -> dict[str, str]:
    """`net:[4026…]` lines (readlink /proc/self/ns/*) -> {"net": "net:[4026…]", ...}."""
    found: dict[str, str] = {}
    for line in output.split():
        name, _, rest = line.partition(":")
        if name in NAMESPACES and rest.startswith("["):
            found[name] = line
    return found


def build_argv(mode: Resolved) -> list[str]:
    """buildah build's isolation arguments: oci steps get a private PID namespace (buildah's
    oci default network is already a private namespace, which keeps package downloads
    working); chroot cannot have either (buildah refuses `--network` other than host)."""
    if mode == "oci":
        return ["--isolation", "oci", "--pid", "private", "--network", "private"]
    return ["--isolation", "chroot"]


def describe(mode: Resolved) -> str:
    """One line for a build log: the isolation its RUN steps had."""
    if mode == "oci":
        return "oci (RUN steps in private PID and network namespaces)"
    return "chroot (RUN steps share the host's network and PID namespaces)"


def readiness(mode: Mode) -> dict[str, str]:
    """What /readyz says about build isolation for the configured mode."""
    if mode == "chroot":
        return {"build_isolation": "chroot", "build_isolation_warning": CHROOT_WARNING}
    if mode == "auto":
        return {"build_isolation": "auto", "build_isolation_note": AUTO_NOTE}
    return {"build_isolation": mode}
