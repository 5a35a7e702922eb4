"""Poison messages as data: a task whose worker process died while running it is delivered
again (late acks, reject on worker lost); once it died `limit` times it is parked instead of
run again. Here: when to park, the parked record, and the commit status that says so for the
tasks tied to a commit. No I/O (workers/app.py counts deliveries and parks through
flows/poison.py).

Deliveries are counted per (task id, retry number): a retry is a new message with the same id
and is not a death.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.core import commit_status, tasks

_TASKS = {task.NAME: task for task in tasks.ALL}
# a callback's first argument is its parent's outcome (core/tasks.py)
OUTCOME = "outcome"


def should_park(deliveries: int, *, limit: int) -> bool:
    """`deliveries` counts this one: the worker died running each one before it."""
    return deliveries - 1 >= limit


@dataclass(frozen=True)
class ParkedTask:
    """A task message that is not run again: what it was, and how often it killed a worker."""

    task_id: str
    name: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    retries: int
    deliveries: int
    parked_at: float

    @property
    def deaths(self) -> int:
        return self.deliveries - 1

    @property
    def reason(self) -> str:
        return (
            f"parked after the worker died {self.deaths} times processing this; "
            f"see parked task {self.task_id}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "name": self.name,
            "args": list(self.args),
            "kwargs": dict(self.kwargs),
            "retries": self.retries,
            "deliveries": self.deliveries,
            "parked_at": self.parked_at,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> ParkedTask:
        return cls(
            task_id=str(document["task_id"]),
            name=str(document["name"]),
            args=tuple(document.get("args") or ()),
            kwargs=dict(document.get("kwargs") or {}),
            retries=int(document.get("retries", 0)),
            deliveries=int(document["deliveries"]),
            parked_at=float(document["parked_at"]),
        )


def arguments(name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A message's arguments by name, as the contract (core/tasks.py) declares them (a
    callback's outcome as `OUTCOME`); empty for a task outside the contract."""
    task = _TASKS.get(name)
    if task is None:
        return {}
    names = [field.name for field in dataclasses.fields(task)]
    if task.POSITIONAL:
        names = [OUTCOME, *names]
    return {**dict(zip(names, args, strict=False)), **kwargs}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _build_of(found: Mapping[str, Any]) -> tuple[str, str, str | None] | None:
    """(image, cluster, build id) of a build task's arguments or its record."""
    record = found.get(OUTCOME)
    source = record if isinstance(record, Mapping) else found
    image, cluster = _text(source.get("image")), _text(source.get("cluster"))
    if image is None or cluster is None:
        return None
    return image, cluster, _text(source.get("build_id") or source.get("id"))


def build_id(parked: ParkedTask) -> str | None:
    """The build record a parked "layering.build" was running (it is failed with the reason)."""
    if parked.name != tasks.Build.NAME:
        return None
    return _text(arguments(parked.name, parked.args, parked.kwargs).get("build_id"))


# the context of the status that says a task is parked, from its arguments
_Context = Callable[[Mapping[str, Any]], str | None]


def _lint_context(found: Mapping[str, Any]) -> str | None:
    return commit_status.LINT_CONTEXT


def _build_context(found: Mapping[str, Any]) -> str | None:
    build = _build_of(found)
    return commit_status.build_context(build[0], build[1]) if build else None


def _named(context: Callable[[str], str], argument: str) -> _Context:
    return lambda found: context(found[argument]) if _text(found.get(argument)) else None


# task name -> (the argument naming its commit, its context)
_TIED: dict[str, tuple[str, _Context]] = {
    tasks.HandlePush.NAME: ("after", _lint_context),
    tasks.HandlePullRequest.NAME: ("head_sha", _lint_context),
    tasks.OkToTest.NAME: ("sha", _lint_context),
    tasks.ClosePullRequest.NAME: ("head_sha", _lint_context),
    tasks.Build.NAME: ("commit_sha", _build_context),
    tasks.ReportBuild.NAME: ("sha", _build_context),
    tasks.ReportBuildError.NAME: ("sha", _build_context),
    tasks.Promote.NAME: ("commit_sha", _named(commit_status.promote_context, "environment")),
    tasks.Gate.NAME: ("head_sha", _named(commit_status.gate_context, "base_environment")),
    tasks.WatchRollout.NAME: ("commit_sha", _named(commit_status.rollout_context, "cluster")),
}


def tied_status(parked: ParkedTask, *, public_url: str) -> tuple[str, commit_status.Status] | None:
    """(commit, status) saying that `parked` was parked, for a task tied to a commit: event
    tasks on `layering/lint`, builds on their build context (linking the build's page),
    promotion, gate and rollout tasks on theirs. None for the others (statuses, beat)."""
    tied = _TIED.get(parked.name)
    if tied is None:
        return None
    found = arguments(parked.name, parked.args, parked.kwargs)
    sha, context = _text(found.get(tied[0])), tied[1](found)
    if sha is None or context is None:
        return None
    build = _build_of(found)
    target_url = (
        commit_status.log_url(public_url, build[2]) if build is not None and build[2] else None
    )
    return sha, commit_status.Status(context, "error", parked.reason, target_url)
