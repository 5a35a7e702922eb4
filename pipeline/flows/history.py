"""The build plan of a commit range, from the Git history: chooses what to compare with, reads
only what the plan needs through adapters.git, and lets changes.plan decide. Does Git I/O.

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
from typing import Literal

from pipeline.adapters import git as gitadapter
from pipeline.core import changes, repo
from pipeline.core.errors import InputError

_TOP = (repo.IMAGES_DIR, repo.CLUSTERS_DIR)


def plan_range(
    git_repo: gitadapter.GitRepo,
    from_rev: str,
    to_rev: str,
    default_branch: str = "main",
    *,
    branch: str | None = None,
    unknown_from: Literal["error", "default-branch"] = "error",
) -> changes.Plan:
    """What the push of `from_rev..to_rev` (to `branch`, when known) must build and promote."""
    if to_rev == gitadapter.ZERO_SHA:
        return changes.Plan(note="branch deleted: nothing to build")
    head = git_repo.resolve(to_rev)
    base, note = _base(git_repo, from_rev, head, default_branch, branch, unknown_from)
    result = plan_commits(git_repo, base, head)
    return dataclasses.replace(result, base=base, head=head, note=note)


def _base(
    git_repo: gitadapter.GitRepo,
    from_rev: str,
    head: str,
    default_branch: str,
    branch: str | None,
    unknown_from: str,
) -> tuple[str | None, str]:
    if from_rev != gitadapter.ZERO_SHA:
        try:
            old = git_repo.resolve(from_rev)
        except InputError:
            if unknown_from == "error":
                raise
            return _default_branch_base(git_repo, head, default_branch, f"{from_rev} unknown")
        if git_repo.is_ancestor(old, head):
            return old, ""
        common = git_repo.merge_base(old, head)
        if common is not None:
            return common, f"force push: compared with the merge base of {old[:12]} and {head[:12]}"
        return _default_branch_base(git_repo, head, default_branch, "force push, unrelated history")
    if branch is not None and branch == default_branch:
        return None, f"first push of the default branch {default_branch}: everything counts"
    return _default_branch_base(git_repo, head, default_branch, "new branch")


def _default_branch_base(
    git_repo: gitadapter.GitRepo, head: str, default_branch: str, why: str
) -> tuple[str | None, str]:
    tip = gitadapter.branch_commit(git_repo, default_branch)
    if tip is None:
        return None, f"{why}: default branch {default_branch} not found, everything counts"
    common = git_repo.merge_base(tip, head)
    if common is None:
        return None, f"{why}: no common history with {default_branch}, everything counts"
    return common, f"{why}: compared with the merge base with {default_branch}"


def plan_commits(git_repo: gitadapter.GitRepo, base: str | None, head: str) -> changes.Plan:
    """changes.plan for two commits (base None: everything changed), reading lazily."""
    if base is None:
        after = repo.parse(git_repo.listing(head, machineconfigs=False))
        return changes.plan([], before=None, after=after)
    paths = git_repo.changed_paths(base, head, prefixes=_TOP)
    if not paths:
        return changes.Plan()
    wanted = changes.changed_images(paths)
    after = repo.parse(git_repo.listing(head, images=wanted, machineconfigs=False))
    before = after
    if changes.changed_cluster_files(paths):
        before = repo.parse(git_repo.listing(base, images=(), machineconfigs=False))
    more = {image for image, _ in changes.rebuilds(paths, before=before, after=after)} - wanted
    if more:
        after = repo.parse(git_repo.listing(head, images=wanted | more, machineconfigs=False))
    return changes.plan(paths, before=before, after=after)
