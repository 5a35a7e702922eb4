"""pipeline.core.poison and pipeline.flows.poison: when a task is parked, the status that says
so on the commit it is tied to (by task), and what parking does to a build's record."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.core import builds, commit_status, poison, tasks
from pipeline.flows import poison as poison_flow

URL = "http://layering.example.test"
SHA = "a" * 40
REASON = "parked after the worker died 2 times processing this; see parked task t-1"


def parked(name: str, *args: Any, **kwargs: Any) -> poison.ParkedTask:
    return poison.ParkedTask("t-1", name, args, kwargs, 0, 3, 100.0)


@pytest.mark.parametrize(
    ("deliveries", "limit", "park"),
    [(1, 2, False), (2, 2, False), (3, 2, True), (2, 1, True), (1, 1, False)],
)
def test_parked_once_the_worker_died_limit_times(deliveries: int, limit: int, park: bool) -> None:
    assert poison.should_park(deliveries, limit=limit) is park


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        (
            parked(tasks.HandlePush.NAME, branch="main", before="b" * 40, after=SHA, forced=False),
            (SHA, commit_status.Status("layering/lint", "error", REASON)),
        ),
        (
            parked(tasks.HandlePullRequest.NAME, 7, SHA, "feature", "main", True),
            (SHA, commit_status.Status("layering/lint", "error", REASON)),
        ),
        (parked(tasks.OkToTest.NAME, number=7, user="maint"), None),
        (
            parked(tasks.OkToTest.NAME, number=7, user="maint", sha=SHA),
            (SHA, commit_status.Status("layering/lint", "error", REASON)),
        ),
        (
            parked(
                tasks.Build.NAME,
                source="/m",
                commit_sha=SHA,
                image="chrony",
                cluster="nonprod",
                build_key="k",
                build_id="b-1",
            ),
            (
                SHA,
                commit_status.Status(
                    "layering/build/chrony@nonprod", "error", REASON, f"{URL}/builds/b-1"
                ),
            ),
        ),
        (
            parked(tasks.ReportBuild.NAME, {"id": "b-2", "image": "htop", "cluster": "prod"}, SHA),
            (
                SHA,
                commit_status.Status(
                    "layering/build/htop@prod", "error", REASON, f"{URL}/builds/b-2"
                ),
            ),
        ),
        (
            parked(tasks.ReportBuildError.NAME, "build-b-3", SHA, "htop", "prod", "b-3"),
            (
                SHA,
                commit_status.Status(
                    "layering/build/htop@prod", "error", REASON, f"{URL}/builds/b-3"
                ),
            ),
        ),
        (
            parked(tasks.Promote.NAME, commit_sha=SHA, environment="prod"),
            (SHA, commit_status.Status("layering/promote/prod", "error", REASON)),
        ),
        (
            parked(tasks.Gate.NAME, head_sha=SHA, base_environment="prod", pr_number=9),
            (SHA, commit_status.Status("layering/gate/prod", "error", REASON)),
        ),
        (
            parked(tasks.WatchRollout.NAME, SHA, "prod", "east"),
            (SHA, commit_status.Status("layering/rollout/east", "error", REASON)),
        ),
        (parked(tasks.ReportStatus.NAME, SHA, "layering/lint", "success", "ok", None, 1), None),
        (parked(tasks.BaseDrift.NAME), None),
        (parked("test.unknown", SHA), None),
    ],
    ids=lambda value: value.name if isinstance(value, poison.ParkedTask) else "",
)
def test_the_status_of_a_parked_task(
    task: poison.ParkedTask, expected: tuple[str, commit_status.Status] | None
) -> None:
    assert poison.tied_status(task, public_url=URL) == expected


def test_a_parked_task_round_trips() -> None:
    task = parked(tasks.Gate.NAME, head_sha=SHA, base_environment="prod", pr_number=9)
    document = task.to_json()
    assert document["reason"] == REASON
    assert poison.ParkedTask.from_json(document) == task


class Store:
    def __init__(self) -> None:
        self.parked: list[poison.ParkedTask] = []

    def park(self, task: poison.ParkedTask) -> None:
        self.parked.append(task)


class Records:
    def __init__(self, *records: builds.BuildRecord) -> None:
        self.records = {record.id: record for record in records}
        self.logs: dict[str, list[str]] = {}

    def get(self, build_id: str) -> builds.BuildRecord | None:
        return self.records.get(build_id)

    def save(self, record: builds.BuildRecord) -> None:
        self.records[record.id] = record

    def append_log(self, build_id: str, line: str) -> None:
        self.logs.setdefault(build_id, []).append(line)


class Statuses:
    def __init__(self) -> None:
        self.reported: list[tuple[str, commit_status.Status]] = []

    def report(self, sha: str, status: commit_status.Status) -> None:
        self.reported.append((sha, status))


def test_parking_a_build_fails_its_record_and_posts_its_status() -> None:
    record = builds.start(builds.queued("b-1", image="chrony", cluster="nonprod", now=1.0), now=2.0)
    task = parked(
        tasks.Build.NAME, source="/m", commit_sha=SHA, image="chrony", cluster="nonprod",
        build_key="k", build_id="b-1",
    )  # fmt: skip
    store, records, statuses = Store(), Records(record), Statuses()

    poison_flow.park(task, store=store, statuses=statuses, records=records, public_url=URL, now=5.0)

    assert store.parked == [task]
    failed = records.records["b-1"]
    assert (failed.state, failed.error, failed.finished_at) == (
        builds.BuildState.FAILED,
        REASON,
        5.0,
    )
    assert records.logs == {"b-1": [REASON]}
    assert commit_status.build_status(failed.to_dict(), public_url=URL) == statuses.reported[0][1]
    context = "layering/build/chrony@nonprod"
    assert statuses.reported == [
        (SHA, commit_status.Status(context, "error", REASON, f"{URL}/builds/b-1"))
    ]
