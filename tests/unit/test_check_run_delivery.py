"""pipeline.flows.status_delivery in check-runs mode, with fakes of its ports: lint and build
statuses go as check runs (drawn from the build record as it is when sent), promote, gate and
rollout stay commit statuses; retries, parking and resending keep a check a check; the refresh
of a build's check."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from pipeline.core import builds, check_runs, commit_status, tasks
from pipeline.core.errors import TemporaryError
from pipeline.flows import status_delivery
from tests.unit.test_status_delivery import NOW, SETTINGS, SHA, Parked, Poster

URL = SETTINGS.public_url
DIGEST = "sha256:" + "d" * 64


class Checks:
    def __init__(self, *faults: Exception, newer: bool = False) -> None:
        self.faults = list(faults)
        self.newer = newer
        self.posted: list[tuple[check_runs.CheckRun, int]] = []

    def post(self, run: check_runs.CheckRun, *, seq: int) -> bool:
        if self.faults:
            raise self.faults.pop(0)
        if self.newer:
            return False
        self.posted.append((run, seq))
        return True


class Records:
    def __init__(self, *records: builds.BuildRecord) -> None:
        self.records = {record.id: record for record in records}

    def get(self, build_id: str) -> builds.BuildRecord | None:
        return self.records.get(build_id)


class Reporter:
    def __init__(self) -> None:
        self.reported: list[tuple[str, commit_status.Status]] = []

    def report(self, sha: str, status: commit_status.Status) -> None:
        self.reported.append((sha, status))


def record(**changes: Any) -> builds.BuildRecord:
    queued = builds.queued("b1", image="firewalld", cluster="nonprod", now=1.0, commit_sha=SHA)
    return builds.BuildRecord.from_dict({**queued.to_dict(), **changes})


def queued_report(status: commit_status.Status, seq: int = 1) -> tasks.ReportStatus:
    """What the StatusReporter queues (adapters/status_queue.py)."""
    return tasks.ReportStatus(
        SHA,
        status.context,
        status.state,
        status.description,
        status.target_url,
        seq,
        dict(status.details) if status.details is not None else None,
        status.build_id,
    )


def deliver(
    report: tasks.ReportStatus,
    checks: Checks,
    records: Records,
    *,
    poster: Poster | None = None,
    parked: Parked | None = None,
    attempt: int = 0,
) -> status_delivery.Delivered | status_delivery.RetryLater:
    return status_delivery.deliver(
        report,
        attempt=attempt,
        poster=poster or Poster(),
        parked=parked or Parked(),
        settings=SETTINGS,
        now=lambda: NOW,
        checks=status_delivery.Checks(checks, records, public_url=URL),
    )


def test_a_build_check_is_drawn_from_the_record_as_it_is_when_sent() -> None:
    pending = commit_status.pending_build("firewalld", "nonprod", build_id="b1", public_url=URL)
    checks, poster = Checks(), Poster()
    # the build finished before its "queued" status was delivered: the output says so, the
    # lifecycle stays what the status says
    finished = record(state="succeeded", digest=DIGEST, build_key="k" * 64)
    assert deliver(queued_report(pending), checks, Records(finished), poster=poster) == "posted"
    [(run, seq)] = checks.posted
    assert (run.name, run.status, run.conclusion, seq) == (pending.context, "queued", None, 1)
    assert DIGEST in run.output.summary
    assert poster.posted == []


def test_lint_goes_as_a_check_and_promote_stays_a_status() -> None:
    checks, poster = Checks(), Poster()
    lint = commit_status.Status("layering/lint", "success", "no findings", details={"rows": []})
    promote = commit_status.Status("layering/promote/nonprod", "success", "promoted")
    assert deliver(queued_report(lint), checks, Records(), poster=poster) == "posted"
    assert deliver(queued_report(promote), checks, Records(), poster=poster) == "posted"
    assert [run.name for run, _ in checks.posted] == ["layering/lint"]
    assert poster.posted == [(SHA, "layering/promote/nonprod", "success", "promoted")]


def test_a_check_older_than_the_one_sent_is_superseded() -> None:
    lint = commit_status.Status("layering/lint", "success", "no findings")
    assert deliver(queued_report(lint), Checks(newer=True), Records()) == "superseded"


def test_a_refused_check_is_retried_then_parked_and_resent_as_a_check() -> None:
    started = commit_status.build_started("firewalld", "nonprod", build_id="b1", public_url=URL)
    refused = TemporaryError("GitHub API: 502", retry_after=1)
    checks, parked = Checks(refused, refused), Parked()
    records = Records(record(state="running", started_at=2.0))
    report = queued_report(started, seq=2)
    assert isinstance(deliver(report, checks, records, parked=parked), status_delivery.RetryLater)
    attempt = SETTINGS.status_retries
    assert deliver(report, checks, records, parked=parked, attempt=attempt) == "parked"
    [(kept, _)] = parked.slots.values()
    assert (kept.details, kept.build_id) == (started.details, "b1")
    parked.slots[kept.member] = (kept, NOW)  # due now
    # meanwhile the build failed: the resent check shows the record as it is now
    records.records["b1"] = record(state="failed", error="boom", failing_step="STEP 2/2: RUN x")
    counts = status_delivery.resend(
        poster=Poster(),
        parked=parked,
        settings=SETTINGS,
        now=lambda: NOW,
        checks=status_delivery.Checks(checks, records, public_url=URL),
    )
    assert counts["sent"] == 1
    [(run, seq)] = checks.posted
    assert (run.status, seq) == ("in_progress", 2)
    assert "Failing step: `STEP 2/2: RUN x`" in run.output.summary


APP_SETTINGS = SETTINGS.model_copy(
    update={
        "github_app_id": 12,
        "github_app_private_key": SecretStr("-----BEGIN PRIVATE KEY-----"),
        "github_app_installation_id": 34,
    }
)


def test_refresh_reports_the_final_status_again() -> None:
    reporter = Reporter()
    records = Records(record(state="succeeded", digest=DIGEST))
    assert APP_SETTINGS.resolved_github_checks == "check-runs"
    outcome = status_delivery.refresh_build_check(
        records, reporter, APP_SETTINGS, build_id="b1", sha=SHA
    )
    assert outcome == "success"
    [(sha, status)] = reporter.reported
    assert (sha, status.context, status.build_id) == (SHA, "layering/build/firewalld@nonprod", "b1")
    assert commit_status.check_only(status)  # a commit status would repeat itself
    running = Records(record(state="running"))
    assert (
        status_delivery.refresh_build_check(running, reporter, APP_SETTINGS, build_id="b1", sha=SHA)
        == "unfinished"
    )
    assert (
        status_delivery.refresh_build_check(
            Records(), reporter, APP_SETTINGS, build_id="b1", sha=SHA
        )
        == "unfinished"
    )


def test_with_commit_statuses_a_refresh_reports_nothing() -> None:
    """A refresh queued as a status would take a sequence number: a `pending` still queued
    for the same context would then be dropped as outdated."""
    reporter = Reporter()
    records = Records(record(state="succeeded", digest=DIGEST))
    assert SETTINGS.resolved_github_checks == "statuses"
    outcome = status_delivery.refresh_build_check(
        records, reporter, SETTINGS, build_id="b1", sha=SHA
    )
    assert outcome.startswith("statuses")
    assert reporter.reported == []


def test_statuses_mode_posts_no_commit_status_for_check_only_ones() -> None:
    started = commit_status.build_started("firewalld", "nonprod", build_id="b1", public_url=URL)
    final = commit_status.build_status(
        record(state="succeeded", digest=DIGEST).to_dict(), public_url=URL
    )
    assert final is not None
    poster = Poster()
    for status in (started, commit_status.for_checks_only(final)):
        outcome = status_delivery.deliver(
            queued_report(status),
            attempt=0,
            poster=poster,
            parked=Parked(),
            settings=SETTINGS,
            now=lambda: NOW,
        )
        assert outcome == "check-only"
    assert poster.posted == []
    # in check-runs mode the start is what moves the build's run to in_progress
    checks = Checks()
    assert deliver(queued_report(started), checks, Records(record(state="running"))) == "posted"
    assert checks.posted[0][0].status == "in_progress"
