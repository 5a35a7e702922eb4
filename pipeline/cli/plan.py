"""`layering plan`: the (image, cluster, build key) pairs a commit range must build and the
environments whose promotion it affects. Exit 0, 1 when the repository has problems that
concern the plan (pairs are left out), 2 on unusable input (unknown revision, not a repo)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.adapters import git as gitadapter
from pipeline.core import changes
from pipeline.flows import history


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="what a commit range would build and promote",
        description="List the (image, cluster, build key) pairs a push from REV to REV must "
        "build and the environments whose promotion it affects. --from all zeros is a new "
        "branch (compared with its merge base with the default branch).",
    )
    parser.add_argument("--repo", type=Path, default=Path("."), help="Git repository (or mirror)")
    parser.add_argument("--from", dest="from_rev", required=True, metavar="REV")
    parser.add_argument("--to", dest="to_rev", required=True, metavar="REV")
    parser.add_argument("--default-branch", default="main", metavar="BRANCH")
    parser.add_argument(
        "--branch", default=None, help="the branch pushed to (a new default branch builds all)"
    )
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.set_defaults(handler=run)


def render_text(plan: changes.Plan) -> str:
    lines: list[str] = []
    if plan.base and plan.head:
        lines.append(f"range {plan.base[:12]}..{plan.head[:12]}")
    if plan.note:
        lines.append(f"note: {plan.note}")
    if plan.builds:
        lines.append("build:")
        width = max(len(f"{t.image}@{t.cluster}") for t in plan.builds)
        lines.extend(
            f"  {f'{t.image}@{t.cluster}':<{width}}  {t.build_key}  ({t.reason})"
            for t in plan.builds
        )
    else:
        lines.append("build: nothing")
    if plan.deleted_images:
        lines.append(f"deleted images: {', '.join(plan.deleted_images)}")
    if plan.unassigned_images:
        lines.append(f"changed but in no pool: {', '.join(plan.unassigned_images)}")
    lines.append(f"environments: {', '.join(plan.environments) or 'none'}")
    lines.extend(f"problem: {problem}" for problem in plan.problems)
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    with gitadapter.GitRepo.open(args.repo) as git_repo:
        plan = history.plan_range(
            git_repo, args.from_rev, args.to_rev, args.default_branch, branch=args.branch
        )
    if args.format == "json":
        sys.stdout.write(json.dumps(plan.to_json(), indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(render_text(plan))
    return 1 if plan.problems else 0
