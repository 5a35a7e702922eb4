"""Names and image references from outside: DNS labels, `repo@sha256:…` references. No I/O.

Every pattern is matched whole (`fullmatch`: `$` would also accept a trailing newline) and runs
in time linear in its input: repeated parts are separated by characters they cannot match."""

from __future__ import annotations

import re
from dataclasses import dataclass

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# <host[:port]/>path components, lower-case, as the distribution spec allows them
_REPOSITORY = re.compile(
    r"(?:(?P<host>[a-zA-Z0-9.-]+(?::[0-9]+)?)/)?"
    r"(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
)
_TAG = re.compile(r"[\w][\w.-]{0,127}")


def is_dns_label(name: str) -> bool:
    return DNS_LABEL.fullmatch(name) is not None


def is_digest(value: str) -> bool:
    return DIGEST.fullmatch(value) is not None


@dataclass(frozen=True)
class ImageRef:
    """`repository[:tag][@sha256:…]`; `repository` includes the registry host."""

    repository: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        text = self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    def with_digest(self, digest: str) -> ImageRef:
        return ImageRef(self.repository, None, digest)

    def with_tag(self, tag: str) -> ImageRef:
        return ImageRef(self.repository, tag, None)


def parse_image_ref(text: str) -> ImageRef:
    """Parse an image reference; raises ValueError with what is wrong and what is expected."""
    if not text or text != text.strip() or any(c.isspace() for c in text):
        raise ValueError(f"{text!r} is not an image reference (no spaces allowed)")
    rest, _, digest = text.partition("@")
    if digest and not is_digest(digest):
        raise ValueError(f"digest {digest!r} is not sha256:<64 lower-case hex>")
    tag: str | None = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise ValueError(f"tag {tag!r} is not a valid image tag")
    if not _REPOSITORY.fullmatch(rest):
        raise ValueError(f"{rest!r} is not a valid image repository (host/path, lower-case)")
    return ImageRef(rest, tag, digest or None)
