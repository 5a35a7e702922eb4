"""The task contract (pipeline/core/tasks.py) end to end: the message the receiver writes by
hand (pipeline/adapters/queue.py) is the message Celery itself writes for the same call, and
real `celery worker` processes run it: a probe worker echoing what it was called with, and the
pipeline's own worker (workers.app). Real Redis, real Celery, no mocks.

Every contract task is also registered by the workers under its contract name, with a
signature that takes the call's arguments.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import inspect
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.result import AsyncResult

from pipeline.adapters import queue
from pipeline.core import tasks
from pipeline.core.settings import Settings
from tests import services
from tests.conftest import require_tools
from tests.plugins import builds as builds_plugin
from workers import app as workers_app

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
SHA = "c0ffee" + "0" * 34

# Calls the receiver queues (pipeline/core/events.py task_for): an event and two promotions.
RECEIVER_CALLS = {
    "handle_push": tasks.HandlePush("main", "a" * 40, "b" * 40, False, 1700000000.25).call(),
    "promote": tasks.Promote(SHA, "nonprod").call(),
    "gate": tasks.Gate(SHA, "nonprod", 7).call(),
}

# Fields that differ between the two writers by design; everything else must be equal.
# - headers.origin: the sending process, "<pid>@<host>" (Celery: "gen<pid>@<host>"); no worker
#   reads it, it is for people reading a message.
# - properties.reply_to: the sending Celery app's id, used only by the rpc:// result backend
#   (ours is Redis); the receiver has no Celery app.
# - properties.delivery_tag: a fresh uuid per message from kombu, the task id (also a fresh
#   uuid per message) from the receiver; kombu's Redis transport only needs it unique, to
#   track unacknowledged messages.
IGNORED = {("headers", "origin"), ("properties", "reply_to"), ("properties", "delivery_tag")}


@pytest.fixture(scope="module")
def contract_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.RedisServer]:
    require_tools("redis-server")
    server = services.RedisServer(tmp_path_factory.mktemp("contract-redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def celery_app(contract_redis: services.RedisServer) -> Celery:
    """A Celery app with the workers' configuration (broker and results in the private Redis)."""
    app = Celery("contract", set_as_current=False)
    app.conf.update(workers_app.celery_config(Settings(redis_url=contract_redis.url)))
    return app


def enqueue(redis_url: str, call: tasks.TaskCall, *, task_id: str, dedupe: str | None) -> bool:
    """What the receiver does with a call (pipeline/web): build the message, enqueue it once."""
    message = queue.TaskMessage(
        task=call.name, queue=call.queue, args=call.args, task_id=task_id, kwargs=call.kwargs
    )

    async def run() -> bool:
        enqueuer = queue.Enqueuer(redis_url)
        try:
            return await enqueuer.enqueue_once(dedupe, 3600, message)
        finally:
            await enqueuer.close()

    return asyncio.run(run())


def comparable(raw: bytes) -> dict[str, Any]:
    """The stored message with its body decoded and the IGNORED fields taken out."""
    envelope = json.loads(raw)
    envelope["body"] = json.loads(base64.b64decode(envelope["body"]))
    for part, name in IGNORED:
        assert isinstance(envelope[part].pop(name), str), name
    return envelope


@pytest.mark.parametrize("call", RECEIVER_CALLS.values(), ids=RECEIVER_CALLS.keys())
def test_receiver_message_is_the_one_celery_writes(
    contract_redis: services.RedisServer, celery_app: Celery, call: tasks.TaskCall
) -> None:
    client = redis.Redis.from_url(contract_redis.url)
    client.flushdb()
    task_id = queue.new_task_id()
    celery_app.send_task(
        call.name, args=call.args, kwargs=dict(call.kwargs), queue=call.queue, task_id=task_id
    )
    [celery_raw] = client.lrange(call.queue, 0, -1)
    client.delete(call.queue)
    assert enqueue(contract_redis.url, call, task_id=task_id, dedupe=None) is True
    [receiver_raw] = client.lrange(call.queue, 0, -1)

    ours, celerys = comparable(receiver_raw), comparable(celery_raw)
    assert ours == celerys
    # and the contract's arguments are what both carry
    assert ours["body"][:2] == [list(call.args), dict(call.kwargs)]
    assert ours["headers"]["task"] == call.name
    assert ours["properties"]["delivery_info"] == {"exchange": "", "routing_key": call.queue}


PROBE_APP = """
from celery import Celery

from pipeline.core import tasks
from pipeline.core.settings import Settings
from workers.app import celery_config

app = Celery("probe", set_as_current=False)
app.conf.update(celery_config(Settings(redis_url={redis_url!r})))


def _probe(name):
    @app.task(name=name, bind=True)
    def probe(self, *args, **kwargs):
        return {{"task": self.name, "args": list(args), "kwargs": kwargs}}


for task in tasks.ALL:
    _probe(task.NAME)
"""


def start_worker(
    app_name: str, *, directory: Path, env: dict[str, str], ping: Celery, node: str
) -> Any:
    """`celery -A app_name worker` (solo pool, every contract queue), once it answers a ping."""
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app_name,
        "worker",
        "--pool=solo",
        "--without-heartbeat",
        "--without-gossip",
        "--without-mingle",
        "--loglevel=INFO",
        "-n",
        f"{node}@%h",
        "-Q",
        ",".join(tasks.QUEUES),
    ]
    log = directory / f"{node}.log"
    process = services.start(argv, log=log, env=env, cwd=directory)
    for _ in range(60):
        if process.poll() is not None:
            raise RuntimeError(f"worker {node} exited: {log.read_text()[-3000:]}")
        replies = ping.control.ping(timeout=0.5)
        if any(f"{node}@" in host for reply in replies for host in reply):
            return process
    services.stop_process(process)
    raise TimeoutError(f"worker {node} did not answer a ping: {log.read_text()[-3000:]}")


def worker_env(redis_url: str, directory: Path, pythonpath: str) -> dict[str, str]:
    # nothing of this process's LAYERING_* settings (a GitHub token, say) reaches the worker
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAYERING_")}
    return {
        **env,
        "PYTHONPATH": pythonpath,
        "LAYERING_REDIS_URL": redis_url,
        "LAYERING_WORKDIR": str(directory / "work"),
        # what any worker of workers.app needs to start (workers/startup.py)
        "LAYERING_VERIFICATION_KEY": builds_plugin.VERIFICATION_KEY,
        "LAYERING_BUILDAH_ISOLATION": "chroot",
    }


def test_probe_worker_runs_what_the_receiver_wrote(
    contract_redis: services.RedisServer, celery_app: Celery, tmp_path: Path
) -> None:
    redis.Redis.from_url(contract_redis.url).flushdb()
    (tmp_path / "probe_app.py").write_text(PROBE_APP.format(redis_url=contract_redis.url))
    env = worker_env(contract_redis.url, tmp_path, f"{REPO_ROOT}:{tmp_path}")
    process = start_worker("probe_app", directory=tmp_path, env=env, ping=celery_app, node="probe")
    try:
        for name, call in RECEIVER_CALLS.items():
            task_id = queue.new_task_id()
            assert enqueue(contract_redis.url, call, task_id=task_id, dedupe=f"probe:{name}")
            # the same delivery again is not queued a second time
            again = queue.new_task_id()
            assert not enqueue(contract_redis.url, call, task_id=again, dedupe=f"probe:{name}")
            result = AsyncResult(task_id, app=celery_app).get(timeout=30)
            assert result == {
                "task": call.name,
                "args": list(call.args),
                "kwargs": dict(call.kwargs),
            }
            assert AsyncResult(again, app=celery_app).state == "PENDING"  # never ran
    finally:
        services.stop_process(process)


def test_pipeline_worker_runs_a_status_the_receiver_wrote(
    contract_redis: services.RedisServer, celery_app: Celery, tmp_path: Path
) -> None:
    """workers.app's own "layering.report_status" shim binds the contract's keyword arguments
    and runs its flow; without GitHub credentials the flow answers "no-github"."""
    redis.Redis.from_url(contract_redis.url).flushdb()
    env = worker_env(contract_redis.url, tmp_path, str(REPO_ROOT))
    process = start_worker("workers.app", directory=tmp_path, env=env, ping=celery_app, node="real")
    try:
        call = tasks.ReportStatus(SHA, "layering/lint", "success", "no findings", None, 1).call()
        task_id = queue.new_task_id()
        assert enqueue(contract_redis.url, call, task_id=task_id, dedupe=None)
        assert AsyncResult(task_id, app=celery_app).get(timeout=30) == "no-github"
    finally:
        services.stop_process(process)


def test_workers_register_every_contract_task_with_its_arguments() -> None:
    workers_app.app.loader.import_default_modules()
    registered = workers_app.app.tasks
    problems = []
    for task in tasks.ALL:
        if task.NAME not in registered:
            problems.append(f"{task.NAME}: not registered")
            continue
        names = [field.name for field in dataclasses.fields(task)]
        call = task(*names).call()  # type: ignore[arg-type]
        # a callback (link / link_error) gets the parent's outcome before its own arguments
        outcome = ("parent outcome",) if task.POSITIONAL else ()
        signature = inspect.signature(registered[task.NAME].run)
        try:
            signature.bind(*outcome, *call.args, **call.kwargs)
        except TypeError as exc:
            problems.append(f"{task.NAME}{signature}: {exc}")
    assert problems == []
