"""`layering status [--repo PATH] [--rev REV] [--format text|json]`: per environment, cluster
and pool, the promoted digest, its verification (rollout- or time-based), the rollout and the
base image check, from the service's Redis.

Text on a terminal is a table per environment; piped, the same sections are plain columns
(no box drawing, nothing cut or wrapped, so `grep` and `awk` see whole values)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from pipeline.adapters import fs, promotion_store
from pipeline.adapters import git as gitadapter
from pipeline.adapters.environment import load_settings
from pipeline.cli import EXIT_OK
from pipeline.core import pool_status

COLUMNS = ("cluster", "environment", "pool", "image", "digest", "verification", "rollout", "base")
# the environment is the section heading, not a column
SHOWN = tuple(column for column in COLUMNS if column != "environment")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("status", help="promoted digests, verification, rollout")
    parser.add_argument("--repo", type=Path, default=Path("."), help="checkout or Git repository")
    parser.add_argument("--rev", help="read the repository at this revision (Git)")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.set_defaults(handler=run)


def sections(rows: Sequence[Mapping[str, str]]) -> dict[str, list[Mapping[str, str]]]:
    """Rows grouped by environment, in the order the environments first appear."""
    grouped: dict[str, list[Mapping[str, str]]] = {}
    for row in rows:
        grouped.setdefault(row["environment"], []).append(row)
    return grouped


def plain_table(columns: Sequence[str], rows: Sequence[Mapping[str, str]]) -> list[str]:
    """Left-aligned columns two spaces apart, upper-case headings, every value whole."""
    widths = [max([len(column), *(len(row[column]) for row in rows)]) for column in columns]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += [
        "  ".join(row[c].ljust(w) for c, w in zip(columns, widths, strict=True)) for row in rows
    ]
    return [line.rstrip() for line in lines]


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    if args.rev:
        with gitadapter.GitRepo.open(args.repo) as reader:
            model = reader.load(args.rev)
    else:
        model = fs.load(args.repo)
    store = promotion_store.PromotionStore.from_settings(settings, signing=False)
    rows = pool_status.status_rows(model, store.pool_records(model.clusters), now=time.time())
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    source = f"{args.repo} at {args.rev}" if args.rev else str(args.repo)
    if not rows:
        print(f"No pools in {source}: no cluster.yaml assigns an image to a pool.")
        return EXIT_OK
    grouped = sections(rows)
    if not sys.stdout.isatty():
        blocks = [
            "\n".join([f"Environment {environment} (env/{environment})", *plain_table(SHOWN, rows)])
            for environment, rows in grouped.items()
        ]
        print(f"Pools of {source}\n\n" + "\n\n".join(blocks))
        return EXIT_OK
    console = Console(highlight=False)
    console.print(f"Pools of {source}", markup=False)
    for environment, section in grouped.items():
        title = Text(f"Environment {environment} (env/{environment})", style="bold")
        table = Table(*SHOWN, title=title, title_justify="left")
        for row in section:
            # Text: values (messages from clusters, Git) are never read as rich markup
            table.add_row(*(Text(row[column]) for column in SHOWN))
        console.print(table)
    return EXIT_OK
