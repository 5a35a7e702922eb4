"""The port the content lint reads a built image through (flows/content_check.py); the adapter
is adapters/layer_content.py."""

from __future__ import annotations

from typing import Protocol

from pipeline.core import content_lint


class ContentReader(Protocol):
    def content(self, image: str, *, base: str) -> content_lint.ImageContent:
        """`image` (an image id or reference in local buildah storage) as its base's root
        filesystem (`base`, a reference in the same storage) plus the changes of the layers
        `image` adds on top of it. Raises PermanentError when the storage cannot be read as
        layers (naming what is missing), TemporaryError when a layer vanished meanwhile."""
        ...

    def prepare(self, base: str) -> None:
        """Start reading `base`'s side now, while buildah builds, when it is in local storage
        and not read yet; `content` then waits for it. Never raises: `content` says what
        went wrong."""
        ...
