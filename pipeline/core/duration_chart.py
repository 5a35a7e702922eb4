"""How long a build took against its image's recent builds: the samples (the last MAX_BUILDS
finished builds of the image, oldest first), a one-sentence summary, and a small SVG bar chart
the build page inlines. No I/O; no script in the SVG (the page's Content-Security-Policy allows
none there), and no colour alone carries meaning: the build shown is outlined and labelled
"this build", a failed build is hatched and says so in its bar's <title>, and the page shows the
same samples as a table.

Build ids and image names come from requests and repositories: every text is escaped.
"""

from __future__ import annotations

import html
import itertools
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_BUILDS = 20
# records looked at, whatever the caller hands over
MAX_RECORDS = 200
# a duration past this (a clock jump) is not a build's: left out
MAX_SECONDS = 7 * 24 * 3600.0
FINISHED = ("succeeded", "failed")
TITLE_ID = "duration-chart-title"
DESC_ID = "duration-chart-desc"

WIDTH, HEIGHT = 480, 190
LEFT, RIGHT, TOP, BOTTOM = 60, 12, 28, 44
# a lone build is drawn as narrow as one of eight, not as a wall
MIN_SLOTS = 8
_NICE = sorted(
    {n * unit for unit in (1, 60, 3600) for n in (1, 2, 3, 4, 5, 6, 10, 15, 20, 30, 40, 60)}
)


@dataclass(frozen=True)
class Sample:
    """One finished build: how long it ran (started to finished) and how it ended."""

    build_id: str
    seconds: float
    state: str
    finished_at: float
    current: bool = False

    @property
    def duration(self) -> str:
        return seconds_text(self.seconds)


@dataclass(frozen=True)
class Chart:
    samples: tuple[Sample, ...]  # oldest first
    summary: str
    svg: str


def seconds_text(seconds: float) -> str:
    """12.5s, 3m02s, 1h05m."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def sample(record: Mapping[str, Any], *, current: bool = False) -> Sample | None:
    """A finished build record (BuildRecord.to_dict) as a sample; None when it did not run to
    an end (queued, running, skipped, cancelled) or its times make no sense."""
    state = record.get("state")
    started, finished = _number(record.get("started_at")), _number(record.get("finished_at"))
    if state not in FINISHED or started is None or finished is None:
        return None
    seconds = finished - started
    if not 0 <= seconds <= MAX_SECONDS:
        return None
    return Sample(str(record.get("id", "")), seconds, str(state), finished, current)


def samples(
    records: Iterable[Mapping[str, Any]], *, current: Mapping[str, Any], limit: int = MAX_BUILDS
) -> list[Sample]:
    """The finished builds among `records` (the first MAX_RECORDS looked at, in any order) of
    `current`'s image, oldest first, at most `limit` (and MAX_BUILDS): the newest, with
    `current` among them when it finished."""
    image, current_id = current.get("image"), current.get("id")
    found: dict[str, Sample] = {}
    for record in itertools.islice(records, MAX_RECORDS):
        if record.get("image") == image and record.get("id") != current_id:
            kept = sample(record)
            if kept is not None:
                found[kept.build_id] = kept
    room = max(0, min(limit, MAX_BUILDS))
    others = sorted(found.values(), key=_order)
    mine = sample(current, current=True)
    if room == 0:
        return []
    if mine is None:
        return others[-room:]
    # the build shown stays: with the newest others, in its place in time
    return sorted([*(others[-(room - 1) :] if room > 1 else []), mine], key=_order)


def chart(
    records: Iterable[Mapping[str, Any]], *, current: Mapping[str, Any], limit: int = MAX_BUILDS
) -> Chart | None:
    """The chart of `current` among its image's recent builds; None when none finished."""
    shown = samples(records, current=current, limit=limit)
    if not shown:
        return None
    image = str(current.get("image", ""))
    text = summary(shown, image=image)
    return Chart(tuple(shown), text, svg(shown, image=image, description=text))


def summary(shown: Sequence[Sample], *, image: str) -> str:
    mine = next((s for s in shown if s.current), None)
    others = [s for s in shown if not s.current]
    count = len(shown)
    # an older build shown takes the place of the oldest of the newest builds
    which = "the last" if mine is None or shown[-1].current or count < MAX_BUILDS else "these"
    builds = f"{which} {count} finished builds of {image}"
    head = f"This build took {mine.duration}" if mine else "This build has not finished"
    if mine is not None and not others:
        return f"{head}; it is the only finished build of {image} on record."
    if mine is None and count == 1:
        return f"{head}; the one finished build of {image} on record took {shown[0].duration}."
    seconds = [s.seconds for s in shown]
    return (
        f"{head}; the median of {builds} is {seconds_text(statistics.median(seconds))} "
        f"(fastest {seconds_text(min(seconds))}, slowest {seconds_text(max(seconds))})."
    )


def svg(shown: Sequence[Sample], *, image: str, description: str) -> str:
    """The bar chart: one bar per sample, oldest on the left, heights on one scale from 0."""
    shown = list(shown)[:MAX_BUILDS]
    top = _scale(max((s.seconds for s in shown), default=0.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(shown), MIN_SLOTS)
    base_y = TOP + plot_h
    e = _escape
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="duration-chart" role="img" '
        f'width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'aria-labelledby="{TITLE_ID} {DESC_ID}">',
        f'<title id="{TITLE_ID}">Build duration: this build against the last {len(shown)} '
        f"finished builds of {e(image)}</title>",
        f'<desc id="{DESC_ID}">{e(description)} One bar per build, oldest on the left; its '
        "height is the time from start to finish. Failed builds are hatched; skipped and "
        "cancelled builds are left out.</desc>",
        '<defs><pattern id="duration-chart-hatch" width="6" height="6" '
        'patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
        '<rect width="6" height="6" fill="#f6c9c9"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#a11" stroke-width="2"/></pattern></defs>',
        # the axes and their labels
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{base_y}" stroke="#667"/>',
        f'<line x1="{LEFT}" y1="{base_y}" x2="{WIDTH - RIGHT}" y2="{base_y}" stroke="#667"/>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = _round(base_y - fraction * plot_h)
        parts.append(
            f'<text class="tick" x="{LEFT - 6}" y="{y}" text-anchor="end" '
            f'dominant-baseline="middle" font-size="11">{_tick(top * fraction)}</text>'
        )
        if fraction:
            parts.append(
                f'<line x1="{LEFT}" y1="{y}" x2="{WIDTH - RIGHT}" y2="{y}" stroke="#e3e6ea"/>'
            )
    middle_y = _round(TOP + plot_h / 2)
    parts.append(
        f'<text class="axis-label" x="14" y="{middle_y}" text-anchor="middle" font-size="11" '
        f'transform="rotate(-90 14 {middle_y})">duration</text>'
    )
    parts.append(
        f'<text class="axis-label" x="{_round(LEFT + plot_w / 2)}" y="{HEIGHT - 10}" '
        f'text-anchor="middle" font-size="11">finished builds of {e(image)}, oldest to newest'
        "</text>"
    )
    if any(s.state == "failed" for s in shown):
        parts.append(
            f'<rect x="{WIDTH - RIGHT - 84}" y="{TOP - 20}" width="12" height="12" '
            'fill="url(#duration-chart-hatch)" stroke="#a11"/>'
            f'<text class="legend" x="{WIDTH - RIGHT}" y="{TOP - 10}" text-anchor="end" '
            'font-size="11">failed build</text>'
        )
    for index, shown_sample in enumerate(shown):
        parts.append(_bar(shown_sample, index, slot=slot, top=top, plot_h=plot_h, base_y=base_y))
    parts.append("</svg>")
    return "".join(parts)


def _bar(sample: Sample, index: int, *, slot: float, top: float, plot_h: int, base_y: int) -> str:
    height = max(1.0, sample.seconds / top * plot_h) if top else 1.0
    x, width = LEFT + index * slot + slot * 0.15, slot * 0.7
    y = base_y - height
    fill = "url(#duration-chart-hatch)" if sample.state == "failed" else "#8fa8d4"
    if sample.current:
        fill = "url(#duration-chart-hatch)" if sample.state == "failed" else "#1d2330"
    outline = ' stroke="#1d2330" stroke-width="2"' if sample.current else ""
    this = ", this build" if sample.current else ""
    bar = (
        f'<rect class="bar bar-{sample.state}{" bar-current" if sample.current else ""}" '
        f'x="{_round(x)}" y="{_round(y)}" width="{_round(width)}" height="{_round(height)}" '
        f'fill="{fill}"{outline}><title>{_escape(sample.build_id)}: {sample.duration}, '
        f"{sample.state}{this}</title></rect>"
    )
    if not sample.current:
        return bar
    # under the axis, where no other bar is; at either end it reads inwards from the bar
    centre = x + width / 2
    label_x, anchor = centre, "middle"
    if centre < LEFT + 40:
        label_x, anchor = x, "start"
    elif centre > WIDTH - RIGHT - 40:
        label_x, anchor = x + width, "end"
    return bar + (
        f'<text class="current-label" x="{_round(label_x)}" y="{base_y + 15}" '
        f'text-anchor="{anchor}" font-size="11" font-weight="600">\u25b2 this build</text>'
    )


def _tick(seconds: float) -> str:
    if seconds < 60 and seconds == int(seconds):
        return f"{int(seconds)}s" if seconds else "0"
    return seconds_text(seconds)


def _order(shown: Sample) -> tuple[float, str]:
    return shown.finished_at, shown.build_id


def _scale(longest: float) -> float:
    """The top of the scale: the smallest round duration at least `longest`."""
    return next((n for n in _NICE if n >= longest), math.ceil(longest / 3600) * 3600.0)


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _round(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def _escape(text: str) -> str:
    return html.escape(text, quote=True)
