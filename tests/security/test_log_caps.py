"""Issue 10, finding 7 (logs): a build's log lines are capped in bytes, its whole log is capped
in bytes with one visible marker, both enforced atomically in real Redis at one command per line;
reads of a log are ranged and every answer is bounded. The last test runs a real build (Celery
worker, buildah, registry) whose RUN step prints a 10 MB line and thousands more."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from pipeline.adapters import build_records
from pipeline.core import builds
from pipeline.core.settings import Settings
from pipeline.web import build_source
from pipeline.web import server as web
from tests import receiver, services
from tests.conftest import require_tools
from tests.plugins.builds import (
    BaseImage,
    BuildahStorage,
    git_commit_all,
    launch_worker,
    make_worker_env,
    submit_build,
    write_repository,
)

pytestmark = pytest.mark.integration

LINE_CUT = "… [line cut at 8192 bytes]"
SECRET = "hunter2-hunter2-hunter2"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[services.RedisServer]:
    require_tools("redis-server")
    server = services.RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def store_for(redis_url: str, **settings: int) -> build_records.BuildStore:
    store = build_records.BuildStore.from_settings(
        Settings(redis_url=redis_url, **settings), secrets=[SECRET]
    )
    return store


def stored(client: redis.Redis[bytes], build_id: str) -> list[bytes]:
    return list(client.lrange(f"layering:build:{build_id}:log", 0, -1))


def test_a_10_mb_line_is_cut_at_the_line_cap(private_redis: services.RedisServer) -> None:
    store = store_for(private_redis.url)
    client = store.client
    store.append_log("b-long", "x" * 10_000_000)
    store.append_log("b-long", "é" * 10_000)  # 20,000 bytes of two-byte characters
    store.append_log("b-long", "short line")
    long, wide, short = stored(client, "b-long")
    assert long == b"x" * 8192 + LINE_CUT.encode()
    # cut on a character boundary: the stored bytes are still valid UTF-8
    assert wide.decode() == "é" * 4096 + LINE_CUT
    assert short == b"short line"
    assert int(client.memory_usage("layering:build:b-long:log") or 0) < 64 * 1024
    assert store.read_log("b-long", 0, 10)[0].endswith(LINE_CUT)


def test_a_secret_across_the_cut_is_masked_not_half_shown(
    private_redis: services.RedisServer,
) -> None:
    store = store_for(private_redis.url)
    # the secret starts 10 bytes before the cut: masking must come first
    store.append_log("b-secret", "x" * 8182 + SECRET + "y" * 5_000_000)
    store.append_log("b-secret", f"https://robot:{SECRET}@git.example.com/r " + "z" * 9000)
    lines = store.read_log("b-secret", 0, 10)
    for line in lines:
        assert "hunter2" not in line
        assert "hunter" not in line.split("***")[-1]
    assert lines[0].endswith(LINE_CUT)
    assert lines[1].startswith("https://***@git.example.com/r ")


def test_many_lines_stay_within_the_total_cap_with_one_marker(
    private_redis: services.RedisServer,
) -> None:
    cap = 256 * 1024
    store = store_for(private_redis.url, build_log_max_bytes=cap)
    client = store.client
    store.append_log("b-many", "x" * 10_000_000)
    for number in range(2000):
        store.append_log("b-many", f"line {number:05d} " + "." * 1000)
    lines = stored(client, "b-many")
    marker = b"[log truncated: over 256 KiB; the build continues]"
    assert lines[-1] == marker
    assert lines.count(marker) == 1
    assert lines[0].endswith(LINE_CUT.encode())
    assert sum(len(line) + 1 for line in lines[:-1]) <= cap
    assert sum(len(line) + 1 for line in lines) > cap - 2000  # it filled up before cutting
    # later lines add nothing, and the marker stays the last line
    for _ in range(100):
        store.append_log("b-many", "after the cap")
    assert stored(client, "b-many") == lines
    # everything about the log expires with the build
    retention = store.retention_seconds
    for key in client.keys("layering:build:b-many*"):
        assert 0 < client.ttl(key) <= retention, key
    # the API shows the marker
    app = web.create_app(
        Settings(redis_url=private_redis.url, webhook_secret="s" * 16),
        store=build_source.StoreView(store),
    )
    store.save(builds.queued("b-many", image="i", cluster="c", now=1.0))
    with receiver.serving(app) as server:
        tail = httpx.get(f"{server.url}/api/builds/b-many/log/tail", params={"offset": 0})
        shown = tail.json()["lines"]
        assert shown[-1] == marker.decode() + "\n"


def test_concurrent_appenders_share_one_budget(private_redis: services.RedisServer) -> None:
    cap = 128 * 1024
    stores = [store_for(private_redis.url, build_log_max_bytes=cap) for _ in range(4)]

    def append(store: build_records.BuildStore, name: int) -> None:
        for number in range(300):
            store.append_log("b-race", f"writer {name} line {number:04d} " + "-" * 1000)

    threads = [
        threading.Thread(target=append, args=(store, name)) for name, store in enumerate(stores)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = stored(stores[0].client, "b-race")
    marker = b"[log truncated: over 128 KiB; the build continues]"
    assert lines.count(marker) == 1
    assert lines[-1] == marker
    assert sum(len(line) + 1 for line in lines[:-1]) <= cap


def test_each_line_costs_one_command(private_redis: services.RedisServer) -> None:
    store = store_for(private_redis.url)
    store.append_log("b-cheap", "warm up: loads the script once")
    observer = redis.Redis.from_url(private_redis.url)
    observer.config_resetstat()
    for number in range(200):
        store.append_log("b-cheap", f"line {number}")
    calls = {
        name.removeprefix("cmdstat_"): int(entry["calls"])
        for name, entry in observer.info("commandstats").items()
    }
    # one EVALSHA per line (one round trip); Redis counts the script's own commands too
    assert calls.pop("evalsha") == 200, calls
    assert "eval" not in calls
    assert "script|load" not in calls
    assert sum(count for name, count in calls.items() if name != "config|resetstat") <= 6 * 200
    assert store.log_length("b-cheap") == 201


def test_log_api_answers_bounded_ranges(private_redis: services.RedisServer) -> None:
    store = store_for(private_redis.url)
    store.save(builds.queued("b-range", image="i", cluster="c", now=1.0))
    with store.client.pipeline(transaction=False) as pipe:  # seed fast: 3000 short lines
        pipe.rpush("layering:build:b-range:log", *(f"line {n}" for n in range(3000)))
        pipe.execute()
    store.save(builds.queued("b-wide", image="i", cluster="c", now=1.0))
    for number in range(300):
        store.append_log("b-wide", f"{number:03d} " + "w" * 8000)
    app = web.create_app(
        Settings(redis_url=private_redis.url, webhook_secret="s" * 16),
        store=build_source.StoreView(store),
    )
    default = build_source.LOG_DEFAULT_LINES
    with receiver.serving(app) as server:
        url = f"{server.url}/api/builds/b-range/log"
        first = httpx.get(url)
        assert first.status_code == 200
        assert first.text.splitlines() == [f"line {n}" for n in range(default)]
        assert first.headers["x-log-next-offset"] == str(default)
        assert first.headers["link"] == (
            f'</api/builds/b-range/log?offset={default}&limit={default}>; rel="next"'
        )
        last = httpx.get(url, params={"offset": 2990, "limit": 50})
        assert last.text.splitlines() == [f"line {n}" for n in range(2990, 3000)]
        assert last.headers["x-log-next-offset"] == "3000"
        assert "link" not in last.headers
        assert httpx.get(url, params={"offset": 3000}).text == ""
        most = httpx.get(url, params={"limit": 10**9})
        assert len(most.text.splitlines()) == min(3000, build_source.LOG_MAX_LINES)
        problems = []
        for params in ({"offset": -1}, {"offset": 10**20}, {"limit": 0}, {"limit": -5}):
            for path in ("log", "log/tail"):
                response = httpx.get(f"{server.url}/api/builds/b-range/{path}", params=params)
                if response.status_code != 400 or "\n" in response.text.strip():
                    problems.append(f"{path} {params}: {response.status_code} {response.text}")
                elif len(response.content) > 400:
                    problems.append(f"{path} {params}: {len(response.content)} bytes")
        assert problems == []
        # wide lines: an answer stops at the byte budget and says where to go on
        budget = build_source.LOG_RESPONSE_MAX_BYTES
        wide = httpx.get(f"{server.url}/api/builds/b-wide/log", params={"limit": 5000})
        assert len(wide.content) <= budget
        following = int(wide.headers["x-log-next-offset"])
        assert 0 < following < 300
        assert len(wide.text.splitlines()) == following
        tail = httpx.get(f"{server.url}/api/builds/b-wide/log/tail", params={"offset": 0})
        assert len(tail.content) <= budget + 1024
        assert tail.json()["next_offset"] < 300
        # and the page shows a bounded first part; its script asks for the rest
        page = httpx.get(f"{server.url}/builds/b-range")
        assert len(page.content) <= budget + 64 * 1024
        offset = int(page.text.split('data-offset="')[1].split('"')[0])
        assert 0 < offset < 3000


# -- a real build: a RUN step prints a 10 MB line, then thousands of lines -----------------

DOTS = "." * 120
LOUD = f"""\
FROM quay.io/fedora/fedora-coreos:stable
RUN yes x | head -c 20000000 | tr -d '\\n'; echo; \\
    i=0; while [ $i -lt 3000 ]; do echo "loud line $i {DOTS}"; i=$((i+1)); done
RUN ostree container commit
"""


def test_a_build_printing_a_10_mb_line_stays_within_the_caps(
    tmp_path: Path,
    private_redis: services.RedisServer,
    registry: services.Registry,
    buildah_storage: BuildahStorage,
    base_image: BaseImage,
) -> None:
    require_tools("buildah", "skopeo")
    cap = 256 * 1024
    env = make_worker_env(
        tmp_path / "worker",
        redis_url=private_redis.url,
        registry=registry,
        storage=buildah_storage,
    )
    root = write_repository(
        tmp_path / "gitops",
        base=base_image,
        registry=f"{registry.host}/layering",
        images={"loud": {"Containerfile": LOUD, "nonce": uuid.uuid4().hex}},
        clusters={"dev": {"pools": {"worker": "loud"}}},
    )
    commit = git_commit_all(root)
    worker = launch_worker(
        env,
        f"loud-{uuid.uuid4().hex[:6]}",
        pool="prefork",
        concurrency=1,
        extra_env={"LAYERING_BUILD_LOG_MAX_BYTES": str(cap)},
    )
    try:
        build_id = submit_build(
            worker.app,
            worker.settings,
            source=str(root),
            commit_sha=commit,
            image="loud",
            cluster="dev",
        )
        record = worker.wait_for_build(build_id, timeout=240)
        assert record["state"] == "succeeded", json.dumps(record)[:2000]
        assert worker.process.poll() is None  # the worker is alive
        client = redis.Redis.from_url(private_redis.url)
        lines = stored(client, build_id)
        marker = b"[log truncated: over 256 KiB; the build continues]"
        assert lines.count(marker) == 1
        assert lines[-1] == marker
        assert sum(len(line) + 1 for line in lines[:-1]) <= cap
        assert any(line == b"x" * 8192 + LINE_CUT.encode() for line in lines)
        assert any(line.startswith(b"loud line 0 ") for line in lines)
        # the record stays small too: no 10 MB error or field
        assert len(client.get(f"layering:build:{build_id}") or b"") < 16 * 1024
    finally:
        worker.stop()
