"""core/log_caps.py: cutting a log line at a byte budget on a character boundary, and the marker
texts, over tables of cases."""

from __future__ import annotations

import pytest

from pipeline.core import log_caps


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (16 * 1024 * 1024, "16 MiB"),
        (256 * 1024, "256 KiB"),
        (1536 * 1024, "1536 KiB"),
        (1000, "1000 bytes"),
        (1024, "1 KiB"),
    ],
)
def test_size_text(size: int, text: str) -> None:
    assert log_caps.size_text(size) == text


@pytest.mark.parametrize(
    ("line", "kept"),
    [
        ("short", "short"),
        ("x" * 16, "x" * 16),  # exactly at the cap
        ("x" * 17, "x" * 16),
        ("é" * 9, "é" * 8),  # 18 bytes: 8 two-byte characters fit
        ("a" + "é" * 8, "a" + "é" * 7),  # the 16th byte would be half an é
        ("😀" * 5, "😀" * 4),  # four-byte characters
        ("abc😀😀😀😀", "abc😀😀😀"),  # 19 bytes: the last emoji would be cut in half
    ],
)
def test_cut_line_keeps_whole_characters(line: str, kept: str) -> None:
    cut = log_caps.cut_line(line, 16)
    if kept == line:
        assert cut == line
    else:
        assert cut == kept + "… [line cut at 16 bytes]"
        assert len(cut.removesuffix(log_caps.line_cut_marker(16)).encode()) <= 16


def test_before_scrub_keeps_more_than_the_cut_plus_any_secret() -> None:
    line = "y" * 1_000_000
    assert len(log_caps.before_scrub(line, 8192)) == 8192 + log_caps.SCRUB_MARGIN_CHARACTERS
    assert log_caps.before_scrub("short", 8192) == "short"


def test_markers() -> None:
    assert log_caps.line_cut_marker(8192) == "… [line cut at 8192 bytes]"
    assert log_caps.truncation_marker(16 * 1024 * 1024) == (
        "[log truncated: over 16 MiB; the build continues]"
    )
