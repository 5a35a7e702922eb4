"""Base image drift as data (SPEC section 7): what the Machine Config Operator says a cluster's
stock OS image is (its machine-config-osimageurl ConfigMap) against cluster.yaml's baseImage.
A cluster that runs another base (an upgrade) needs its images rebuilt on it. No I/O: the kube
adapter reads the ConfigMap, the drift flow records the result."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core import repo

CONFIGMAP_MISSING = "ConfigMap machine-config-osimageurl not found"


@dataclass(frozen=True)
class BaseImage:
    """What the MCO's ConfigMap says: the stock OS image and the release it belongs to."""

    base_os_container_image: str
    release_version: str


@dataclass(frozen=True)
class Drift:
    cluster: str
    expected: str  # cluster.yaml baseImage
    actual: str  # the ConfigMap's baseOSContainerImage
    release_version: str
    checked_at: float
    error: str = ""

    @property
    def drifted(self) -> bool:
        return not self.error and self.actual != self.expected


def check(cluster: repo.Cluster, found: BaseImage | None, *, now: float) -> Drift:
    """The drift of `cluster` from what its ConfigMap says (None: there is no ConfigMap)."""
    return Drift(
        cluster=cluster.name,
        expected=str(cluster.base_image),
        actual=found.base_os_container_image if found else "",
        release_version=found.release_version if found else "",
        checked_at=now,
        error="" if found else CONFIGMAP_MISSING,
    )


def unreadable(cluster: repo.Cluster, error: str, *, now: float) -> Drift:
    """A cluster whose ConfigMap could not be read: drift unknown, the reason kept."""
    return Drift(
        cluster=cluster.name,
        expected=str(cluster.base_image),
        actual="",
        release_version="",
        checked_at=now,
        error=error,
    )
