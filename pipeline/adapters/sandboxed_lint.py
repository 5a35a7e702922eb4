"""The HeadLinter port: the plan and lint of each head run in a subprocess with CPU-time and
memory limits, so a hostile file (a fork's YAML bomb, a pathological Containerfile) ends in a
failed `layering/lint` status that names the limit, never in a dead worker. Does process I/O.

The subprocess is `python -m pipeline.cli.lint_sandbox` (`ENTRY`). It gets ids, a path and the
limits on its argv and a minimal environment (PATH, PYTHONPATH, locale: no token, no Redis
URL), sets its own limits first (`apply_limits`: RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE for its
answer, no core files, and an alarm as a wall-clock backstop), reads the mirror and answers
JSON (core/head_lint.py) on stdout. Its stdout and stderr go to unlinked temporary files (no
pipe to drain, no thread); the parent waits at most `timeout` seconds, then kills its process
group. Why it stopped is read from how it ended:

- exit `head_lint.EXIT_MEMORY`, or a MemoryError on stderr: the memory limit;
- SIGXCPU: the CPU-time limit;
- SIGALRM, or the parent's timeout: the wall-clock limit;
- an answer of head_lint.ANSWER_LIMIT_BYTES (RLIMIT_FSIZE stopped it there);
- any other signal or exit status: a crash, with its stderr tail in the worker log.

The subprocess bounds resources; it is not a privilege boundary (it runs as the worker's user).

A warm spare (`warm=True`, what `from_settings` builds): the next subprocess is started as soon
as one is used, with the limits but no request on its argv (`--request-on-stdin`). It imports
Python and the pipeline (about 0.7 s of CPU time, nearly all of a 40-image head's lint) while
nothing waits for it, then blocks on stdin; `lint` writes the request there (ids and a path, as
argv would carry them), and only then does it set its limits and read the mirror. A spare whose
worker goes away reads end-of-file and exits. tests/bench/fanout_bench.py shows what it saves
from event to first build start.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from pipeline.core import head_lint
from pipeline.core.errors import InputError, PermanentError, TemporaryError
from pipeline.core.settings import Settings

log = logging.getLogger(__name__)

ENTRY = "pipeline.cli.lint_sandbox"
# the environment the subprocess keeps: what Python and Git need to start, nothing secret
KEPT_VARIABLES = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "TZ")
# Git maps pack files in windows of up to 1 GiB by default, which the memory limit would refuse
GIT_LIMITS = {"core.packedGitWindowSize": "32m", "core.packedGitLimit": "256m"}
STDERR_TAIL = 4000
_MiB = 1024 * 1024
# the subprocess's option that asks for the request on stdin (one JSON list of its options)
REQUEST_ON_STDIN = "--request-on-stdin"
REQUEST_MAX_BYTES = 64 * 1024


def wall_seconds(cpu_seconds: int) -> float:
    """The wall-clock limit that goes with a CPU-time limit (waiting on Git counts too)."""
    return 3.0 * cpu_seconds + 30.0


def apply_limits(*, cpu_seconds: int, memory_mb: int, wall: float) -> None:
    """In the subprocess, before it reads anything: cap its CPU time (SIGXCPU at the soft
    limit, SIGKILL a second later), address space, file writes (its answer) and wall-clock
    time (SIGALRM); no core files. Limits above the inherited hard limits are lowered to them."""
    _limit(resource.RLIMIT_CPU, cpu_seconds, cpu_seconds + 1)
    _limit(resource.RLIMIT_AS, memory_mb * _MiB, memory_mb * _MiB)
    _limit(resource.RLIMIT_FSIZE, head_lint.ANSWER_LIMIT_BYTES, head_lint.ANSWER_LIMIT_BYTES)
    _limit(resource.RLIMIT_CORE, 0, 0)
    # an ignored disposition survives exec: make sure the limits' signals end the process
    signal.signal(signal.SIGXCPU, signal.SIG_DFL)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(max(1, int(wall)))


def _limit(which: int, soft: int, hard: int) -> None:
    _, inherited = resource.getrlimit(which)
    if inherited != resource.RLIM_INFINITY:
        soft, hard = min(soft, inherited), min(hard, inherited)
    resource.setrlimit(which, (soft, hard))


def environment() -> dict[str, str]:
    """The subprocess's whole environment."""
    kept = {name: os.environ[name] for name in KEPT_VARIABLES if name in os.environ}
    git = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    git["GIT_CONFIG_COUNT"] = str(len(GIT_LIMITS))
    for index, (name, value) in enumerate(GIT_LIMITS.items()):
        git[f"GIT_CONFIG_KEY_{index}"] = name
        git[f"GIT_CONFIG_VALUE_{index}"] = value
    return {**kept, **git, "PYTHONDONTWRITEBYTECODE": "1", "HOME": os.devnull}


@dataclass
class _Running:
    """One subprocess with the files its stdout and stderr go to."""

    process: subprocess.Popen[bytes]
    out: IO[bytes]
    err: IO[bytes]

    def close(self) -> None:
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        _kill_group(self.process)
        self.out.close()
        self.err.close()


class SandboxedLinter:
    def __init__(
        self,
        *,
        cpu_seconds: int,
        memory_mb: int,
        timeout: float | None = None,
        command: Sequence[str] | None = None,
        warm: bool = False,
    ) -> None:
        """`command` runs the entry (default: this Python, `-m ENTRY`); `timeout` defaults to
        `wall_seconds(cpu_seconds)`; `warm` keeps a spare subprocess started (see the module
        docstring: the entry must accept REQUEST_ON_STDIN)."""
        self.cpu_seconds = cpu_seconds
        self.memory_mb = memory_mb
        self.timeout = timeout if timeout is not None else wall_seconds(cpu_seconds)
        self._command = list(command or (sys.executable, "-m", ENTRY))
        self.warm = warm
        self._spare: _Running | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> SandboxedLinter:
        return cls(
            cpu_seconds=settings.lint_cpu_seconds, memory_mb=settings.lint_memory_mb, warm=True
        )

    def _limits(self) -> list[str]:
        return [
            "--cpu-seconds",
            str(self.cpu_seconds),
            "--memory-mb",
            str(self.memory_mb),
            "--wall-seconds",
            f"{self.timeout:g}",
        ]

    def argv(self, request: head_lint.Request) -> list[str]:
        return [*self._command, *self._limits(), *request.argv()]

    def spare_argv(self) -> list[str]:
        """A spare's argv: the limits, no request."""
        return [*self._command, *self._limits(), REQUEST_ON_STDIN]

    def _start(self, argv: list[str], *, stdin: int) -> _Running:
        with contextlib.ExitStack() as files:
            out = files.enter_context(tempfile.TemporaryFile())
            err = files.enter_context(tempfile.TemporaryFile())
            process = subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=out,
                stderr=err,
                env=environment(),
                start_new_session=True,  # its Git processes are killed with it
            )
            files.pop_all()  # _Running closes them
        return _Running(process, out, err)

    def prepare(self) -> None:
        """Start the spare now unless one is waiting (a warm linter only)."""
        if not self.warm:
            return
        with self._lock:
            if self._spare is None or self._spare.process.poll() is not None:
                if self._spare is not None:
                    self._spare.close()
                self._spare = self._start(self.spare_argv(), stdin=subprocess.PIPE)

    def spare_pid(self) -> int | None:
        """The pid of the spare waiting for a request, if one is alive."""
        with self._lock:
            spare = self._spare
        return spare.process.pid if spare is not None and spare.process.poll() is None else None

    def close(self) -> None:
        """Stop the spare, if any."""
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            spare.close()

    def _take(self, request: head_lint.Request) -> _Running:
        """The spare with `request` written to it, or a subprocess started for `request`."""
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            stdin = spare.process.stdin
            assert stdin is not None
            try:
                stdin.write(json.dumps(request.argv()).encode() + b"\n")
                stdin.close()
                return spare
            except OSError:  # it died meanwhile (its stderr is lost with it): start afresh
                spare.close()
        return self._start(self.argv(request), stdin=subprocess.DEVNULL)

    def lint(self, request: head_lint.Request) -> head_lint.Reading | head_lint.Stopped:
        running = self._take(request)
        try:
            try:
                status: int | None = running.process.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                status = None
            finally:
                _kill_group(running.process)
            answer = _read(running.out, head_lint.ANSWER_LIMIT_BYTES + 1)
            errors = _tail(running.err)
        finally:
            running.close()
            self.prepare()  # the next head's subprocess imports while nothing waits for it
        outcome = self._outcome(status, answer, errors)
        if isinstance(outcome, head_lint.Stopped):
            log.warning(
                "lint of %s stopped (%s): %s; stderr tail:\n%s",
                request.sha[:12],
                "timeout" if status is None else f"status {status}",
                outcome.description,
                errors[-STDERR_TAIL:],
            )
        return outcome

    def _outcome(
        self, status: int | None, answer: bytes, errors: str
    ) -> head_lint.Reading | head_lint.Stopped:
        at = head_lint.last_read(errors)
        if status is None or status == -signal.SIGALRM:
            return head_lint.Stopped(head_lint.timed_out(self.timeout), at)
        if status == head_lint.EXIT_MEMORY or (status > 0 and "MemoryError" in errors):
            return head_lint.Stopped(head_lint.memory_limit(self.memory_mb), at)
        if status == -signal.SIGXCPU:
            return head_lint.Stopped(head_lint.cpu_limit(self.cpu_seconds), at)
        if len(answer) >= head_lint.ANSWER_LIMIT_BYTES:
            # Python ignores SIGXFSZ: the write that crossed RLIMIT_FSIZE failed instead
            return head_lint.Stopped(head_lint.answer_too_large(), at)
        if status < 0:
            return head_lint.Stopped(head_lint.crashed(signal.Signals(-status).name), at)
        if status != 0:
            return head_lint.Stopped(head_lint.crashed(f"exit status {status}"), at)
        try:
            decoded = head_lint.decode(answer)
        except ValueError:
            return head_lint.Stopped(head_lint.malformed(), at)
        if decoded.failed is not None:
            raise _error(decoded.failed)
        if decoded.reading is None:
            return head_lint.Stopped(head_lint.malformed(), at)
        return decoded.reading


def _error(failed: head_lint.Failed) -> PermanentError | TemporaryError:
    if failed.kind == "temporary":
        return TemporaryError(failed.message)
    if failed.kind == "input":
        return InputError(failed.message)
    return PermanentError(failed.message)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Its process group: the entry and any Git process it left behind."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _read(handle: IO[bytes], limit: int) -> bytes:
    handle.seek(0)
    return handle.read(limit)


def _tail(handle: IO[bytes]) -> str:
    size = handle.seek(0, os.SEEK_END)
    handle.seek(max(0, size - 64 * 1024))
    return handle.read().decode("utf-8", errors="replace")
