"""Fixtures for build tests (see tests/conftest.py), reusable by any test that needs images or a
worker:

- `buildah_storage`: a private buildah root/runroot for the session.
- `containers_env`: CONTAINERS_REGISTRIES_CONF for this process (the session registry is
  plain HTTP, marked insecure there), so skopeo/buildah calls from tests reach it.
- `base_image`: a stand-in OS base image (static busybox, the host's rpm with an rpm database
  holding an FCOS-like base set, and `ostree`/`rpm-ostree`/`bootc` shims: adapters/standin.py)
  built from scratch and pushed to the session registry; BaseImage(ref, digest).
- `worker_env`: the LAYERING_* environment of a worker using the session Redis, registry and
  buildah storage; buildah goes through a wrapper that logs every invocation
  (`worker_env.buildah_calls()`), so tests can prove buildah was (not) run.
- `start_worker(name, pool=..., concurrency=..., extra_env=...)` / `celery_worker` (session,
  prefork, 2 processes): a real `celery worker` subprocess, ready once `control.ping` answers,
  stopped by PID. `launch_beat(worker, name)`: `celery beat` with that worker's environment.
- `write_repository(root, base=..., registry=..., images=..., clusters=...)`: a GitOps tree.
- `submit_build(app, settings, source=..., commit_sha=..., image=..., cluster=...)`: create the
  queued record (`BuildStore.create_queued`) and send `tasks.Build`, as the event flow does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from celery import Celery

from pipeline.adapters import build_records, standin, task_queue
from pipeline.adapters.environment import load_settings
from pipeline.core import tasks
from pipeline.core.settings import Settings
from tests import services
from workers import app as celery_app_module

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE_REPOSITORY = "os/fcos-stand-in"
# secrets configured on the worker: tests assert they never reach records or logs
FAKE_TOKEN = "ghp_faketoken0123456789abcdef"
FAKE_REGISTRY_PASSWORD = "s3cret-registry-password"
# LAYERING_VERIFICATION_KEY of every worker started here (and of stores tests open)
VERIFICATION_KEY = "layering-test-verification-key-0123456789abcdef"


def _require(*tools: str) -> None:
    from tests.conftest import require_tools

    require_tools(*tools)


@dataclass(frozen=True)
class BuildahStorage:
    root: Path
    runroot: Path
    driver: str = "vfs"  # tests keep vfs; overlay where a test needs it, on a root of its own

    def argv(self) -> list[str]:
        return [
            "buildah",
            "--root",
            str(self.root),
            "--runroot",
            str(self.runroot),
            "--storage-driver",
            self.driver,
        ]


BaseImage = standin.BaseImage


@pytest.fixture(scope="session")
def buildah_storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuildahStorage]:
    _require("buildah")
    directory = tmp_path_factory.mktemp("buildah")
    storage = BuildahStorage(directory / "root", directory / "run")
    yield storage
    # vfs layers are plain directories; buildah may leave read-only bits behind
    subprocess.run(["chmod", "-R", "u+w", str(directory)], check=False)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def containers_env(registry: services.Registry) -> Iterator[dict[str, str]]:
    env = {"CONTAINERS_REGISTRIES_CONF": str(registry.registries_conf)}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        yield env


def _run(argv: list[str], **kwargs: object) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise RuntimeError(f"{argv!r} failed ({result.returncode}): {result.stderr[-2000:]}")
    return str(result.stdout)


def push_base_image(
    work: Path, *, registry: services.Registry, storage: BuildahStorage, env: Mapping[str, str]
) -> BaseImage:
    """Build the stand-in OS image (pipeline/adapters/standin.py) in `storage`, push it to
    `registry`."""
    return standin.build(
        buildah=storage.argv(),
        repository=f"{registry.host}/{BASE_REPOSITORY}",
        workdir=work,
        env={**os.environ, **env},
    )


@pytest.fixture(scope="session")
def base_image(
    tmp_path_factory: pytest.TempPathFactory,
    registry: services.Registry,
    buildah_storage: BuildahStorage,
    containers_env: dict[str, str],
) -> BaseImage:
    _require("buildah", "busybox", "rpm", "rpmbuild")
    return push_base_image(
        tmp_path_factory.mktemp("base-image"),
        registry=registry,
        storage=buildah_storage,
        env=containers_env,
    )


@dataclass
class WorkerEnv:
    """The environment a worker (and a Settings in the test process) runs with."""

    variables: dict[str, str]
    buildah_log: Path
    directory: Path

    def settings(self, **overrides: object) -> Settings:
        values: dict[str, object] = {
            key.removeprefix("LAYERING_").lower(): value
            for key, value in self.variables.items()
            if key.startswith("LAYERING_")
        }
        values.update(overrides)
        return load_settings(**values)

    def buildah_calls(self) -> list[str]:
        """Every buildah command line the worker ran, oldest first."""
        if not self.buildah_log.exists():
            return []
        return self.buildah_log.read_text().splitlines()

    def buildah_builds(self) -> list[str]:
        """The `buildah build` and `push` command lines among them: not the reading of a
        finished image's changes nor its removal, which run on a thread after the build."""
        return [call for call in self.buildah_calls() if _subcommand(call) in ("build", "push")]

    def store(self) -> build_records.BuildStore:
        return build_records.BuildStore.from_settings(self.settings())


def make_worker_env(
    directory: Path,
    *,
    redis_url: str,
    registry: services.Registry,
    storage: BuildahStorage,
) -> WorkerEnv:
    directory.mkdir(parents=True, exist_ok=True)
    buildah_log = directory / "buildah-calls.log"
    wrapper = directory / "buildah-wrapper"
    real = shutil.which("buildah") or "buildah"
    # records each invocation, then runs the real buildah with the same arguments
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{buildah_log}"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    authfile = directory / "auth.json"
    secret_auth = _b64(f"robot:{FAKE_REGISTRY_PASSWORD}")
    authfile.write_text(json.dumps({"auths": {"registry.example.com": {"auth": secret_auth}}}))
    variables = {
        "CONTAINERS_REGISTRIES_CONF": str(registry.registries_conf),
        "LAYERING_REDIS_URL": redis_url,
        "LAYERING_WORKDIR": str(directory / "work"),
        "LAYERING_BUILDAH_ROOT": str(storage.root),
        "LAYERING_BUILDAH_RUNROOT": str(storage.runroot),
        "LAYERING_BUILDAH_STORAGE_DRIVER": storage.driver,
        "LAYERING_BUILDAH_ISOLATION": "chroot",
        "LAYERING_BUILDAH_COMMAND": str(wrapper),
        "LAYERING_REGISTRY_AUTHFILE": str(authfile),
        "LAYERING_REGISTRY_RETRIES": "2",
        "LAYERING_RETRY_BACKOFF_SECONDS": "0.2",
        "LAYERING_BUILD_TIMEOUT_SECONDS": "300",
        "LAYERING_GITHUB_TOKEN": FAKE_TOKEN,
        # bare repositories on disk are plain Git servers: commit mode (a token alone would
        # choose pull-request mode); tests of pull-request mode ask for it
        "LAYERING_PROMOTION_MODE": "commit",
        "LAYERING_VERIFICATION_KEY": VERIFICATION_KEY,
        "LAYERING_ENTITLEMENT_DIR": str(directory / "no-entitlement"),
    }
    return WorkerEnv(variables, buildah_log, directory)


@pytest.fixture(scope="session")
def worker_env(
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: services.RedisServer,
    registry: services.Registry,
    buildah_storage: BuildahStorage,
    containers_env: dict[str, str],
) -> WorkerEnv:
    _require("buildah", "skopeo")
    return make_worker_env(
        tmp_path_factory.mktemp("worker"),
        redis_url=redis_server.url,
        registry=registry,
        storage=buildah_storage,
    )


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    app: Celery
    settings: Settings
    log: Path
    env: WorkerEnv
    stopped: bool = field(default=False)
    variables: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        if not self.stopped:
            services.stop_process(self.process)
            self.stopped = True

    def wait_for_build(
        self,
        build_id: str,
        *,
        timeout: float = 90,
        states: frozenset[str] | None = None,
        poll: float = 0.05,
    ) -> dict[str, object]:
        """Poll the store until the build reaches a terminal state (or one of `states`)."""
        wanted = states or frozenset({"succeeded", "failed", "skipped", "cancelled"})
        records = build_records.BuildStore.from_settings(self.settings)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = records.get(build_id)
            if record is not None and record.state.value in wanted:
                return record.to_dict()
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log.read_text()[-3000:]}")
            time.sleep(poll)
        raise TimeoutError(f"build {build_id} unfinished after {timeout}s: {records.get(build_id)}")


CELERY = (sys.executable, "-m", "celery", "-A", "workers.app")


def _process_env(variables: Mapping[str, str]) -> dict[str, str]:
    return {**os.environ, **variables, "PYTHONPATH": str(REPO_ROOT)}


def launch_worker(
    worker_env: WorkerEnv,
    name: str,
    *,
    pool: str = "prefork",
    concurrency: int = 2,
    queues: str = "events,builds,promotions",
    extra_env: Mapping[str, str] | None = None,
) -> Worker:
    """Start `celery worker` for workers.app; returns once it answers a ping."""
    variables = {**worker_env.variables, **(extra_env or {})}
    env = _process_env(variables)
    log = worker_env.directory / f"worker-{name}.log"
    argv = [
        *CELERY,
        "worker",
        f"--pool={pool}",
        f"--concurrency={concurrency}",
        "--without-heartbeat",
        "--without-gossip",
        "--without-mingle",
        "--loglevel=INFO",
        "-n",
        f"{name}@%h",
        "-Q",
        queues,
    ]
    process = services.start(argv, log=log, env=env, cwd=REPO_ROOT)
    settings = WorkerEnv(variables, worker_env.buildah_log, worker_env.directory).settings()
    app = celery_app_module.create_app(settings)
    worker = Worker(name, process, app, settings, log, worker_env, variables=variables)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"worker {name} exited: {log.read_text()[-3000:]}")
        replies = app.control.ping(timeout=0.5)
        if any(f"{name}@" in host for reply in replies for host in reply):
            return worker
    worker.stop()
    raise TimeoutError(f"worker {name} did not answer ping: {log.read_text()[-3000:]}")


StartWorker = Callable[..., Worker]


def launch_beat(worker: Worker, name: str) -> subprocess.Popen[bytes]:
    """`celery beat` for workers.app with `worker`'s environment (its schedule file and log
    in the worker directory); stop it with services.stop_process."""
    directory = worker.env.directory
    schedule = str(directory / f"beat-{name}-schedule")
    return services.start(
        [*CELERY, "beat", "--loglevel=INFO", "--schedule", schedule],
        log=directory / f"beat-{name}.log",
        env=_process_env(worker.variables),
        cwd=REPO_ROOT,
    )


@pytest.fixture(scope="session")
def start_worker(worker_env: WorkerEnv) -> Iterator[StartWorker]:
    """`start_worker(name, pool=..., concurrency=..., queues=..., extra_env=...)`; every
    worker started is stopped by PID at the end of the session."""
    started: list[Worker] = []

    def start(name: str, **options: object) -> Worker:
        worker = launch_worker(worker_env, name, **options)  # type: ignore[arg-type]
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="session")
def celery_worker(start_worker: StartWorker) -> Worker:
    return start_worker("builds", pool="prefork", concurrency=2)


def write_repository(
    root: Path,
    *,
    base: BaseImage,
    registry: str,
    images: Mapping[str, Mapping[str, str]],
    clusters: Mapping[str, Mapping[str, object]] | None = None,
) -> Path:
    """Write images/<name>/<file> and clusters/<name>/cluster.yaml under `root`.

    `images` maps an image name to {relative file: text}; `clusters` maps a cluster name to
    overrides of its cluster.yaml (default: environment nonprod, the base image, `registry`,
    every image on its own pool)."""
    for image, files in images.items():
        for relative, text in files.items():
            path = root / "images" / image / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for cluster, overrides in (clusters or {"dev": {}}).items():
        document: dict[str, object] = {
            "environment": "nonprod",
            "baseImage": base.ref,
            "registry": registry,
            "pools": {},
        }
        document.update(overrides)
        path = root / "clusters" / cluster / "cluster.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2) + "\n")  # JSON is YAML
    return root


def git_commit_all(root: Path, message: str = "images") -> str:
    """`git init` (once) and commit everything; returns the commit sha."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    if not (root / ".git").exists():
        _run(["git", "init", "-q", "-b", "main", str(root)], env=env)
    _run(["git", "-C", str(root), "add", "-A"], env=env)
    _run(["git", "-C", str(root), "commit", "-q", "--allow-empty", "-m", message], env=env)
    return _run(["git", "-C", str(root), "rev-parse", "HEAD"], env=env).strip()


def submit_build(
    app: Celery,
    settings: Settings,
    *,
    source: str,
    commit_sha: str | None,
    image: str,
    cluster: str,
    build_key: str | None = None,
) -> str:
    """Create the queued record and send "layering.build" for it; returns the build id."""
    record = build_records.BuildStore.from_settings(settings).create_queued(
        image=image, cluster=cluster, commit_sha=commit_sha or "", build_key=build_key or ""
    )
    call = tasks.Build(
        source=source,
        commit_sha=commit_sha,
        image=image,
        cluster=cluster,
        build_key=build_key,
        build_id=record.id,
    ).call(task_id=f"build-{record.id}")
    task_queue.CeleryTaskQueue(app).send(call)
    return record.id


def _subcommand(call: str) -> str:
    """buildah's subcommand in a logged command line: the word after the global options."""
    words = call.split()
    index = 0
    while index < len(words) and words[index].startswith("--"):
        index += 1 if "=" in words[index] else 2
    return words[index] if index < len(words) else ""
