"""The `layering` command line. Each subcommand lives in its own module with a `register`
function; this module only dispatches and turns pipeline errors into one-line messages."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from rich.console import Console

from pipeline import __version__
from pipeline.core.errors import InputError, PipelineError

# Each module defines `register(subparsers) -> None`, setting `handler` on its parser.
COMMAND_MODULES = [
    "lint",
    "plan",
    "render",
    "serve",
    "install_hook",
    "promote",
    "status",
    "base_image",
    "upgrade",
    "build",
    "worker",
    "up",
    "signing_key",
]

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_BAD_INPUT = 2

Handler = Callable[[argparse.Namespace], int]

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="layering",
        description="GitOps for custom layered CoreOS node images.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"pipeline.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except InputError as exc:
        err_console.print(f"layering {args.command}: {exc}", markup=False)
        return EXIT_BAD_INPUT
    except PipelineError as exc:
        err_console.print(f"layering {args.command}: {exc}", markup=False)
        return EXIT_FINDINGS
    except KeyboardInterrupt:
        err_console.print(f"layering {args.command}: interrupted", markup=False)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        err_console.print(
            f"layering {args.command}: internal error: {type(exc).__name__}: {exc} "
            "(run with --debug for a traceback)",
            markup=False,
        )
        return 70


if __name__ == "__main__":
    sys.exit(main())
