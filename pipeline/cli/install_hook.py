"""`layering install-hook`: install the shipped post-receive hook into a bare repository of a
plain Git server, so that `git push` drives the pipeline through POST /webhook/git. The work is
in pipeline/adapters/hook.py. Does file and Git I/O."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.adapters import hook

# the installer, under the name scripts and tests call (install_hook.install)
install = hook.install


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "install-hook",
        help="install the post-receive hook into a bare Git repository",
        description="Copy the post-receive hook into BARE/hooks and record its settings in "
        "BARE's Git config; each push then posts a signed push event to --url.",
    )
    parser.add_argument("--repo", type=Path, required=True, help="the bare repository")
    parser.add_argument(
        "--url", required=True, help="the receiver's endpoint, e.g. http://host:8080/webhook/git"
    )
    parser.add_argument(
        "--secret-file",
        type=Path,
        required=True,
        help="file holding the webhook secret (readable by the Git server's user)",
    )
    parser.add_argument(
        "--repo-url",
        default=None,
        help="the URL the pipeline clones (LAYERING_REPO_URL; default: file://BARE)",
    )
    parser.add_argument("--full-name", default=None, help="owner/name (optional)")
    parser.add_argument(
        "--force", action="store_true", help="replace a post-receive hook that is not ours"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    installed = hook.install(
        args.repo,
        url=args.url,
        secret_file=args.secret_file,
        repo_url=args.repo_url,
        full_name=args.full_name,
        force=args.force,
    )
    print(f"installed {installed}")
    return 0
