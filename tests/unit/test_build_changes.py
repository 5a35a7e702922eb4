"""flows/build_changes through run_build: a succeeded build's image changes are read before its
local image is removed (in the deferred clean-up on a worker, at once for `layering build`),
saved on the record and heard by `on_changes`; an inspector that fails costs neither the build
nor the clean-up. Fakes of the ports (tests/unit/test_building.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipeline.adapters import credentials, local_builds, source
from pipeline.adapters.environment import load_settings
from pipeline.core import builds, image_changes
from pipeline.flows import build as build_flow
from tests.unit.test_build_cleanup import RecordingLocks
from tests.unit.test_building import FakeBuilder, FakeRegistry, checkout

__all__ = ["checkout"]  # the fixture, used by name

ADDED = image_changes.ImageChanges(
    base="base",
    packages_read=True,
    added=image_changes.PackageList(1, (image_changes.PackageChange("tmux", new="3.3a-3.x86_64"),)),
)


class FakeInspector:
    def __init__(self, builder: FakeBuilder, *, fail: Exception | None = None) -> None:
        self.builder = builder
        self.fail = fail
        self.seen: list[str] = []

    def changes(self, spec: builds.BuildSpec) -> image_changes.ImageChanges:
        # what the builder did by then: the image must still be there
        self.seen.append(" ".join(c.split()[0] for c in self.builder.calls))
        if self.fail is not None:
            raise self.fail
        return ADDED


def build(
    checkout: Path,
    inspector: FakeInspector,
    *,
    defer: Callable[[Callable[[], None]], None] | None,
    heard: list[builds.BuildRecord],
) -> tuple[builds.BuildRecord, local_builds.MemoryRecords]:
    records = local_builds.MemoryRecords()
    settings = load_settings()
    record = build_flow.run_build(
        settings,
        builds.BuildRequest(source=checkout, image="hello", cluster="dev"),
        build_id="b1",
        records=records,
        sources=source.CheckoutLoader(),
        builder=inspector.builder,
        registry=FakeRegistry([None]),
        locks=RecordingLocks(inspector.builder),
        secrets=credentials.secret_values(settings),
        clock=lambda: 100.0,
        defer=defer,
        inspector=inspector,
        on_changes=heard.append,
    )
    return record, records


def test_deferred_changes_are_read_before_the_image_is_removed(checkout: Path) -> None:
    inspector = FakeInspector(FakeBuilder())
    later: list[Callable[[], None]] = []
    heard: list[builds.BuildRecord] = []
    record, records = build(checkout, inspector, defer=later.append, heard=heard)
    assert record.state is builds.BuildState.SUCCEEDED
    assert record.changes is None  # the task's answer does not wait for the analysis
    [cleanup] = later
    cleanup()
    assert inspector.seen == ["build push"]
    assert [c.split()[0] for c in inspector.builder.calls] == ["build", "push", "discard"]
    stored = records.get("b1")
    assert stored is not None
    assert stored.changes == ADDED.to_json()
    assert heard == [stored]
    assert any("changes against the base: 1 package added" in line for line in records.logs["b1"])


def test_without_deferral_the_returned_record_carries_the_changes(checkout: Path) -> None:
    inspector = FakeInspector(FakeBuilder())
    record, _ = build(checkout, inspector, defer=None, heard=[])
    assert record.changes == ADDED.to_json()
    assert [c.split()[0] for c in inspector.builder.calls] == ["build", "push", "discard"]


def test_a_failing_inspector_costs_neither_the_build_nor_the_clean_up(checkout: Path) -> None:
    inspector = FakeInspector(FakeBuilder(), fail=RuntimeError("mount exploded"))
    later: list[Callable[[], None]] = []
    _, records = build(checkout, inspector, defer=later.append, heard=[])
    later[0]()
    stored = records.get("b1")
    assert stored is not None
    assert stored.state is builds.BuildState.SUCCEEDED
    changes = image_changes.ImageChanges.from_json(stored.changes)
    assert changes.error == "RuntimeError: mount exploded"
    assert [c.split()[0] for c in inspector.builder.calls] == ["build", "push", "discard"]


def test_the_record_round_trips_its_changes_and_drops_a_malformed_value() -> None:
    record = builds.BuildRecord(id="b1", image="i", cluster="c", changes=ADDED.to_json())
    assert builds.BuildRecord.from_dict(record.to_dict()) == record
    broken = {**record.to_dict(), "changes": "not a document"}
    assert builds.BuildRecord.from_dict(broken).changes is None
