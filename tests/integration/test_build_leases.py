"""Build leases, the build-key lock that expires with them, the report claim, the sweep of
expired leases, and what the build flow does at a time limit or with a lost lease (issue 11
items 3 and 4). Real Redis; the flow with the in-memory fakes of tests/unit/test_building.py."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from pipeline.adapters import build_records, credentials, leases, local_builds, source
from pipeline.adapters.environment import load_settings
from pipeline.core import builds
from pipeline.flows import build as build_flow
from pipeline.flows import build_sweep
from tests import services
from tests.unit.test_building import FakeBuilder, FakeRegistry
from tests.unit.test_building import checkout as checkout  # the fixture

pytestmark = pytest.mark.integration


@pytest.fixture
def client(redis_server: services.RedisServer) -> redis.Redis[bytes]:
    found: redis.Redis[bytes] = redis.Redis.from_url(redis_server.url)
    found.flushdb()
    return found


def _until(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise TimeoutError(what)


def test_a_lease_is_held_once_renewed_by_its_holder_and_claimed_once_expired(
    client: redis.Redis[bytes],
) -> None:
    store = leases.RedisBuildLeases(client, ttl_seconds=1, keep_seconds=60)
    first = store.acquire("b1", task_id="t1")
    assert first is not None
    assert store.acquire("b1", task_id="t2") is None  # live elsewhere
    assert first.renew()
    assert store.expired() == []
    assert store.claim("b1") is None  # not expired: left alone
    _until(lambda: [lease.build_id for lease in store.expired()] == ["b1"], "lease expiry")
    claimed = store.claim("b1")
    assert claimed is not None
    assert (claimed.task_id, claimed.holder) == ("t1", first.holder)
    assert store.claim("b1") is None  # one sweep wins
    assert not first.renew()  # the vanished holder, back, finds its lease gone
    assert not first.held()
    assert store.acquire("b1", task_id="t1") is not None  # the restored delivery takes it


def test_the_build_key_lock_expires_with_the_lease_unless_the_heartbeat_extends_it(
    client: redis.Redis[bytes],
) -> None:
    records = build_records.BuildStore(
        client, retention_seconds=60, lock_timeout_seconds=1, lock_wait_seconds=30
    )
    lease_store = leases.RedisBuildLeases(client, ttl_seconds=1, keep_seconds=60)
    lease = lease_store.acquire("b1", task_id="t1")
    assert lease is not None
    with (
        leases.Heartbeat(lease, every=0.2, also=records.extend_held_locks),
        records.hold("k", on_wait=lambda: None),
    ):
        time.sleep(2.5)  # past the TTL: alive only because the heartbeat extends it
        assert client.exists(f"{build_records.LOCK_PREFIX}k")
        assert lease_store.expired() == []
    assert not client.exists(f"{build_records.LOCK_PREFIX}k")
    assert lease_store.expired() == []  # released
    assert lease_store.claim("b1") is None
    # a holder that vanished: its lock expires with its lease's TTL
    vanished = build_records.BuildStore(
        client, retention_seconds=60, lock_timeout_seconds=1, lock_wait_seconds=30
    )
    holding = vanished.hold("k", on_wait=lambda: None)
    holding.__enter__()
    waited: list[bool] = []
    started = time.monotonic()
    with records.hold("k", on_wait=lambda: waited.append(True)):
        assert waited == [True]
    assert time.monotonic() - started < 10


def test_the_report_is_claimed_once_per_build(client: redis.Redis[bytes]) -> None:
    records = build_records.BuildStore(client, retention_seconds=60, lock_timeout_seconds=1)
    assert records.claim_report("b1")
    assert not records.claim_report("b1")
    assert records.claim_report("b2")


class _Redelivery:
    def __init__(self, present: set[str]) -> None:
        self.present = present
        self.restored: list[str] = []

    def restore(self, task_id: str) -> bool:
        if task_id in self.present:
            self.present.discard(task_id)
            self.restored.append(task_id)
            return True
        return False


def test_the_sweep_restores_the_message_of_each_expired_lease_once(
    client: redis.Redis[bytes],
) -> None:
    store = leases.RedisBuildLeases(client, ttl_seconds=1, keep_seconds=60)
    records = build_records.BuildStore(client, retention_seconds=60, lock_timeout_seconds=1)
    for build_id in ("lost", "acked", "alive"):
        assert store.acquire(build_id, task_id=f"task-{build_id}") is not None
    alive = store.acquire("alive", task_id="task-alive")  # renewed below, never expires
    assert alive is None  # already held: renew the first holder's instead
    redelivery = _Redelivery({"task-lost"})
    time.sleep(1.2)
    swept = build_sweep.sweep(leases=store, records=records, redelivery=redelivery)
    assert sorted(swept.restored) == ["lost"]
    assert sorted(swept.gone) == ["acked", "alive"]
    assert redelivery.restored == ["task-lost"]
    again = build_sweep.sweep(leases=store, records=records, redelivery=redelivery)
    assert again.to_dict() == {"restored": [], "gone": []}


class _StopsInBuild(FakeBuilder):
    def __init__(self, raised: BaseException) -> None:
        super().__init__()
        self.raised = raised

    def build(self, spec: builds.BuildSpec, *, on_line: Callable[[str], None]) -> str:
        self.calls.append(f"build {spec.target}")
        raise self.raised


class _TimeLimit(Exception):
    """Stands in for celery.exceptions.SoftTimeLimitExceeded."""


class _Lease:
    def __init__(self, held: bool) -> None:
        self._held = held

    def held(self) -> bool:
        return self._held


def _run(
    checkout: Path,
    builder: FakeBuilder,
    *,
    lease: _Lease | None = None,
    records: local_builds.MemoryRecords | None = None,
) -> tuple[builds.BuildRecord, local_builds.MemoryRecords]:
    records = records or local_builds.MemoryRecords()
    settings = load_settings()
    record = build_flow.run_build(
        settings,
        builds.BuildRequest(source=checkout, image="hello", cluster="dev"),
        build_id="b1",
        records=records,
        sources=source.CheckoutLoader(),
        builder=builder,
        registry=FakeRegistry([None]),
        locks=local_builds.LocalLocks(),
        secrets=credentials.secret_values(settings),
        lease=lease,
        stopped=(_TimeLimit,),
        timeout_seconds=5,
    )
    return record, records


def test_a_time_limit_fails_the_record_naming_the_setting(checkout: Path) -> None:
    record, _ = _run(checkout, _StopsInBuild(_TimeLimit()))
    assert record.state is builds.BuildState.FAILED
    assert record.error.startswith("build stopped: exceeded LAYERING_BUILD_TIMEOUT_SECONDS (5s)")


def test_nothing_is_pushed_once_the_record_is_finished(checkout: Path) -> None:
    records = local_builds.MemoryRecords()

    class FailsMeanwhile(FakeBuilder):
        def build(self, spec: builds.BuildSpec, *, on_line: Callable[[str], None]) -> str:
            found = records.get("b1")
            assert found is not None
            records.save(builds.fail(found, error="stopped elsewhere", now=1.0))
            return super().build(spec, on_line=on_line)

    builder = FailsMeanwhile()
    record, _ = _run(checkout, builder, records=records)
    assert record.state is builds.BuildState.FAILED
    assert record.error == "stopped elsewhere"
    assert [call.split()[0] for call in builder.calls] == ["build"]


def test_a_lost_lease_stops_without_touching_the_record(checkout: Path) -> None:
    builder = FakeBuilder()
    record, records = _run(checkout, builder, lease=_Lease(held=False))
    assert [call.split()[0] for call in builder.calls] == ["build"]
    assert record.state is builds.BuildState.RUNNING  # the delivery that took over owns it
    assert records.get("b1") == record
