"""`layering worker [--queues …] [--concurrency N] [--pool prefork|solo]`: a Celery worker for
workers.app (events, builds and promotions by default). Before it takes a task it checks what
its queues need (workers/startup.py): a `builds` worker resolves the build isolation (oci by
probe, or chroot when set, with a WARNING) and stops with the reason when the host cannot give
what is asked; a `promotions` worker stops without LAYERING_VERIFICATION_KEY. Does I/O (runs
until stopped)."""

from __future__ import annotations

import argparse

from pipeline.cli import EXIT_OK
from pipeline.core import tasks


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "worker", help="run a Celery worker (builds, events, promotions)"
    )
    parser.add_argument(
        "--queues", default=",".join(tasks.QUEUES), help="comma-separated queues to consume"
    )
    parser.add_argument("--concurrency", type=int, default=2, metavar="N")
    parser.add_argument("--pool", choices=("prefork", "solo", "threads"), default="prefork")
    parser.add_argument("--hostname", default="layering@%h", help="worker node name")
    parser.add_argument("--loglevel", default="INFO")
    parser.set_defaults(handler=run)


def argv(args: argparse.Namespace) -> list[str]:
    return [
        "worker",
        f"--pool={args.pool}",
        f"--concurrency={args.concurrency}",
        f"--queues={args.queues}",
        f"--hostname={args.hostname}",
        f"--loglevel={args.loglevel}",
        # no broadcast chatter: workers coordinate through Redis locks, not gossip
        "--without-gossip",
        "--without-mingle",
    ]


def run(args: argparse.Namespace) -> int:
    from workers.app import app

    app.worker_main(argv=argv(args))
    return EXIT_OK
