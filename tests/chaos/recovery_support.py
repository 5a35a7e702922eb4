"""What the build recovery chaos tests and tests/bench/recovery_bench.py share: a GitOps
checkout whose image sleeps in a RUN step (the window to kill a worker in), sending one build
to a queue of its own with its report callbacks, SIGKILL of a worker's whole process group,
and counting the pushes of a build key in the buildah wrapper's log. Does I/O (Git, Redis,
processes)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from celery import Celery

from pipeline.adapters import build_records
from pipeline.core import content_address, tasks
from pipeline.core.settings import Settings
from tests import services
from tests.plugins.builds import (
    BaseImage,
    BuildahStorage,
    Worker,
    WorkerEnv,
    git_commit_all,
    launch_beat,
    launch_worker,
    make_worker_env,
    write_repository,
)

SLEEPY = """\
FROM quay.io/fedora/fedora-coreos:stable
RUN echo sleepy-started && sleep {seconds} && echo slept > /etc/sleepy
RUN ostree container commit
"""
STARTED = "sleepy-started"  # the RUN step printed this: the build is mid-step


@dataclass(frozen=True)
class Checkout:
    root: Path
    commit_sha: str


def sleepy_checkout(
    root: Path, *, base: BaseImage, registry_host: str, seconds: float, images: tuple[str, ...]
) -> Checkout:
    """One image per name, each sleeping `seconds` in a RUN step; fresh content per call."""
    nonce = uuid.uuid4().hex
    files = {
        name: {"Containerfile": SLEEPY.format(seconds=seconds), "nonce": f"{nonce}-{name}"}
        for name in images
    }
    write_repository(
        root,
        base=base,
        registry=f"{registry_host}/chaos",
        images=files,
        clusters={"dev": {"pools": {name: name for name in images}}},
    )
    return Checkout(root, git_commit_all(root))


def send_build(app: Celery, settings: Settings, checkout: Checkout, image: str, queue: str) -> str:
    """Create the queued record and send "layering.build" on `queue` with the callbacks the
    event flow gives it (its final status); returns the build id."""
    record = build_records.BuildStore.from_settings(settings).create_queued(
        image=image, cluster="dev", commit_sha=checkout.commit_sha
    )
    call = tasks.Build(
        source=str(checkout.root),
        commit_sha=checkout.commit_sha,
        image=image,
        cluster="dev",
        build_id=record.id,
    ).call(task_id=f"build-{record.id}")
    report = tasks.ReportBuild(checkout.commit_sha, "branch").call()
    error = tasks.ReportBuildError(checkout.commit_sha, image, "dev", record.id).call()
    app.send_task(
        call.name,
        kwargs=dict(call.kwargs),
        queue=queue,
        task_id=call.task_id,
        link=app.signature(report.name, args=list(report.args), queue=report.queue),
        link_error=app.signature(error.name, args=list(error.args), queue=error.queue),
    )
    return record.id


def wait_until(
    check: Callable[[], object], what: str, *, timeout: float, poll: float = 0.1
) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(poll)
    raise TimeoutError(f"{what}: not within {timeout}s")


def wait_mid_step(worker: Worker, build_id: str, *, timeout: float = 90) -> None:
    """Until the build's RUN step has started (its log says so)."""
    store = worker.env.store()
    wait_until(
        lambda: any(STARTED in line and "RUN" not in line for line in store.read_log(build_id)),
        f"build {build_id} mid-step",
        timeout=timeout,
    )


def kill_group(worker: Worker) -> None:
    """SIGKILL the worker's whole process group (main process and prefork children)."""
    os.killpg(worker.process.pid, signal.SIGKILL)
    worker.process.wait(timeout=10)
    worker.stopped = True


def pushes_of(env: WorkerEnv, build_key: str) -> int:
    """`buildah push` runs of the key's tag, from the buildah wrapper's log."""
    tag = content_address.tag(build_key)
    return sum(1 for call in env.buildah_calls() if " push " in f" {call} " and f":{tag}" in call)


def record_of(settings: Settings, build_id: str) -> dict[str, object]:
    found = build_records.BuildStore.from_settings(settings).get(build_id)
    return found.to_dict() if found is not None else {}


def chaos_env(github_url: str | None, **values: str) -> dict[str, str]:
    env = {f"LAYERING_{name.upper()}": value for name, value in values.items()}
    if github_url is not None:
        env["LAYERING_GITHUB_API_URL"] = github_url
        env["LAYERING_GITHUB_REPOSITORY"] = "octo/gitops"
    return env


def as_json(value: object) -> str:
    return json.dumps(value, default=str)[:3000]


class Workers:
    """Workers and beats on a broker of their own (a private Redis), so no other test's worker
    takes their tasks or callbacks; all stopped by PID on `close`."""

    def __init__(self, env: WorkerEnv) -> None:
        self.env = env
        self.started: list[Worker] = []
        self.beats: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, **options: object) -> Worker:
        worker = launch_worker(self.env, name, **options)  # type: ignore[arg-type]
        self.started.append(worker)
        return worker

    def beat(self, worker: Worker, name: str) -> None:
        self.beats.append(launch_beat(worker, name))

    def close(self) -> None:
        for beat in self.beats:
            services.stop_process(beat)
        for worker in self.started:
            worker.stop()


@contextlib.contextmanager
def private_workers(
    directory: Path, *, registry: services.Registry, storage: BuildahStorage
) -> Iterator[Workers]:
    """A private Redis and the worker environment on it (the session registry and storage)."""
    redis_server = services.RedisServer(directory / "redis").start()
    workers = Workers(
        make_worker_env(
            directory / "worker", redis_url=redis_server.url, registry=registry, storage=storage
        )
    )
    try:
        yield workers
    finally:
        workers.close()
        redis_server.stop()
