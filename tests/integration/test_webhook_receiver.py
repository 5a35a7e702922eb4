"""The receiver over HTTP on a loopback port against a private Redis: status codes, dedupe,
durable queueing, Redis faults, metrics. The worker side is in test_webhook_e2e.py."""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from pipeline.core.settings import Settings
from pipeline.web import build_source
from pipeline.web import server as web
from tests import receiver, services
from tests.conftest import require_tools

pytestmark = pytest.mark.integration

SECRET = b"receiver-test-secret"
REPO = "acme/layers"
CLONE = "https://github.com/acme/layers.git"
A = "a" * 40
B = "b" * 40


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[services.RedisServer]:
    require_tools("redis-server")
    server = services.RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def make_settings(redis_url: str, **extra: Any) -> Settings:
    return Settings(
        webhook_secret=SECRET.decode(),
        redis_url=redis_url,
        github_repository=REPO,
        **extra,
    )


@pytest.fixture
def served(private_redis: services.RedisServer) -> Iterator[tuple[str, redis.Redis]]:
    app = web.create_app(make_settings(private_redis.url, max_body_bytes=64 * 1024))
    with receiver.serving(app) as server:
        yield server.url, redis.Redis.from_url(private_redis.url)


def push(ref: str = "refs/heads/main") -> dict[str, Any]:
    return receiver.push_payload(full_name=REPO, clone_url=CLONE, ref=ref, before=A, after=B)


def queued(client: redis.Redis, queue: str = "events") -> list[dict[str, Any]]:
    messages = []
    for raw in client.lrange(queue, 0, -1):
        envelope = json.loads(raw)
        args, kwargs, _ = json.loads(base64.b64decode(envelope["body"]))
        messages.append({"task": envelope["headers"]["task"], "args": args, "kwargs": kwargs})
    return messages


def test_signed_push_is_queued_once(served: tuple[str, redis.Redis]) -> None:
    url, client = served
    body, headers = receiver.delivery(SECRET, "push", push(), delivery_id="d-1")
    first = httpx.post(f"{url}/webhook/github", content=body, headers=headers)
    assert first.status_code == 202, first.text
    assert first.json()["queued"] == "layering.handle_push"
    again = httpx.post(f"{url}/webhook/github", content=body, headers=headers)
    assert again.status_code == 202
    assert again.json() == {"duplicate": True}
    [message] = queued(client)
    assert message["task"] == "layering.handle_push"
    # the task contract (core/tasks.py) sends arguments by name
    assert message["args"] == []
    assert isinstance(message["kwargs"].pop("enqueued_at"), float)
    assert message["kwargs"] == {"branch": "main", "before": A, "after": B, "forced": False}
    assert client.ttl("layering:delivery:github:1:d-1") >= 3 * 24 * 3600
    # the same delivery id from another hook is another delivery
    body, headers = receiver.delivery(SECRET, "push", push(), delivery_id="d-1", hook_id="2")
    assert httpx.post(f"{url}/webhook/github", content=body, headers=headers).status_code == 202
    assert len(queued(client)) == 2


@pytest.mark.parametrize(
    "signature", ["", "sha256=" + "0" * 64, "sha1=abc", "sha256=deadbeef"], ids=str
)
def test_bad_signature_is_401_and_queues_nothing(
    served: tuple[str, redis.Redis], signature: str
) -> None:
    url, client = served
    body, headers = receiver.delivery(SECRET, "push", push(), signature=signature or "x")
    if not signature:
        del headers["X-Hub-Signature-256"]
    response = httpx.post(f"{url}/webhook/github", content=body, headers=headers)
    assert response.status_code == 401
    assert queued(client) == []
    assert client.keys("layering:delivery:*") == []


def test_status_codes(served: tuple[str, redis.Redis]) -> None:
    url, client = served

    def post(event: str, payload: Any, path: str = "/webhook/github") -> httpx.Response:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        body, headers = receiver.delivery(SECRET, event, raw)
        return httpx.post(f"{url}{path}", content=body, headers=headers)

    assert post("ping", {"zen": "hi", "hook_id": 1}).status_code == 200
    assert post("push", [1, 2]).status_code == 400
    assert post("push", b"{not json").status_code == 400
    ignored = post("star", {"action": "created"})
    assert ignored.status_code == 202
    assert "ignored" in ignored.json()
    other = post(
        "push",
        receiver.push_payload(
            full_name="evil/repo",
            clone_url="https://github.com/evil/repo.git",
            ref="refs/heads/main",
            before=A,
            after=B,
        ),
    )
    assert other.status_code == 202
    assert "ignored" in other.json()
    big = post("push", {"padding": "x" * (70 * 1024)})
    assert big.status_code == 413
    assert post("push", push("refs/heads/env/nonprod"), "/webhook/git").status_code == 202
    assert [m["task"] for m in queued(client, "promotions")] == ["layering.promote"]
    assert queued(client, "promotions")[0]["kwargs"] == {"commit_sha": B, "environment": "nonprod"}
    assert queued(client) == []


def test_chunked_body_over_limit_is_413(served: tuple[str, redis.Redis]) -> None:
    url, _ = served

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"x" * 1024

    _, headers = receiver.delivery(SECRET, "push", b"{}")
    response = httpx.post(f"{url}/webhook/github", content=chunks(), headers=headers)
    assert response.status_code == 413


def test_redis_down_is_503_and_redelivery_succeeds(private_redis: services.RedisServer) -> None:
    app = web.create_app(make_settings(private_redis.url))
    with receiver.serving(app) as server:
        body, headers = receiver.delivery(SECRET, "push", push(), delivery_id="d-down")
        assert httpx.get(f"{server.url}/readyz").status_code == 200
        private_redis.stop()
        down = httpx.post(f"{server.url}/webhook/github", content=body, headers=headers)
        assert down.status_code == 503
        assert httpx.get(f"{server.url}/readyz").status_code == 503
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        private_redis.start()
        again = httpx.post(f"{server.url}/webhook/github", content=body, headers=headers)
        assert again.status_code == 202, again.text
        assert len(queued(redis.Redis.from_url(private_redis.url))) == 1
        metrics = httpx.get(f"{server.url}/metrics").text
        assert (
            'layering_webhook_deliveries_total{event="push",outcome="unavailable"} 1.0' in metrics
        )
        assert 'layering_webhook_deliveries_total{event="push",outcome="queued"} 1.0' in metrics


def test_layering_serve(private_redis: services.RedisServer, tmp_path: Path) -> None:
    port = services.free_port()
    env = {
        **os.environ,
        "LAYERING_WEBHOOK_SECRET": SECRET.decode(),
        "LAYERING_REDIS_URL": private_redis.url,
        "LAYERING_GITHUB_REPOSITORY": REPO,
        "LAYERING_WORKDIR": str(tmp_path / "work"),
    }
    layering = str(Path(sys.executable).with_name("layering"))
    process = services.start(
        [layering, "serve", "--port", str(port)], log=tmp_path / "serve.log", env=env
    )
    try:
        services.wait_for_port(port, process=process)
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{url}/readyz").status_code == 200
        body, headers = receiver.delivery(SECRET, "ping", {"zen": "hi"})
        assert httpx.post(f"{url}/webhook/github", content=body, headers=headers).status_code == 200
        assert httpx.get(f"{url}/api/builds").json() == {"builds": []}
        assert httpx.get(f"{url}/api/builds/nope").status_code == 404
        assert "layering_webhook_deliveries_total" in httpx.get(f"{url}/metrics").text
    finally:
        services.stop_process(process)


def _nested(depth: int) -> bytes:
    return b'{"ref":' + b"[" * depth + b"]" * depth + b"}"


def _push_with(**changes: Any) -> bytes:
    document = push()
    for dotted, value in changes.items():
        target = document
        *parents, last = dotted.split("__")
        for step in parents:
            target = target[step]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value
    return json.dumps(document).encode()


_DELETE = object()

# (name, event header, body, expected status, text the one-line error must contain)
HOSTILE: list[tuple[str, str, bytes, int, str]] = [
    ("ref-number", "push", _push_with(ref=7), 400, "field ref must be a string"),
    ("after-not-sha", "push", _push_with(after="HEAD~1"), 400, "after must be a 40-hex"),
    ("before-bool", "push", _push_with(before=True), 400, "before must be a string"),
    ("no-full-name", "push", _push_with(repository__full_name=_DELETE), 400, "full_name"),
    ("repository-string", "push", _push_with(repository="acme/layers"), 400, "repository"),
    ("deeply-nested", "push", _nested(30_000), 400, "nested too deeply"),
    ("huge-array", "push", b'{"commits": [' + b"0," * 20_000 + b"0]}", 400, "field"),
    ("not-utf8", "push", b'{"ref": "refs/heads/\xff"}', 400, "not UTF-8"),
    ("duplicate-keys", "push", b'{"ref": "refs/heads/main", "ref": "x"}', 400, "duplicate key"),
    ("nan", "push", b'{"ref": NaN}', 400, "NaN"),
    ("top-level-array", "push", b"[1, 2]", 400, "JSON object"),
    ("empty-body", "push", b"", 400, "not JSON"),
    ("pr-head-string", "pull_request", b'{"action": "opened", "pull_request": {"head": "x"}}',
     400, "pull_request"),
    ("pr-number-huge", "pull_request",
     b'{"action": "opened", "repository": {"full_name": "acme/layers"}, "pull_request": '
     b'{"number": 1e400, "head": {}, "base": {}}}', 400, "number"),
    ("comment-not-object", "issue_comment", b'{"action": "created", "issue": 1}', 400, "issue"),
    ("unknown-event-long-name", "x" * 4000, b"{}", 202, "is not handled"),
    ("ref-long", "push", _push_with(ref="refs/heads/" + "x" * 20_000), 202, "neither"),
    ("ref-newline", "push", _push_with(ref="refs/heads/a\nb"), 202, "neither"),
]  # fmt: skip


def test_hostile_deliveries_get_a_4xx_and_one_line(served: tuple[str, redis.Redis]) -> None:
    url, client = served
    problems = []
    for name, event, body, status, text in HOSTILE:
        _, headers = receiver.delivery(SECRET, event, body)
        response = httpx.post(f"{url}/webhook/github", content=body, headers=headers)
        answer = response.json()
        message = str(answer.get("error", answer.get("ignored", "")))
        if response.status_code != status or text not in message or "\n" in message:
            problems.append(f"{name}: {response.status_code} {response.text[:300]}")
        elif len(response.content) > 400:
            problems.append(f"{name}: answer of {len(response.content)} bytes")
    assert problems == []
    assert queued(client) == []
    # and the receiver still takes a good delivery afterwards
    body, headers = receiver.delivery(SECRET, "push", push())
    assert httpx.post(f"{url}/webhook/github", content=body, headers=headers).status_code == 202


HOSTILE_HEADERS: list[tuple[str, dict[str, Any], int]] = [
    ("event-not-latin1", {"X-GitHub-Event": b"\xff\xfe"}, 202),
    ("event-empty", {"X-GitHub-Event": ""}, 400),
    ("delivery-glob", {"X-GitHub-Delivery": "*"}, 400),
    ("delivery-long", {"X-GitHub-Delivery": "d" * 5000}, 400),
    ("delivery-missing", {"X-GitHub-Delivery": None}, 400),
    ("hook-id-superscript", {"X-GitHub-Hook-ID": "\u00b2".encode("latin-1")}, 400),
    ("hook-id-injection", {"X-GitHub-Hook-ID": "1 *"}, 400),
    ("signature-sha1", {"X-Hub-Signature-256": "sha1=00"}, 401),
    ("signature-not-latin1", {"X-Hub-Signature-256": b"sha256=\xff"}, 401),
    ("signature-long", {"X-Hub-Signature-256": "sha256=" + "0" * 20_000}, 401),
]


def test_hostile_headers_get_a_4xx(served: tuple[str, redis.Redis]) -> None:
    url, client = served
    problems = []
    for name, changes, status in HOSTILE_HEADERS:
        body, headers = receiver.delivery(SECRET, "push", push())
        for header, value in changes.items():
            if value is None:
                del headers[header]
            else:
                headers[header] = value
        response = httpx.post(f"{url}/webhook/github", content=body, headers=headers)
        if response.status_code != status:
            problems.append(f"{name}: {response.status_code} {response.text[:300]}")
    assert problems == []
    assert queued(client) == []


def test_build_api_path_parameters(private_redis: services.RedisServer) -> None:
    from pipeline.adapters import build_records
    from pipeline.core import builds

    settings = make_settings(private_redis.url)
    build_store = build_records.BuildStore.from_settings(settings)
    build_store.save(builds.queued("b-1", image="i", cluster="c", now=1.0))
    build_store.append_log("b-1", "line one")
    client = redis.Redis.from_url(private_redis.url)
    client.set("layering:build:*", "{not a record")
    app = web.create_app(settings, store=build_source.StoreView(build_store))
    cases = [
        ("b-1", 200),
        ("nope", 404),
        ("*", 400),
        ("b-*", 400),
        ("%2A", 400),
        # the path decodes to /api/builds/../../etc/passwd: no route (404), never a file
        ("..%2F..%2Fetc%2Fpasswd", 404),
        ("%2E%2E", 400),
        ("b-1%0A", 400),
        ("b-1%00", 400),
        ("%FF%FE", 400),
        ("x" * 129, 400),
        ("x" * 60_000, 400),
        ("b-1:log", 400),
        ("b-1%20", 400),
    ]
    problems = []
    with receiver.serving(app) as server:
        for build_id, status in cases:
            for suffix in ("", "/log"):
                response = httpx.get(f"{server.url}/api/builds/{build_id}{suffix}")
                expected = status
                if response.status_code != expected or len(response.content) > 400:
                    problems.append(f"{build_id[:40]}{suffix}: {response.status_code}")
                    continue
                elif expected >= 400 and "\n" in response.text:
                    problems.append(f"{build_id[:40]}{suffix}: multi-line error")
        assert httpx.get(f"{server.url}/api/builds/b-1/log").text == "line one\n"
        assert httpx.get(f"{server.url}/api/builds?limit=abc").status_code == 422
        assert httpx.get(f"{server.url}/api/builds?limit=99999999999999999999").status_code == 200
    assert problems == []


def test_log_tail_reads_only_the_new_lines_from_redis(private_redis: services.RedisServer) -> None:
    from pipeline.adapters import build_records
    from pipeline.core import builds
    from pipeline.web import dashboard

    settings = make_settings(private_redis.url)
    build_store = build_records.BuildStore.from_settings(settings)
    build_store.save(builds.queued("b-2", image="i", cluster="c", now=1.0))
    for line in ("one", "two", "three"):
        build_store.append_log("b-2", line)
    client = redis.Redis.from_url(private_redis.url)
    # the slow log with a threshold of 0 records every command the server runs, with arguments
    client.config_set("slowlog-log-slower-than", 0)
    client.config_set("slowlog-max-len", 10_000)
    app = web.create_app(settings, store=build_source.StoreView(build_store))
    with receiver.serving(app) as server:
        assert 'data-offset="3"' in httpx.get(f"{server.url}/builds/b-2").text
        client.slowlog_reset()
        tail = f"{server.url}/api/builds/b-2/log/tail"
        assert httpx.get(tail, params={"offset": 3}).json()["lines"] == []
        build_store.append_log("b-2", "four")
        build_store.append_log("b-2", "five")
        polled = httpx.get(tail, params={"offset": 3}).json()
        assert (polled["lines"], polled["next_offset"]) == (["four\n", "five\n"], 5)
        assert httpx.get(tail, params={"offset": 5}).json()["lines"] == []
    ranges = [
        entry["command"].decode()
        for entry in reversed(client.slowlog_get(10_000))
        if entry["command"].startswith(b"LRANGE")
    ]
    end = dashboard.LOG_TAIL_LIMIT - 1
    assert ranges == [
        f"LRANGE layering:build:b-2:log 3 {3 + end}",
        f"LRANGE layering:build:b-2:log 3 {3 + end}",
        f"LRANGE layering:build:b-2:log 5 {5 + end}",
    ]


def test_requests_reuse_the_connections_built_at_start(
    private_redis: services.RedisServer, tmp_path: Path
) -> None:
    settings = make_settings(private_redis.url, workdir=tmp_path / "work")
    client = redis.Redis.from_url(private_redis.url)
    paths = [
        "/",
        "/api/pipeline",
        "/builds",
        "/dashboard/fragments/builds",
        "/dashboard/fragments/promotions",
        "/api/builds",
        "/metrics",
        "/readyz",
    ]

    def connected() -> int:
        return int(client.info("clients")["connected_clients"])

    with receiver.serving(web.service_app(settings)) as server, httpx.Client() as http:
        for path in paths:
            assert http.get(f"{server.url}{path}").status_code == 200, path
        after_first = connected()
        assert after_first == 4  # this test, the build store, the shared client, the enqueuer
        for _ in range(10):
            for path in paths:
                assert http.get(f"{server.url}{path}").status_code == 200, path
        assert connected() == after_first
    # the app's lifespan closed every connection it opened: only this test's is left
    assert connected() == 1
