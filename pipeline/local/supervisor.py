"""`layering up`'s child processes: each started in its own process group with its output in
logs/<name>.log, recorded in pids.json, and stopped by PID (SIGTERM to the group, then
SIGKILL); the loopback ports they listen on (asked for, remembered, or free ones); and the
readiness checks `up` waits on (a port that accepts, an HTTP 200, a Celery worker answering a
ping). Does process, file and network I/O."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery

from pipeline.core.errors import InputError, PipelineError
from pipeline.local import workdir

DEFAULT_PORTS = {"receiver": 8080, "registry": 5000, "redis": 6380}


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Supervisor:
    """The processes `up` started, each in its own process group, stopped by PID."""

    layout: workdir.Layout
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> Child:
        self.layout.logs.mkdir(parents=True, exist_ok=True)
        log = self.layout.logs / f"{name}.log"
        with log.open("ab") as handle:
            process = subprocess.Popen(
                list(argv),
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env),
                start_new_session=True,
            )
        child = Child(name, process, log)
        self.children.append(child)
        self._write_pids()
        return child

    def _write_pids(self) -> None:
        document = {"up": os.getpid(), **{c.name: c.process.pid for c in self.children}}
        workdir.write_json(self.layout.pids_file, document)

    def exited(self) -> Child | None:
        return next((c for c in self.children if c.process.poll() is not None), None)

    def stop(self, say: workdir.Say, timeout: float = 15) -> None:
        for child in reversed(self.children):
            _stop_group(child.process, timeout)
            say(f"stopped {child.name} (pid {child.process.pid})")
        self.children.clear()
        self.layout.pids_file.unlink(missing_ok=True)


def _stop_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM to the child's process group (workers fork; buildah runs below them), then
    SIGKILL for whatever is left after `timeout`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
    # the leader is gone; a straggler of its group (a forked worker) still gets the signal
    deadline = time.monotonic() + timeout
    while _group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not reaped) counts as gone
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def check_not_running(layout: workdir.Layout) -> None:
    """Stop with a message when another `up` runs on the same workdir."""
    running = workdir.read_json(layout.pids_file)
    pid = running.get("up")
    if isinstance(pid, int) and pid != os.getpid() and pid_alive(pid):
        raise InputError(
            f"layering up already runs on {layout.root} (pid {pid}); stop it with Ctrl-C "
            "or pass another --workdir"
        )


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """SIGTERM (and SIGHUP) stop `up` the way Ctrl-C does."""

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# -- ports ----------------------------------------------------------------------------------


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as the servers bind: connections of the last run left in TIME_WAIT do not count
        # (without this a restart right after Ctrl-C finds its own ports "in use")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def choose_ports(
    layout: workdir.Layout,
    options: workdir.Options,
    saved: Mapping[str, Any],
    say: workdir.Say,
) -> dict[str, int]:
    """The ports asked for, else those of the last run, else the defaults. A port asked for
    and taken stops `up`; a remembered or default one that is taken is replaced by a free one,
    except the sandbox's registry port (its cluster.yaml files and images name it)."""
    ports: dict[str, int] = {}
    for name, default in DEFAULT_PORTS.items():
        wanted = options.ports.get(name)
        previous = saved.get(name)
        pinned = name == "registry" and previous and layout.repository.exists()
        if pinned and wanted and wanted != previous:
            raise InputError(
                f"{layout.root} was set up with the registry on port {previous} (its "
                f"cluster.yaml files name it); pass --registry-port {previous} or use "
                "another --workdir"
            )
        port = int(wanted or previous or default)
        if not port_free(port):
            if wanted:
                raise InputError(f"127.0.0.1:{port} is in use; pass another --{name}-port")
            if pinned:
                raise InputError(
                    f"127.0.0.1:{port} is in use, and the sandbox repository in {layout.root} "
                    "names the registry there; stop what listens on it or use another --workdir"
                )
            taken, port = port, free_port()
            say(f"127.0.0.1:{taken} is in use: {name} listens on {port} instead")
        ports[name] = port
    return ports


# -- readiness ------------------------------------------------------------------------------


def wait_until(
    ready: Callable[[], bool], *, child: Child, what: str, timeout: float, interval: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise PipelineError(f"{child.name} exited ({child.process.returncode}){tail(child)}")
        if ready():
            return
        time.sleep(interval)
    raise PipelineError(f"{what} not ready after {timeout:.0f}s{tail(child)}")


def tail(child: Child, lines: int = 15) -> str:
    """The last lines of a child's log, to append to a message about it ("" when unreadable)."""
    with contextlib.suppress(OSError):
        text = child.log.read_text(errors="replace").splitlines()[-lines:]
        return f"; last lines of {child.log}:\n" + "\n".join(text)
    return ""


def listening(port: int) -> Callable[[], bool]:
    def check() -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        return False

    return check


def http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback URL
                return int(response.status) == 200
        except (urllib.error.URLError, OSError):
            return False

    return check


def worker_answers(redis_url: str, name: str) -> Callable[[], bool]:
    """Whether the Celery worker `name@…` answers a ping on the broker at `redis_url`.

    A bare Celery app is enough to broadcast the ping (the workers' app, its task modules and
    settings are not needed to ask whether a worker is there)."""
    app = Celery("layering-up", broker=redis_url)

    def check() -> bool:
        replies = app.control.ping(timeout=0.5)
        return any(f"{name}@" in host for reply in replies for host in reply)

    return check
