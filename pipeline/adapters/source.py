"""The inputs of one build from a checkout directory or a Git repository at a commit: the
repository model and the image's build context on disk (the SourceLoader port). Does file and
Git I/O. A commit's image directory is written from the objects of the repository already
open for the model (git_export.py), through one GitRepo per checkout: its cat-file processes
are the only ones a checkout starts.

    CheckoutLoader.from_settings(settings).checkout(source, image=..., commit_sha=...)
    -> context manager of builds.Checkout
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.adapters import fs
from pipeline.adapters import git as gitadapter
from pipeline.core import builds, names, repo, repo_limits
from pipeline.core.errors import InputError
from pipeline.core.settings import Settings


class CheckoutLoader:
    """Checkouts for builds. With `workdir` and `repo_url`, a `source` that is this machine's
    mirror of `repo_url` is cloned or fetched first when it lacks the commit: the event task
    that fetched it may have run on another machine.

    `keep_mirror`: keep that mirror open between checkouts (a worker process's loader, made
    after a prefork fork: workers/build_tasks.py), so a checkout starts no process at all.
    Its cat-file processes see what a later fetch adds (Git looks for new packs when an
    object is missing); it is opened afresh when a checkout fails midway (its pipes may be
    out of step) or the mirror's directory was replaced. One checkout at a time uses it."""

    def __init__(
        self,
        *,
        workdir: Path | None = None,
        repo_url: str | None = None,
        caps: repo_limits.FileCaps = repo_limits.DEFAULT_CAPS,
        keep_mirror: bool = False,
    ) -> None:
        self.workdir = workdir
        self.repo_url = repo_url
        self.caps = caps  # file size caps of the repository files a checkout reads
        self.keep_mirror = keep_mirror
        self._kept: tuple[gitadapter.GitRepo, int] | None = None  # (mirror, its inode)
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, *, keep_mirror: bool = False) -> CheckoutLoader:
        return cls(
            workdir=settings.workdir,
            repo_url=settings.repo_url,
            caps=repo_limits.from_settings(settings),
            keep_mirror=keep_mirror,
        )

    def close(self) -> None:
        """Close the mirror kept open, if any."""
        with self._lock:
            self._drop()

    @contextmanager
    def checkout(
        self, source: Path, *, image: str, commit_sha: str | None
    ) -> Iterator[builds.Checkout]:
        if commit_sha is None or not self._is_mirror(source):
            with checkout(source, image=image, commit_sha=commit_sha, caps=self.caps) as loaded:
                yield loaded
            return
        assert self.repo_url is not None
        _check_image(image)
        with _temporary(image) as directory:
            # one open repository (one pair of cat-file processes) for the whole checkout
            with self._mirror(source, self.repo_url) as mirror:
                mirror.ensure_commit(commit_sha)
                loaded = _load(mirror, image=image, commit_sha=commit_sha, directory=directory)
            yield loaded

    @contextmanager
    def _mirror(self, source: Path, url: str) -> Iterator[gitadapter.GitRepo]:
        if not self.keep_mirror:
            with gitadapter.GitRepo.ensure_mirror(source, url) as mirror:
                mirror.caps = self.caps
                yield mirror
            return
        with self._lock:
            inode = _inode(source)
            if self._kept is None or self._kept[1] != inode:
                self._drop()
                mirror = gitadapter.GitRepo.ensure_mirror(source, url)
                mirror.caps = self.caps
                self._kept = (mirror, _inode(source))
            try:
                yield self._kept[0]
            except BaseException:
                self._drop()
                raise

    def _drop(self) -> None:
        if self._kept is not None:
            self._kept[0].close()
            self._kept = None

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
    _check_image(image)
    if commit_sha is None:
        yield builds.Checkout(fs.load(root, caps), root / repo.IMAGES_DIR / image)
        return
    with _temporary(image) as directory:
        with gitadapter.GitRepo.open(root, caps=caps) as git_repo:
            loaded = _load(git_repo, image=image, commit_sha=commit_sha, directory=directory)
        yield loaded


def _inode(path: Path) -> int:
    """The inode of a mirror's directory (0 when missing): a new one means it was replaced."""
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return 0


def _check_image(image: str) -> None:
    if not names.is_dns_label(image):
        raise InputError(f"image name {image!r} must be a DNS label (a-z, 0-9, '-')")


@contextmanager
def _temporary(image: str) -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix=f"layering-{image}-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _load(
    git_repo: gitadapter.GitRepo, *, image: str, commit_sha: str, directory: Path
) -> builds.Checkout:
    """The repository model at the commit, and the image's directory written below
    `directory` from the repository's objects (git_export.py: no `git archive`, no tar)."""
    commit = git_repo.resolve(commit_sha)
    repository = repo.parse(git_repo.listing(commit, images=[image], machineconfigs=False))
    context = directory / repo.IMAGES_DIR / image
    if image in repository.images:
        git_repo.export(commit, f"{repo.IMAGES_DIR}/{image}", directory)
    return builds.Checkout(repository, context)
