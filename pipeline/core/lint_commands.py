"""The lint rules about what the shipped stages' RUN commands do: LAY009 (a whole-system update
moves the base away from the cluster's), LAY010 (`rpm-ostree kargs` cannot run in a build) and
LAY011 (`systemctl enable` of a unit no layer of this Containerfile provides). No I/O.

Containerfiles come from forks: every check here is linear in the RUN text (split into words
once; units are looked up in sets, never searched for in the text one by one).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator

from pipeline.core import containerfile, lint_finding, lint_rules, repo

_DNF = {"dnf", "dnf5", "yum", "microdnf"}
_WHOLE_SYSTEM = {
    "update", "upgrade", "up", "update-minimal", "upgrade-minimal", "distro-sync", "distrosync",
    "dsync",
}  # fmt: skip
# systemctl options written with their value as the next word
_SYSTEMCTL_VALUES = {"--root", "-t", "--type", "-p", "--property", "-H", "--host", "-M"}
_SYSTEMCTL_VALUES |= {"--machine", "--image", "-o", "--output", "--state", "--job-mode"}
_UNIT_SUFFIXES = (
    ".service", ".socket", ".timer", ".path", ".target", ".mount", ".automount", ".swap",
    ".slice", ".scope", ".device",
)  # fmt: skip
_UNIT_ROOTS = ("/etc/systemd", "/usr/lib/systemd", "/lib/systemd", "/usr/local/lib/systemd")
# the words of a RUN's text that may name a file: split at blanks, quotes and shell operators
_WORD_BREAK = re.compile(r"[\s'\"`;&|<>()=]+")


def _subcommand(argv: list[str]) -> tuple[str, list[str]]:
    """`dnf -y update` -> ("update", []): the first word that is not an option, and the plain
    words after it."""
    words = [word for word in argv[1:] if not word.startswith("-")]
    return (words[0], words[1:]) if words else ("", [])


def _stage_runs(parsed: containerfile.Containerfile) -> Iterator[containerfile.Instruction]:
    for stage in reversed(lint_rules.lineage(parsed)):
        yield from stage.runs


def command_findings(
    image: repo.Image, parsed: containerfile.Containerfile
) -> Iterator[lint_finding.Finding]:
    """LAY009, LAY010 and LAY011 in the stages whose content ships."""
    path = image.containerfile_path
    # each RUN split once (the shell lexer is the costly part), by its line
    split = {
        run.line: containerfile.commands(containerfile.run_argv_text(run))
        for run in _stage_runs(parsed)
    }
    for run in _stage_runs(parsed):
        for argv in split[run.line]:
            tool = argv[0].rsplit("/", 1)[-1]
            action, names = _subcommand(argv)
            # RHCOS/FCOS layering docs: the base is the cluster's; update only named packages
            if (tool in _DNF and action in _WHOLE_SYSTEM and not names) or (
                tool == "rpm-ostree" and action == "upgrade"
            ):
                yield lint_finding.Finding(
                    "LAY009",
                    lint_finding.WARNING,
                    path,
                    run.line,
                    f"`{tool} {action}` without package names moves every package of the "
                    f"base, so the image drifts from the base the cluster runs and its "
                    f"upgrades; name the packages to update, or waive LAY009 with the reason",
                )
            # rpm-ostree needs a booted deployment for kargs; the MCO sets kernel arguments
            if tool == "rpm-ostree" and action == "kargs":
                yield lint_finding.Finding(
                    "LAY010",
                    lint_finding.ERROR,
                    path,
                    run.line,
                    "`rpm-ostree kargs` needs a booted system and fails in a build; set "
                    "kernel arguments in a MachineConfig's spec.kernelArguments for the pool",
                )
    yield from _unit_findings(path, parsed, split)


def enabled_units(argv: list[str]) -> list[str]:
    """The unit files `systemctl [options] enable [--now] UNIT…` enables: `foo` is
    `foo.service`, a path its file name; words with variables or globs are left out."""
    if argv[0].rsplit("/", 1)[-1] != "systemctl":
        return []
    words: list[str] = []
    skip = False
    for word in argv[1:]:
        if skip:
            skip = False
        elif word.startswith("-"):
            skip = word in _SYSTEMCTL_VALUES
        else:
            words.append(word)
    if not words or words[0] not in ("enable", "reenable"):
        return []
    units = []
    for word in words[1:]:
        if any(char in word for char in "$*?[`"):
            continue
        name = word.rstrip("/").rsplit("/", 1)[-1]
        units.append(name if name.endswith(_UNIT_SUFFIXES) else f"{name}.service")
    return units


def _template(unit: str) -> str:
    """`getty@tty1.service` is provided by `getty@.service`."""
    prefix, at, rest = unit.partition("@")
    return f"{prefix}@{rest[rest.find('.') :]}" if at and "." in rest else unit


def _covers_units(destination: str) -> bool:
    """A COPY/ADD destination that is, holds or is inside a systemd unit directory."""
    target = posixpath.normpath(destination)
    if not target.startswith("/"):
        return True  # relative to WORKDIR: where it lands cannot be seen
    return any(
        target == "/"
        or root.startswith(target + "/")
        or target == root
        or target.startswith(root + "/")
        for root in _UNIT_ROOTS
    )


def _unit_findings(
    path: str, parsed: containerfile.Containerfile, split: dict[int, list[list[str]]]
) -> Iterator[lint_finding.Finding]:
    """LAY011: a unit enabled that neither a COPY/ADD, nor a RUN, nor a package brings."""
    enabled: list[tuple[str, int]] = []
    provided: set[str] = set()
    for stage in lint_rules.lineage(parsed):
        for instruction in stage.instructions:
            if instruction.keyword in ("COPY", "ADD"):
                _, arguments = lint_rules.flags_and_arguments(instruction)
                if len(arguments) < 2:
                    continue
                sources = [s.rstrip("/").rsplit("/", 1)[-1] for s in arguments[:-1]]
                provided.update(sources)
                provided.add(arguments[-1].rstrip("/").rsplit("/", 1)[-1])
                if _covers_units(arguments[-1]) and not all(
                    s.endswith(_UNIT_SUFFIXES) for s in sources
                ):
                    return  # a directory copied over the unit directories: cannot be seen
            elif instruction.keyword == "RUN":
                installs = containerfile.run_installs(instruction)
                if any(i.packages and not i.action.startswith("override r") for i in installs):
                    return  # a package may bring any unit: cannot be seen
                text = containerfile.run_argv_text(instruction)
                for argv in split[instruction.line]:
                    if argv[0].rsplit("/", 1)[-1] == "systemctl":
                        enabled += [(unit, instruction.line) for unit in enabled_units(argv)]
                    else:  # `install -m644 foo.service …`, `cp foo.service …`
                        provided.update(word.rsplit("/", 1)[-1] for word in argv[1:])
                provided.update(
                    word.rsplit("/", 1)[-1] for word in _WORD_BREAK.split(text) if "/" in word
                )
    missing: dict[int, list[str]] = {}
    for unit, line in enabled:
        if unit not in provided and _template(unit) not in provided:
            missing.setdefault(line, []).append(unit)
    for line, units in missing.items():
        named = ", ".join(units[:5]) + (f" and {len(units) - 5} more" if len(units) > 5 else "")
        # systemd / bootc: enable what the image ships; the base's own units come enabled by
        # its presets, so enabling a unit nothing here provides is often a typo
        yield lint_finding.Finding(
            "LAY011",
            lint_finding.WARNING,
            path,
            line,
            f"`systemctl enable {named}`: no layer of this Containerfile provides "
            f"{'it' if len(units) == 1 else 'them'} (no COPY/ADD of the unit file, no RUN "
            f"writing it, no package installed); check the name, copy the unit file in, or if "
            f"the base provides it waive LAY011 in image.yaml with that reason",
        )
