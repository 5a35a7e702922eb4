"""`layering up`: the whole pipeline on this machine, each part a real child process on the
loopback interface: a private Redis (append-only persistence), a docker-registry, the receiver,
a Celery worker and Celery beat. With no LAYERING_REPO_URL it also makes a local GitOps sandbox:
a bare repository seeded from this project's images/ and clusters/ (rebased onto a busybox
stand-in base image pushed to the local registry, so builds really run here) with the
post-receive hook installed. Does file, process, Git and network I/O.

Everything lives in the workdir and survives a restart (Redis data, registry blobs, the
repository, buildah storage, the webhook secret); Ctrl-C stops the processes, by process group.

    workdir/
      up.json                 ports and the stand-in image, reused on restart
      pids.json               the processes running now (removed on a clean stop)
      webhook-secret          mode 0600
      redis/ registry/ buildah/ service/ logs/
      gitops.git              the sandbox repository (local mode only)
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.adapters import standin
from pipeline.cli import install_hook
from pipeline.core import tasks
from pipeline.core.errors import InputError, PipelineError

DEFAULT_PORTS = {"receiver": 8080, "registry": 5000, "redis": 6380}
# The project's example images that build on the busybox stand-in (their RUN steps only call
# rpm-ostree/ostree, which the stand-in shims); the others need real RHEL content or network.
SANDBOX_POOLS = {"debug": "htop", "shell": "fish"}
SANDBOX_SOAK = {"prod": "2m"}  # prod soaks for minutes here, not a day
BRANCHES = ("main", "env/nonprod", "env/prod")
QUEUES = ",".join(tasks.QUEUES)
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "layering up",
    "GIT_AUTHOR_EMAIL": "layering-up@localhost",
    "GIT_COMMITTER_NAME": "layering up",
    "GIT_COMMITTER_EMAIL": "layering-up@localhost",
}

Say = Callable[[str], None]


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def state_file(self) -> Path:
        return self.root / "up.json"

    @property
    def pids_file(self) -> Path:
        return self.root / "pids.json"

    @property
    def secret_file(self) -> Path:
        return self.root / "webhook-secret"

    @property
    def redis(self) -> Path:
        return self.root / "redis"

    @property
    def registry(self) -> Path:
        return self.root / "registry"

    @property
    def registries_conf(self) -> Path:
        return self.registry / "registries.conf"

    @property
    def buildah(self) -> Path:
        return self.root / "buildah"

    @property
    def service(self) -> Path:
        """LAYERING_WORKDIR of the receiver, worker and beat (mirrors, promotion clones)."""
        return self.root / "service"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def repository(self) -> Path:
        return self.root / "gitops.git"

    @property
    def entitlement(self) -> Path:
        return self.root / "entitlement"


@dataclass(frozen=True)
class Options:
    workdir: Path
    ports: Mapping[str, int | None]  # receiver, registry, redis; None: saved or default
    repo_url: str | None  # LAYERING_REPO_URL: serve that repository, no sandbox
    webhook_secret: str | None  # LAYERING_WEBHOOK_SECRET
    seed: Path  # the tree whose images/ and clusters/ seed the sandbox
    concurrency: int = 2
    buildah_storage: bool = True  # False: the environment configures buildah storage


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Supervisor:
    """The processes `up` started, each in its own process group, stopped by PID."""

    layout: Layout
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
        _write_json(self.layout.pids_file, document)

    def exited(self) -> Child | None:
        return next((c for c in self.children if c.process.poll() is not None), None)

    def stop(self, say: Say, timeout: float = 15) -> None:
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


# -- files ----------------------------------------------------------------------------------


def _write_json(path: Path, document: Mapping[str, Any]) -> None:
    staging = path.with_name(f".{path.name}.new")
    staging.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    staging.replace(path)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        document = json.loads(path.read_text())
    except ValueError:
        raise InputError(f"{path}: not JSON; remove it to start afresh") from None
    return document if isinstance(document, dict) else {}


def webhook_secret(path: Path) -> str:
    """The secret in `path`, made (mode 0600) on first use."""
    if path.is_file():
        text = path.read_text().strip()
        if text:
            return text
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(value + "\n")
    path.chmod(0o600)
    return value


def registry_config(*, host: str, data: Path) -> str:
    """docker-registry configuration: this address only, filesystem storage, deletes on."""
    return (
        "version: 0.1\n"
        "log: {level: warn}\n"
        "storage:\n"
        f"  filesystem: {{rootdirectory: {json.dumps(str(data))}}}\n"
        "  delete: {enabled: true}\n"
        f"http: {{addr: {json.dumps(host)}}}\n"
    )


def registries_conf(host: str) -> str:
    """containers-registries.conf(5) marking the plain-HTTP local registry insecure."""
    return f'[[registry]]\nlocation = "{host}"\ninsecure = true\n'


# -- the sandbox repository -----------------------------------------------------------------


def sandbox_cluster(
    document: Mapping[str, Any], *, cluster: str, base_ref: str, registry: str, images: set[str]
) -> dict[str, Any]:
    """cluster.yaml rebased onto the stand-in and the local registry: pools limited to the
    images that build on the stand-in, no live cluster access, a short prod soak."""
    rewritten = dict(document)
    rewritten["baseImage"] = base_ref
    rewritten["registry"] = registry
    rewritten["pools"] = {pool: image for pool, image in SANDBOX_POOLS.items() if image in images}
    rewritten.pop("kube", None)
    environment = str(document.get("environment", cluster))
    if environment in SANDBOX_SOAK:
        rewritten["soak"] = SANDBOX_SOAK[environment]
    return rewritten


_CLUSTER_HEADER = """\
# Sandbox copy made by `layering up`: baseImage is the local busybox stand-in, images go to the
# local registry, and the pools hold the example images whose builds run on the stand-in
# (the others need real RHEL content). Edit freely: this repository is yours.
"""


def write_seed(source: Path, tree: Path, *, base_ref: str, registry: str) -> None:
    """Copy images/ and clusters/ (without machineconfigs/) from `source` into `tree`,
    rewriting every cluster.yaml with sandbox_cluster."""
    for top in ("images", "clusters"):
        if not (source / top).is_dir():
            raise InputError(f"{source / top}: missing; pass --seed with a tree holding {top}/")
    shutil.copytree(source / "images", tree / "images", symlinks=False)
    images = {path.name for path in (tree / "images").iterdir() if path.is_dir()}
    for cluster_file in sorted((source / "clusters").glob("*/cluster.yaml")):
        document = yaml.safe_load(cluster_file.read_text()) or {}
        name = cluster_file.parent.name
        rewritten = sandbox_cluster(
            document, cluster=name, base_ref=base_ref, registry=registry, images=images
        )
        target = tree / "clusters" / name / "cluster.yaml"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(_CLUSTER_HEADER + yaml.safe_dump(rewritten, sort_keys=False))
    (tree / "README.md").write_text(
        "# Layered images (sandbox)\n\nMade by `layering up`. Change `images/<image>/Containerfile`"
        " and push to build; merge `main` into `env/nonprod` and push to promote.\n"
    )


def _git(*args: str, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> str:
    git = shutil.which("git")
    if git is None:
        raise InputError("git not found: install the Debian package git")
    result = subprocess.run(
        [git, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **GIT_IDENTITY, **(env or {})},
    )
    if result.returncode != 0:
        raise PipelineError(f"git {' '.join(args[:3])} failed: {result.stderr.strip()[-1500:]}")
    return result.stdout


def create_repository(bare: Path, *, seed: Path, base_ref: str, registry: str) -> Path:
    """The bare sandbox repository with env/nonprod and env/prod at the seed commit, and a
    checkout (returned) whose main is not pushed yet: pushing it once the services run makes
    the first build of every image."""
    staging = bare.with_name(f".{bare.name}.new")
    shutil.rmtree(staging, ignore_errors=True)
    _git("init", "--quiet", "--bare", "--initial-branch=main", str(staging))
    tree = Path(tempfile.mkdtemp(prefix="seed-", dir=bare.parent))
    _git("init", "--quiet", "--initial-branch=main", str(tree))
    write_seed(seed, tree, base_ref=base_ref, registry=registry)
    _git("add", "--all", cwd=tree)
    _git("commit", "--quiet", "-m", "Seed from coreos-layering-pipeline examples", cwd=tree)
    _git("remote", "add", "origin", str(staging), cwd=tree)
    for branch in BRANCHES[1:]:
        _git("push", "--quiet", "origin", f"HEAD:refs/heads/{branch}", cwd=tree)
    staging.rename(bare)
    _git("remote", "set-url", "origin", str(bare), cwd=tree)
    return tree


def push_seed(tree: Path) -> None:
    _git("push", "--quiet", "origin", "HEAD:refs/heads/main", cwd=tree)
    shutil.rmtree(tree, ignore_errors=True)


# -- readiness ------------------------------------------------------------------------------


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


def wait_until(
    ready: Callable[[], bool], *, child: Child, what: str, timeout: float, interval: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise PipelineError(f"{child.name} exited ({child.process.returncode}){_tail(child)}")
        if ready():
            return
        time.sleep(interval)
    raise PipelineError(f"{what} not ready after {timeout:.0f}s{_tail(child)}")


def _tail(child: Child, lines: int = 15) -> str:
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


def manifest_exists(registry_host: str, repository: str, digest: str) -> bool:
    request = urllib.request.Request(
        f"http://{registry_host}/v2/{repository}/manifests/{digest}",
        method="HEAD",
        headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json, "
            "application/vnd.docker.distribution.manifest.v2+json"
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def worker_answers(redis_url: str, name: str) -> Callable[[], bool]:
    from pipeline.adapters.environment import load_settings
    from workers import app as celery_app

    app = celery_app.create_app(load_settings(redis_url=redis_url))

    def check() -> bool:
        replies = app.control.ping(timeout=0.5)
        return any(f"{name}@" in host for reply in replies for host in reply)

    return check


# -- up -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    """What `up` prints once everything runs."""

    dashboard_url: str
    webhook_url: str
    clone_url: str | None  # the sandbox repository; None when serving LAYERING_REPO_URL
    registry_host: str
    redis_url: str
    workdir: Path
    secret_file: Path


def _ports(layout: Layout, options: Options, saved: Mapping[str, Any], say: Say) -> dict[str, int]:
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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _check_not_running(layout: Layout) -> None:
    running = _read_json(layout.pids_file)
    pid = running.get("up")
    if isinstance(pid, int) and pid != os.getpid() and pid_alive(pid):
        raise InputError(
            f"layering up already runs on {layout.root} (pid {pid}); stop it with Ctrl-C "
            "or pass another --workdir"
        )


def service_environment(
    base: Mapping[str, str],
    *,
    layout: Layout,
    ports: Mapping[str, int],
    options: Options,
    secret: str,
) -> dict[str, str]:
    """The environment of the receiver, worker and beat."""
    env = dict(base)
    env.update(
        {
            "LAYERING_REDIS_URL": f"redis://127.0.0.1:{ports['redis']}/0",
            "LAYERING_WORKDIR": str(layout.service),
            "LAYERING_PUBLIC_URL": f"http://127.0.0.1:{ports['receiver']}",
            "LAYERING_WEBHOOK_SECRET": secret,
            "CONTAINERS_REGISTRIES_CONF": str(layout.registries_conf),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if options.buildah_storage:
        env["LAYERING_BUILDAH_ROOT"] = str(layout.buildah / "root")
        env["LAYERING_BUILDAH_RUNROOT"] = str(layout.buildah / "run")
        env["LAYERING_BUILDAH_STORAGE_DRIVER"] = "vfs"
    if options.repo_url is None:
        env["LAYERING_REPO_URL"] = layout.repository.as_uri()
        env["LAYERING_DEFAULT_BRANCH"] = "main"
        env["LAYERING_ENTITLEMENT_DIR"] = str(layout.entitlement)
        env.pop("LAYERING_GITHUB_REPOSITORY", None)
    return env


def _buildah_argv(layout: Layout) -> list[str]:
    buildah = shutil.which("buildah")
    if buildah is None:
        raise InputError("buildah not found: install the Debian package buildah")
    return [
        buildah,
        "--root",
        str(layout.buildah / "root"),
        "--runroot",
        str(layout.buildah / "run"),
        "--storage-driver",
        "vfs",
    ]


def _require(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise InputError(f"missing tools: {', '.join(missing)} (`make up` installs them)")


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM (and SIGHUP) stop `up` the way Ctrl-C does."""

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def start_all(
    options: Options, *, supervisor: Supervisor, base_env: Mapping[str, str], say: Say
) -> Started:
    """Start every process (recording it in `supervisor`), prepare the sandbox on first run."""
    layout = supervisor.layout
    local = options.repo_url is None
    _require("redis-server", "docker-registry", "git", *(("buildah", "busybox") if local else ()))
    state = _read_json(layout.state_file)
    ports = _ports(layout, options, state.get("ports", {}), say)
    state["ports"] = ports
    _write_json(layout.state_file, state)
    secret = options.webhook_secret or webhook_secret(layout.secret_file)
    registry_host = f"127.0.0.1:{ports['registry']}"
    redis_url = f"redis://127.0.0.1:{ports['redis']}/0"

    layout.redis.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    redis = supervisor.start(
        "redis",
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(ports["redis"]),
            "--bind",
            "127.0.0.1",
            "--appendonly",
            "yes",
            "--save",
            "",
            "--dir",
            str(layout.redis),
        ],
        base_env,
    )
    wait_until(listening(ports["redis"]), child=redis, what="redis", timeout=20)
    say(f"redis on {redis_url} (append-only file in {layout.redis}) {_since(started)}")

    layout.registry.mkdir(parents=True, exist_ok=True)
    config = layout.registry / "config.yml"
    config.write_text(registry_config(host=registry_host, data=layout.registry / "data"))
    layout.registries_conf.write_text(registries_conf(registry_host))
    started = time.monotonic()
    registry = supervisor.start("registry", ["docker-registry", "serve", str(config)], base_env)
    wait_until(listening(ports["registry"]), child=registry, what="registry", timeout=20)
    say(
        f"registry on http://{registry_host} (insecure in {layout.registries_conf}) "
        f"{_since(started)}"
    )

    env = service_environment(base_env, layout=layout, ports=ports, options=options, secret=secret)
    seed_tree: Path | None = None
    if local:
        layout.entitlement.mkdir(exist_ok=True)
        base = _base_image(layout, state, registry_host, env, say)
        if not layout.repository.exists():
            started = time.monotonic()
            seed_tree = create_repository(
                layout.repository,
                seed=options.seed,
                base_ref=base.ref,
                registry=f"{registry_host}/layering",
            )
            say(f"created the sandbox repository {layout.repository} {_since(started)}")
    webhook_url = f"http://127.0.0.1:{ports['receiver']}/webhook/git"
    if local:
        install_hook.install(layout.repository, url=webhook_url, secret_file=layout.secret_file)
        say(f"post-receive hook installed (posts to {webhook_url})")

    python = sys.executable
    started = time.monotonic()
    receiver = supervisor.start(
        "receiver",
        [python, "-m", "pipeline.cli", "serve", "--port", str(ports["receiver"])],
        env,
    )
    worker = supervisor.start(
        "worker",
        [
            python,
            "-m",
            "pipeline.cli",
            "worker",
            f"--queues={QUEUES}",
            f"--concurrency={options.concurrency}",
            "--hostname=up@%h",
        ],
        env,
    )
    layout.service.mkdir(parents=True, exist_ok=True)
    beat = supervisor.start(
        "beat",
        [
            python,
            "-m",
            "celery",
            "-A",
            "workers.app",
            "beat",
            "--loglevel=INFO",
            "--schedule",
            str(layout.service / "celerybeat-schedule"),
        ],
        env,
    )
    dashboard = f"http://127.0.0.1:{ports['receiver']}/"
    wait_until(
        http_ok(f"{dashboard}readyz"), child=receiver, what="receiver", timeout=60, interval=0.1
    )
    say(f"receiver on {dashboard} {_since(started)}")
    wait_until(
        worker_answers(redis_url, "up"), child=worker, what="worker", timeout=90, interval=0.2
    )
    say(f"worker ready (queues {QUEUES}, concurrency {options.concurrency}) {_since(started)}")
    if beat.process.poll() is not None:
        raise PipelineError(f"beat exited ({beat.process.returncode}){_tail(beat)}")
    say("beat scheduler running")
    if seed_tree is not None:
        push_seed(seed_tree)
        say("pushed main: the first build of every image in a pool is under way")
    return Started(
        dashboard_url=dashboard,
        webhook_url=webhook_url,
        clone_url=layout.repository.as_uri() if local else None,
        registry_host=registry_host,
        redis_url=redis_url,
        workdir=layout.root,
        secret_file=layout.secret_file,
    )


def _base_image(
    layout: Layout, state: dict[str, Any], registry_host: str, env: Mapping[str, str], say: Say
) -> standin.BaseImage:
    saved = state.get("base_image") or {}
    repository = f"{registry_host}/{standin.REPOSITORY}"
    digest = str(saved.get("digest", ""))
    if saved.get("repository") == repository and manifest_exists(
        registry_host, standin.REPOSITORY, digest
    ):
        say(f"stand-in base image {repository}@{digest[:19]}… (reused)")
        return standin.BaseImage(repository, digest)
    started = time.monotonic()
    image = standin.build(
        buildah=_buildah_argv(layout),
        repository=repository,
        workdir=layout.root / "standin",
        env=env,
    )
    state["base_image"] = {"repository": image.repository, "digest": image.digest}
    _write_json(layout.state_file, state)
    say(f"stand-in base image {image.ref} built and pushed {_since(started)}")
    return image


def _since(started: float) -> str:
    return f"[{time.monotonic() - started:.1f}s]"


def run(
    options: Options,
    *,
    base_env: Mapping[str, str],
    say: Say,
    ready: Callable[[Started], None],
) -> int:
    """Start everything, call `ready`, then wait for Ctrl-C (or a child dying) and stop."""
    layout = Layout(options.workdir.resolve())
    layout.root.mkdir(parents=True, exist_ok=True)
    _check_not_running(layout)
    supervisor = Supervisor(layout)
    with _stop_on_sigterm():
        try:
            started = start_all(options, supervisor=supervisor, base_env=base_env, say=say)
            ready(started)
            while (gone := supervisor.exited()) is None:
                time.sleep(0.5)
            say(f"{gone.name} exited ({gone.process.returncode}){_tail(gone)}")
            return 1
        except KeyboardInterrupt:
            say("stopping (data stays in the workdir)")
            return 0
        finally:
            # a second Ctrl-C must not cut the stop short and leave processes behind
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)
            supervisor.stop(say)
            signal.signal(signal.SIGINT, signal.default_int_handler)
