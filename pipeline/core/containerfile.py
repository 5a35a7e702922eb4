"""Containerfile text -> stages, FROM references (with ARG substitution), RUN commands and the
packages they install. Built on dockerfile-parse. No I/O.

Containerfiles come from forks too: every pattern here runs in time linear in the text it is
given (tests/security/test_regex_budgets.py feeds each 128 KiB of its worst input)."""

from __future__ import annotations

import io
import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from dockerfile_parse import DockerfileParser

from pipeline.core import containerfile_variables

# ARG substitution, under the name callers use (containerfile.substitute)
substitute = containerfile_variables.substitute
_COMMAND_SEPARATORS = {"&&", "||", ";", "|", "&"}
_KEYWORDS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}  # fmt: skip


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
        if keyword not in _KEYWORDS:
            raise ContainerfileError(
                f"unknown instruction {keyword!r}; expected one of FROM, RUN, COPY, ADD, ARG, ...",
                line,
            )
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


def _strip_shell_comment(text: str) -> str:
    """Drop a shell comment (`#` starting a word, outside quotes) and everything after it.

    Continuation lines are joined before the shell runs, so an inline `# ...` on one line of a
    RUN comments out every following line too; lint must see what the shell sees."""
    quote = ""
    escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or text[index - 1].isspace()):
            return text[:index]
    return text


_WRAPPERS = {"sudo", "env", "exec", "command", "time", "nice", "nohup"}
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def _simple_command(words: list[str]) -> list[str]:
    """Drop leading `VAR=value` assignments and wrappers such as `sudo` or `env`."""
    start = 0
    while start < len(words) and (
        _ASSIGNMENT.match(words[start]) or words[start].rsplit("/", 1)[-1] in _WRAPPERS
    ):
        start += 1
    return words[start:]


def commands(shell_text: str) -> list[list[str]]:
    """Split a RUN (shell form) into simple commands, each an argv list (best effort).

    Separators (`&&`, `||`, `;`, `|`, `&`) start a new command; redirections and their targets,
    comments, leading assignments and wrappers (`sudo`, `env`) are left out."""
    text = _strip_shell_comment(shell_text)
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    lexer.commenters = ""
    result: list[list[str]] = [[]]
    skip_next = False
    try:
        for token in lexer:
            if skip_next:
                skip_next = False
            elif token in _COMMAND_SEPARATORS or set(token) <= set(";&|"):
                result.append([])
            elif set(token) <= set("<>&|"):
                # a redirection: neither its target nor a file descriptor (`2>`) is an argument
                skip_next = True
                if result[-1] and result[-1][-1].isdigit():
                    result[-1].pop()
            else:
                result[-1].append(token)
    except ValueError:
        # unbalanced quotes: fall back to whitespace splitting so lint can still look
        return [text.split()]
    simple = (_simple_command(argv) for argv in result)
    return [argv for argv in simple if argv]


# matched at a position (no `^`): flags are skipped without copying the rest of the text
_RUN_FLAG = re.compile(r"--(?:mount|network|security)(?:=\S*)?\s+")
_SHELLS = {"sh", "bash", "dash", "zsh"}


def run_argv_text(instruction: Instruction) -> str:
    """A RUN's shell text without RUN flags (`--mount=...`); exec form (JSON array) is joined
    back into words, and `["/bin/sh", "-c", "script"]` becomes the script."""
    value = instruction.value.strip()
    position = 0
    while match := _RUN_FLAG.match(value, position):
        position = match.end()
    value = value[position:]
    if value.startswith("["):
        try:
            words = json.loads(value)
        except (ValueError, RecursionError):  # not JSON, or nested past the recursion limit
            return value
        if isinstance(words, list):
            argv = [str(w) for w in words]
            if len(argv) >= 3 and argv[0].rsplit("/", 1)[-1] in _SHELLS and argv[1] == "-c":
                return argv[2]
            return shlex.join(argv)
    return value


@dataclass(frozen=True)
class Install:
    tool: str  # rpm-ostree, dnf, yum, microdnf, rpm
    action: str  # install, override replace, ...
    packages: tuple[str, ...]  # names, file paths or URLs as written
    line: int


_INSTALLERS = {"rpm-ostree", "dnf", "yum", "microdnf", "dnf5", "rpm"}
_INSTALL_ACTIONS = {"install", "reinstall", "upgrade", "update", "localinstall"}
# options of dnf/yum/rpm-ostree that take the next word as their value (unless written `--x=v`)
_OPTIONS_WITH_VALUE = {
    "-c",
    "-x",
    "--config",
    "--disablerepo",
    "--enablerepo",
    "--exclude",
    "--forcearch",
    "--from",
    "--install",
    "--installroot",
    "--os",
    "--releasever",
    "--repo",
    "--repofrompath",
    "--setopt",
    "--sysroot",
    "--uninstall",
}


def _words_and_options(arguments: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Split installer arguments into plain words and (option, value) pairs."""
    words: list[str] = []
    options: list[tuple[str, str]] = []
    index = 0
    while index < len(arguments):
        word = arguments[index]
        if word.startswith("-") and len(word) > 1:
            name, sep, value = word.partition("=")
            if not sep and name in _OPTIONS_WITH_VALUE and index + 1 < len(arguments):
                index += 1
                value = arguments[index]
            options.append((name, value))
        else:
            words.append(word)
        index += 1
    return words, options


def _install(tool: str, argv: list[str], line: int) -> list[Install]:
    words, options = _words_and_options(argv[1:])
    found: list[Install] = []
    if tool == "rpm":
        if any(
            name.startswith(("-i", "-U", "-F", "--install", "--upgrade")) for name, _ in options
        ):
            found.append(Install(tool, "install", tuple(words), line))
        return found
    if words and words[0] == "override" and len(words) >= 2:
        found.append(Install(tool, f"override {words[1]}", tuple(words[2:]), line))
    elif words and words[0] in _INSTALL_ACTIONS:
        found.append(Install(tool, words[0], tuple(words[1:]), line))
    # `rpm-ostree override remove kernel --install kernel-rt-core` installs too
    extra = tuple(value for name, value in options if name == "--install" and value)
    if extra:
        found.append(Install(tool, "install", extra, line))
    return found


def run_installs(run: Instruction) -> list[Install]:
    """Package installations one RUN performs."""
    found: list[Install] = []
    for argv in commands(run_argv_text(run)):
        tool = argv[0].rsplit("/", 1)[-1]
        if tool in _INSTALLERS:
            found.extend(_install(tool, argv, run.line))
    return found


def installs(stage: Stage) -> list[Install]:
    """Package installations a stage's RUN steps perform."""
    return [install for run in stage.runs for install in run_installs(run)]


# name-[epoch:]version-release.arch.rpm; the name is the shortest prefix that leaves exactly
# version and release (neither holds a `-`), so the lazy name tries each `-` once
_NEVRA = re.compile(r"(?P<name>.+?)-(?:[0-9]+:)?[^-]+-[^-]+\.[A-Za-z0-9_]+\.rpm")


def package_name(spec: str) -> str:
    """The RPM name a package argument installs: `kernel-rt-core`, `htop-3.3.0-1.el9` stays as
    written, `https://…/fish-3.3.1-3.el9.x86_64.rpm` -> `fish`."""
    base = spec.rstrip("/").rsplit("/", 1)[-1]
    match = _NEVRA.fullmatch(base)
    if match:
        return match.group("name")
    return base.removesuffix(".rpm")


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
