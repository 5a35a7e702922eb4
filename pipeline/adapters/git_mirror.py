"""The workers' bare mirrors of the watched repository: where each lives (one per repository
URL under the workdir), the first `git clone --mirror` (made beside the target and renamed, so
an interrupted clone leaves nothing), keeping `origin` at the configured URL, and the file
locks that keep several worker processes from cloning or fetching into one mirror at once.
Credentials in the URL stay out of git's argv and the mirror's config (git_auth.py). Does file,
process and network I/O. `GitRepo.ensure_mirror` (git.py) is the entry point."""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import git

from pipeline.adapters import git_auth, git_errors


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive `flock` on `path` (created when missing) for the duration of the block."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def mirror_path(workdir: Path, url: str) -> Path:
    """Where a worker keeps its bare mirror of `url`: one per repository URL under the workdir,
    the same path on every machine, so a task can name it and any worker can (re)create it."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return workdir.resolve() / "mirrors" / f"{digest}.git"


def clone_lock(path: Path) -> Path:
    """The lock file guarding the first clone into `path`."""
    return path.parent / f".{path.name}.lock"


def fetch_lock(git_dir: Path) -> Path:
    """The lock file guarding fetches into the repository at `git_dir`."""
    return git_dir / "layering-fetch.lock"


def is_repository(path: Path) -> bool:
    """Whether `path` already holds a repository (a finished clone)."""
    return (path / "HEAD").is_file() and (path / "objects").is_dir()


def keep_origin(repository: git.Repo, url: str) -> None:
    """Point the mirror's `origin` at `url` (settings may have changed since the clone; a
    mirror cloned before credentials left URLs loses the one stored in its config here)."""
    origin = repository.remotes.origin if repository.remotes else None
    if origin is None:
        repository.create_remote("origin", url, mirror=True)
    elif origin.url != url:
        origin.set_url(url)


def prepare(path: Path, url: str, *, env: Mapping[str, str]) -> git_auth.Remote:
    """Make `path` a mirror of `url`: cloned when missing, else its `origin` kept at `url`
    without credentials. Returns the remote: the clean URL and the environment its git
    processes need to authenticate (git_auth.py)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remote = git_auth.remote(url)
    # workers in several processes may make the first clone at once: one clones, the
    # others wait on the lock and then open what it made
    with file_lock(clone_lock(path)):
        if is_repository(path):
            with git.Repo(path) as repository:
                keep_origin(repository, remote.url)
        else:
            clone(remote.url, path, env={**env, **remote.env}, shown=url)
    return remote


def clone(url: str, path: Path, *, env: Mapping[str, str], shown: str | None = None) -> None:
    """`git clone --mirror url path`, into a staging directory beside `path` that is renamed
    into place once complete. Call it holding the clone lock. `url` carries no credentials
    (they are in `env`, git_auth.py): it is on git's argv and stays in the mirror's config.
    `shown`: the configured URL to name in an error (its credentials masked)."""
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        git.Repo.clone_from(url, staging, mirror=True, env=dict(env))
        if path.exists():
            path.rmdir()  # an empty directory only; anything else is not ours
        staging.rename(path)
    except git.GitCommandError as exc:
        raise git_errors.translate(f"git clone --mirror {shown or url}", exc) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
