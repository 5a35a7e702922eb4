"""The Mirror port: the worker's bare mirror of the GitOps repository as the source of an event,
fetched and opened for reading; its path is what "layering.build" names as `source`. Where the
mirror lives and how it is cloned is git_mirror.py. The URL comes from settings, never from a
payload. Does Git and network I/O."""

from __future__ import annotations

from pathlib import Path

from pipeline.adapters import git as gitadapter
from pipeline.core import repo_limits
from pipeline.core.errors import TemporaryError


class MirrorSource:
    def __init__(
        self,
        workdir: Path,
        url: str | None,
        *,
        caps: repo_limits.FileCaps = repo_limits.DEFAULT_CAPS,
    ) -> None:
        self._url = url
        self._path = gitadapter.mirror_path(workdir, url or "")
        self._caps = caps  # the file size caps of the mirror's listings

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
        opened.caps = self._caps
        try:
            opened.fetch(*refs)
        except BaseException:
            opened.close()
            raise
        return opened
