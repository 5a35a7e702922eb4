"""`layering base-image --cluster C [--repo PATH] [--format text|json]`: the MCO's base OS image
of a cluster (ConfigMap machine-config-osimageurl) compared with cluster.yaml; exit 1 on drift."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pipeline.adapters import fs, kube
from pipeline.adapters.environment import load_settings
from pipeline.cli import EXIT_FINDINGS, EXIT_OK
from pipeline.core import drift
from pipeline.core.errors import InputError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("base-image", help="compare a cluster's base image")
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--repo", type=Path, default=Path("."), help="checkout of the repository")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    model = fs.load(args.repo)
    cluster = model.clusters.get(args.cluster)
    if cluster is None:
        known = ", ".join(sorted(model.clusters)) or "none"
        raise InputError(f"unknown cluster {args.cluster!r} (known: {known})")
    if cluster.kube_context is None:
        raise InputError(f"{cluster.path}: no kube.context; the base image cannot be read")
    with kube.KubeCluster.connect(
        kubeconfig=settings.kubeconfig, context=cluster.kube_context
    ) as reader:
        found = reader.base_image()
    if found is None:
        raise InputError(
            f"cluster {cluster.name}: ConfigMap {kube.MCO_NAMESPACE}/"
            f"{kube.OSIMAGEURL_CONFIGMAP} not found"
        )
    drifted = drift.check(cluster, found, now=time.time()).drifted
    if args.format == "json":
        document = {
            "cluster": cluster.name,
            "context": cluster.kube_context,
            "expected": str(cluster.base_image),
            "actual": found.base_os_container_image,
            "release_version": found.release_version,
            "drifted": drifted,
        }
        print(json.dumps(document, indent=2))
        return EXIT_FINDINGS if drifted else EXIT_OK
    print(f"Base image of cluster {cluster.name} (kube context {cluster.kube_context})")
    print(f"cluster.yaml baseImage:        {cluster.base_image}")
    print(f"cluster baseOSContainerImage:  {found.base_os_container_image}")
    print(f"releaseVersion:                {found.release_version or '(not set)'}")
    if drifted:
        print(
            "DRIFT: the cluster runs another base than cluster.yaml says (an upgrade?); set "
            f"baseImage in {cluster.path} to the image above, so every image of the cluster "
            "is rebuilt on it before it is promoted again"
        )
        return EXIT_FINDINGS
    print("matches")
    return EXIT_OK
