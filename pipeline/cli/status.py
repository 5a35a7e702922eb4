"""`layering status [--repo PATH] [--rev REV]`: per cluster and pool, the promoted digest, its
verification (rollout- or time-based) and the rollout, from the service's Redis."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pipeline import promoting
from pipeline.adapters import fs
from pipeline.adapters import git as gitadapter
from pipeline.adapters.promotions import PromotionStore
from pipeline.cli import EXIT_OK
from pipeline.settings import load_settings

COLUMNS = ("cluster", "environment", "pool", "image", "digest", "verification", "rollout", "base")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("status", help="promoted digests, verification, rollout")
    parser.add_argument("--repo", type=Path, default=Path("."), help="checkout or Git repository")
    parser.add_argument("--rev", help="read the repository at this revision (Git)")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    if args.rev:
        with gitadapter.GitRepo.open(args.repo) as reader:
            model = reader.load(args.rev)
    else:
        model = fs.load(args.repo)
    store = PromotionStore.from_url(settings.redis_url.get_secret_value())
    rows = promoting.status_rows(model, store, now=time.time())
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    table = Table(*COLUMNS)
    for row in rows:
        table.add_row(*(row[column] for column in COLUMNS))
    # piped output keeps whole cells (no terminal width to fit; grep must find cluster names)
    width = None if sys.stdout.isatty() else 1000
    Console(highlight=False, soft_wrap=True, width=width).print(table)
    return EXIT_OK
