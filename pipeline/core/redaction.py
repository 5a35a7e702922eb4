"""Removing credentials from text before it is stored or shown: userinfo in URLs and known
secret values. No I/O.

Build logs are hostile input (a RUN step prints what it likes), so the URL scan is linear in
the text's length: it finds each `://` and looks back over the scheme and forward over the
userinfo, instead of a regex that retries the scheme at every position (quadratic on
`a.a.a.…`)."""

from __future__ import annotations

import string
import urllib.parse
from collections.abc import Iterable, Iterator

MASK = "***"
# Short values would mask ordinary words; real secrets are longer than this.
MIN_SECRET_LENGTH = 6
_SCHEME_CHARS = frozenset(string.ascii_letters + string.digits + "+.-")
_USERINFO_STOP = frozenset("/@")


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def _userinfo_spans(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of the userinfo of each `scheme://userinfo@` in `text`: what the regex
    `\\b[A-Za-z][A-Za-z0-9+.-]*://([^/@\\s]+)@` would match, found in linear time."""
    search = 0
    while (separator := text.find("://", search)) != -1:
        search = separator + 3
        run = separator
        while run > 0 and text[run - 1] in _SCHEME_CHARS:
            run -= 1
        if not any(
            text[i] in string.ascii_letters and (i == 0 or not _is_word(text[i - 1]))
            for i in range(run, separator)
        ):
            continue
        end = separator + 3
        while end < len(text) and text[end] not in _USERINFO_STOP and not text[end].isspace():
            end += 1
        if end < len(text) and text[end] == "@" and end > separator + 3:
            yield separator + 3, end
            search = end + 1


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with URL userinfo (scheme://user:password@host -> scheme://***@host: Git remotes
    and Redis URLs are the usual leak) and every known secret value masked."""
    pieces: list[str] = []
    kept = 0
    for start, end in _userinfo_spans(text):
        pieces += (text[kept:start], MASK)
        kept = end
    text = "".join(pieces) + text[kept:] if pieces else text
    for secret in sorted(
        {s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True
    ):
        text = text.replace(secret, MASK)
    return text


def url_passwords(text: str) -> list[str]:
    """Passwords (or tokens) in the userinfo of URLs in `text`, to mask elsewhere too."""
    found: list[str] = []
    for start, end in _userinfo_spans(text):
        user, _, password = text[start:end].partition(":")
        found.append(password or user)
    return found


def public_url(url: str) -> str:
    """A repository URL fit for an image label: its userinfo, query and fragment dropped
    (`https://user:token@host/o/r.git?x` -> `https://host/o/r.git`); an scp-like
    `git@host:o/r.git` or a path is kept as it is, without any secret it could not carry."""
    url = url.strip()
    if "://" not in url:
        return scrub(url)
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return scrub(url)
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))
