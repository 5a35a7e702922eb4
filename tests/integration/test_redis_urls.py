"""Every LAYERING_REDIS_URL form against real servers: a password-protected redis-server over
plain TCP, one serving TLS only (a test CA, rediss://), and a Sentinel (with its own password)
in front of a password-protected master (sentinel://). For each form, the project's sync and
asyncio clients (adapters/redis_client.py) and the receiver's queue writer round-trip, and a
real `celery worker` configured by workers.app.celery_config takes a task from the broker and
stores its result in the backend over that same URL. No password reaches any process's argv
or the worker's log.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery
from celery.result import AsyncResult
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipeline.adapters import queue, redis_client
from pipeline.core.settings import Settings
from tests import services
from tests.conftest import require_tools
from tests.integration.test_task_contract import start_worker, worker_env
from workers import app as workers_app

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
MASTER_PASSWORD = "master-" + secrets.token_hex(12)
SENTINEL_PASSWORD = "sentinel-" + secrets.token_hex(12)
FORMS = ["redis", "rediss", "sentinel"]

# A worker app with the service's Celery configuration, read from LAYERING_REDIS_URL in its
# environment (never from a file or its argv), and one echo task.
PROBE_APP = """
from celery import Celery

from pipeline.adapters.environment import load_settings
from workers.app import celery_config

app = Celery("redis_probe", set_as_current=False)
app.conf.update(celery_config(load_settings()))


@app.task(name="redis_probe.echo")
def echo(value):
    return {"echo": value}
"""


class Servers:
    def __init__(self, root: Path) -> None:
        tls = services.TlsFiles.generate(root / "tls")
        self.plain = services.RedisServer(root / "plain", password=MASTER_PASSWORD)
        self.tls = services.RedisServer(root / "tls-redis", password=MASTER_PASSWORD, tls=tls)
        self.master = services.RedisServer(root / "master", password=MASTER_PASSWORD)
        self.sentinel = services.Sentinel(
            root / "sentinel", master=self.master, password=SENTINEL_PASSWORD
        )
        self.started: list[services.RedisServer | services.Sentinel] = []

    def start(self) -> Servers:
        for server in (self.plain, self.tls, self.master, self.sentinel):
            self.started.append(server.start())
        return self

    def stop(self) -> None:
        for server in reversed(self.started):
            server.stop()

    def url(self, form: str) -> str:
        return {"redis": self.plain.url, "rediss": self.tls.url, "sentinel": self.sentinel.url}[
            form
        ]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    require_tools("redis-server")
    started = Servers(tmp_path_factory.mktemp("redis-urls"))
    try:
        yield started.start()
    finally:
        started.stop()


def test_the_forms_are_what_they_say(servers: Servers) -> None:
    assert servers.url("redis").startswith("redis://")
    assert servers.url("rediss").startswith("rediss://")
    assert servers.url("sentinel").startswith("sentinel://")
    # the TLS server has no plain listener, and the Sentinel wants its own password
    plain = redis.Redis(
        host="127.0.0.1",
        port=servers.tls.port,
        password=MASTER_PASSWORD,
        socket_timeout=1,
        retry=Retry(NoBackoff(), 0),
    )
    with pytest.raises((redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        plain.ping()
    sentinel = redis.Redis(host="127.0.0.1", port=servers.sentinel.port)
    with pytest.raises(redis.exceptions.AuthenticationError):
        sentinel.execute_command("SENTINEL", "MASTERS")


@pytest.mark.parametrize("form", FORMS)
def test_sync_and_async_clients_round_trip(servers: Servers, form: str) -> None:
    url = servers.url(form)
    client = redis_client.sync_client(url, socket_timeout=5, socket_connect_timeout=2)
    key = f"layering:test:{form}"
    client.set(key, b"sync", ex=60)
    assert client.get(key) == b"sync"

    async def round_trip() -> bytes | None:
        aclient = redis_client.async_client(url, socket_timeout=5, socket_connect_timeout=2)
        try:
            await aclient.set(key, b"async", ex=60)
            return await aclient.get(key)
        finally:
            await aclient.aclose()  # type: ignore[attr-defined]

    assert asyncio.run(round_trip()) == b"async"
    # both reached the server behind the URL: the master, for Sentinel
    server = servers.master if form == "sentinel" else servers.plain
    if form != "rediss":
        direct = redis.Redis(host="127.0.0.1", port=server.port, password=MASTER_PASSWORD)
        assert direct.get(key) == b"async"
    client.close()


@pytest.mark.parametrize("form", FORMS)
def test_receiver_queue_writer_enqueues_once(servers: Servers, form: str) -> None:
    url = servers.url(form)
    message = queue.TaskMessage(
        task="layering.noop", queue=f"test-{form}", args=(), task_id=queue.new_task_id()
    )

    async def enqueue_twice() -> tuple[bool, bool]:
        enqueuer = queue.Enqueuer(url)
        try:
            await enqueuer.ping()
            first = await enqueuer.enqueue_once(f"delivery:{form}", 60, message)
            return first, await enqueuer.enqueue_once(f"delivery:{form}", 60, message)
        finally:
            await enqueuer.close()

    assert asyncio.run(enqueue_twice()) == (True, False)
    assert redis_client.sync_client(url).llen(f"test-{form}") == 1


@pytest.mark.parametrize("form", FORMS)
def test_celery_worker_takes_tasks_and_stores_results(
    servers: Servers, form: str, tmp_path: Path
) -> None:
    url = servers.url(form)
    client = Celery("redis-urls-client", set_as_current=False)
    client.conf.update(workers_app.celery_config(Settings(redis_url=url)))
    (tmp_path / "redis_probe.py").write_text(PROBE_APP)
    env = worker_env(url, tmp_path, f"{REPO_ROOT}:{tmp_path}")
    process = start_worker("redis_probe", directory=tmp_path, env=env, ping=client, node=form)
    try:
        result = client.send_task("redis_probe.echo", args=[form])
        assert result.get(timeout=30) == {"echo": form}
        # the result is in the backend: a fresh handle reads it there
        assert AsyncResult(result.id, app=client).state == "SUCCESS"
        assert_no_password_in_argv(process.pid)
    finally:
        services.stop_process(process)
        client.close()
    log = (tmp_path / f"{form}.log").read_text()
    assert "redis_probe.echo" in log  # the worker did log
    assert MASTER_PASSWORD not in log
    assert SENTINEL_PASSWORD not in log


def test_no_server_has_a_password_in_its_argv(servers: Servers) -> None:
    for server in servers.started:
        assert server.process is not None
        assert_no_password_in_argv(server.process.pid)


def assert_no_password_in_argv(pid: int) -> None:
    argv = Path(f"/proc/{pid}/cmdline").read_bytes()
    assert argv  # the process is alive and its argv readable
    assert MASTER_PASSWORD.encode() not in argv
    assert SENTINEL_PASSWORD.encode() not in argv


def test_a_sentinel_client_follows_a_failover(tmp_path: Path) -> None:
    """The store's client on a sentinel:// URL keeps working when its master dies and the
    Sentinel promotes the replica: its next command asks the Sentinel again and writes to the
    new master."""
    require_tools("redis-server")
    master = services.RedisServer(tmp_path / "master", password=MASTER_PASSWORD)
    replica = services.RedisServer(
        tmp_path / "replica", password=MASTER_PASSWORD, replica_of=master
    )
    sentinel = services.Sentinel(tmp_path / "sentinel", master=master, password=SENTINEL_PASSWORD)
    started: list[services.RedisServer | services.Sentinel] = []
    try:
        for node in (master, replica):
            started.append(node.start())
        direct = redis.Redis(host="127.0.0.1", port=replica.port, password=MASTER_PASSWORD)
        wait_until(lambda: direct.info("replication")["master_link_status"] == "up")
        started.append(sentinel.start())
        client = redis_client.sync_client(sentinel.url, socket_timeout=5, socket_connect_timeout=2)
        client.set("before", b"1")
        ask = redis.Redis(host="127.0.0.1", port=sentinel.port, password=SENTINEL_PASSWORD)
        # the Sentinel finds the replica through the master, then hears from it
        wait_until(lambda: bool(ask.execute_command("SENTINEL", "REPLICAS", "mymaster")))
        wait_until(lambda: direct.get("before") == b"1")
        master.stop()
        wait_until(lambda: sentinel_master_port(ask) == replica.port)
        client.set("after", b"2")
        assert direct.get("after") == b"2"
        assert direct.info("replication")["role"] == "master"
    finally:
        for server in reversed(started):
            server.stop()


def sentinel_master_port(sentinel: redis.Redis[bytes]) -> int | None:
    """The port of the master the Sentinel hands out (None while it thinks it down)."""
    state = sentinel.sentinel_master("mymaster")  # type: ignore[no-untyped-call]
    healthy = state["is_master"] and not (state["is_sdown"] or state["is_odown"])
    return int(state["port"]) if healthy else None


def wait_until(check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.1)
