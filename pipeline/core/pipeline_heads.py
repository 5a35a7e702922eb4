"""The builds of the current heads as the pipeline view shows them (pipeline_view.py): the
newest open heads, grouped by commit, each build with its state and lint state (the
Containerfile lint the head recorded, and the content lint of the built image). No I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.core import builds, head, head_lint

MAX_HEADS = 10
MAX_HEAD_BUILDS = 40


@dataclass(frozen=True)
class HeadBuildView:
    build_id: str  # "" for an image held back by its lint errors: no build
    image: str
    cluster: str
    state: str
    lint: str


@dataclass(frozen=True)
class CommitGroup:
    commit_sha: str
    scopes: tuple[str, ...]  # "main", "PR #3"
    state: str  # the worst build state: failed > running > queued > succeeded
    lint: str
    builds: tuple[HeadBuildView, ...]


# "held": no build was sent, the image's lint errors held it back
_STATE_RANK = (
    "succeeded", "skipped", "cancelled", "unknown", "queued", "running", "failed", "held"
)  # fmt: skip


def commits(
    heads: Mapping[str, head.Head],
    records: Mapping[str, builds.BuildRecord],
    lint: Mapping[tuple[str, str], head_lint.Stored],
) -> tuple[CommitGroup, ...]:
    """The newest MAX_HEADS open heads' builds, grouped by commit (a branch and a pull
    request on one commit share a group)."""
    open_heads = sorted(
        ((scope, current) for scope, current in heads.items() if not current.closed),
        key=lambda item: (-item[1].enqueued_at, item[0]),
    )[:MAX_HEADS]
    by_sha: dict[str, list[tuple[str, head.Head]]] = {}
    for scope, current in open_heads:
        by_sha.setdefault(current.sha, []).append((scope, current))
    groups: list[CommitGroup] = []
    for sha, scoped in by_sha.items():
        seen: dict[str, HeadBuildView] = {}
        for _, current in scoped:
            for queued in current.builds[:MAX_HEAD_BUILDS]:
                if queued.build_id not in seen:
                    seen[queued.build_id] = _head_build(
                        queued,
                        records.get(queued.build_id),
                        lint.get((sha, queued.image)),
                    )
        built = {b.image for b in seen.values()}
        for (linted_sha, image), kept in sorted(lint.items()):
            errors = any(f.get("severity") == "error" for f in kept.findings)
            if linted_sha == sha and image not in built and errors:
                seen[f"held:{image}"] = HeadBuildView("", image, "", "held", _static_lint(kept))
        shown = tuple(sorted(seen.values(), key=lambda b: (b.image, b.cluster, b.build_id)))
        states = [b.state for b in shown] or ["succeeded"]
        worst = max(states, key=lambda s: _STATE_RANK.index(s) if s in _STATE_RANK else 3)
        groups.append(
            CommitGroup(
                sha,
                tuple(_scope_label(scope) for scope, _ in scoped),
                worst if shown else "nothing to build",
                _commit_lint(shown),
                shown,
            )
        )
    return tuple(groups)


def cut(heads: Mapping[str, head.Head]) -> tuple[str, ...]:
    """What the heads' column leaves out, said on the page."""
    notes: list[str] = []
    open_heads = [current for current in heads.values() if not current.closed]
    if len(open_heads) > MAX_HEADS:
        notes.append(f"showing the newest {MAX_HEADS} of {len(open_heads)} open heads")
    if any(len(current.builds) > MAX_HEAD_BUILDS for current in open_heads):
        notes.append(f"showing at most {MAX_HEAD_BUILDS} builds of a head")
    return tuple(notes)


def _scope_label(scope: str) -> str:
    kind, _, name = scope.partition(":")
    return f"PR #{name}" if kind == "pr" else name


def _head_build(
    queued: head.HeadBuild, record: builds.BuildRecord | None, linted: head_lint.Stored | None
) -> HeadBuildView:
    static = _static_lint(linted)
    if record is None:
        return HeadBuildView(queued.build_id, queued.image, queued.cluster, "unknown", static)
    lint = f"{static}; {_content_lint(record)}"
    return HeadBuildView(record.id, record.image, record.cluster, record.state.value, lint)


def _static_lint(linted: head_lint.Stored | None) -> str:
    """The Containerfile lint of the image at this commit (LAY001..LAY011)."""
    if linted is None:
        return "lint not recorded"
    errors = sum(1 for f in linted.findings if f.get("severity") == "error")
    warnings = linted.count - errors
    if errors:
        return f"lint failed: {_count(errors, 'error')}, {_count(warnings, 'warning')}"
    return f"lint passed, {_count(warnings, 'warning')}" if warnings else "lint passed"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _content_lint(record: builds.BuildRecord) -> str:
    """The content lint of a build as one line (LAY101..LAY113, errors first)."""
    errors = [f for f in record.content_findings if f.get("severity") == "error"]
    warnings = len(record.content_findings) - len(errors)
    if errors:
        more = f" (+{len(errors) - 1})" if len(errors) > 1 else ""
        return f"content lint failed: {errors[0].get('id')} {errors[0].get('path')}{more}"
    if warnings:
        return f"content lint passed, {_count(warnings, 'warning')}"
    if record.state is builds.BuildState.SUCCEEDED:
        return "content lint passed"
    if record.state in (builds.BuildState.QUEUED, builds.BuildState.RUNNING):
        return "content lint not run yet"
    return "no content lint"


def _commit_lint(shown: Sequence[HeadBuildView]) -> str:
    failed = sum(1 for b in shown if "lint failed" in b.lint)
    pending = sum(1 for b in shown if "not run yet" in b.lint or "not recorded" in b.lint)
    if failed:
        return f"lint failed on {failed} of {len(shown)} builds"
    if pending:
        return f"lint pending or unknown on {pending} of {len(shown)} builds"
    return "lint passed" if shown else "no builds"


def to_json(groups: Sequence[CommitGroup]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(group) for group in groups]
