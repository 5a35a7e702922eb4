"""The inputs of one build from a checkout directory or a Git repository at a commit: the
repository model and the image's build context on disk (the SourceLoader port). Does file and
Git I/O.

    CheckoutLoader.from_settings(settings).checkout(source, image=..., commit_sha=...)
    -> context manager of builds.Checkout
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sh

from pipeline.adapters import fs
from pipeline.adapters import git as gitadapter
from pipeline.core import builds, names, redaction, repo, repo_limits
from pipeline.core.errors import InputError, PermanentError
from pipeline.core.settings import Settings


class CheckoutLoader:
    """Checkouts for builds. With `workdir` and `repo_url`, a `source` that is this machine's
    mirror of `repo_url` is cloned or fetched first when it lacks the commit: the event task
    that fetched it may have run on another machine."""

    def __init__(
        self,
        *,
        workdir: Path | None = None,
        repo_url: str | None = None,
        caps: repo_limits.FileCaps = repo_limits.DEFAULT_CAPS,
    ) -> None:
        self.workdir = workdir
        self.repo_url = repo_url
        self.caps = caps  # file size caps of the repository files a checkout reads

    @classmethod
    def from_settings(cls, settings: Settings) -> CheckoutLoader:
        return cls(
            workdir=settings.workdir,
            repo_url=settings.repo_url,
            caps=repo_limits.from_settings(settings),
        )

    @contextmanager
    def checkout(
        self, source: Path, *, image: str, commit_sha: str | None
    ) -> Iterator[builds.Checkout]:
        if commit_sha is not None and self._is_mirror(source):
            assert self.repo_url is not None
            gitadapter.ensure_commit(source, self.repo_url, commit_sha)
        with checkout(source, image=image, commit_sha=commit_sha, caps=self.caps) as loaded:
            yield loaded

    def _is_mirror(self, source: Path) -> bool:
        """Whether `source` is where this machine keeps its mirror of `repo_url`."""
        if self.repo_url is None or self.workdir is None:
            return False
        return source.resolve() == gitadapter.mirror_path(self.workdir, self.repo_url)


@contextmanager
def checkout(
    root: Path,
    *,
    image: str,
    commit_sha: str | None = None,
    caps: repo_limits.FileCaps = repo_limits.DEFAULT_CAPS,
) -> Iterator[builds.Checkout]:
    """`root` at `commit_sha` (a Git work tree or bare mirror), or as it is on disk when no
    commit is given. The build context of a commit is exported to a temporary directory and
    removed on exit."""
    if not names.is_dns_label(image):
        raise InputError(f"image name {image!r} must be a DNS label (a-z, 0-9, '-')")
    if commit_sha is None:
        yield builds.Checkout(fs.load(root, caps), root / repo.IMAGES_DIR / image)
        return
    with gitadapter.GitRepo.open(root, caps=caps) as git_repo:
        commit = git_repo.resolve(commit_sha)
        repository = repo.parse(git_repo.listing(commit, images=[image], machineconfigs=False))
    directory = Path(tempfile.mkdtemp(prefix=f"layering-{image}-"))
    try:
        if image in repository.images:
            _export(root, commit, f"{repo.IMAGES_DIR}/{image}", directory)
        yield builds.Checkout(repository, directory / repo.IMAGES_DIR / image)
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
