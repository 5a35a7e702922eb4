"""Build output is masked for credentials before it is stored; a RUN step chooses that text.
The URL-userinfo scan must be linear (the regex it replaced took 1.4 s on 64 KB of `a.a.a…`)
and must mask exactly what the regex masked."""

from __future__ import annotations

import random
import re
import time

import pytest

from pipeline.core import redaction

# the regex the linear scan replaces: its matches are the reference
REFERENCE = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
SIZE = 128 * 1024


@pytest.mark.parametrize(
    "text",
    [
        "a." * (SIZE // 2),
        "a" * SIZE,
        "a:/" * (SIZE // 3),
        "://" * (SIZE // 3),
        "a://" + "b" * SIZE,
        "a://" * (SIZE // 4),
        ("x://u:p@h " * (SIZE // 10)),
        "-" * SIZE + "://x@",
    ],
    ids=[
        "dots",
        "letters",
        "almost-scheme",
        "separators",
        "long-userinfo",
        "schemes",
        "many-urls",
        "dashes",
    ],
)
def test_masking_hostile_log_lines_is_linear(text: str) -> None:
    started = time.perf_counter()
    redaction.scrub(text, ["a-secret-value"])
    redaction.url_passwords(text)
    assert time.perf_counter() - started < 1.0


def _reference_scrub(text: str) -> str:
    return REFERENCE.sub(lambda m: f"{m['scheme']}{redaction.MASK}@", text)


def test_the_linear_scan_masks_what_the_regex_masked() -> None:
    rng = random.Random(7)
    alphabet = "ab1+.-:/@ _xé\t"
    for _ in range(5000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 24)))
        assert redaction.scrub(text) == _reference_scrub(text), text
    for text in [
        "git clone https://user:token@github.com/o/r.git",
        "redis://:pw@127.0.0.1:6379/0 and https://x@h/p",
        "see +http://u@h and _http://v@h and 1http://w@h",
        "mailto:me@example.com http://@h",
    ]:
        assert redaction.scrub(text) == _reference_scrub(text), text
