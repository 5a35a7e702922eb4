"""The port of the package diff (flows/build_changes.py): reading what a built image, still in
local storage, changes against its base (adapters/image_changes.py ImageReader). No I/O."""

from __future__ import annotations

from typing import Protocol

from pipeline.core import builds, image_changes


class ImageInspector(Protocol):
    def changes(self, spec: builds.BuildSpec) -> image_changes.ImageChanges:
        """What `spec.target` changes against `spec.base`; never raises: a failure is the
        result's `error`."""
