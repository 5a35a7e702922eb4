"""Strict YAML for repository files: safe loading, duplicate keys refused, errors with lines,
and byte-stable dumping for files the pipeline writes. No I/O."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml


class YamlProblem(ValueError):
    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


class _StrictLoader(yaml.CSafeLoader):
    """libyaml's safe loader (6x faster than pure Python) refusing duplicate mapping keys
    (PyYAML silently keeps the last one)."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise YamlProblem(f"key {key!r} appears twice (lines {seen[key]} and {line})", line)
        seen[key] = line
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _mapping_without_duplicates,
)


def load(text: bytes | str) -> Any:
    """Parse one YAML document; raises YamlProblem with a line number."""
    if isinstance(text, bytes):
        if b"\0" in text:
            raise YamlProblem("not a text file (NUL byte found)")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise YamlProblem(f"not UTF-8 text (byte {exc.start})") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except YamlProblem:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise YamlProblem(f"invalid YAML: {exc.problem or exc}", line) from None
    except yaml.YAMLError as exc:
        raise YamlProblem(f"invalid YAML: {exc}") from None


def key_line(text: bytes | str, location: Sequence[str | int]) -> int | None:
    """The 1-based line of the deepest part of `location` (keys and list indexes, as pydantic
    reports them) found in the document; None when the text is not YAML at all."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line: int | None = None
    for part in location:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == str(part)), None)
            if match is None:
                break
            key = next(k for k, v in node.value if v is match)
            line, node = key.start_mark.line + 1, match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def dump(document: Any) -> bytes:
    """Byte-stable YAML: sorted keys, block style, no aliases, trailing newline."""

    class _NoAliasDumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    text = yaml.dump(
        document,
        Dumper=_NoAliasDumper,
        sort_keys=True,
        default_flow_style=False,
        allow_unicode=True,
        width=4096,
    )
    return text.encode("utf-8")
