"""`layering promote --env E [--repo URL|PATH] [--dry-run] [--format text|json]`: run a
promotion of env/<E> from this machine (same code as the worker); with --dry-run, show the plan
and the diff it would commit. Exit 1 when a pool is refused (nothing is committed then)."""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import re
import tempfile
import time
from pathlib import Path

from pipeline.adapters import (
    branch_writer,
    build_records,
    kube,
    promotion_store,
    registry,
    signatures,
    signing_trust,
)
from pipeline.adapters.environment import load_settings
from pipeline.cli import EXIT_FINDINGS, EXIT_OK
from pipeline.core import commit_status, promotion, promotion_commit, promotion_report, repo
from pipeline.core.errors import InputError
from pipeline.core.settings import Settings
from pipeline.flows import promote as promote_flow
from pipeline.flows import promotion_inputs

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("promote", help="promote an environment branch now")
    parser.add_argument("--env", required=True, metavar="ENVIRONMENT")
    parser.add_argument(
        "--repo", metavar="URL|PATH", help="upstream repository (default: LAYERING_REPO_URL)"
    )
    parser.add_argument("--dry-run", action="store_true", help="show the diff, commit nothing")
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="json: the plan (steps, refusals, diff, commit) as one document",
    )
    parser.set_defaults(handler=run)


def diff(plan: promotion.PromotionPlan, before: repo.Repository) -> str:
    chunks: list[str] = []
    for step in plan.changes:
        old = before.machineconfigs.get(step.path, b"").decode().splitlines(keepends=True)
        new = (
            step.content.decode().splitlines(keepends=True)
            if isinstance(step, promotion.WriteFile)
            else []
        )
        chunks += difflib.unified_diff(old, new, f"a/{step.path}", f"b/{step.path}")
    for policy in () if plan.refused else plan.policies:
        old = before.machineconfigs.get(policy.path, b"").decode().splitlines(keepends=True)
        new = policy.content.decode().splitlines(keepends=True)
        chunks += difflib.unified_diff(old, new, f"a/{policy.path}", f"b/{policy.path}")
    return "".join(chunks)


_REMOTE = re.compile(r"^[a-z][a-z0-9+.-]*://|^[\w.-]+@[\w.-]+:")


def repository_url(value: str) -> str:
    """A Git URL as given; a local path checked and turned into a file:// URL."""
    if _REMOTE.match(value):
        return value
    path = Path(value)
    if not path.is_dir():
        raise InputError(f"--repo {value}: no such directory; pass a Git URL or repository path")
    if not ((path / ".git").exists() or (path / "HEAD").is_file()):
        raise InputError(f"--repo {value}: not a Git repository")
    return path.resolve().as_uri()


class LoggedStatuses:
    """The StatusReporter of a promotion run by a person: no worker delivers statuses here,
    so they go to the log (the output shows the plan and its refusals)."""

    def report(self, sha: str, status: commit_status.Status) -> None:
        log.info("status %s %s=%s: %s", sha[:12], status.context, status.state, status.description)


class EnvironmentWriter:
    """Refuses an environment that has no cluster on its branch before anything is planned."""

    def __init__(self, writer: branch_writer.BranchWriter, environment: str) -> None:
        self._writer = writer
        self._environment = environment

    def write(
        self, branch: str, change_for: promotion_commit.ChangeFor
    ) -> promotion_commit.WriteResult:
        def checked(head: str, model: repo.Repository) -> promotion_commit.Change | None:
            if not model.clusters_in(self._environment):
                known = sorted({c.environment for c in model.clusters.values()})
                raise InputError(
                    f"no cluster of environment {self._environment!r} on {branch} "
                    f"(environments there: {', '.join(known) or 'none'})"
                )
            return change_for(head, model)

        return self._writer.write(branch, checked)


def report(
    plan: promotion.PromotionPlan | None,
    *,
    before: repo.Repository | None,
    head: str,
    commit_sha: str | None,
    dry_run: bool,
) -> str:
    """What `layering promote` prints: a heading, the plan, the refusals, the diff, the end."""
    branch = f"env/{plan.environment}" if plan else "the branch"
    mode = " (dry run: nothing is committed)" if dry_run else ""
    lines = [f"Promotion of {branch} at {head[:12]}{mode}", ""]
    if plan is None:
        return "\n".join([*lines, "nothing committed"]) + "\n"
    summary = [
        line for line in promotion_report.diff_summary(plan) if not line.startswith("REFUSED ")
    ]
    lines += ["Plan", *(f"  {line}" for line in summary or ["(nothing to write or delete)"])]
    if plan.refusals:
        lines += ["", "Refused (one refusal stops the whole promotion)"]
        lines += [f"  {refusal}" for refusal in plan.refusals]
    text = diff(plan, before) if before is not None else ""
    if text:
        lines += ["", "Diff", text.rstrip("\n")]
    lines.append("")
    if commit_sha:
        lines.append(f"committed {commit_sha} to {branch}")
    elif plan.refused:
        lines.append(
            "refused: nothing committed" if not dry_run else "refused: would commit nothing"
        )
    elif dry_run:
        count = len(plan.changes)
        lines.append(f"would commit {count} file change(s)" if count else "nothing to commit")
    else:
        lines.append("nothing committed")
    return "\n".join(lines) + "\n"


def document(
    plan: promotion.PromotionPlan | None,
    *,
    before: repo.Repository | None,
    head: str,
    commit_sha: str | None,
    dry_run: bool,
) -> dict[str, object]:
    """The same as `report`, for scripts (`--format json`)."""
    steps: list[dict[str, str]] = []
    for step in plan.steps if plan else ():
        entry = {"cluster": step.cluster, "pool": step.pool, "path": step.path}
        if isinstance(step, promotion.WriteFile):
            steps.append({"action": "write", **entry, "os_image_url": step.os_image.url})
        elif isinstance(step, promotion.DeleteFile):
            steps.append({"action": "delete", **entry})
        else:
            steps.append({"action": "keep", **entry, "reason": step.reason})
    return {
        "environment": plan.environment if plan else None,
        "head": head,
        "dry_run": dry_run,
        "refused": bool(plan and plan.refused),
        "steps": steps,
        "refusals": [
            {
                "cluster": r.cluster,
                "pool": r.pool,
                "image": r.image,
                "kind": r.kind.value,
                "digest": r.digest,
                "reason": r.reason,
            }
            for r in (plan.refusals if plan else ())
        ],
        "diff": diff(plan, before) if plan and before is not None else "",
        "commit_sha": commit_sha,
    }


def _signing(settings: Settings) -> promotion_inputs.Signing | None:
    """As the promotion worker checks signatures (workers/promotion_tasks.py)."""
    public_key = signing_trust.public_key(settings)
    if public_key is None:
        return None
    return promotion_inputs.Signing(public_key, signatures.Signatures.from_settings(settings))


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    given: str | None = args.repo or settings.repo_url
    if not given:
        raise InputError("no repository: pass --repo or set LAYERING_REPO_URL")
    url = repository_url(given)
    store = promotion_store.PromotionStore.from_settings(settings)
    sources = promotion_inputs.Sources(
        registry=registry.Registry.from_settings(settings),
        store=store,
        built=build_records.BuildStore.from_settings(settings),
        clusters=kube.KubeClusters(settings.kubeconfig),
        signing=_signing(settings),
    )
    plan: promotion.PromotionPlan | None
    before: repo.Repository | None
    with tempfile.TemporaryDirectory(prefix="layering-promote-") as scratch:
        writer = EnvironmentWriter(
            branch_writer.BranchWriter(
                url=url,
                workdir=Path(scratch),
                lock=branch_writer.RedisBranchLock(store.client) if not args.dry_run else None,
            ),
            args.env,
        )
        if args.dry_run:
            seen: list[tuple[promotion.PromotionPlan, repo.Repository]] = []

            def change_for(head: str, model: repo.Repository) -> promotion_commit.Change | None:
                seen.append(
                    (
                        promote_flow.decide(
                            model,
                            environment=args.env,
                            source_commit=head,
                            sources=sources,
                            now=time.time(),
                        ),
                        model,
                    )
                )
                return None

            head = writer.write(f"env/{args.env}", change_for).head_sha
            plan, before = seen[-1]
            commit_sha = None
        else:
            outcome = promote_flow.promote(
                "0" * 40,
                args.env,
                writer=writer,
                sources=sources,
                reporter=LoggedStatuses(),
                now=time.time,
            )
            plan, before = outcome.plan, outcome.repository
            head, commit_sha = outcome.head_sha, outcome.commit_sha
    shown = (document if args.format == "json" else report)(
        plan, before=before, head=head, commit_sha=commit_sha, dry_run=args.dry_run
    )
    print(json.dumps(shown, indent=2) if isinstance(shown, dict) else shown.rstrip("\n"))
    return EXIT_FINDINGS if plan is None or plan.refused else EXIT_OK
