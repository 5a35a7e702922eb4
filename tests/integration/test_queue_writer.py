"""pipeline.adapters.queue.Enqueuer against a private redis-server: dedupe under concurrency
(deliveries of one event-loop turn share a pipeline), a Redis that forgot the script, a Redis
that is down or hangs. Nothing queued and no dedupe key left behind by a failed enqueue."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pipeline.adapters import queue
from pipeline.core import tasks
from pipeline.core.errors import TemporaryError
from tests import services
from tests.conftest import require_tools

pytestmark = pytest.mark.integration


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[services.RedisServer]:
    require_tools("redis-server")
    server = services.RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def message(number: int) -> queue.TaskMessage:
    call = tasks.HandlePush("main", "a" * 40, f"{number:040x}", False, 1.0).call()
    return queue.TaskMessage(
        task=call.name,
        queue=call.queue,
        args=call.args,
        task_id=f"task-{number}",
        kwargs=call.kwargs,
    )


def queued_ids(client: redis.Redis, name: str = "events") -> list[str]:
    return sorted(json.loads(raw)["headers"]["id"] for raw in client.lrange(name, 0, -1))


def test_concurrent_deliveries_are_each_queued_once(private_redis: services.RedisServer) -> None:
    async def run() -> list[bool]:
        enqueuer = queue.Enqueuer(private_redis.url)
        try:
            # every delivery twice, interleaved, plus ten without a dedupe key
            calls = [enqueuer.enqueue_once(f"d-{n % 100}", 60, message(n)) for n in range(200)]
            calls += [enqueuer.enqueue_once(None, 60, message(1000 + n)) for n in range(10)]
            return await asyncio.gather(*calls)
        finally:
            await enqueuer.close()

    fresh = asyncio.run(run())
    # of the two deliveries of each key exactly one was fresh, and only its message is queued
    winners = [n if fresh[n] else n + 100 for n in range(100)]
    assert [fresh[n] != fresh[n + 100] for n in range(100)] == [True] * 100
    assert fresh[200:] == [True] * 10
    client = redis.Redis.from_url(private_redis.url)
    assert queued_ids(client) == sorted(
        [f"task-{n}" for n in winners] + [f"task-{1000 + n}" for n in range(10)]
    )
    assert client.ttl("layering:delivery:d-0") > 0
    [raw] = [r for r in client.lrange("events", 0, -1) if b'"task-1003"' in r]
    args, kwargs, _ = json.loads(base64.b64decode(json.loads(raw)["body"]))
    assert (args, kwargs) == ([], dict(message(1003).kwargs))


@pytest.mark.parametrize("at_once", [1, 20], ids=["alone", "pipelined"])
def test_a_redis_that_forgot_the_script(private_redis: services.RedisServer, at_once: int) -> None:
    client = redis.Redis.from_url(private_redis.url)

    async def run() -> list[bool]:
        enqueuer = queue.Enqueuer(private_redis.url)
        try:
            # a connection per concurrent call, so that the calls after the flush find them
            warm = [enqueuer.enqueue_once(f"w-{n}", 60, message(100 + n)) for n in range(at_once)]
            assert await asyncio.gather(*warm) == [True] * at_once
            client.script_flush()  # as a restarted Redis has
            return await asyncio.gather(
                *(enqueuer.enqueue_once(f"k-{n}", 60, message(n)) for n in range(1, at_once + 1))
            )
        finally:
            await enqueuer.close()

    assert asyncio.run(run()) == [True] * at_once
    assert len(queued_ids(client)) == 2 * at_once


def test_redis_down_queues_nothing_and_leaves_no_key(private_redis: services.RedisServer) -> None:
    async def run() -> None:
        enqueuer = queue.Enqueuer(private_redis.url)
        try:
            assert await enqueuer.enqueue_once("before", 60, message(0))
            private_redis.stop()
            with pytest.raises(TemporaryError, match="redis unreachable"):
                await enqueuer.enqueue_once("while-down", 60, message(1))
            results = await asyncio.gather(
                *(enqueuer.enqueue_once(f"down-{n}", 60, message(n)) for n in range(2, 6)),
                return_exceptions=True,
            )
            assert all(isinstance(result, TemporaryError) for result in results), results
            with pytest.raises(TemporaryError):
                await enqueuer.ping()
            private_redis.start()  # empty: no persistence, like a lost instance
            await enqueuer.ping()
            # the redelivery is fresh: the failed attempt left no dedupe key
            assert await enqueuer.enqueue_once("while-down", 60, message(1))
            assert not await enqueuer.enqueue_once("while-down", 60, message(1))
        finally:
            await enqueuer.close()

    asyncio.run(run())
    assert queued_ids(redis.Redis.from_url(private_redis.url)) == ["task-1"]


def test_a_hung_redis_times_out_and_the_next_answer_is_not_out_of_step(
    private_redis: services.RedisServer,
) -> None:
    assert private_redis.process is not None
    pid = private_redis.process.pid

    async def run() -> None:
        enqueuer = queue.Enqueuer(private_redis.url, timeout=0.5)
        try:
            assert await enqueuer.enqueue_once("first", 60, message(0))
            os.kill(pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                with pytest.raises(TemporaryError):
                    await enqueuer.enqueue_once("hung", 60, message(1))
                assert time.monotonic() - started < 3
            finally:
                os.kill(pid, signal.SIGCONT)
            # Redis runs what it had read once it resumes ("hung" may be queued: GitHub's
            # redelivery then finds its key); later replies still go to the right callers
            assert not await enqueuer.enqueue_once("first", 60, message(0))
            assert await enqueuer.enqueue_once("after", 60, message(2))
        finally:
            await enqueuer.close()

    asyncio.run(run())
    assert "task-2" in queued_ids(redis.Redis.from_url(private_redis.url))


def test_a_redis_with_a_password(tmp_path: Path) -> None:
    require_tools("redis-server")
    server = services.RedisServer(tmp_path / "redis", password="queue-test-password").start()
    try:

        async def run(url: str) -> bool:
            enqueuer = queue.Enqueuer(url)
            try:
                await enqueuer.ping()
                return await enqueuer.enqueue_once("d", 60, message(0))
            finally:
                await enqueuer.close()

        assert asyncio.run(run(server.url))
        wrong = server.url.replace("queue-test-password", "wrong")
        with pytest.raises(TemporaryError) as raised:
            asyncio.run(run(wrong))
        assert "password" not in str(raised.value)
        assert queued_ids(redis.Redis.from_url(server.url)) == ["task-0"]
    finally:
        server.stop()
