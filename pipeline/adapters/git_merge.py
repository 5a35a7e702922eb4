"""A pull request's merge computed without a work tree: `git merge-tree --write-tree`
(Git >= 2.38) and `git commit-tree` with a fixed identity and dates, so the same base and head
always give the same merge commit, on no ref. Does process I/O (runs git);
`GitRepo.merge` (git.py) is the entry point."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import git

from pipeline.adapters import git_errors
from pipeline.core.errors import PermanentError

_SHA = re.compile(r"^[0-9a-f]{40}$")
# the merge commits made here are previews on no ref: fixed identity and dates, so the same
# base and head always give the same commit
_MERGE_IDENTITY = {
    "GIT_AUTHOR_NAME": "coreos-layering-pipeline",
    "GIT_AUTHOR_EMAIL": "layering-pipeline@users.noreply.localhost",
    "GIT_AUTHOR_DATE": "1970-01-01T00:00:00+0000",
    "GIT_COMMITTER_NAME": "coreos-layering-pipeline",
    "GIT_COMMITTER_EMAIL": "layering-pipeline@users.noreply.localhost",
    "GIT_COMMITTER_DATE": "1970-01-01T00:00:00+0000",
}


@dataclass(frozen=True)
class Merge:
    """What merging a head into a base gives: a merge commit, or the paths that conflict."""

    commit_sha: str | None  # None when the merge conflicts or the histories are unrelated
    conflicts: tuple[str, ...] = ()
    source: str = ""  # the ref the merge commit was read from, or "computed"
    unrelated: bool = False  # no common history: git refuses to merge at all


def compute(
    command: git.Git, base: str, head: str, *, where: Path, message: str | None = None
) -> Merge:
    """Merge the commits `head` into `base` (full shas with a common history) in the
    repository `command` runs in: the merge commit (its message `message`, by default naming
    the shas), or the conflicting paths."""
    status, out, err = command.merge_tree(
        "--write-tree",
        "--name-only",
        "--no-messages",
        base,
        head,
        with_extended_output=True,
        with_exceptions=False,
    )
    lines = [line for line in str(out).splitlines() if line]
    if status == 1 and lines:
        return Merge(None, tuple(sorted(set(lines[1:]))), source="computed")
    if status != 0 or not lines or not _SHA.match(lines[0]):
        raise PermanentError(
            f"git merge-tree {base[:12]} {head[:12]} in {where} failed (exit {status}): "
            f"{git_errors.strip_credentials(str(err).strip())[-git_errors.STDERR_TAIL :]}"
        )
    commit = command.commit_tree(
        lines[0],
        "-p",
        base,
        "-p",
        head,
        "-m",
        message or f"Merge {head} into {base}",
        env=_MERGE_IDENTITY,
    )
    return Merge(str(commit).strip(), source="computed")
