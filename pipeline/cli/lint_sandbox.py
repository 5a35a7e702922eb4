"""`python -m pipeline.cli.lint_sandbox`: the plan and lint of one head of a worker's mirror, in
a process of its own, under the limits on its argv. adapters/sandboxed_lint.py starts it and
reads how it ended; it is not a `layering` subcommand (only the worker runs it). Reads the
mirror; writes stdout and stderr only.

With `--request-on-stdin` (a warm spare, adapters/sandboxed_lint.py) it is started before
there is a request: it waits for one JSON list of the request's options on stdin (end-of-file:
it exits quietly). Either way its CPU-time limit counts from when its imports are done: Python's
start-up (most of a second here) is not the head's to pay.

It sets its limits before it reads anything, then plans and lints as flows/head.read_head does,
naming on stderr each repository file before it is parsed (and each image and MachineConfig
as lint reads them), so a limit hit names the file, and writes one core/head_lint.Answer as
JSON on stdout. A MemoryError exits head_lint.EXIT_MEMORY.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import resource
import sys
from collections.abc import Collection, Iterator, Mapping, Sequence

from pipeline.adapters import git as gitadapter
from pipeline.adapters import sandboxed_lint
from pipeline.core import head, head_lint, repo
from pipeline.core.errors import InputError, PipelineError, TemporaryError
from pipeline.flows import head as head_flow


def _announce(path: str) -> None:
    sys.stderr.write(head_lint.progress_line(path))
    sys.stderr.flush()


class _NamedBytes(bytes):
    """A file's content that names the file again when it is decoded, i.e. right before it is
    parsed (a listing's files are all fetched at once, e.g. by `sorted(files.items())`)."""

    path: str

    def __new__(cls, raw: bytes, path: str) -> _NamedBytes:
        named = super().__new__(cls, raw)
        named.path = path
        return named

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        _announce(self.path)
        return super().decode(encoding, errors)


class _AnnouncedFiles(Mapping[str, bytes]):
    """A listing's files; reading one names it (membership tests do not), and so does
    decoding it."""

    def __init__(self, files: Mapping[str, bytes]) -> None:
        self._files = files

    def __getitem__(self, path: str) -> bytes:
        _announce(path)
        return _NamedBytes(self._files[path], path)

    def __contains__(self, path: object) -> bool:
        return path in self._files

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)


class _AnnouncingHistory:
    """The mirror as the GitHistory port, its listings' files announced as they are read."""

    def __init__(self, git_repo: gitadapter.GitRepo) -> None:
        self._repo = git_repo

    def resolve(self, rev: str) -> str:
        return self._repo.resolve(rev)

    def is_ancestor(self, a: str, b: str) -> bool:
        return self._repo.is_ancestor(a, b)

    def merge_base(self, a: str, b: str) -> str | None:
        return self._repo.merge_base(a, b)

    def changed_paths(
        self, a: str, b: str, *, prefixes: Collection[str] | None = None
    ) -> list[str]:
        return self._repo.changed_paths(a, b, prefixes=prefixes)

    def listing(
        self, rev: str, *, images: Collection[str] | None = None, machineconfigs: bool = True
    ) -> repo.TreeListing:
        listing = self._repo.listing(rev, images=images, machineconfigs=machineconfigs)
        return dataclasses.replace(listing, files=_AnnouncedFiles(listing.files))


def read(request: head_lint.Request) -> head_lint.Answer:
    """The answer for `request`; a PipelineError of the read becomes a Failed answer."""
    try:
        with gitadapter.GitRepo.open(request.source) as git_repo:
            read = head_flow.read_range(_AnnouncingHistory(git_repo), request)
        repository = read.repository
        if repository is not None:
            # lint parses the MachineConfigs: name each one as it is read, like the listing's
            announced = _AnnouncedFiles(repository.machineconfigs)
            repository = dataclasses.replace(repository, machineconfigs=announced)
        findings = head.lint_findings(read.plan, repository, on_image=_announce)
    except TemporaryError as exc:
        return head_lint.Answer(failed=head_lint.Failed("temporary", str(exc)))
    except InputError as exc:
        return head_lint.Answer(failed=head_lint.Failed("input", str(exc)))
    except PipelineError as exc:
        return head_lint.Answer(failed=head_lint.Failed("permanent", str(exc)))
    return head_lint.Answer(reading=head_lint.Reading(read.plan, findings))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline.cli.lint_sandbox")
    parser.add_argument("--cpu-seconds", type=int, required=True)
    parser.add_argument("--memory-mb", type=int, required=True)
    parser.add_argument("--wall-seconds", type=float, required=True)
    parser.add_argument("--mirror", required=True)
    parser.add_argument("--from", dest="from_rev", required=True)
    parser.add_argument("--to", required=True)
    parser.add_argument("--default-branch", required=True)
    parser.add_argument("--branch", default=None)
    return parser


def _request_from_stdin(argv: list[str]) -> list[str] | None:
    """argv with the request's options read from stdin in place of REQUEST_ON_STDIN; None at
    end-of-file (the worker went away without a request)."""
    line = sys.stdin.buffer.readline(sandboxed_lint.REQUEST_MAX_BYTES)
    if not line.strip():
        return None
    options = json.loads(line)
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise SystemExit("the request on stdin must be a JSON list of strings")
    return [a for a in argv if a != sandboxed_lint.REQUEST_ON_STDIN] + options


def _cpu_used() -> int:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return math.ceil(usage.ru_utime + usage.ru_stime)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if sandboxed_lint.REQUEST_ON_STDIN in arguments:
        requested = _request_from_stdin(arguments)
        if requested is None:
            return 0
        arguments = requested
    spent = _cpu_used()  # Python's start-up and imports, before the head: not its to pay
    args = _parser().parse_args(arguments)
    sandboxed_lint.apply_limits(
        cpu_seconds=args.cpu_seconds + spent, memory_mb=args.memory_mb, wall=args.wall_seconds
    )
    request = head_lint.Request(
        args.mirror, args.from_rev, args.to, args.default_branch, args.branch
    )
    try:
        answer = read(request)
        encoded = head_lint.encode(answer)
    except MemoryError:
        return head_lint.EXIT_MEMORY
    sys.stdout.buffer.write(encoded)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
