"""The content lint of a built image (LAY101..LAY113), run between `buildah build` and push by
flows/build.py and by `layering lint --built`: read what the image's layers change against its
base through the ContentReader port (core/ports_content.py), judge it with core/content_rules.py
under image.yaml's `allow:` waivers, and say every finding, waiver, stale waiver and note in the
build log. No I/O of its own.

    inspect(image_id, *, base, allow, image, reader, on_line) -> content_rules.ContentReport
    judge(image_id, *, base, allow, reader, on_line) -> content_rules.ContentReport
    gate(spec, image_id, *, reader, discard, on_line) -> content_rules.ContentReport
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pipeline.core import builds, content_rules, ports, ports_content, repo_schema

PREFIX = "content lint: "


def inspect(
    image_id: str,
    *,
    base: str,
    allow: Sequence[repo_schema.Waiver],
    image: str,
    reader: ports_content.ContentReader,
    on_line: ports.LineSink,
) -> content_rules.ContentReport:
    """The content lint of `image_id` against `base` (both in local storage) under `allow`,
    the waivers of images/`image`/image.yaml, each finding said through `on_line`."""
    report = judge(image_id, base=base, allow=allow, reader=reader, on_line=on_line)
    for finding in report.findings:
        on_line(f"{PREFIX}{finding.id} {finding.severity} {finding.path}: {finding.message}")
    for line in waiver_lines(report, image=image):
        on_line(PREFIX + line)
    on_line(PREFIX + counts(report))
    return report


def judge(
    image_id: str,
    *,
    base: str,
    allow: Sequence[repo_schema.Waiver],
    reader: ports_content.ContentReader,
    on_line: ports.LineSink,
) -> content_rules.ContentReport:
    """The report alone: only the progress and what could not be read go to `on_line`."""
    on_line(PREFIX + "reading the image's layers")
    content = reader.content(image_id, base=base)
    for note in content.notes:
        on_line(f"{PREFIX}note: {note}")
    return content_rules.check(content, allow)


def waiver_lines(report: content_rules.ContentReport, *, image: str) -> list[str]:
    """What image.yaml's waivers did: each waived finding with its reason, each stale waiver."""
    lines = [f"waived {f.id} {f.path} ({reason})" for f, reason in report.waived]
    lines += [
        f"images/{image}/image.yaml allow: {rule} matched nothing in the built image; remove "
        "the waiver if the image no longer needs it"
        for rule in report.stale
    ]
    return lines


def gate(
    spec: builds.BuildSpec,
    image_id: str,
    *,
    reader: ports_content.ContentReader,
    discard: Callable[[], None],
    on_line: ports.LineSink,
) -> content_rules.ContentReport:
    """`inspect` the image `spec` built, then `discard` it when it must not be pushed: an error
    finding, or the image could not be read (the exception goes on)."""
    try:
        report = inspect(
            image_id,
            base=spec.base,
            allow=spec.allow,
            image=spec.image,
            reader=reader,
            on_line=on_line,
        )
    except BaseException:
        discard()
        raise
    if report.errors:
        discard()
    return report


def counts(report: content_rules.ContentReport) -> str:
    """ "1 error, 2 warnings" (and how many findings image.yaml waived)."""
    errors, warnings = len(report.errors), len(report.warnings)
    text = f"{errors} error{'s' if errors != 1 else ''}, {warnings} warning"
    text += "s" if warnings != 1 else ""
    if report.waived:
        text += f" ({len(report.waived)} waived in image.yaml)"
    return text


def failure(image: str, report: content_rules.ContentReport) -> str:
    """A failed build's error: the first finding first (it leads the commit status)."""
    return (
        f"{report.headline()}; the image was not pushed: fix the finding or waive the rule in "
        f"images/{image}/image.yaml allow: with a reason"
    )


def documents(report: content_rules.ContentReport) -> tuple[dict[str, Any], ...]:
    """The kept findings as the build record stores them (BuildRecord.content_findings)."""
    return tuple(finding.as_dict() for finding in report.findings)
