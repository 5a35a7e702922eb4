"""After a build succeeded, while its image is still in local storage: what it changes against
its base (the ImageInspector port), saved on the build's record as `changes`, then heard by
`on_changes` (the worker asks for the build's check run to be drawn again). A failure never
fails the build: the record says why the changes could not be read. Shared by the worker's
deferred clean-up and `layering build` (flows/build.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from pipeline.core import builds, image_changes, ports, ports_image_changes, redaction


def analyse(
    spec: builds.BuildSpec,
    *,
    build_id: str,
    records: ports.BuildRecords,
    inspector: ports_image_changes.ImageInspector,
    secrets: Sequence[str],
    on_line: ports.LineSink,
    on_changes: Callable[[builds.BuildRecord], None] | None = None,
) -> builds.BuildRecord | None:
    """The record with its `changes` saved (None when the record is gone)."""
    try:
        changes = inspector.changes(spec)
    except Exception as exc:  # a bug here must not cost the build its image or clean-up
        changes = image_changes.failed(f"{type(exc).__name__}: {exc}", base=spec.base)
    changes = dataclasses.replace(changes, error=redaction.scrub(changes.error, secrets))
    if changes.error:
        on_line(f"note: the image's changes could not be read: {changes.error}")
    else:
        on_line(f"changes against the base: {image_changes.headline(changes)}")
    current = records.get(build_id)
    if current is None:
        return None
    updated = dataclasses.replace(current, changes=changes.to_json())
    records.save(updated)
    if on_changes is not None:
        on_changes(updated)
    return updated
