"""The buildah wrapper: `buildah build` and `buildah push` through the `sh` package with argument
lists (never a shell string), output streamed line by line, failures translated into
BuildFailed (a Containerfile step failed: never retried), TemporaryError (registry or network:
retried) or PermanentError. Does I/O (runs buildah).

Isolation: `build` runs RUN steps with the isolation `isolation_mode` resolves (the setting's
`chroot`, or `oci` with private PID and network namespaces once adapters/isolation.py's probe
showed it works here; `auto` never falls back to chroot) and says which in the build log.

The argument lists are built by pure functions (`build_argv`, `push_argv`) so they can be read
and tested without buildah. Build arguments and labels are single argv elements: a value such
as `$(id); rm -rf /` reaches buildah verbatim and is never interpreted by a shell.

Cancellation: buildah runs in its own session (process group), and while it runs the wrapper
asks `cancelled()` every `poll_seconds`; once it says yes the whole group (buildah and the RUN
step it started) is terminated, then killed, before `Cancelled` is raised, so a superseded build
never reaches its push. Any other exception that ends the wait (Celery's soft time limit)
stops the group too. Buildah in its own session would otherwise outlive the worker and still
push: adapters/process_groups.py also kills the groups when a worker child is signalled, and
makes buildah die with a worker that is SIGKILLed.
"""

from __future__ import annotations

import collections
import shlex
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import sh

from pipeline.adapters import isolation as isolation_probe
from pipeline.adapters import process_groups
from pipeline.adapters import registry as registry_adapter
from pipeline.core import buildah_output, builds, isolation, log_caps, names
from pipeline.core.errors import BuildFailed, Cancelled, PermanentError, TemporaryError
from pipeline.core.settings import Settings

LineSink = Callable[[str], None]
ENTITLEMENT_MOUNT = "/etc/pki/entitlement"
PUSH_TIMEOUT_SECONDS = 1800


def _never() -> bool:
    return False


class _TimedOut(Exception):
    pass


@dataclass(frozen=True)
class BuildahConfig:
    command: str = "buildah"
    storage_driver: str = "vfs"
    isolation: isolation.Mode = "chroot"  # config_of: the setting, `auto` by default
    root: Path | None = None
    runroot: Path | None = None
    authfile: Path | None = None
    registries_conf: Path | None = None
    entitlement_dir: Path | None = None
    timeout_seconds: float = 3600

    def global_argv(self) -> list[str]:
        argv = ["--storage-driver", self.storage_driver]
        if self.root is not None:
            argv += ["--root", str(self.root)]
        if self.runroot is not None:
            argv += ["--runroot", str(self.runroot)]
        if self.registries_conf is not None:
            argv += ["--registries-conf", str(self.registries_conf)]
        return argv


def config_of(settings: Settings) -> BuildahConfig:
    return BuildahConfig(
        command=settings.buildah_command,
        storage_driver=settings.buildah_storage_driver,
        isolation=settings.buildah_isolation,
        root=settings.buildah_root,
        runroot=settings.buildah_runroot,
        authfile=settings.registry_authfile,
        registries_conf=settings.registries_conf,
        entitlement_dir=settings.entitlement_dir,
        timeout_seconds=settings.build_timeout_seconds,
    )


def build_argv(
    config: BuildahConfig, spec: builds.BuildSpec, *, containerfile: Path, iidfile: Path
) -> list[str]:
    _check_reference(spec.target)
    if config.isolation == "auto":
        raise PermanentError("build isolation not resolved: ask Buildah.isolation_mode() first")
    argv = [
        *config.global_argv(),
        "build",
        *isolation.build_argv(config.isolation),
        "--file",
        str(containerfile),
        "--tag",
        spec.target,
        "--iidfile",
        str(iidfile),
    ]
    if config.authfile is not None:
        argv += ["--authfile", str(config.authfile)]
    for name, value in sorted(spec.build_args.items()):
        argv += ["--build-arg", f"{name}={value}"]
    for name, value in sorted(spec.labels.items()):
        argv += ["--label", f"{name}={value}"]
    if spec.entitlement:
        if config.entitlement_dir is None:
            raise PermanentError(f"image {spec.image} needs an entitlement directory")
        # mounted for RUN steps only, never committed into a layer (as OCL mounts
        # etc-pki-entitlement at /etc/pki/entitlement)
        argv += ["--volume", f"{config.entitlement_dir}:{ENTITLEMENT_MOUNT}:ro"]
    argv.append(str(spec.context))
    return argv


def push_argv(config: BuildahConfig, spec: builds.BuildSpec, *, digestfile: Path) -> list[str]:
    _check_reference(spec.target)
    argv = [*config.global_argv(), "push", "--digestfile", str(digestfile)]
    if config.authfile is not None:
        argv += ["--authfile", str(config.authfile)]
    argv += [spec.target, f"docker://{spec.target}"]
    return argv


def _check_reference(reference: str) -> None:
    try:
        parsed = names.parse_image_ref(reference)
    except ValueError as exc:
        raise PermanentError(f"refusing to build {reference!r}: {exc}") from None
    if str(parsed) != reference or reference.startswith("-"):
        raise PermanentError(f"refusing to build {reference!r}: not a plain image reference")


# A failing build's error carries the tail of its output; a RUN step may print 10 MB lines,
# so each kept line is cut (the full line still goes to the sink, whose store caps it).
TAIL_LINE_BYTES = 2 * log_caps.KIB


class _Output:
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


class Buildah:
    def __init__(
        self,
        config: BuildahConfig,
        *,
        cancelled: Callable[[], bool] = _never,
        poll_seconds: float = 0.5,
    ) -> None:
        self.config = config
        self._cancelled = cancelled
        self._poll_seconds = poll_seconds

    @classmethod
    def from_settings(
        cls, settings: Settings, *, cancelled: Callable[[], bool] = _never
    ) -> Buildah:
        return cls(config_of(settings), cancelled=cancelled)

    def isolation_mode(self) -> isolation.Resolved:
        """The isolation builds use: `chroot` only when set; `auto` and `oci` once the probe
        showed oci works here (else PermanentError naming what the host lacks, so the build
        fails instead of running less isolated than asked)."""
        return isolation_probe.resolve(
            command=self.config.command,
            global_argv=self.config.global_argv(),
            mode=self.config.isolation,
        )

    def has_entitlement(self) -> bool:
        """Whether the RHEL entitlement certificates are on this machine to mount."""
        return self.config.entitlement_dir is not None and self.config.entitlement_dir.is_dir()

    def _check_cancelled(self, what: str) -> None:
        if self._cancelled():
            raise Cancelled(f"{what} cancelled")

    def _run(self, argv: Sequence[str], output: _Output, *, timeout: float) -> None:
        """Run buildah in its own session; kill the session on cancellation or timeout."""
        self._check_cancelled("buildah")
        output.sink(f"$ {shlex.join([self.config.command, *argv])}")
        process = sh.Command(self.config.command)(
            *argv,
            _out=output,
            _err_to_out=True,
            _tty_out=False,
            _bg=True,
            _bg_exc=False,
            _new_session=True,
            _preexec_fn=process_groups.die_with_parent,
            _return_cmd=True,
        )
        pgid = process.pid  # a session leader's group id is its pid
        process_groups.RUNNING.add(pgid)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    process.wait(timeout=self._poll_seconds)
                    return
                except sh.TimeoutException:
                    pass
                stop = "cancelled" if self._cancelled() else None
                if stop is None and time.monotonic() > deadline:
                    stop = "timed out"
                if stop is not None:
                    process_groups.stop(process, pgid)
                    output.sink(f"buildah {stop}: process group {pgid} killed")
                    if stop == "cancelled":
                        raise Cancelled("buildah cancelled")
                    raise _TimedOut
        except BaseException:
            # anything else ends the wait (Celery's soft time limit, a signal): buildah must
            # not outlive it and push on its own
            if process.is_alive():
                process_groups.stop(process, pgid)
                output.sink(f"buildah stopped: process group {pgid} killed")
            raise
        finally:
            process_groups.RUNNING.discard(pgid)

    def build(self, spec: builds.BuildSpec, *, on_line: LineSink) -> str:
        output = _Output(on_line)
        mode = self.isolation_mode()
        config = replace(self.config, isolation=mode)
        output.sink(f"build isolation: {isolation.describe(mode)}")
        with tempfile.TemporaryDirectory(prefix="layering-build-") as scratch:
            containerfile = Path(scratch, "Containerfile")
            containerfile.write_text(spec.containerfile)
            iidfile = Path(scratch, "iid")
            argv = build_argv(config, spec, containerfile=containerfile, iidfile=iidfile)
            try:
                self._run(argv, output, timeout=self.config.timeout_seconds)
            except _TimedOut:
                raise BuildFailed(
                    f"build timed out after {self.config.timeout_seconds:.0f}s"
                    + (f" in {output.step}" if output.step else ""),
                    step=str(output.step or ""),
                    log_tail=output.text,
                ) from None
            except sh.ErrorReturnCode as exc:
                raise build_error(spec, output.text, output.step, exc.exit_code) from None
            return iidfile.read_text().strip()

    def push(self, spec: builds.BuildSpec, *, on_line: LineSink) -> str:
        output = _Output(on_line)
        host = registry_adapter.registry_host(spec.target)
        with tempfile.TemporaryDirectory(prefix="layering-push-") as scratch:
            digestfile = Path(scratch, "digest")
            try:
                self._run(
                    push_argv(self.config, spec, digestfile=digestfile),
                    output,
                    timeout=PUSH_TIMEOUT_SECONDS,
                )
            except _TimedOut:
                raise TemporaryError(
                    f"registry {host}: push of {spec.target} timed out after "
                    f"{PUSH_TIMEOUT_SECONDS}s"
                ) from None
            except sh.ErrorReturnCode:
                raise push_error(spec, output.text) from None
            return digestfile.read_text().strip()

    def discard(self, spec: builds.BuildSpec, *, on_line: LineSink) -> None:
        """Drop the local copy after a push (vfs storage copies every layer in full)."""
        try:
            sh.Command(self.config.command)(
                *self.config.global_argv(), "rmi", spec.target, _tty_out=False, _timeout=300
            )
        except (sh.ErrorReturnCode, sh.TimeoutException):
            on_line(f"note: could not remove local image {spec.target}")


def build_error(
    spec: builds.BuildSpec, output: str, step: buildah_output.Step | None, exit_code: int
) -> BuildFailed | TemporaryError | PermanentError:
    """What a failed `buildah build` means: a failing instruction is the Containerfile's fault;
    before any instruction ran (pulling the base) the registry's answer decides."""
    lines = output.splitlines()
    instruction = buildah_output.failed_instruction(lines)
    step_text = str(step) if step else ""
    if instruction is not None and not instruction.upper().startswith("FROM"):
        return BuildFailed(
            f"{step_text or instruction} failed (exit {exit_code})",
            step=step_text,
            log_tail=output,
        )
    kind = buildah_output.classify(output)
    base_host = registry_adapter.registry_host(spec.base)
    last = lines[-1] if lines else f"exit {exit_code}"
    if kind is buildah_output.Failure.TEMPORARY:
        return TemporaryError(f"registry {base_host} unavailable while pulling {spec.base}: {last}")
    if kind is buildah_output.Failure.AUTH:
        return PermanentError(
            f"registry {base_host} refused the credentials for {spec.base}: {last}; "
            "check LAYERING_REGISTRY_AUTHFILE"
        )
    if kind is buildah_output.Failure.MISSING:
        return PermanentError(
            f"{step_text or 'FROM'}: image not found ({last}); the cluster base is {spec.base}: "
            f"check baseImage in clusters/{spec.cluster}/cluster.yaml and the digests of FROM lines"
        )
    return BuildFailed(
        f"{step_text or 'buildah build'} failed (exit {exit_code}): {last}",
        step=step_text,
        log_tail=output,
    )


def push_error(spec: builds.BuildSpec, output: str) -> TemporaryError | PermanentError:
    host = registry_adapter.registry_host(spec.target)
    lines = output.splitlines()
    last = lines[-1] if lines else "no output"
    kind = buildah_output.classify(output)
    if kind is buildah_output.Failure.AUTH:
        return PermanentError(
            f"registry {host} refused the credentials to push {spec.target}: {last}; "
            "check LAYERING_REGISTRY_AUTHFILE"
        )
    if kind is buildah_output.Failure.TEMPORARY:
        return TemporaryError(f"registry {host} unavailable while pushing {spec.target}: {last}")
    return PermanentError(f"registry {host}: push of {spec.target} failed: {last}")
