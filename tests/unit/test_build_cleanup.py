"""run_build's deferred clean-up (`defer`): the worker removes a pushed build's local image on a
thread once the record says succeeded, so the task's slot goes to the next build; the removal
holds the build key's lock, as the build did. Fakes of the ports (tests/unit/test_building.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.adapters import credentials, local_builds, source
from pipeline.adapters.environment import load_settings
from pipeline.core import builds
from pipeline.core.errors import BuildFailed
from pipeline.flows import build as build_flow
from tests.unit.test_building import FakeBuilder, FakeRegistry, checkout

__all__ = ["checkout"]  # the fixture, used by name


class RecordingLocks:
    """Every lock is free; says which keys were held around what the builder did."""

    def __init__(self, builder: FakeBuilder) -> None:
        self.builder = builder
        self.events: list[str] = []

    @contextmanager
    def hold(self, build_key: str, *, on_wait: Callable[[], None]) -> Iterator[None]:
        self.events.append(f"hold {build_key[:8]} after {len(self.builder.calls)} calls")
        yield
        self.events.append(f"release {build_key[:8]} after {len(self.builder.calls)} calls")


def build(
    checkout: Path, builder: FakeBuilder, locks: RecordingLocks, later: list[Callable[[], None]]
) -> builds.BuildRecord:
    records = local_builds.MemoryRecords()
    settings = load_settings()
    record = build_flow.run_build(
        settings,
        builds.BuildRequest(source=checkout, image="hello", cluster="dev"),
        build_id="b1",
        records=records,
        sources=source.CheckoutLoader(),
        builder=builder,
        registry=FakeRegistry([None]),
        locks=locks,
        secrets=credentials.secret_values(settings),
        clock=lambda: 100.0,
        defer=later.append,
    )
    assert records.get("b1") == record
    return record


def test_the_record_succeeds_before_the_local_image_is_removed(checkout: Path) -> None:
    builder = FakeBuilder()
    locks = RecordingLocks(builder)
    later: list[Callable[[], None]] = []

    record = build(checkout, builder, locks, later)

    assert record.state is builds.BuildState.SUCCEEDED
    assert [call.split()[0] for call in builder.calls] == ["build", "push"]
    [cleanup] = later
    cleanup()
    assert [call.split()[0] for call in builder.calls] == ["build", "push", "discard"]
    key = record.build_key[:8]
    # the build held the key from before buildah to after its push; the removal holds it again
    assert locks.events == [
        f"hold {key} after 0 calls",
        f"release {key} after 2 calls",
        f"hold {key} after 2 calls",
        f"release {key} after 3 calls",
    ]


def test_nothing_is_deferred_for_a_failed_build(checkout: Path) -> None:
    builder = FakeBuilder(fail=BuildFailed("STEP 2/3: RUN false failed", step=""))
    later: list[Callable[[], None]] = []
    record = build(checkout, builder, RecordingLocks(builder), later)
    assert (record.state, later) == (builds.BuildState.FAILED, [])
