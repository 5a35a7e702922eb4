"""`layering promote --env E [--repo URL|PATH] [--dry-run]`: run a promotion of env/<E> from
this machine (same code as the worker); with --dry-run, show the diff it would commit."""

from __future__ import annotations

import argparse
import difflib
import re
import tempfile
import time
from pathlib import Path

import redis

from pipeline import promoting, promotion, repo
from pipeline.adapters import gitwrite, registry
from pipeline.adapters.promotions import PromotionStore
from pipeline.cli import EXIT_FINDINGS, EXIT_OK
from pipeline.errors import InputError
from pipeline.settings import load_settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("promote", help="promote an environment branch now")
    parser.add_argument("--env", required=True, metavar="ENVIRONMENT")
    parser.add_argument(
        "--repo", metavar="URL|PATH", help="upstream repository (default: LAYERING_REPO_URL)"
    )
    parser.add_argument("--dry-run", action="store_true", help="show the diff, commit nothing")
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


class EnvironmentWriter:
    """Refuses an environment that has no cluster on its branch before anything is planned."""

    def __init__(self, writer: gitwrite.BranchWriter, environment: str) -> None:
        self._writer = writer
        self._environment = environment

    def write(self, branch: str, change_for: gitwrite.ChangeFor) -> gitwrite.WriteResult:
        def checked(head: str, model: repo.Repository) -> gitwrite.Change | None:
            if not model.clusters_in(self._environment):
                known = sorted({c.environment for c in model.clusters.values()})
                raise InputError(
                    f"no cluster of environment {self._environment!r} on {branch} "
                    f"(environments there: {', '.join(known) or 'none'})"
                )
            return change_for(head, model)

        return self._writer.write(branch, checked)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    given: str | None = args.repo or settings.repo_url
    if not given:
        raise InputError("no repository: pass --repo or set LAYERING_REPO_URL")
    url = repository_url(given)
    store = PromotionStore(redis.Redis.from_url(settings.redis_url.get_secret_value()))
    source = registry.Registry.from_settings(settings)
    with tempfile.TemporaryDirectory(prefix="layering-promote-") as scratch:
        writer = EnvironmentWriter(
            gitwrite.BranchWriter(
                url=url,
                workdir=Path(scratch),
                lock=gitwrite.RedisBranchLock(store.client) if not args.dry_run else None,
            ),
            args.env,
        )
        if args.dry_run:
            seen: list[tuple[promotion.PromotionPlan, repo.Repository]] = []

            def change_for(head: str, model: repo.Repository) -> gitwrite.Change | None:
                seen.append(
                    (
                        promoting.decide(
                            model,
                            environment=args.env,
                            source_commit=head,
                            registry=source,
                            store=store,
                            now=time.time(),
                        ),
                        model,
                    )
                )
                return None

            writer.write(f"env/{args.env}", change_for)
            plan, model = seen[-1]
            print("\n".join(promotion.diff_summary(plan)))
            print(diff(plan, model), end="")
            return EXIT_FINDINGS if plan.refused else EXIT_OK
        outcome = promoting.promote(
            "0" * 40,
            args.env,
            writer=writer,
            registry=source,
            store=store,
            reporter=promoting.LogReporter(),
            now=time.time,
        )
    if outcome.plan is not None:
        print("\n".join(promotion.diff_summary(outcome.plan)))
    print(f"committed {outcome.commit_sha}" if outcome.commit_sha else "nothing committed")
    return EXIT_FINDINGS if outcome.plan is None or outcome.plan.refused else EXIT_OK
