"""The build plan of a commit range, from the Git history: chooses what to compare with, reads
only what the plan needs through the GitHistory port (ports.py), and lets changes.plan decide.
`read_range` also hands back the head's repository model as the plan read it, so that an event
parses its repository once. I/O only through the port.

Choosing the base (SPEC section 3):

- `to` all zeros (branch deleted): nothing to build;
- `from` all zeros (new branch): the merge base of `to` with the default branch; when the
  pushed branch is the default branch itself, the default branch does not exist, or the
  histories are unrelated, everything counts as changed;
- `from` not an ancestor of `to` (force push): the merge base of `from` and `to`, which
  is what the new head adds over the history both share (what was built for the old head
  beyond it is not reused by name, but by build key). Without a common ancestor: the
  default branch's merge base, else everything;
- an unknown revision is an InputError naming it; with `unknown_from="default-branch"` an
  unknown `from` (a force push whose old head this mirror never fetched) is treated like a
  new branch instead.

What is read: the tree diff below images/ and clusters/, every cluster.yaml of `to`, the
Containerfile and image.yaml of images that get built, and the cluster.yaml files of `from`
only when some changed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from pipeline.core import changes, head, ports, repo
from pipeline.core.errors import InputError

_TOP = (repo.IMAGES_DIR, repo.CLUSTERS_DIR)


@dataclass(frozen=True)
class Range:
    """The plan of a commit range and the head's repository model it was made from (partial:
    every cluster.yaml, and the Containerfile and image.yaml of the images that changed or get
    built; None when nothing was read)."""

    plan: changes.Plan
    repository: repo.Repository | None = None


def plan_range(
    git_repo: ports.GitHistory,
    from_rev: str,
    to_rev: str,
    default_branch: str = "main",
    *,
    branch: str | None = None,
    unknown_from: Literal["error", "default-branch"] = "error",
) -> changes.Plan:
    """What the push of `from_rev..to_rev` (to `branch`, when known) must build and promote."""
    return read_range(
        git_repo, from_rev, to_rev, default_branch, branch=branch, unknown_from=unknown_from
    ).plan


def read_range(
    git_repo: ports.GitHistory,
    from_rev: str,
    to_rev: str,
    default_branch: str = "main",
    *,
    branch: str | None = None,
    unknown_from: Literal["error", "default-branch"] = "error",
    machineconfigs: bool = False,
) -> Range:
    """`plan_range` with the head's repository model; `machineconfigs` reads the clusters'
    MachineConfigs into it too (lint needs them; the plan does not)."""
    if to_rev == head.ZERO_SHA:
        return Range(changes.Plan(note="branch deleted: nothing to build"))
    to_commit = git_repo.resolve(to_rev)
    base, note = _base(git_repo, from_rev, to_commit, default_branch, branch, unknown_from)
    result = read_commits(git_repo, base, to_commit, machineconfigs=machineconfigs)
    plan = dataclasses.replace(result.plan, base=base, head=to_commit, note=note)
    return Range(plan, result.repository)


def _base(
    git_repo: ports.GitHistory,
    from_rev: str,
    to_commit: str,
    default_branch: str,
    branch: str | None,
    unknown_from: str,
) -> tuple[str | None, str]:
    if from_rev != head.ZERO_SHA:
        try:
            old = git_repo.resolve(from_rev)
        except InputError:
            if unknown_from == "error":
                raise
            return _default_branch_base(git_repo, to_commit, default_branch, f"{from_rev} unknown")
        if git_repo.is_ancestor(old, to_commit):
            return old, ""
        common = git_repo.merge_base(old, to_commit)
        if common is not None:
            return (
                common,
                f"force push: compared with the merge base of {old[:12]} and {to_commit[:12]}",
            )
        return _default_branch_base(
            git_repo, to_commit, default_branch, "force push, unrelated history"
        )
    if branch is not None and branch == default_branch:
        return None, f"first push of the default branch {default_branch}: everything counts"
    return _default_branch_base(git_repo, to_commit, default_branch, "new branch")


def _branch_commit(git_repo: ports.GitHistory, branch: str) -> str | None:
    """The commit of a branch: `refs/heads/<branch>`, else `refs/remotes/origin/<branch>`."""
    for name in (f"refs/heads/{branch}", f"refs/remotes/origin/{branch}"):
        try:
            return git_repo.resolve(name)
        except InputError:
            continue
    return None


def _default_branch_base(
    git_repo: ports.GitHistory, to_commit: str, default_branch: str, why: str
) -> tuple[str | None, str]:
    tip = _branch_commit(git_repo, default_branch)
    if tip is None:
        return None, f"{why}: default branch {default_branch} not found, everything counts"
    common = git_repo.merge_base(tip, to_commit)
    if common is None:
        return None, f"{why}: no common history with {default_branch}, everything counts"
    return common, f"{why}: compared with the merge base with {default_branch}"


def plan_commits(git_repo: ports.GitHistory, base: str | None, to_commit: str) -> changes.Plan:
    """changes.plan for two commits (base None: everything changed), reading lazily."""
    return read_commits(git_repo, base, to_commit).plan


def read_commits(
    git_repo: ports.GitHistory, base: str | None, to_commit: str, *, machineconfigs: bool = False
) -> Range:
    """`plan_commits` with the head's repository model (see `read_range`)."""
    if base is None:
        after = repo.parse(git_repo.listing(to_commit, machineconfigs=machineconfigs))
        return Range(changes.plan([], before=None, after=after), after)
    paths = git_repo.changed_paths(base, to_commit, prefixes=_TOP)
    if not paths:
        return Range(changes.Plan())
    wanted = changes.changed_images(paths)
    after = repo.parse(git_repo.listing(to_commit, images=wanted, machineconfigs=machineconfigs))
    before = after
    if changes.changed_cluster_files(paths):
        before = repo.parse(git_repo.listing(base, images=(), machineconfigs=False))
    more = {image for image, _ in changes.rebuilds(paths, before=before, after=after)} - wanted
    if more:
        after = repo.parse(
            git_repo.listing(to_commit, images=wanted | more, machineconfigs=machineconfigs)
        )
    return Range(changes.plan(paths, before=before, after=after), after)
