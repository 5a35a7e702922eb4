"""The process groups of the buildah commands this worker process runs, and how they are
stopped: buildah runs in a session of its own (so one signal reaches it and the RUN step it
started), which also means it would outlive the worker that started it. Does process I/O
(signals).

- `install_signal_handlers()`: a worker child killed by SIGTERM/SIGINT/SIGQUIT (a `revoke
  --terminate`, a cold shutdown) kills the groups it started first.
- `die_with_parent()`: run in buildah's child before exec; a worker SIGKILLed (OOM, the whole
  process group killed) takes buildah with it, so it never pushes on its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time

KILL_GRACE_SECONDS = 5.0
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# process groups (= session ids) of the buildah commands this process is running
RUNNING: set[int] = set()


def signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def die_with_parent() -> None:
    """SIGKILL this process when the thread that forked it dies (Linux prctl)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def kill_running_groups() -> None:
    """SIGTERM every buildah group of this process, SIGKILL what is left a moment later."""
    groups = list(RUNNING)
    for pgid in groups:
        signal_group(pgid, signal.SIGTERM)
    if groups:
        time.sleep(0.5)
    for pgid in groups:
        signal_group(pgid, signal.SIGKILL)


def install_signal_handlers() -> None:
    """In a worker child process: on SIGTERM/SIGINT/SIGQUIT kill the buildah groups this
    process started, then die of the signal as before (Celery marks the task terminated)."""

    def handle(signum: int, _frame: object) -> None:
        kill_running_groups()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(signum, handle)
