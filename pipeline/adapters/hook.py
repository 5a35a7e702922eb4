"""The shipped post-receive hook (pipeline/hooks/post_receive.py) installed into a bare
repository of a plain Git server, with its settings in that repository's Git config, so that
`git push` drives the pipeline through POST /webhook/git. Used by `layering install-hook` and
by `layering up`'s sandbox. Does file and process (git config) I/O."""

from __future__ import annotations

import shutil
import subprocess
from importlib import resources
from pathlib import Path

from pipeline.core.errors import InputError

HOOK_NAME = "post-receive"
HOOK_SOURCE = "post_receive.py"  # a .py file so that ruff and mypy check it
MARKER = "coreos-layering-pipeline post-receive hook"


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
    """Install the hook into `bare`/hooks (replacing an earlier copy of ours, or anything with
    `force`) and record url, secret file, clone URL and full name in its config."""
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
