"""LAY007, remote content is verified: ADD of a URL needs --checksum, ADD of a Git source pins a
commit, a RUN that downloads checks what it fetched (and never pipes it into a shell), and
packages are not installed straight from a URL. No I/O.

Every pattern runs in time linear in the Containerfile text (a fork's RUN line can be 256 KiB):
the pipe-to-shell check scans instead of backtracking, the others match at one position.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from pipeline.core import containerfile, lint_finding, lint_rules, repo

_CHECKSUM_TOOLS = {"sha224sum", "sha256sum", "sha384sum", "sha512sum", "b2sum"}
_FETCH_TOOLS = {"curl", "wget"}
# a shell's name, matched at one position of a word (bounded work)
_SHELL = re.compile(r"(?:ba|da|z|k)?sh\b")
_REMOTE = re.compile(r"(?:https?|ftp)://", re.IGNORECASE)
_GIT_SOURCE = re.compile(r"(?:^git@|\.git(?:#|\Z))")
_COMMIT_REF = re.compile(r"#[0-9a-f]{40}(?::|\Z)")


def pipes_to_shell(text: str) -> bool:
    """Whether a `|` feeds a shell: the word after it (after an optional `sudo`) is `sh`,
    `bash`, `dash`, `zsh` or `ksh`, or a path naming one (`| /bin/sh`, `|sudo /usr/bin/bash`).

    One pass over the text: the regular expression this replaces retried a path from every `|`
    to the end of its word, quadratic in a RUN line of `|/|/|/…` (12.8 s on 64 KB)."""
    for segment in text.split("|")[1:]:
        rest = segment.lstrip()
        if _starts_with_shell(rest):
            return True
        if (
            rest.startswith("sudo")
            and rest[4:5].isspace()
            and _starts_with_shell(rest[4:].lstrip())
        ):
            return True
    return False


def _starts_with_shell(text: str) -> bool:
    if not text.startswith("/"):
        return _SHELL.match(text) is not None
    word = text.split(maxsplit=1)[0]
    slash = word.find("/", 1)
    while slash >= 0:  # `/bin/sh`: what follows a later `/` of the path
        if _SHELL.match(word, slash + 1):
            return True
        slash = word.find("/", slash + 1)
    return False


def remote_findings(
    image: repo.Image, parsed: containerfile.Containerfile
) -> Iterator[lint_finding.Finding]:
    """LAY007: ADD of URLs, package installs from URLs and downloads, without a checksum."""
    path = image.containerfile_path
    for stage in parsed.stages:
        for instruction in stage.instructions:
            if instruction.keyword == "ADD":
                yield from _add_findings(path, instruction)
            elif instruction.keyword == "RUN":
                yield from _run_remote_findings(path, instruction)


def _add_findings(
    path: str, instruction: containerfile.Instruction
) -> Iterator[lint_finding.Finding]:
    flags, arguments = lint_rules.flags_and_arguments(instruction)
    for source in arguments[:-1]:
        if _GIT_SOURCE.search(source) or (source.startswith("git@")):
            if not _COMMIT_REF.search(source):
                yield lint_finding.Finding(
                    "LAY007",
                    lint_finding.ERROR,
                    path,
                    instruction.line,
                    f"ADD {source} follows a branch or tag; pin the commit: "
                    f"ADD <repository>.git#<40-hex commit>",
                )
        elif _REMOTE.match(source) and not flags.get("--checksum"):
            yield lint_finding.Finding(
                "LAY007",
                lint_finding.ERROR,
                path,
                instruction.line,
                f"ADD {source} is not pinned; add --checksum=sha256:<hex of the file>",
            )


def _run_remote_findings(
    path: str, run: containerfile.Instruction
) -> Iterator[lint_finding.Finding]:
    text = containerfile.run_argv_text(run)
    commands = containerfile.commands(text)
    fetched = False
    for index, argv in enumerate(commands):
        tool = argv[0].rsplit("/", 1)[-1]
        if tool in _FETCH_TOOLS and any("://" in w or "$" in w for w in argv[1:]):
            if pipes_to_shell(text):
                yield lint_finding.Finding(
                    "LAY007",
                    lint_finding.ERROR,
                    path,
                    run.line,
                    f"pipes a {tool} download into a shell, unverified; download to a file, "
                    f"check it with `echo '<sha256>  <file>' | sha256sum -c`, then run it",
                )
                return
            later = commands[index + 1 :]
            if not any(_verifies(c) for c in later):
                fetched = True
    if fetched:
        yield lint_finding.Finding(
            "LAY007",
            lint_finding.ERROR,
            path,
            run.line,
            "downloads a file without checking it; follow the download with "
            "`echo '<sha256>  <file>' | sha256sum -c` in the same RUN",
        )
    for install in containerfile.run_installs(run):
        for spec in install.packages:
            if _REMOTE.match(spec):
                yield lint_finding.Finding(
                    "LAY007",
                    lint_finding.ERROR,
                    path,
                    run.line,
                    f"{install.tool} {install.action} {spec} installs straight from the "
                    f"network, unverified; download it (curl -fLo <file>), check it "
                    f"(`echo '<sha256>  <file>' | sha256sum -c`) and install the local file",
                )


def _verifies(argv: list[str]) -> bool:
    tool = argv[0].rsplit("/", 1)[-1]
    options = set(argv[1:])
    if tool in _CHECKSUM_TOOLS:
        return bool(options & {"-c", "--check"})
    if tool == "rpm":
        return bool(options & {"-K", "--checksig"})
    return tool == "gpgv" or (tool in ("gpg", "gpg2") and "--verify" in options)
