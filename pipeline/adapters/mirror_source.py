"""The Mirror port: the worker's bare mirror of the GitOps repository as the source of an event,
fetched and opened for reading; its path is what "layering.build" names as `source`. Where the
mirror lives and how it is cloned is git_mirror.py. The URL comes from settings, never from a
payload. Does Git and network I/O."""

from __future__ import annotations

from pathlib import Path

from pipeline.adapters import git as gitadapter
from pipeline.core.errors import TemporaryError


class MirrorSource:
    def __init__(self, workdir: Path, url: str | None) -> None:
        self._url = url
        self._path = gitadapter.mirror_path(workdir, url or "")

    @property
    def source(self) -> str:
        return str(self._path)

    def fetch(self, *refs: str) -> gitadapter.GitRepo:
        """The mirror, cloned when missing and fetched (`refs`; none: everything). A GitRepo is
        its own context manager: `with mirror.fetch(...) as git_repo:` closes it."""
        if not self._url:
            raise TemporaryError(
                "LAYERING_REPO_URL is not set: no repository to fetch", retry_after=60
            )
        opened = gitadapter.GitRepo.ensure_mirror(self._path, self._url)
        try:
            opened.fetch(*refs)
        except BaseException:
            opened.close()
            raise
        return opened
