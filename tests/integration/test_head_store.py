"""The head store (pipeline/adapters/head_store.py) on a real Redis: a newer delivery wins, a
closed pull request leaves a tombstone, builds recorded for a head that lost its scope meanwhile
hand back the newer head, racing writers never lose an update, and the timeline of when each
head arrived (what /ok-to-test is checked against)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import redis

from pipeline.adapters import head_store
from pipeline.core import approval, head
from tests import services

A = "a" * 40
B = "b" * 40
DATABASE = 14  # no other test uses it: each test may start from an empty database
BUILD = head.HeadBuild("b1", "build-b1", "k1", "firewalld", "nonprod")


@pytest.fixture
def store(redis_server: services.RedisServer) -> Iterator[head_store.RedisHeadStore]:
    client = redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + f"/{DATABASE}")
    client.flushdb()
    yield head_store.RedisHeadStore(client)
    client.flushdb()
    client.close()


def test_claim_and_record(store: head_store.RedisHeadStore) -> None:
    assert store.claim("branch:main", A, 1.0) == (True, None)
    assert store.record_builds("branch:main", A, [BUILD]) is None
    assert store.get("branch:main") == head.Head(A, 1.0, (BUILD,))
    assert store.claim("branch:main", A, 2.0) == (True, head.Head(A, 1.0, (BUILD,)))
    assert store.get("branch:main") == head.Head(A, 2.0, (BUILD,)), "same head keeps its builds"
    assert store.claim("branch:main", B, 1.5) == (False, head.Head(A, 2.0, (BUILD,)))


def test_builds_of_an_overtaken_head_return_the_newer_head(
    store: head_store.RedisHeadStore,
) -> None:
    store.claim("pr:7", A, 1.0)
    store.claim("pr:7", B, 2.0)
    assert store.record_builds("pr:7", A, [BUILD]) == head.Head(B, 2.0)
    store.claim("pr:7", B, 3.0, closed=True)
    assert store.record_builds("pr:7", B, [BUILD]) == head.Head(B, 3.0, closed=True)
    assert store.get("pr:7") == head.Head(B, 3.0, closed=True)


def test_racing_writers_lose_nothing(store: head_store.RedisHeadStore) -> None:
    store.claim("branch:main", A, 1.0)
    builds = [head.HeadBuild(f"b{n}", f"build-b{n}", f"k{n}", "img", "c") for n in range(40)]

    def record(build: head.HeadBuild) -> None:
        assert store.record_builds("branch:main", A, [build]) is None

    threads = [threading.Thread(target=record, args=(build,)) for build in builds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    recorded = store.get("branch:main")
    assert recorded is not None
    assert sorted(b.build_id for b in recorded.builds) == sorted(b.build_id for b in builds)
    assert store._client.ttl(head_store.key("branch:main")) > 13 * 24 * 3600


def test_the_timeline_records_when_each_head_arrived(store: head_store.RedisHeadStore) -> None:
    assert store.timeline("pr:7") == []
    store.claim("pr:7", A, 1.0)
    store.claim("pr:7", A, 2.0)  # the same head again (an /ok-to-test): keeps its arrival
    store.claim("pr:7", B, 3.0)
    store.claim("pr:7", A, 2.5)  # an older delivery arriving late: refused, not recorded
    store.claim("pr:7", B, 4.0, closed=True)
    store.claim("pr:7", B, 5.0)  # reopened
    assert store.timeline("pr:7") == [
        approval.Seen(A, 1.0),
        approval.Seen(B, 3.0),
        approval.Seen(B, 5.0),
    ]
    store._client.rpush(head_store.timeline_key("pr:7"), b"junk", b'["x"]')
    assert len(store.timeline("pr:7")) == 3
    for n in range(approval.TIMELINE_LENGTH + 5):
        store.claim("pr:8", f"{n:040x}", float(n))
    kept = store.timeline("pr:8")
    assert len(kept) == approval.TIMELINE_LENGTH
    assert kept[-1] == approval.Seen(f"{approval.TIMELINE_LENGTH + 4:040x}", 104.0)
    assert store._client.ttl(head_store.timeline_key("pr:8")) > 13 * 24 * 3600
