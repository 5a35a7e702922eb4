"""Variables in Containerfile text: `$VAR`, `${VAR}`, `${VAR:-default}` and `${VAR:+alt}` as
buildah expands them in FROM and COPY --from, for the lint and the pipeline's FROM pinning.
No I/O.

One scan from left to right, linear in the text: the regular expression this replaces retried
an unclosed `${A:-` to the end of the text from every `$` (20 s on 128 KiB of them)."""

from __future__ import annotations

import string
from collections.abc import Mapping

_NAME_START = frozenset(string.ascii_letters + "_")
_NAME_CHARS = _NAME_START | frozenset(string.digits)


def _name_end(text: str, start: int) -> int:
    """Where the variable name starting at `start` ends (`start` when there is none)."""
    if start >= len(text) or text[start] not in _NAME_START:
        return start
    end = start + 1
    while end < len(text) and text[end] in _NAME_CHARS:
        end += 1
    return end


def substitute(text: str, variables: Mapping[str, str | None]) -> str | None:
    """Expand $VAR, ${VAR}, ${VAR:-default}, ${VAR:+alt}; None when a variable has no value.

    A `$` that starts none of these stays as written; a modifier ends at the first `}`. One
    scan from left to right (a regular expression retried an unclosed `${A:-` to the end of the
    text from every `$`, quadratic in the text)."""
    parts: list[str] = []
    missing = False
    copied = 0  # text[:copied] is in parts
    next_close = text.find("}")  # the first "}" at or after the current modifier, or -1
    dollar = text.find("$")
    while dollar >= 0:
        name, modifier, end = "", None, -1
        if text.startswith("{", dollar + 1):
            name_end = _name_end(text, dollar + 2)
            name = text[dollar + 2 : name_end]
            if name and text.startswith("}", name_end):
                end = name_end + 1
            elif name and text[name_end : name_end + 2] in (":-", ":+"):
                if 0 <= next_close < name_end + 2:
                    next_close = text.find("}", name_end + 2)
                if next_close >= 0:
                    modifier, end = text[name_end:next_close], next_close + 1
        else:
            name_end = _name_end(text, dollar + 1)
            name = text[dollar + 1 : name_end]
            end = name_end if name else -1
        if end < 0:  # not a variable: the `$` stays
            dollar = text.find("$", dollar + 1)
            continue
        value = variables.get(name)
        if modifier is not None and modifier.startswith(":-"):
            expanded = value if value else modifier[2:]
        elif modifier is not None:
            expanded = modifier[2:] if value else ""
        elif value is None:
            missing, expanded = True, ""
        else:
            expanded = value
        parts += [text[copied:dollar], expanded]
        copied = end
        dollar = text.find("$", end)
    parts.append(text[copied:])
    return None if missing else "".join(parts)
