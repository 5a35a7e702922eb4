"""The parked-status store (pipeline/adapters/parked_statuses.py) on a real Redis: newest status per
(sha, context) wins, due order, reschedule/remove never clobber a newer status."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from pipeline.adapters import parked_statuses
from pipeline.core import commit_status
from tests import services

SHA = "a" * 40
DATABASE = 15  # no other test uses it: each test may start from an empty database


@pytest.fixture
def parked(redis_server: services.RedisServer) -> Iterator[parked_statuses.ParkedStatuses]:
    client = redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + f"/{DATABASE}")
    client.flushdb()
    yield parked_statuses.ParkedStatuses(client, keep_seconds=3600)
    client.flushdb()
    client.close()


def status(
    seq: int, *, context: str = "layering/lint", state: commit_status.State = "success"
) -> commit_status.ParkedStatus:
    return commit_status.ParkedStatus(SHA, context, state, f"seq {seq}", None, seq, parked_at=0.0)


def test_newest_status_of_a_slot_wins(parked: parked_statuses.ParkedStatuses) -> None:
    assert parked.park(status(2), due=10)
    assert not parked.park(status(1), due=5), "an older status never replaces a newer one"
    assert parked.park(status(3, state="failure"), due=20)
    assert parked.count() == 1
    [only] = parked.due(100)
    assert (only.seq, only.state) == (3, "failure")
    assert parked.latest_seq(SHA, "layering/lint") == 3


def test_due_order_and_limits(parked: parked_statuses.ParkedStatuses) -> None:
    assert parked.park(status(1, context="b"), due=30)
    assert parked.park(status(1, context="a"), due=10)
    assert parked.park(status(1, context="c"), due=99)
    assert [s.context for s in parked.due(50)] == ["a", "b"]
    assert [s.context for s in parked.due(50, limit=1)] == ["a"]
    assert parked.due(5) == []


def test_reschedule_and_remove_leave_a_newer_status_alone(
    parked: parked_statuses.ParkedStatuses,
) -> None:
    old = status(1)
    assert parked.park(old, due=10)
    assert parked.reschedule(old, due=40)
    assert parked.due(20) == []
    assert parked.park(status(2), due=40)
    assert not parked.reschedule(old, due=15), "old seq: the newer status stays as it is"
    assert not parked.remove(old)
    assert [s.seq for s in parked.due(50)] == [2]
    assert parked.remove(status(2))
    assert parked.count() == 0


def test_a_status_older_than_the_queued_counter_is_not_parked(
    parked: parked_statuses.ParkedStatuses, redis_server: services.RedisServer
) -> None:
    parked._client.set(parked_statuses.seq_key(SHA, "layering/lint"), 5)
    assert not parked.park(status(4), due=10)
    assert parked.park(status(5), due=10)
    assert parked._client.ttl(parked_statuses.seq_key(SHA, "layering/lint")) > 3000
