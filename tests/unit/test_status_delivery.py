"""pipeline.flows.status_delivery with fakes of its ports: a newer status wins, retries use the
"status" back-off, parking after LAYERING_STATUS_RETRIES, resending by beat."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from pipeline.core import commit_status, tasks
from pipeline.core.errors import PermanentError, TemporaryError
from pipeline.core.settings import Settings
from pipeline.flows import status_delivery

SHA = "a" * 40
NOW = 1_000_000.0
SETTINGS = Settings(
    status_retries=3,
    status_backoff_seconds=2.0,
    status_backoff_cap_seconds=600,
    status_resend_interval_seconds=60,
    status_park_seconds=3600,
)


class Poster:
    def __init__(self, *faults: Exception) -> None:
        self.faults = list(faults)
        self.posted: list[tuple[str, str, str, str]] = []

    def set_status(
        self,
        sha: str,
        *,
        context: str,
        state: commit_status.State,
        description: str,
        target_url: str | None,
    ) -> None:
        if self.faults:
            raise self.faults.pop(0)
        self.posted.append((sha, context, state, description))


class Parked:
    def __init__(self, *, latest: int | None = None, parks: bool = True) -> None:
        self.latest = latest
        self.parks = parks
        self.unavailable = False
        self.busy = False
        self.slots: dict[str, tuple[commit_status.ParkedStatus, float]] = {}
        self.removed: list[commit_status.ParkedStatus] = []

    def park(self, status: commit_status.ParkedStatus, *, due: float) -> bool:
        if self.unavailable:
            raise TemporaryError("Redis unavailable", retry_after=60)
        if self.parks:
            self.slots[status.member] = (status, due)
        return self.parks

    def due(self, now: float, *, limit: int = 100) -> list[commit_status.ParkedStatus]:
        ready = sorted((due, s.member) for s, due in self.slots.values() if due <= now)
        return [self.slots[member][0] for _, member in ready[:limit]]

    def reschedule(self, status: commit_status.ParkedStatus, *, due: float) -> bool:
        self.slots[status.member] = (status, due)
        return True

    def remove(self, status: commit_status.ParkedStatus) -> bool:
        self.removed.append(status)
        return self.slots.pop(status.member, None) is not None

    def latest_seq(self, sha: str, context: str) -> int | None:
        return self.latest

    @contextlib.contextmanager
    def sending(self) -> Iterator[bool]:
        yield not self.busy


def report(seq: int = 1) -> tasks.ReportStatus:
    return tasks.ReportStatus(SHA, "layering/lint", "success", "no findings", None, seq)


def deliver(
    poster: Poster | None, parked: Parked, *, attempt: int = 0, seq: int = 1
) -> status_delivery.Delivered | status_delivery.RetryLater:
    return status_delivery.deliver(
        report(seq),
        attempt=attempt,
        poster=poster,
        parked=parked,
        settings=SETTINGS,
        now=lambda: NOW,
    )


def test_posted() -> None:
    poster = Poster()
    assert deliver(poster, Parked(latest=1)) == "posted"
    assert poster.posted == [(SHA, "layering/lint", "success", "no findings")]


def test_a_newer_status_wins() -> None:
    poster = Poster()
    assert deliver(poster, Parked(latest=2), seq=1) == "superseded"
    assert poster.posted == []


def test_without_github_nothing_is_posted() -> None:
    assert deliver(None, Parked()) == "no-github"


@pytest.mark.parametrize(
    ("attempt", "retry_after", "countdown"),
    [(0, 0.0, 2.0), (2, 0.0, 8.0), (1, 30.0, 30.0), (2, 7200.0, 3600.0)],
)
def test_retried_with_the_status_backoff(
    attempt: int, retry_after: float, countdown: float
) -> None:
    error = TemporaryError("HTTP 502", retry_after=retry_after)
    outcome = deliver(Poster(error), Parked(), attempt=attempt)
    assert outcome == status_delivery.RetryLater(error, countdown)


@pytest.mark.parametrize(("retry_after", "due"), [(0.0, NOW + 60), (300.0, NOW + 300)])
def test_parked_after_the_last_retry(retry_after: float, due: float) -> None:
    parked = Parked()
    error = TemporaryError("HTTP 403: check LAYERING_GITHUB_TOKEN", retry_after=retry_after)
    assert deliver(Poster(error), parked, attempt=SETTINGS.status_retries) == "parked"
    [(status, when)] = parked.slots.values()
    assert (status.seq, status.parked_at, status.attempts, when) == (1, NOW, 0, due)


def test_not_parked_over_a_newer_status() -> None:
    parked = Parked(parks=False)
    outcome = deliver(Poster(TemporaryError("502")), parked, attempt=SETTINGS.status_retries)
    assert outcome == "superseded"


def test_retried_without_bound_when_it_cannot_be_parked() -> None:
    parked = Parked()
    parked.unavailable = True
    error = TemporaryError("502")
    outcome = deliver(Poster(error), parked, attempt=SETTINGS.status_retries + 10)
    assert outcome == status_delivery.RetryLater(error, 60)


def test_a_permanent_refusal_is_raised() -> None:
    with pytest.raises(PermanentError):
        deliver(Poster(PermanentError("HTTP 422")), Parked())


# -- resending --------------------------------------------------------------------------------


def parked_status(
    context: str, *, seq: int = 1, parked_at: float = NOW - 10
) -> commit_status.ParkedStatus:
    return commit_status.ParkedStatus(
        SHA, context, "success", f"{context} done", None, seq, parked_at=parked_at
    )


def resend(poster: Poster | None, parked: Parked) -> dict[status_delivery.Resent, int]:
    return status_delivery.resend(poster=poster, parked=parked, settings=SETTINGS, now=lambda: NOW)


def test_resend_sends_what_is_due() -> None:
    parked = Parked()
    parked.park(parked_status("a"), due=NOW - 5)
    parked.park(parked_status("b"), due=NOW - 1)
    parked.park(parked_status("later"), due=NOW + 5)
    poster = Poster()
    assert resend(poster, parked) == {
        "sent": 2,
        "outdated": 0,
        "expired": 0,
        "refused": 0,
        "waiting": 0,
    }
    assert [context for _, context, _, _ in poster.posted] == ["a", "b"]
    assert list(parked.slots) == [commit_status.member(SHA, "later")]


def test_resend_stops_at_the_first_refusal_and_backs_off() -> None:
    parked = Parked()
    for index, context in enumerate(("a", "b", "c")):
        parked.park(parked_status(context), due=NOW - 10 + index)
    counts = resend(Poster(TemporaryError("502", retry_after=0)), parked)
    assert (counts["waiting"], counts["sent"]) == (3, 0)
    status, due = parked.slots[commit_status.member(SHA, "a")]
    # the first resend failed: twice the beat interval
    assert (status.attempts, due) == (1, NOW + 120)


def test_resend_drops_outdated_expired_and_refused() -> None:
    parked = Parked(latest=1)
    parked.park(parked_status("expired", parked_at=NOW - 3601), due=NOW - 3)
    parked.park(parked_status("refused"), due=NOW - 2)
    counts = resend(Poster(PermanentError("HTTP 422")), parked)
    assert (counts["expired"], counts["refused"]) == (1, 1)
    assert parked.slots == {}
    parked = Parked(latest=2)
    parked.park(parked_status("old", seq=1), due=NOW - 1)
    assert resend(Poster(), parked)["outdated"] == 1


def test_resend_waits_for_a_run_in_progress_or_for_credentials() -> None:
    parked = Parked()
    parked.park(parked_status("a"), due=NOW - 1)
    parked.busy = True
    assert sum(resend(Poster(), parked).values()) == 0
    parked.busy = False
    assert sum(resend(None, parked).values()) == 0
    assert len(parked.slots) == 1
