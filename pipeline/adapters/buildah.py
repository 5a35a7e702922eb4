"""The buildah wrapper: `buildah build` and `buildah push` as subprocesses with argument lists
(never a shell string), output streamed line by line, failures translated into
BuildFailed (a Containerfile step failed: never retried), TemporaryError (registry or network,
or buildah's runtime failing before a step's command ran: retried) or PermanentError. Does I/O
(runs buildah).

Isolation: `build` runs RUN steps with the isolation `isolation_mode` resolves (the setting's
`chroot`, or `oci` with private PID and network namespaces once adapters/isolation.py's probe
showed it works here; `auto` never falls back to chroot) and says which in the build log.

Storage: `config_of` resolves LAYERING_BUILDAH_STORAGE_DRIVER (`auto` probes the storage root
once per process with adapters/storage_probe.py: overlay where it works, else vfs).

Layer cache: bases are content-addressed (the final FROM is pinned to the cluster's base by
digest), so a build whose every FROM names a digest (or an earlier stage) runs with
`--pull=missing`: the base is pulled once per worker's storage, never checked again. A FROM by
tag keeps buildah's default (`--pull=true`: asks the registry whether the tag moved). `discard`
removes only the pushed target; the base stays for the next build. Pushes upload only the blobs
the registry lacks (containers/image asks with a HEAD per blob first; tests/integration/
test_layer_cache.py shows it in the registry's access log).

Signing: with LAYERING_SIGNING_KEY set, `push` signs the digest `buildah push` reported and
stores the sigstore signature next to the image (signed_push.py); without it, pushes are
unsigned.

The argument lists are built by pure functions (`build_argv`, `push_argv`) so they can be read
and tested without buildah. Build arguments and labels are single argv elements: a value such
as `$(id); rm -rf /` reaches buildah verbatim and is never interpreted by a shell.

Cancellation (buildah_process.py): buildah runs in its own session (process group); while it runs
`cancelled()` is asked every `poll_seconds`; once it says yes the whole group (buildah and the RUN
step it started) is terminated, then killed, before `Cancelled` is raised, so a superseded build
never reaches its push. Any other exception that ends the wait (Celery's soft time limit)
stops the group too. Buildah in its own session would otherwise outlive the worker and still
push: adapters/process_groups.py also kills the groups when a worker child is signalled, and
makes buildah die with a worker that is SIGKILLed.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.adapters import buildah_process, signed_push, storage_probe
from pipeline.adapters import isolation as isolation_probe
from pipeline.adapters import registry as registry_adapter
from pipeline.core import buildah_output, builds, containerfile, isolation, names
from pipeline.core import storage_driver as storage
from pipeline.core.errors import BuildFailed, Cancelled, PermanentError, TemporaryError
from pipeline.core.settings import Settings

LineSink = Callable[[str], None]
ENTITLEMENT_MOUNT = "/etc/pki/entitlement"
PUSH_TIMEOUT_SECONDS = 1800


def _never() -> bool:
    return False


@dataclass(frozen=True)
class BuildahConfig:
    command: str = "buildah"
    storage_driver: storage.Driver = "vfs"  # config_of: resolved from the setting
    isolation: isolation.Mode = "chroot"  # config_of: the setting, `auto` by default
    root: Path | None = None
    runroot: Path | None = None
    authfile: Path | None = None
    registries_conf: Path | None = None
    entitlement_dir: Path | None = None
    timeout_seconds: float = 3600
    signing: signed_push.Signing | None = None  # None: pushes are not signed

    def global_argv(self) -> list[str]:
        argv = ["--storage-driver", self.storage_driver]
        if self.root is not None:
            argv += ["--root", str(self.root)]
        if self.runroot is not None:
            argv += ["--runroot", str(self.runroot)]
        if self.registries_conf is not None:
            argv += ["--registries-conf", str(self.registries_conf)]
        return argv


def storage_choice(settings: Settings) -> storage.Choice:
    """The storage driver builds use and why (probed once per process; PermanentError when
    an explicit `overlay` does not work here)."""
    return storage_probe.resolve(
        command=settings.buildah_command,
        root=settings.buildah_root,
        runroot=settings.buildah_runroot,
        setting=settings.buildah_storage_driver,
    )


def config_of(settings: Settings) -> BuildahConfig:
    return BuildahConfig(
        command=settings.buildah_command,
        storage_driver=storage_choice(settings).driver,
        isolation=settings.buildah_isolation,
        root=settings.buildah_root,
        runroot=settings.buildah_runroot,
        authfile=settings.registry_authfile,
        registries_conf=settings.registries_conf,
        entitlement_dir=settings.entitlement_dir,
        timeout_seconds=settings.build_timeout_seconds,
        signing=signed_push.of(settings),
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
        *pull_argv(spec.containerfile, spec.build_args),
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


def pull_argv(text: str, build_args: Mapping[str, str] | None = None) -> list[str]:
    """`--pull=missing` when every FROM names a digest or an earlier stage (content-addressed:
    a stored copy is the same image), else nothing (buildah then asks whether a tag moved)."""
    try:
        parsed = containerfile.parse(text, build_args)
    except containerfile.ContainerfileError:
        return []  # buildah reports the Containerfile's own error
    stages: set[str] = set()
    for stage in parsed.stages:
        image = stage.resolved
        if image is None:
            return []
        pinned = "@sha256:" in image or image.lower() in stages or image.lower() == "scratch"
        if not pinned:
            return []
        if stage.name:
            stages.add(stage.name.lower())
    return ["--pull=missing"]


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

    def _run(self, argv: Sequence[str], output: buildah_process.Output, *, timeout: float) -> None:
        self._check_cancelled("buildah")
        buildah_process.run(
            [self.config.command, *argv],
            output,
            timeout=timeout,
            poll_seconds=self._poll_seconds,
            cancelled=self._cancelled,
        )

    def build(self, spec: builds.BuildSpec, *, on_line: LineSink) -> str:
        output = buildah_process.Output(on_line)
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
            except buildah_process.TimedOut:
                raise BuildFailed(
                    f"build timed out after {self.config.timeout_seconds:.0f}s"
                    + (f" in {output.step}" if output.step else ""),
                    step=str(output.step or ""),
                    log_tail=output.text,
                ) from None
            except buildah_process.Exited as exc:
                raise build_error(spec, output.text, output.step, exc.exit_code) from None
            return iidfile.read_text().strip()

    def push(self, spec: builds.BuildSpec, *, on_line: LineSink) -> str:
        output = buildah_process.Output(on_line)
        host = registry_adapter.registry_host(spec.target)
        with tempfile.TemporaryDirectory(prefix="layering-push-") as scratch:
            digestfile = Path(scratch, "digest")
            try:
                self._run(
                    push_argv(self.config, spec, digestfile=digestfile),
                    output,
                    timeout=PUSH_TIMEOUT_SECONDS,
                )
            except buildah_process.TimedOut:
                raise TemporaryError(
                    f"registry {host}: push of {spec.target} timed out after "
                    f"{PUSH_TIMEOUT_SECONDS}s"
                ) from None
            except buildah_process.Exited:
                raise push_error(spec, output.text) from None
            digest = digestfile.read_text().strip()
            if self.config.signing is not None:
                tag = signed_push.sign(
                    self.config.signing,
                    target=spec.target,
                    repository=spec.repository,
                    digest=digest,
                    scratch=Path(scratch),
                    registries_conf=self.config.registries_conf,
                    authfile=self.config.authfile,
                    host=host,
                    secrets=tuple(registry_adapter.authfile_secrets(self.config.authfile)),
                )
                output.sink(f"signed {digest} with {self.config.signing.private_key}: {tag}")
            return digest

    def discard(self, spec: builds.BuildSpec, *, on_line: LineSink) -> None:
        """Drop the pushed target after a push (its layers only: the base it was built on stays
        in storage, so the next build does not pull it again)."""
        try:
            removed = subprocess.run(
                [self.config.command, *self.config.global_argv(), "rmi", spec.target],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                check=False,
                timeout=300,
            )
        except (OSError, subprocess.TimeoutExpired):
            removed = None
        if removed is None or removed.returncode != 0:
            on_line(f"note: could not remove local image {spec.target}")


def build_error(
    spec: builds.BuildSpec, output: str, step: buildah_output.Step | None, exit_code: int
) -> BuildFailed | TemporaryError | PermanentError:
    """What a failed `buildah build` means: a failing instruction is the Containerfile's fault;
    before any instruction ran (pulling the base) the registry's answer decides."""
    lines = output.splitlines()
    instruction = buildah_output.failed_instruction(lines)
    step_text = str(step) if step else ""
    if (fault := buildah_output.runtime_fault(lines)) is not None:
        return TemporaryError(
            f"{step_text or 'buildah build'}: buildah's runtime failed before the command ran "
            f"({fault}); a host fault, tried again"
        )
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
