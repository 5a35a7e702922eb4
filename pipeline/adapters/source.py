"""The inputs of one build from a checkout directory or a Git repository at a commit: the
repository model and the image's build context on disk. Does file and Git I/O."""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sh

from pipeline.adapters import fs
from pipeline.adapters import git as gitadapter
from pipeline.core import names, redaction, repo
from pipeline.core.errors import InputError, PermanentError


@dataclass(frozen=True)
class Source:
    repository: repo.Repository
    context: Path  # images/<image>/ as a directory on disk


@contextmanager
def checkout(root: Path, *, image: str, commit_sha: str | None = None) -> Iterator[Source]:
    """`root` at `commit_sha` (a Git work tree or bare mirror), or as it is on disk when no
    commit is given. The build context of a commit is exported to a temporary directory and
    removed on exit."""
    if not names.is_dns_label(image):
        raise InputError(f"image name {image!r} must be a DNS label (a-z, 0-9, '-')")
    if commit_sha is None:
        yield Source(fs.load(root), root / repo.IMAGES_DIR / image)
        return
    with gitadapter.GitRepo.open(root) as git_repo:
        commit = git_repo.resolve(commit_sha)
        repository = repo.parse(git_repo.listing(commit, images=[image], machineconfigs=False))
    directory = Path(tempfile.mkdtemp(prefix=f"layering-{image}-"))
    try:
        if image in repository.images:
            _export(root, commit, f"{repo.IMAGES_DIR}/{image}", directory)
        yield Source(repository, directory / repo.IMAGES_DIR / image)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _export(root: Path, commit: str, path: str, destination: Path) -> None:
    archive = destination / ".export.tar"
    try:
        sh.git(
            "-C", str(root), "archive", "--format=tar", f"--output={archive}", commit, "--", path
        )
    except sh.ErrorReturnCode as exc:
        stderr = redaction.scrub(exc.stderr.decode(errors="replace").strip()[-500:])
        raise PermanentError(f"git archive {commit} {path} in {root} failed: {stderr}") from None
    with tarfile.open(archive) as tar:
        tar.extractall(destination, filter="data")
    archive.unlink()
