"""Finding 1 (the crash loop): a task whose worker process dies while running it is delivered
again (late acks, reject on worker lost); after LAYERING_POISON_REDELIVERIES deaths (default 2)
it is parked, not run again, and the commit it is tied to says so. Real processes: a Celery
worker (prefork, one child) on a private Redis, the GitHub stand-in, and a Git server that
accepts connections and never answers, so that "layering.handle_push" hangs cloning until the
test SIGKILLs the pool child running it."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from pipeline.adapters import poison as poison_store
from pipeline.adapters import status_queue, task_queue
from pipeline.core import commit_status, tasks
from tests import services
from tests.plugins.builds import StartWorker, Worker
from tests.plugins.github import GitHubStandIn

pytestmark = pytest.mark.integration

AFTER = "a1" * 20
BEFORE = "b2" * 20


class SilentGitServer:
    """Accepts `git://` connections and never answers; counts them (one per delivery that
    reaches the clone)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(connection)

    def close(self) -> None:
        self.listener.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def silent_git() -> Iterator[SilentGitServer]:
    server = SilentGitServer()
    yield server
    server.close()


@pytest.fixture
def worker(
    tmp_path: Path,
    start_worker: StartWorker,
    github_api: GitHubStandIn,
    silent_git: SilentGitServer,
) -> Iterator[tuple[Worker, services.RedisServer]]:
    private = services.RedisServer(tmp_path / "redis").start()
    env = {
        "LAYERING_REDIS_URL": private.url,
        "LAYERING_REPO_URL": f"git://127.0.0.1:{silent_git.port}/layers.git",
        "LAYERING_GITHUB_API_URL": github_api.url,
        "LAYERING_GITHUB_REPOSITORY": "acme/layers",
        "LAYERING_PUBLIC_URL": "http://layering.example.test",
        "LAYERING_WORKDIR": str(tmp_path / "workdir"),
    }
    started = start_worker(
        f"poison-{uuid.uuid4().hex[:6]}", concurrency=1, queues="events", extra_env=env
    )
    yield started, private
    started.stop()
    private.stop()


def wait_for(
    condition: Callable[[], object], what: str, worker: Worker, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}; worker log:\n{worker.log.read_text()[-4000:]}")
        if worker.process.poll() is not None:
            raise RuntimeError(f"the worker exited: {worker.log.read_text()[-4000:]}")
        time.sleep(0.05)


def running_child(worker: Worker, task_id: str) -> int:
    """The pid of the pool process running `task_id`."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for active in (worker.app.control.inspect(timeout=1).active() or {}).values():
            for task in active:
                if task["id"] == task_id:
                    return int(task["worker_pid"])
    raise TimeoutError(f"task {task_id} is not running: {worker.log.read_text()[-3000:]}")


def test_a_task_that_kills_its_worker_twice_is_parked_and_says_so(
    worker: tuple[Worker, services.RedisServer],
    silent_git: SilentGitServer,
    github_api: GitHubStandIn,
) -> None:
    celery_worker, private = worker
    task_id = f"poison-{uuid.uuid4()}"
    queue = task_queue.CeleryTaskQueue(celery_worker.app)
    queue.send(tasks.HandlePush("main", BEFORE, AFTER, False, time.time()).call(task_id=task_id))

    for death in (1, 2):
        wait_for(
            lambda runs=death: len(silent_git.connections) >= runs,
            f"delivery {death}",
            celery_worker,
        )
        child = running_child(celery_worker, task_id)
        os.kill(child, signal.SIGKILL)  # the OOM killer's way: no cleanup, no result

    store = poison_store.PoisonStore(
        redis.Redis.from_url(private.url), ttl_seconds=60, keep_seconds=60
    )
    wait_for(lambda: store.get(task_id) is not None, "the task parked", celery_worker)
    parked = store.get(task_id)
    assert parked is not None
    assert (parked.name, parked.deliveries, parked.deaths) == (tasks.HandlePush.NAME, 3, 2)
    assert dict(parked.kwargs)["after"] == AFTER
    assert [p.task_id for p in store.parked()] == [task_id]

    wait_for(lambda: github_api.contexts(AFTER), "the parked status", celery_worker)
    status = github_api.latest(AFTER)["layering/lint"]
    assert (status["state"], status["description"]) == (
        "error",
        f"parked after the worker died 2 times processing this; see parked task {task_id}",
    )
    # a fresh pool child keeps serving: another task runs, and the parked one never again
    other = "c3" * 20
    reporter = status_queue.QueuedStatuses(redis.Redis.from_url(private.url), queue)
    reporter.report(other, commit_status.Status("layering/lint", "success", "no findings"))
    wait_for(lambda: github_api.contexts(other), "another task served", celery_worker)
    time.sleep(1.0)
    assert len(silent_git.connections) == 2, "delivered once, redelivered once, then parked"
    assert celery_worker.process.poll() is None
    assert "parked: its worker died 2 times" in celery_worker.log.read_text()
    assert not redis.Redis.from_url(private.url).keys(f"{poison_store.DELIVERIES_PREFIX}*")
