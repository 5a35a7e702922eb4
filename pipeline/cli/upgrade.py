"""`layering upgrade --cluster C --release REF [--os-tag TAG] [--open-pr] [--repo PATH]
[--format text|json]`: the node OS image of an OpenShift/OKD release payload, the cluster's
current base, and every image x pool the new base rebuilds; with --open-pr, a branch bumping
baseImage in clusters/<C>/cluster.yaml and its pull request into the default branch (GitHub),
or the pushed branch and what to do by hand (a plain Git server)."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from pipeline.adapters import branch_writer, fs, github, release_payload, upgrade_requests
from pipeline.adapters.environment import load_settings
from pipeline.cli import EXIT_OK
from pipeline.cli.promote import repository_url
from pipeline.core import changes
from pipeline.core import release_payload as payload_core
from pipeline.core import upgrade as upgrade_core
from pipeline.core.errors import InputError
from pipeline.flows import upgrade as upgrade_flow


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "upgrade",
        help="build ahead of a cluster upgrade: the release's node OS image as the new base",
        description="Read the node OS image of an OpenShift/OKD release payload (tag or "
        "digest) from its release-manifests/image-references, show the cluster's current and "
        "new base and what the new base rebuilds; --open-pr opens the pull request bumping "
        "baseImage, whose builds run on the new base before the cluster upgrades.",
    )
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--release", required=True, metavar="REF", help="release payload image")
    parser.add_argument(
        "--os-tag",
        choices=payload_core.KNOWN_NODE_IMAGE_TAGS,
        default=None,
        help="node OS image tag in the payload (default: the first of "
        f"{', '.join(payload_core.NODE_IMAGE_TAGS)}; rhel-coreos-10 only when asked)",
    )
    parser.add_argument("--open-pr", action="store_true", help="push a branch, open its PR")
    parser.add_argument("--repo", type=Path, default=Path("."), help="checkout of the repository")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.set_defaults(handler=run)


def render_text(upgrade: upgrade_core.Upgrade, plan: changes.Plan) -> str:
    lines = [
        f"Upgrade of cluster {upgrade.cluster} to release {upgrade.release}",
        f"current base:  {upgrade.current_base}",
        f"new base:      {upgrade.new_base}  ({upgrade.node_image_tag})",
    ]
    if not upgrade.changed:
        lines.append("the cluster already uses this base: nothing to rebuild")
        return "\n".join(lines) + "\n"
    lines.append("rebuilds:" if plan.builds else "rebuilds: nothing (no pool uses an image)")
    lines += [
        f"  {target.image}@{target.cluster}  pools {', '.join(target.pools)}  {target.build_key}"
        for target in plan.builds
    ]
    lines += [f"problem: {problem}" for problem in plan.problems]
    return "\n".join(lines) + "\n"


def document(
    upgrade: upgrade_core.Upgrade, plan: changes.Plan, opened: upgrade_flow.Opened | None
) -> dict[str, Any]:
    return {
        "cluster": upgrade.cluster,
        "release": upgrade.release,
        "node_image_tag": upgrade.node_image_tag,
        "current_base": upgrade.current_base,
        "new_base": upgrade.new_base,
        "changed": upgrade.changed,
        "rebuilds": [
            {
                "image": t.image,
                "cluster": t.cluster,
                "pools": list(t.pools),
                "build_key": t.build_key,
            }
            for t in plan.builds
        ],
        "branch": opened.branch if opened else None,
        "pull_request": opened.pull_request if opened else None,
        "message": opened.message if opened else None,
    }


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    model = fs.load(args.repo)
    upgrade_core.cluster_of(model, args.cluster)
    payloads = release_payload.ReleasePayloads.from_settings(settings)
    upgrade, _ = upgrade_flow.from_release(
        model, args.cluster, release=args.release, payloads=payloads, tag=args.os_tag
    )
    plan = upgrade_core.rebuilds(model, upgrade)
    opened = None
    if args.open_pr and upgrade.changed:
        given = settings.repo_url or upgrade_requests.origin_url(str(args.repo))
        if not given:
            raise InputError("--open-pr: set LAYERING_REPO_URL or give the checkout an origin")
        client = github.GitHubClient.from_settings(settings)
        with tempfile.TemporaryDirectory(prefix="layering-upgrade-") as scratch:
            opened = upgrade_flow.open_request(
                upgrade,
                default_branch=settings.default_branch,
                branches=upgrade_requests.UpgradeBranches(
                    url=repository_url(given), workdir=Path(scratch), lock=branch_writer.NoLock()
                ),
                requests=upgrade_requests.GitHubUpgradeRequests(client) if client else None,
            )
    if args.format == "json":
        print(json.dumps(document(upgrade, plan, opened), indent=2))
        return EXIT_OK
    text = render_text(upgrade, plan)
    if opened is not None:
        text += f"{opened.message}\n"
    print(text.rstrip("\n"))
    return EXIT_OK
