"""MachineConfig objects that point a pool at a layered image (SPEC section 6): rendering,
byte-stable YAML, and recognising the ones this pipeline manages. No I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.core import names, yamlfile

API_VERSION = "machineconfiguration.openshift.io/v1"
KIND = "MachineConfig"
ROLE_LABEL = "machineconfiguration.openshift.io/role"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGER = "coreos-layering-pipeline"
ANNOTATION_IMAGE = "layering/image"
ANNOTATION_SOURCE_COMMIT = "layering/source-commit"
ANNOTATION_BUILD_KEY = "layering/build-key"
ANNOTATION_BASE_IMAGE = "layering/base-image"
HEADER = (
    b"# Written by coreos-layering-pipeline on promotion; do not edit by hand.\n"
    b"# Delete this file (or remove the pool from cluster.yaml) to boot the stock image again.\n"
)


@dataclass(frozen=True)
class OsImage:
    """What one pool should boot: the pushed image by digest and where it came from."""

    image: str
    repository: str  # <registry>/<image>
    digest: str
    build_key: str
    source_commit: str
    base_image: str  # the cluster's baseImage the image was built on

    @property
    def url(self) -> str:
        return f"{self.repository}@{self.digest}"


def name_for(pool: str) -> str:
    """`99-` sorts last: when several MachineConfigs set osImageURL the MCO keeps the last."""
    return f"99-layering-{pool}-os-image"


def path_for(cluster: str, pool: str) -> str:
    return f"clusters/{cluster}/machineconfigs/{name_for(pool)}.yaml"


def render(*, pool: str, os_image: OsImage) -> dict[str, Any]:
    if not names.is_dns_label(pool):
        raise ValueError(f"pool {pool!r} is not a DNS label")
    if not names.is_digest(os_image.digest):
        raise ValueError(f"{os_image.digest!r} is not a sha256 digest")
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name_for(pool),
            "labels": {ROLE_LABEL: pool, MANAGED_BY_LABEL: MANAGER},
            "annotations": {
                ANNOTATION_IMAGE: os_image.image,
                ANNOTATION_SOURCE_COMMIT: os_image.source_commit,
                ANNOTATION_BUILD_KEY: os_image.build_key,
                ANNOTATION_BASE_IMAGE: os_image.base_image,
            },
        },
        "spec": {"osImageURL": os_image.url},
    }


def to_yaml(machineconfig: dict[str, Any]) -> bytes:
    """Same object, same bytes: the promotion stage commits only when bytes differ."""
    return HEADER + yamlfile.dump(machineconfig)


def render_yaml(*, pool: str, os_image: OsImage) -> bytes:
    return to_yaml(render(pool=pool, os_image=os_image))


def is_managed(machineconfig: object) -> bool:
    if not isinstance(machineconfig, dict):
        return False
    labels = (machineconfig.get("metadata") or {}).get("labels") or {}
    return isinstance(labels, dict) and labels.get(MANAGED_BY_LABEL) == MANAGER


def parse_managed(raw: bytes) -> dict[str, Any] | None:
    """A committed file back into an object, or None when it is not ours or not readable."""
    try:
        document = yamlfile.load(raw)
    except yamlfile.YamlProblem:
        return None
    return document if is_managed(document) else None
