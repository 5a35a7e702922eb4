"""`layering render`: print the MachineConfigs a cluster's pools would get for given digests."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.adapters import fs
from pipeline.adapters import git as git_adapter
from pipeline.core import content_address, machineconfig, names
from pipeline.core.errors import InputError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "render",
        help="print the MachineConfigs for a cluster's pools",
        description="Render the MachineConfig of every pool of a cluster, byte-stable, "
        "as the promotion stage would commit them.",
    )
    parser.add_argument("--repo", type=Path, default=Path("."), help="repository checkout")
    parser.add_argument("--cluster", required=True, help="cluster name under clusters/")
    parser.add_argument(
        "--digest",
        action="append",
        default=[],
        metavar="IMAGE=sha256:…",
        help="pushed digest of an image (repeat for each image the cluster's pools use)",
    )
    parser.add_argument(
        "--source-commit",
        default=None,
        help="commit the images were built from (default: the checkout's HEAD)",
    )
    parser.set_defaults(handler=run)


def parse_digests(values: list[str]) -> dict[str, str]:
    digests: dict[str, str] = {}
    for value in values:
        image, sep, digest = value.partition("=")
        if not sep or not names.is_dns_label(image) or not names.is_digest(digest):
            raise InputError(
                f"--digest {value!r}: expected IMAGE=sha256:<64 hex>, e.g. firewalld=sha256:9a2b…"
            )
        if image in digests and digests[image] != digest:
            raise InputError(f"--digest: image {image!r} given twice with different digests")
        digests[image] = digest
    return digests


def _head_commit(path: Path) -> str:
    try:
        return git_adapter.head_commit(path)
    except InputError:
        raise InputError(
            f"{path}: not a Git checkout; pass --source-commit with the commit the images "
            "were built from"
        ) from None


def run(args: argparse.Namespace) -> int:
    digests = parse_digests(args.digest)
    repository = fs.load(args.repo)
    cluster = repository.clusters.get(args.cluster)
    if cluster is None:
        problems = [str(p) for p in repository.problems_for(f"clusters/{args.cluster}/")]
        detail = f" ({problems[0]})" if problems else ""
        known = ", ".join(sorted(repository.clusters)) or "none"
        raise InputError(f"cluster {args.cluster!r} is not usable{detail}; known: {known}")
    missing = sorted({image for image in cluster.pools.values() if image not in digests})
    if missing:
        raise InputError(
            f"{cluster.path}: pools use {', '.join(missing)}; pass --digest IMAGE=sha256:… for each"
        )
    source_commit = args.source_commit or _head_commit(args.repo)
    documents: list[bytes] = []
    for pool, image_name in sorted(cluster.pools.items()):
        image = repository.images.get(image_name)
        if image is None or image.tree_id is None:
            raise InputError(f"{cluster.path}: pools.{pool}: image {image_name!r} is not usable")
        key = content_address.build_key(
            tree_id=image.tree_id,
            base_digest=cluster.base_digest,
            build_args=image.settings.build_args,
        )
        os_image = machineconfig.OsImage(
            image=image_name,
            repository=cluster.image_repository(image_name),
            digest=digests[image_name],
            build_key=key,
            source_commit=source_commit,
            base_image=str(cluster.base_image),
        )
        documents.append(machineconfig.render_yaml(pool=pool, os_image=os_image))
    sys.stdout.write("---\n".join(doc.decode() for doc in documents))
    return 0
