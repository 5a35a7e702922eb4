"""Byte caps on build logs (issue 10): cutting one line to a byte budget without splitting a
character, and the marker texts shown where a line or a whole log was cut. The store
(adapters/build_records.py) applies them on every appended line. No I/O.

    cut_line("x" * 10_000_000, 8192) -> "xxx…x… [line cut at 8192 bytes]"  (8192 x's)
    truncation_marker(16 * MIB) -> "[log truncated: over 16 MiB; the build continues]"
"""

from __future__ import annotations

KIB = 1024
MIB = 1024 * KIB
# Credentials are masked before a line is cut (a secret across the cut must not leave half of
# itself behind), and masking a 10 MB line is slow; so a line is first shortened to the cap
# plus this margin, longer than any one-line secret or URL userinfo (tokens and passwords are
# under 200 characters; a PEM key spans many lines, 64 characters each).
SCRUB_MARGIN_CHARACTERS = 4 * KIB


def size_text(size: int) -> str:
    """`16 MiB`, `256 KiB` or `1000 bytes`: as a person wrote the setting."""
    if size >= MIB and size % MIB == 0:
        return f"{size // MIB} MiB"
    if size >= KIB and size % KIB == 0:
        return f"{size // KIB} KiB"
    return f"{size} bytes"


def line_cut_marker(max_bytes: int) -> str:
    return f"… [line cut at {max_bytes} bytes]"


def truncation_marker(max_bytes: int) -> str:
    """The one line a log ends with once it has reached `max_bytes`."""
    return f"[log truncated: over {size_text(max_bytes)}; the build continues]"


def before_scrub(line: str, max_bytes: int) -> str:
    """A prefix of `line` long enough that masking it and then cutting it at `max_bytes` gives
    the same text as masking the whole line and cutting it."""
    return line[: max_bytes + SCRUB_MARGIN_CHARACTERS]


def cut_line(line: str, max_bytes: int) -> str:
    """`line` when its UTF-8 form fits in `max_bytes`, else its first `max_bytes` bytes (never
    half a character) followed by the cut marker."""
    if len(line) * 4 <= max_bytes:  # no character is longer than 4 bytes in UTF-8
        return line
    encoded = line.encode("utf-8", "replace")
    if len(encoded) <= max_bytes:
        return line
    # "ignore" drops only the partial character left at the end of the slice
    return encoded[:max_bytes].decode("utf-8", "ignore") + line_cut_marker(max_bytes)
