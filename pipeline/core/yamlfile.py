"""Strict YAML for repository files: safe loading, duplicate keys refused, errors with lines,
and byte-stable dumping for files the pipeline writes. No I/O.

Repository YAML comes from forks too, so `load` parses it under a budget, in two passes over
libyaml (C) at libyaml's speed:

1. the event stream is checked before any node is composed or constructed: anchors, aliases,
   merge keys (`<<`), complex (non-scalar) mapping keys and nesting deeper than MAX_DEPTH are
   refused with the line they start on. Aliases and merge keys are what expand a small file into
   gigabytes (billion laughs; PyYAML flattens merge keys before any check of ours can run), and
   none of the pipeline's files needs them;
2. the document is then loaded by libyaml's safe loader, refusing duplicate keys, and any
   value PyYAML's constructors cannot build (a 2001-02-30 date, a 5,000-digit number) is a
   YamlProblem with its line instead of a ValueError from deep inside PyYAML.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

# Honest repository files nest a handful of levels (a MachineConfig's Ignition config ~8);
# the cap also keeps PyYAML's recursive constructor far from Python's recursion limit.
MAX_DEPTH = 32
# The YAML 1.1 numbers PyYAML builds: an int or float of more characters is refused (a
# sexagesimal `1:1:1:…` of 256 KiB took 3 s of big-integer arithmetic to construct).
MAX_NUMBER_LENGTH = 64
ANCHORS = "YAML anchors and aliases are not allowed here; write the value out"
MERGE_KEYS = "YAML merge keys (<<) are not allowed here; write the keys out"
COMPLEX_KEYS = (
    "a mapping key must be a plain value, not a list or mapping (`? [a, b]`); "
    "write the key as a string"
)
_MERGE_TAG = "tag:yaml.org,2002:merge"
_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")


class YamlProblem(ValueError):
    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


def _line(event: yaml.Event | yaml.Node) -> int | None:
    mark = event.start_mark
    return None if mark is None else int(mark.line) + 1


def _is_merge_key(event: yaml.ScalarEvent) -> bool:
    # a plain `<<` resolves to the merge tag; `!!merge` names it; a quoted "<<" is a string
    return event.tag == _MERGE_TAG or (
        event.tag is None and event.value == "<<" and bool(event.implicit[0])
    )


def check_structure(text: str) -> None:
    """Refuse what expands or cannot be a plain mapping key, from libyaml's event stream,
    before anything is composed. Raises YamlProblem naming the line."""
    parser = yaml.CSafeLoader(text)
    # one entry per open collection: for a mapping, whether its next node is a key
    expecting_key: list[bool | None] = []
    try:
        while True:
            event = parser.get_event()
            if event is None or isinstance(event, yaml.StreamEndEvent):
                return
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                raise YamlProblem(ANCHORS, _line(event))
            if isinstance(event, yaml.CollectionEndEvent):
                expecting_key.pop()
                _node_done(expecting_key)
                continue
            if not isinstance(event, yaml.NodeEvent):
                continue  # stream and document events
            is_key = bool(expecting_key) and expecting_key[-1] is True
            if isinstance(event, yaml.CollectionStartEvent):
                if is_key:
                    raise YamlProblem(COMPLEX_KEYS, _line(event))
                if len(expecting_key) >= MAX_DEPTH:
                    raise YamlProblem(
                        f"exceeds the maximum nesting depth of {MAX_DEPTH}; repository YAML "
                        "is never this deep, flatten it",
                        _line(event),
                    )
                mapping = isinstance(event, yaml.MappingStartEvent)
                expecting_key.append(True if mapping else None)
                continue
            if is_key and isinstance(event, yaml.ScalarEvent) and _is_merge_key(event):
                raise YamlProblem(MERGE_KEYS, _line(event))
            _node_done(expecting_key)
    finally:
        parser.dispose()


def _node_done(expecting_key: list[bool | None]) -> None:
    """A whole node was read: in a mapping, a key is followed by its value and the reverse."""
    if expecting_key and expecting_key[-1] is not None:
        expecting_key[-1] = not expecting_key[-1]


class _StrictLoader(yaml.CSafeLoader):
    """libyaml's safe loader (6x faster than pure Python) refusing duplicate mapping keys
    (PyYAML silently keeps the last one) and turning a value its constructors cannot build
    into a YamlProblem with the value's line."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        if (
            isinstance(node, yaml.ScalarNode)
            and node.tag in _NUMBER_TAGS
            and len(node.value) > MAX_NUMBER_LENGTH
        ):
            raise YamlProblem(
                f"a number of {len(node.value)} characters is too long; quote it if it is text",
                _line(node),
            )
        try:
            return super().construct_object(node, deep=deep)
        except (YamlProblem, yaml.YAMLError):
            raise
        # PyYAML's constructors raise whatever Python raises on a value they were not written
        # for: `2001-02-30` (ValueError), `!!int ''` (IndexError), `!!timestamp x`
        # (AttributeError), a 1:1:…:1.5 float (OverflowError)
        except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError) as exc:
            shown = f" {node.value[:40]!r}" if isinstance(node, yaml.ScalarNode) else ""
            raise YamlProblem(f"invalid value{shown}: {exc}", _line(node)) from None


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int | None] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = _line(key_node)
        if key in seen:
            raise YamlProblem(f"key {key!r} appears twice (lines {seen[key]} and {line})", line)
        seen[key] = line
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _mapping_without_duplicates,
)


def _text(raw: bytes | str) -> str:
    if isinstance(raw, str):
        return raw
    if b"\0" in raw:
        raise YamlProblem("not a text file (NUL byte found)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlProblem(f"not UTF-8 text (byte {exc.start})") from None


def load(raw: bytes | str) -> Any:
    """Parse one YAML document; raises YamlProblem (a ValueError) with a line number."""
    text = _text(raw)
    try:
        check_structure(text)
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except YamlProblem:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise YamlProblem(f"invalid YAML: {exc.problem or exc}", line) from None
    except yaml.YAMLError as exc:
        raise YamlProblem(f"invalid YAML: {exc}") from None


def key_lines(raw: bytes | str, locations: Sequence[Sequence[str | int]]) -> list[int | None]:
    """For each location (keys and list indexes, as pydantic reports them), the 1-based line of
    its deepest part found in the document, composed once; None where the text is not YAML."""
    try:
        root = yaml.compose(_text(raw), Loader=yaml.CSafeLoader)
    except (yaml.YAMLError, YamlProblem, RecursionError):
        return [None] * len(locations)
    return [_key_line(root, location) for location in locations]


def _key_line(node: yaml.Node | None, location: Sequence[str | int]) -> int | None:
    line: int | None = None
    for part in location:
        if isinstance(node, yaml.MappingNode):
            pair = next((p for p in node.value if p[0].value == str(part)), None)
            if pair is None:
                break
            line, node = _line(pair[0]), pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                break
            node = node.value[part]
            line = _line(node)
        else:
            break
    return line


def key_line(raw: bytes | str, location: Sequence[str | int]) -> int | None:
    """The 1-based line of the deepest part of `location` found in the document; None when the
    text is not YAML at all."""
    return key_lines(raw, [location])[0]


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
