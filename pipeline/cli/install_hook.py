"""`layering install-hook`: install the shipped post-receive hook into a bare repository of a
plain Git server, so that `git push` drives the pipeline through POST /webhook/git. Does file
and Git I/O."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from pipeline.core.errors import InputError

HOOK_NAME = "post-receive"
HOOK_SOURCE = "post_receive.py"  # a .py file so that ruff and mypy check it
MARKER = "coreos-layering-pipeline post-receive hook"


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


def hook_source() -> bytes:
    return resources.files("pipeline").joinpath("hooks", HOOK_SOURCE).read_bytes()


def install(
    bare: Path,
    *,
    url: str,
    secret_file: Path,
    repo_url: str | None = None,
    full_name: str | None = None,
    force: bool = False,
) -> Path:
    bare = bare.resolve()
    if not (bare / "HEAD").is_file() or not (bare / "objects").is_dir():
        raise InputError(f"{bare}: not a bare Git repository (no HEAD and objects/)")
    if not url.startswith(("http://", "https://")):
        raise InputError(f"--url {url!r}: must be an http:// or https:// URL")
    if not secret_file.is_file():
        raise InputError(f"--secret-file {secret_file}: no such file")
    hook = bare / "hooks" / HOOK_NAME
    if hook.exists() and MARKER.encode() not in hook.read_bytes() and not force:
        raise InputError(f"{hook}: a post-receive hook that is not ours exists; pass --force")
    hook.parent.mkdir(exist_ok=True)
    staging = hook.with_name(f".{HOOK_NAME}.new")
    staging.write_bytes(hook_source())
    staging.chmod(0o755)
    staging.replace(hook)
    git = shutil.which("git") or "git"
    values = {
        "layering.url": url,
        "layering.secretFile": str(secret_file.resolve()),
        "layering.repoUrl": repo_url or bare.as_uri(),
    }
    if full_name:
        values["layering.fullName"] = full_name
    for key, value in values.items():
        subprocess.run(
            [git, "config", "--file", str(bare / "config"), key, value],
            check=True,
            capture_output=True,
        )
    return hook


def run(args: argparse.Namespace) -> int:
    hook = install(
        args.repo,
        url=args.url,
        secret_file=args.secret_file,
        repo_url=args.repo_url,
        full_name=args.full_name,
        force=args.force,
    )
    print(f"installed {hook}")
    return 0
