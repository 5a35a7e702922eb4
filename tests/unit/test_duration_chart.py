"""pipeline.core.duration_chart: which builds a chart compares (bounded, this build kept), its
summary, and the SVG's shape (well-formed, titled and described, axes labelled, this build marked
by more than colour, every text escaped), with no finished build, one, and many."""

from __future__ import annotations

import itertools
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline.core import duration_chart

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = "<script>alert('x')</script>&\""


def record(build_id: str, *, start: float, seconds: float, **fields: Any) -> dict[str, Any]:
    return {
        "id": build_id,
        "image": "htop",
        "state": "succeeded",
        "started_at": start,
        "finished_at": start + seconds,
        **fields,
    }


def history(count: int, *, image: str = "htop") -> list[dict[str, Any]]:
    """`count` finished builds, one every 1000 s, each 10 s longer; every fifth failed."""
    return [
        record(
            f"b{n:03d}",
            start=1000.0 * n,
            seconds=60.0 + 10 * n,
            image=image,
            state="failed" if n % 5 == 4 else "succeeded",
        )
        for n in range(count)
    ]


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # noqa: S314 (our own output, parsed to check it is well-formed)


def bars(root: ET.Element) -> list[ET.Element]:
    return [rect for rect in root.iter(f"{SVG}rect") if "bar" in rect.get("class", "").split()]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0.0s"), (12.345, "12.3s"), (59.9, "59.9s"), (60, "1m00s"), (185, "3m05s"),
     (3599, "59m59s"), (3600, "1h00m"), (3 * 3600 + 7 * 60 + 5, "3h07m")],
)  # fmt: skip
def test_seconds_text(seconds: float, text: str) -> None:
    assert duration_chart.seconds_text(seconds) == text


@pytest.mark.parametrize(
    ("fields", "kept"),
    [
        ({}, True),
        ({"state": "failed"}, True),
        ({"state": "running", "finished_at": None}, False),
        ({"state": "queued", "started_at": None, "finished_at": None}, False),
        ({"state": "skipped"}, False),
        ({"state": "cancelled"}, False),
        ({"finished_at": 50.0}, False),  # finished before it started
        ({"finished_at": math.nan}, False),
        ({"finished_at": math.inf}, False),
        ({"started_at": True}, False),
        ({"started_at": "100"}, False),
        ({"finished_at": 100.0 + duration_chart.MAX_SECONDS + 1}, False),
    ],
)
def test_only_builds_that_ran_to_an_end_with_sane_times_are_samples(
    fields: dict[str, Any], kept: bool
) -> None:
    found = duration_chart.sample(record("b1", start=100.0, seconds=30.0, **fields))
    assert (found is not None) == kept


def test_the_last_finished_builds_of_the_image_oldest_first() -> None:
    records = [
        *history(30),
        *history(5, image="other"),
        record("r1", start=90_000.0, seconds=5.0, state="running", finished_at=None),
    ]
    current = records[29]
    shown = duration_chart.samples(reversed(records), current=current)
    assert [s.build_id for s in shown] == [f"b{n:03d}" for n in range(10, 30)]
    assert [s.current for s in shown] == [False] * 19 + [True]
    assert shown[-1].seconds == 60.0 + 290
    assert duration_chart.samples(records, current=current, limit=3)[0].build_id == "b027"
    assert duration_chart.samples(records, current=current, limit=999) == shown
    assert duration_chart.samples(records, current=current, limit=0) == []


def test_an_older_build_keeps_its_place_among_the_newest() -> None:
    records = history(30)
    shown = duration_chart.samples(records, current=records[3])
    assert [s.build_id for s in shown] == ["b003", *(f"b{n:03d}" for n in range(11, 30))]
    chart = duration_chart.chart(records, current=records[3])
    assert chart is not None
    assert chart.summary.startswith("This build took 1m30s; the median of these 20 ")
    # in the middle of the newest: simply the newest 20
    middle = duration_chart.samples(records, current=records[20])
    assert [s.build_id for s in middle] == [f"b{n:03d}" for n in range(10, 30)]


def test_input_is_read_only_up_to_its_bound() -> None:
    consumed = itertools.count()

    def endless() -> Iterator[dict[str, Any]]:
        for n in itertools.count():
            next(consumed)
            yield record(f"e{n}", start=float(n), seconds=1.0)

    current = record("c", start=0.0, seconds=2.0)
    shown = duration_chart.samples(endless(), current=current)
    assert len(shown) == duration_chart.MAX_BUILDS
    assert next(consumed) == duration_chart.MAX_RECORDS


def test_no_finished_build_no_chart() -> None:
    running = record("r1", start=100.0, seconds=0.0, state="running", finished_at=None)
    assert duration_chart.chart([], current=running) is None
    assert duration_chart.chart([running], current=running) is None
    skipped = record("s1", start=1.0, seconds=1.0, state="skipped")
    assert duration_chart.chart([skipped], current=skipped) is None


def test_one_build_alone() -> None:
    only = record("b1", start=100.0, seconds=42.0)
    chart = duration_chart.chart([only], current=only)
    assert chart is not None
    assert (
        chart.summary == "This build took 42.0s; it is the only finished build of htop on record."
    )
    root = parse(chart.svg)
    [bar] = bars(root)
    assert "bar-current" in bar.get("class", "")
    assert float(bar.get("width", "0")) < 60, "one build is not drawn as a wall"
    # a running build against one finished build of its image
    running = record("r1", start=200.0, seconds=0.0, state="running", finished_at=None)
    other = duration_chart.chart([only], current=running)
    assert other is not None
    assert other.summary == (
        "This build has not finished; the one finished build of htop on record took 42.0s."
    )
    assert not any("bar-current" in b.get("class", "") for b in bars(parse(other.svg)))


def test_the_svg_is_titled_described_labelled_and_marks_this_build() -> None:
    records = history(12)
    chart = duration_chart.chart(records, current=records[6])
    assert chart is not None
    assert chart.summary == (
        "This build took 2m00s; the median of the last 12 finished builds of htop is 1m55s "
        "(fastest 1m00s, slowest 2m50s)."
    )
    root = parse(chart.svg)
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    assert root.get("aria-labelledby") == "duration-chart-title duration-chart-desc"
    title, desc = root[0], root[1]
    assert (title.tag, title.get("id")) == (f"{SVG}title", "duration-chart-title")
    assert (desc.tag, desc.get("id")) == (f"{SVG}desc", "duration-chart-desc")
    assert title.text == ("Build duration: this build against the last 12 finished builds of htop")
    assert chart.summary in (desc.text or "")
    texts = {"".join(t.itertext()) for t in root.iter(f"{SVG}text")}
    assert {"duration", "finished builds of htop, oldest to newest", "\u25b2 this build"} <= texts
    assert {"0", "1m30s", "3m00s", "failed build"} <= texts  # the scale's ticks and the legend
    drawn = bars(root)
    assert len(drawn) == 12
    classes = [b.get("class", "").split() for b in drawn]
    assert [c for c in classes if "bar-current" in c] == [["bar", "bar-succeeded", "bar-current"]]
    assert classes.index(["bar", "bar-succeeded", "bar-current"]) == 6
    # a failed bar says so in words, not in colour only
    failed = [b for b in drawn if "bar-failed" in b.get("class", "")]
    assert [b.findtext(f"{SVG}title") for b in failed] == [
        "b004: 1m40s, failed",
        "b009: 2m30s, failed",
    ]
    assert drawn[6].findtext(f"{SVG}title") == "b006: 2m00s, succeeded, this build"
    assert drawn[6].get("stroke-width") == "2"
    # heights on one scale from 0 (3m00s at the top): proportional, within the plot
    plot = duration_chart.HEIGHT - duration_chart.TOP - duration_chart.BOTTOM
    heights = [float(b.get("height", "0")) for b in drawn]
    assert heights[11] == pytest.approx(170 / 180 * plot, abs=0.1)
    assert heights[0] == pytest.approx(60 / 180 * plot, abs=0.1)
    assert all(0 < h <= plot for h in heights)
    assert "<script" not in chart.svg
    assert not [name for e in root.iter() for name in e.attrib if name.startswith("on")]


def test_every_text_is_escaped() -> None:
    records = [record(HOSTILE, start=1.0, seconds=5.0, image=HOSTILE)]
    current = record("b2", start=10.0, seconds=7.0, image=HOSTILE)
    chart = duration_chart.chart(records, current=current)
    assert chart is not None
    assert HOSTILE not in chart.svg
    assert "<script" not in chart.svg
    root = parse(chart.svg)  # still well-formed
    assert HOSTILE in (root[0].text or "")
    first = bars(root)[0]
    assert first.findtext(f"{SVG}title") == f"{HOSTILE}: 5.0s, succeeded"


def test_many_builds_stay_bounded() -> None:
    records = history(500)
    chart = duration_chart.chart(records, current=records[-1])
    assert chart is not None
    assert len(chart.samples) == duration_chart.MAX_BUILDS
    assert len(bars(parse(chart.svg))) == duration_chart.MAX_BUILDS
    assert len(chart.svg) < 20_000
    # a long scale stays in whole units
    slow = [record("s1", start=0.0, seconds=5 * 3600.0 + 1)]
    texts = {"".join(t.itertext()) for t in parse(duration_chart.svg(
        duration_chart.samples(slow, current=slow[0]), image="x", description="d"
    )).iter(f"{SVG}text")}  # fmt: skip
    assert "6h00m" in texts
