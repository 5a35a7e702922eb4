"""Containerfile text -> stages, FROM references (with ARG substitution), RUN commands and the
packages they install. Built on dockerfile-parse. No I/O."""

from __future__ import annotations

import io
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from dockerfile_parse import DockerfileParser

_VARIABLE = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<modifier>:[-+][^}]*)?\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)
_COMMAND_SEPARATORS = {"&&", "||", ";", "|", "&"}


class ContainerfileError(ValueError):
    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: RUN, COPY, ADD, ...
    value: str  # arguments with continuation lines joined
    line: int  # 1-based line of the keyword
    end_line: int


@dataclass(frozen=True)
class Stage:
    index: int
    name: str | None  # the `AS name` alias
    image: str  # the FROM argument as written, e.g. ${BASE_IMAGE}
    resolved: str | None  # after substituting global ARGs; None when a variable has no value
    from_line: int
    from_flags: tuple[str, ...]
    instructions: tuple[Instruction, ...]  # everything after FROM, up to the next FROM

    @property
    def runs(self) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == "RUN"]


@dataclass(frozen=True)
class Containerfile:
    stages: tuple[Stage, ...]
    global_args: Mapping[str, str | None]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage_named(self, name: str) -> Stage | None:
        lowered = name.lower()
        for stage in self.stages:
            if stage.name is not None and stage.name.lower() == lowered:
                return stage
        return None

    def root_stage(self, stage: Stage) -> Stage:
        """Follow `FROM <earlier stage>` back to the stage that starts from a real image."""
        seen: set[int] = set()
        while stage.resolved is not None and (parent := self.stage_named(stage.resolved)):
            if parent.index >= stage.index or parent.index in seen:
                break
            seen.add(parent.index)
            stage = parent
        return stage


def substitute(text: str, variables: Mapping[str, str | None]) -> str | None:
    """Expand $VAR, ${VAR}, ${VAR:-default}, ${VAR:+alt}; None when a variable has no value."""
    missing = False

    def expand(match: re.Match[str]) -> str:
        nonlocal missing
        name = match.group("braced") or match.group("plain")
        value = variables.get(name)
        modifier = match.group("modifier")
        if modifier and modifier.startswith(":-"):
            return value if value else modifier[2:]
        if modifier and modifier.startswith(":+"):
            return modifier[2:] if value else ""
        if value is None:
            missing = True
            return ""
        return value

    result = _VARIABLE.sub(expand, text)
    return None if missing else result


def _parse_arg(value: str) -> tuple[str, str | None]:
    name, sep, default = value.strip().partition("=")
    if sep and len(default) >= 2 and default[0] == default[-1] and default[0] in "'\"":
        default = default[1:-1]
    return name.strip(), (default if sep else None)


def parse(text: str, build_args: Mapping[str, str] | None = None) -> Containerfile:
    """Parse a Containerfile; ContainerfileError (with a line) when it cannot be used at all."""
    if "\0" in text:
        raise ContainerfileError("is a binary file, not a Containerfile")
    parser = DockerfileParser(fileobj=io.BytesIO(b""), env_replace=False)
    parser.content = text
    global_args: dict[str, str | None] = {}
    stages: list[Stage] = []
    pending: dict[str, object] | None = None
    instructions: list[Instruction] = []

    def close_stage() -> None:
        if pending is None:
            return
        stages.append(Stage(instructions=tuple(instructions), **pending))  # type: ignore[arg-type]

    for item in parser.structure:
        keyword = str(item["instruction"]).upper()
        if keyword == "COMMENT":
            continue
        value = str(item["value"])
        line, end_line = int(item["startline"]) + 1, int(item["endline"]) + 1
        if keyword == "FROM":
            close_stage()
            instructions = []
            words = value.split()
            flags = tuple(w for w in words if w.startswith("--"))
            words = [w for w in words if not w.startswith("--")]
            if not words:
                raise ContainerfileError("FROM needs an image", line)
            name = None
            if len(words) >= 3 and words[1].lower() == "as":
                name = words[2]
            elif len(words) != 1:
                raise ContainerfileError(
                    f"cannot read FROM {value!r}; use FROM <image> [AS <name>]", line
                )
            variables = {
                **global_args,
                **{k: v for k, v in (build_args or {}).items() if k in global_args},
            }
            pending = {
                "index": len(stages),
                "name": name,
                "image": words[0],
                "resolved": substitute(words[0], variables),
                "from_line": line,
                "from_flags": flags,
            }
        elif pending is None:
            if keyword != "ARG":
                raise ContainerfileError(
                    f"{keyword} before the first FROM; only ARG may come first", line
                )
            arg_name, default = _parse_arg(value)
            global_args[arg_name] = default
        else:
            instructions.append(Instruction(keyword, value, line, end_line))
    close_stage()
    if not stages:
        raise ContainerfileError("has no FROM instruction; start with FROM <cluster base image>")
    return Containerfile(tuple(stages), global_args)


def commands(shell_text: str) -> list[list[str]]:
    """Split a RUN (shell form) into simple commands, each an argv list (best effort)."""
    lexer = shlex.shlex(shell_text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = ""
    result: list[list[str]] = [[]]
    try:
        for token in lexer:
            if token in _COMMAND_SEPARATORS or set(token) <= set(";&|"):
                result.append([])
            else:
                result[-1].append(token)
    except ValueError:
        # unbalanced quotes: fall back to whitespace splitting so lint can still look
        return [shell_text.split()]
    return [argv for argv in result if argv]


def run_argv_text(instruction: Instruction) -> str:
    """A RUN's shell text; exec form (JSON array) is joined back into words."""
    value = instruction.value.strip()
    if value.startswith("["):
        try:
            import json

            words = json.loads(value)
            if isinstance(words, list):
                return shlex.join(str(w) for w in words)
        except ValueError:
            pass
    return value


@dataclass(frozen=True)
class Install:
    tool: str  # rpm-ostree, dnf, yum, microdnf, rpm
    action: str  # install, override replace, ...
    packages: tuple[str, ...]  # names, file paths or URLs as written
    line: int


_INSTALLERS = {"rpm-ostree", "dnf", "yum", "microdnf", "dnf5", "rpm"}


def installs(stage: Stage) -> list[Install]:
    """Package installations a stage's RUN steps perform."""
    found: list[Install] = []
    for run in stage.runs:
        for argv in commands(run_argv_text(run)):
            tool = argv[0].rsplit("/", 1)[-1]
            if tool not in _INSTALLERS:
                continue
            words = [w for w in argv[1:] if not w.startswith("-")]
            if tool == "rpm":
                if any(
                    flag.startswith(("-i", "-U", "--install", "--upgrade")) for flag in argv[1:]
                ):
                    found.append(Install(tool, "install", tuple(words), run.line))
                continue
            if not words:
                continue
            action = words[0]
            if action == "override" and len(words) >= 2:
                found.append(Install(tool, f"override {words[1]}", tuple(words[2:]), run.line))
            elif action in {"install", "reinstall", "upgrade", "update", "localinstall"}:
                found.append(Install(tool, action, tuple(words[1:]), run.line))
    return found


def pin_final_from(text: str, reference: str) -> str:
    """Rewrite the FROM the final stage descends from to `reference`, keeping flags, alias and
    line numbers (so build errors still point at the user's lines)."""
    parsed = parse(text)
    final = parsed.root_stage(parsed.final)
    lines = text.splitlines(keepends=True)
    index = final.from_line - 1
    original = lines[index]
    replaced = original.replace(final.image, reference, 1)
    if replaced == original and final.image != reference:
        raise ContainerfileError("cannot rewrite the final FROM line", final.from_line)
    lines[index] = replaced
    return "".join(lines)
