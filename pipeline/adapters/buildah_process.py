"""One buildah command in a session of its own (process group): its output streamed line by
line to a sink (keeping a tail and the last STEP), `cancelled()` asked every `poll_seconds`,
the whole group (buildah and the RUN step it started) terminated, then killed, on cancellation,
on timeout or on any exception that ends the wait (Celery's soft time limit). Used by
buildah.py. Does process I/O.

subprocess, not `sh`: sh's waits poll in 0.1 s steps and its output thread ends up to 0.1 s
after the last line, about 50 ms per call, a tenth of a one-line build on overlay
(tests/bench/build_scale_bench.py). Here one thread blocks in waitpid and another streams the
output, so buildah's end is seen at once.
"""

from __future__ import annotations

import collections
import contextlib
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from pipeline.adapters import process_groups
from pipeline.core import buildah_output, log_caps
from pipeline.core.errors import Cancelled, PermanentError

# A failing build's error carries the tail of its output; a RUN step may print 10 MB lines,
# so each kept line is cut (the full line still goes to the sink, whose store caps it).
TAIL_LINE_BYTES = 2 * log_caps.KIB
LineSink = Callable[[str], None]


class Output:
    """Streams lines to a sink while keeping the tail (each line cut) and the last STEP seen."""

    def __init__(self, sink: LineSink) -> None:
        self.sink = sink
        self.tail: collections.deque[str] = collections.deque(maxlen=buildah_output.TAIL_LINES)
        self.step: buildah_output.Step | None = None

    def __call__(self, chunk: str) -> None:
        for line in chunk.splitlines():
            self.tail.append(log_caps.cut_line(line, TAIL_LINE_BYTES))
            step = buildah_output.parse_step(line)
            if step is not None:
                self.step = step
            self.sink(line)

    @property
    def text(self) -> str:
        return "\n".join(self.tail)


class TimedOut(Exception):
    """buildah ran past its time: its group was killed."""


class Exited(Exception):
    """buildah exited non-zero."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(f"exit {exit_code}")
        self.exit_code = exit_code


OUTPUT_DRAIN_SECONDS = 2.0


def captured(
    argv: Sequence[str], *, env: Mapping[str, str] | None, timeout: float
) -> subprocess.CompletedProcess[str]:
    """A short buildah command (a probe) run to its end, its output captured as text; raises
    OSError (not installed) or subprocess.TimeoutExpired past `timeout`."""
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        env=dict(env) if env is not None else None,
    )


def _pump(process: subprocess.Popen[bytes], output: Callable[[str], None]) -> None:
    """Stream buildah's output, line by line, to `output` until the pipe closes."""
    assert process.stdout is not None
    with process.stdout:
        for line in process.stdout:
            output(line.decode(errors="replace"))


def stop_group(process: subprocess.Popen[bytes], pgid: int) -> None:
    """SIGTERM the group (buildah cleans up and ends its RUN step), wait for buildah, then
    SIGKILL whatever is left of the group (a RUN step that ignored SIGTERM)."""
    process_groups.signal_group(pgid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=process_groups.KILL_GRACE_SECONDS)
    process_groups.signal_group(pgid, signal.SIGKILL)
    process.wait()


def run(
    argv: Sequence[str],
    output: Output,
    *,
    timeout: float,
    poll_seconds: float,
    cancelled: Callable[[], bool],
) -> None:
    """Run `argv` in its own session until it ends; Exited when it fails, Cancelled or
    TimedOut (its group killed) when `cancelled()` says so or `timeout` passes."""
    output.sink(f"$ {shlex.join(argv)}")
    try:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=process_groups.die_with_parent,
        )
    except OSError as exc:
        raise PermanentError(f"cannot run {argv[0]}: {exc}") from None
    pgid = process.pid  # a session leader's group id is its pid
    process_groups.RUNNING.add(pgid)
    exited = threading.Event()
    pump = threading.Thread(target=_pump, args=(process, output), daemon=True)
    pump.start()

    def reap() -> None:
        try:
            process.wait()
        finally:
            exited.set()

    threading.Thread(target=reap, name=f"buildah-{pgid}", daemon=True).start()
    try:
        deadline = time.monotonic() + timeout
        while not exited.wait(poll_seconds):
            reason = "cancelled" if cancelled() else None
            if reason is None and time.monotonic() > deadline:
                reason = "timed out"
            if reason is not None:
                stop_group(process, pgid)
                output.sink(f"buildah {reason}: process group {pgid} killed")
                if reason == "cancelled":
                    raise Cancelled("buildah cancelled")
                raise TimedOut
        # the last lines; a RUN step's daemon may hold the pipe open: wait a moment only
        pump.join(timeout=OUTPUT_DRAIN_SECONDS)
        if process.returncode != 0:
            raise Exited(process.returncode)
    except BaseException:
        # anything else ends the wait (Celery's soft time limit, a signal): buildah must
        # not outlive it and push on its own
        if process.poll() is None:
            stop_group(process, pgid)
            output.sink(f"buildah stopped: process group {pgid} killed")
        raise
    finally:
        process_groups.RUNNING.discard(pgid)
