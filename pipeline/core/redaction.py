"""Removing credentials from text before it is stored or shown: userinfo in URLs and known
secret values. No I/O."""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
# scheme://user:password@host -> scheme://***@host (Git remotes and Redis URLs are the usual leak)
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
# Short values would mask ordinary words; real secrets are longer than this.
MIN_SECRET_LENGTH = 6


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    for secret in sorted(
        {s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True
    ):
        text = text.replace(secret, MASK)
    return text


def url_passwords(text: str) -> list[str]:
    """Passwords (or tokens) in the userinfo of URLs in `text`, to mask elsewhere too."""
    found: list[str] = []
    for match in re.finditer(r"\b[A-Za-z][A-Za-z0-9+.-]*://(?P<userinfo>[^/@\s]+)@", text):
        user, _, password = match["userinfo"].partition(":")
        found.append(password or user)
    return found
