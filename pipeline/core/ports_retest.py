"""The port a `/retest` needs of the head store beyond `ports.HeadStore`: read a scope's head
and swap re-run builds into it (adapters/head_store.py). No I/O."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

from pipeline.core import head


class RetestHeads(Protocol):
    """The head of each pull request, read and updated for a re-run."""

    def get(self, scope: str) -> head.Head | None: ...

    def record_rerun(
        self, scope: str, sha: str, *, replaced: Collection[str], builds: Sequence[head.HeadBuild]
    ) -> head.Head | None:
        """Apply retest.with_rerun atomically: None once recorded; else the head that took the
        scope meanwhile (the caller cancels `builds`)."""
