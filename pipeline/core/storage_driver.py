"""Which buildah storage driver builds use, as data: the setting (`auto`, `overlay`, `vfs`), what
the probe of the host found (`buildah info` with the overlay driver on the configured storage
root), the choice with its reason (and what the host lacks when it falls back to vfs), and the
shape of what a build worker publishes about itself for `/readyz`. No I/O:
adapters/storage_probe.py runs the probe, adapters/worker_presence.py reads and writes Redis.

Why it matters: vfs copies every layer in full on each step, so a one-line RUN change on a
355 MB / 30,000-file base takes 4.5-22 s with vfs and 0.2 s with overlay on the same machine.

A storage root keeps each driver's images apart (`<root>/vfs-images`, `<root>/overlay-images`):
buildah 1.28 opens a root under either driver without complaint, but images stored by the other
driver are invisible (pulled again) and keep their disk. Newer containers/storage (and podman's
database) refuse instead ("database storage graph driver ... does not match"): either way the
fix is the same, named in `MISMATCH_FIX`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.core.errors import PermanentError

Setting = Literal["auto", "overlay", "vfs"]
Driver = Literal["overlay", "vfs"]
SETTINGS: tuple[Setting, ...] = ("auto", "overlay", "vfs")
DRIVERS: tuple[Driver, ...] = ("overlay", "vfs")

MISMATCH_FIX = (
    "clear the storage root (buildah --root ROOT rm --all && buildah --root ROOT rmi --all, "
    "or delete the directory while no build runs) or set LAYERING_BUILDAH_STORAGE_DRIVER to "
    "the driver it was made with"
)
OVERLAY_FIX = (
    "put the storage root (LAYERING_BUILDAH_ROOT) on a real file system such as an emptyDir "
    "volume (not a container's overlay root), load the kernel's overlay module, or set "
    "LAYERING_BUILDAH_STORAGE_DRIVER=vfs (slow: every layer copied in full)"
)

# what buildah's stderr says about a host where overlay does not work -> what the host lacks
_LACKS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"does not match|graph driver .* mismatch", re.I),
        "the storage root was made with another driver; " + MISMATCH_FIX,
    ),
    (
        re.compile(r"not supported over (overlayfs|aufs|zfs|btrfs)|backing file system", re.I),
        "the storage root is on a file system overlay cannot stack on (e.g. the container's "
        "own overlayfs root)",
    ),
    (
        re.compile(r"driver not supported|unknown filesystem|no such device", re.I),
        "the kernel has no overlay file system (modprobe overlay)",
    ),
    (
        re.compile(r"operation not permitted|permission denied", re.I),
        "this process may not mount overlay file systems (needs CAP_SYS_ADMIN, or rootless "
        "with /dev/fuse and fuse-overlayfs)",
    ),
    (
        re.compile(r"executable file not found|no such file or directory", re.I),
        "buildah is not installed where the worker looks for it",
    ),
)


@dataclass(frozen=True)
class Probe:
    """What `buildah --storage-driver overlay info` on the configured root showed."""

    ok: bool
    reason: str = ""  # why overlay does not work (empty when ok)
    native_diff: bool = False  # the kernel's overlay computes layer diffs (fastest)
    backing: str = ""  # the file system under the root, as buildah names it

    @property
    def detail(self) -> str:
        if not self.ok:
            return self.reason
        native = "native overlay diff" if self.native_diff else "overlay without native diff"
        return f"{native}, on {self.backing or 'an unknown file system'}"


@dataclass(frozen=True)
class Choice:
    """The driver builds use and why; `warning` when the worker fell back to vfs."""

    driver: Driver
    reason: str
    warning: bool = False

    @property
    def message(self) -> str:
        return f"buildah storage driver {self.driver}: {self.reason}"


def lacks(stderr: str) -> str:
    for pattern, meaning in _LACKS:
        if pattern.search(stderr):
            return meaning
    return "overlay storage did not initialise"


def failed(stderr: str, exit_code: int) -> Probe:
    """The probe of a host where `buildah info` with overlay failed."""
    tail = " | ".join(line.strip() for line in stderr.strip().splitlines()[-2:] if line.strip())
    return Probe(False, f"{lacks(stderr)} (buildah exit {exit_code}: {tail[-300:]})")


def judged(info_json: str) -> Probe:
    """`buildah --storage-driver overlay info` output -> the probe (the driver initialised:
    containers/storage mounts a test overlay in the root before it answers)."""
    try:
        document = json.loads(info_json)
        store = document["store"]
        status = store.get("GraphStatus") or {}
        name = str(store["GraphDriverName"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return Probe(False, "buildah info answered something unreadable")
    if name != "overlay":
        return Probe(False, f"buildah opened the root with {name!r}, not overlay")
    return Probe(
        True,
        native_diff=str(status.get("Native Overlay Diff", "")).lower() == "true",
        backing=str(status.get("Backing Filesystem", "")),
    )


def choose(setting: Setting, probe: Probe | None) -> Choice:
    """The driver for `setting`; `probe` is None when vfs was asked for (nothing to probe).
    An explicit `overlay` that does not work raises PermanentError (the worker must not start);
    `auto` falls back to vfs with a warning naming what the host lacks."""
    if setting == "vfs":
        return Choice("vfs", "LAYERING_BUILDAH_STORAGE_DRIVER=vfs (every layer copied in full)")
    if probe is None:
        raise ValueError("overlay and auto need the probe's answer")
    if probe.ok:
        how = "LAYERING_BUILDAH_STORAGE_DRIVER=overlay" if setting == "overlay" else "auto"
        return Choice("overlay", f"{how}, the probe showed {probe.detail}")
    if setting == "overlay":
        raise PermanentError(
            f"LAYERING_BUILDAH_STORAGE_DRIVER=overlay, but overlay storage does not work here: "
            f"{probe.reason}. To fix: {OVERLAY_FIX}"
        )
    return Choice(
        "vfs",
        f"auto fell back to vfs (slow: every layer copied in full) because {probe.reason}. "
        f"To use overlay: {OVERLAY_FIX}",
        warning=True,
    )


def leftover_warning(driver: Driver, present: Collection[str]) -> str | None:
    """A warning when the storage root also holds images of another driver (`present`: the
    drivers whose `<root>/<driver>-images` hold images): invisible to `driver`, using disk."""
    others = sorted(set(present) - {driver})
    if not others:
        return None
    return (
        f"the buildah storage root also holds images stored with {', '.join(others)}: "
        f"{driver} cannot use them (the base is pulled again) and they keep their disk; "
        f"to reclaim it, {MISMATCH_FIX}"
    )


# -- what build workers publish for /readyz -------------------------------------------------

# one Redis hash: field = worker name, value = the JSON of WorkerReport. Workers refresh their
# field every PRESENCE_INTERVAL_SECONDS from their event loop and the hash's TTL with it, so a
# report older than PRESENCE_TTL_SECONDS (three beats missed) belongs to a worker gone.
WORKERS_KEY = "layering:build-workers"
PRESENCE_INTERVAL_SECONDS = 30.0
PRESENCE_TTL_SECONDS = 90
MAX_REPORTED_WORKERS = 200  # /readyz shows at most this many (the newest)


@dataclass(frozen=True)
class WorkerReport:
    worker: str  # the Celery node name, e.g. builds@host
    storage_driver: Driver
    isolation: str  # oci or chroot
    hostname: str
    seen: float  # Unix time of the last refresh

    def to_json(self) -> str:
        return json.dumps(
            {
                "worker": self.worker,
                "storage_driver": self.storage_driver,
                "isolation": self.isolation,
                "hostname": self.hostname,
                "seen": round(self.seen, 3),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> WorkerReport | None:
        try:
            raw: Any = json.loads(text)
            driver = raw["storage_driver"]
            if driver not in DRIVERS:
                return None
            return cls(
                worker=str(raw["worker"]),
                storage_driver=driver,
                isolation=str(raw["isolation"]),
                hostname=str(raw["hostname"]),
                seen=float(raw["seen"]),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def readiness(self, now: float) -> dict[str, object]:
        return {
            "worker": self.worker,
            "storage_driver": self.storage_driver,
            "isolation": self.isolation,
            "hostname": self.hostname,
            "seen_seconds_ago": round(max(0.0, now - self.seen), 1),
        }


def live_workers(entries: Mapping[Any, Any], now: float) -> list[WorkerReport]:
    """The hash's values -> the reports refreshed within PRESENCE_TTL_SECONDS, by name."""
    reports = [WorkerReport.from_json(value) for value in entries.values()]
    fresh = [r for r in reports if r is not None and now - r.seen <= PRESENCE_TTL_SECONDS]
    fresh.sort(key=lambda report: -report.seen)
    return sorted(fresh[:MAX_REPORTED_WORKERS], key=lambda report: report.worker)


def stale_fields(entries: Mapping[Any, Any], now: float) -> list[Any]:
    """The hash fields whose report is unreadable or older than PRESENCE_TTL_SECONDS."""
    stale = []
    for name, value in entries.items():
        report = WorkerReport.from_json(value)
        if report is None or now - report.seen > PRESENCE_TTL_SECONDS:
            stale.append(name)
    return stale
