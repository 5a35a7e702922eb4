"""Where a build from a checkout comes from, for its `org.opencontainers.image.revision` and
`.source` labels: the commit (HEAD, or the one `--commit` names) and the remote's URL without
credentials. Used by `layering build`; the worker takes both from its event instead. Does I/O
(reads the repository with GitPython).

A label that would not be true is left out, with a note saying why: a directory that is not a
Git checkout, uncommitted changes in what the build reads (the image's directory or the
cluster's), a repository without a remote.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import git

from pipeline.core import redaction
from pipeline.core.builds import LABEL_REVISION, LABEL_SOURCE


@dataclass(frozen=True)
class Provenance:
    revision: str = ""  # a full commit sha, or "" when the build's inputs are not one commit
    source_url: str = ""  # the remote's URL without credentials, or ""
    notes: tuple[str, ...] = ()  # why a label is missing, each said once


def read(root: Path, *, image: str, cluster: str, commit: str | None = None) -> Provenance:
    """The provenance of building `image` for `cluster` from the checkout at `root` (as of
    `commit` when given, else the work tree at HEAD)."""
    try:
        repository = git.Repo(root, search_parent_directories=False)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return Provenance(
            notes=(
                f"{root} is not a Git checkout: built without the {LABEL_REVISION} and "
                f"{LABEL_SOURCE} labels",
            )
        )
    with repository:
        notes: list[str] = []
        revision = _revision(repository, image=image, cluster=cluster, commit=commit, notes=notes)
        url = _remote_url(repository)
        if not url:
            notes.append(f"{root} has no Git remote: built without the {LABEL_SOURCE} label")
        return Provenance(revision, redaction.public_url(url), tuple(notes))


def _revision(
    repository: git.Repo, *, image: str, cluster: str, commit: str | None, notes: list[str]
) -> str:
    try:
        sha = repository.commit(commit or "HEAD").hexsha
    except (ValueError, git.BadName, git.GitCommandError):
        notes.append(
            f"{commit or 'HEAD'} is not a commit of this checkout: built without the "
            f"{LABEL_REVISION} label"
        )
        return ""
    if commit is not None:
        return str(sha)  # built from the commit's objects, whatever the work tree holds
    inputs = [f"images/{image}", f"clusters/{cluster}"]
    changed = sorted(
        {
            path
            for path in inputs
            if repository.is_dirty(index=True, working_tree=True, untracked_files=True, path=path)
        }
    )
    if changed:
        notes.append(
            f"uncommitted changes under {', '.join(changed)}: built without the "
            f"{LABEL_REVISION} label (commit them, or build a commit with --commit)"
        )
        return ""
    return str(sha)


def _remote_url(repository: git.Repo) -> str:
    """The URL of the current branch's upstream remote, else `origin`, else the only one."""
    remotes = {remote.name: remote for remote in repository.remotes}
    try:
        tracking = repository.active_branch.tracking_branch()
    except (TypeError, ValueError):  # a detached HEAD has no branch
        tracking = None
    name = tracking.remote_name if tracking is not None else None
    chosen = remotes.get(name or "") or remotes.get("origin")
    if chosen is None and len(remotes) == 1:
        chosen = next(iter(remotes.values()))
    if chosen is None:
        return ""
    try:
        return str(chosen.url)
    except (git.GitCommandError, ValueError):
        return ""
