"""Webhook receiver throughput and latency next to a bare uvicorn endpoint, same run, same
client. Prints figures and ratios; asserts nothing about time.

Both servers run as `uvicorn` subprocesses (one process each, same options) on loopback ports;
the receiver queues every delivery into a private Redis (`redis-server` must be on PATH).
The client is a minimal keep-alive HTTP/1.1 client on asyncio (one connection per concurrent
request stream) so that it costs as little as possible next to the servers. Every delivery is
signed and has its own delivery id, so none is deduplicated away.

    .venv/bin/python tests/bench/webhook_bench.py [--requests 3000] [--concurrency 1,8,64]

`--baseline-queue FILE` runs a third server in the same rounds: the receiver with FILE loaded
as `pipeline.adapters.queue` (e.g. an older queue writer, `git show REV:pipeline/adapters/
queue.py > /tmp/queue_old.py`), to compare two queue writers on the same machine and load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from pipeline.core import events  # noqa: E402
from tests import services  # noqa: E402

SECRET = b"bench-webhook-secret"
FULL_NAME = "acme/layers"

BARE_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while True:
        message = await receive()
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 202,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})
"""

# The receiver with another queue writer: the file is loaded as pipeline.adapters.queue before
# pipeline.web.server imports it.
BASELINE_APP = """
import importlib.util
import sys

import pipeline.adapters

spec = importlib.util.spec_from_file_location("pipeline.adapters.queue", {path!r})
module = importlib.util.module_from_spec(spec)
sys.modules["pipeline.adapters.queue"] = module
spec.loader.exec_module(module)
pipeline.adapters.queue = module

from pipeline.web.server import app_from_environment
"""


def requests_for(count: int, path: str) -> list[bytes]:
    """Raw HTTP/1.1 requests: signed push deliveries, each with its own delivery id."""
    raw: list[bytes] = []
    for number in range(count):
        after = f"{number:040x}"
        body = json.dumps(
            {
                "ref": "refs/heads/main",
                "before": "1" * 40,
                "after": after,
                "created": False,
                "deleted": False,
                "forced": False,
                "repository": {"full_name": FULL_NAME},
                "pusher": {"name": "bench"},
                "head_commit": {"id": after, "message": "bench"},
                "commits": [],
            }
        ).encode()
        headers = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-GitHub-Event: push\r\n"
            f"X-GitHub-Delivery: {uuid.uuid4()}\r\nX-GitHub-Hook-ID: 1\r\n"
            f"X-Hub-Signature-256: {events.signature(SECRET, body)}\r\n\r\n"
        )
        raw.append(headers.encode() + body)
    return raw


async def _connection(
    port: int, work: list[bytes], latencies: list[float], statuses: dict[int, int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while work:
            request = work.pop()
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def drive(port: int, requests: list[bytes], concurrency: int) -> dict[str, float]:
    work = list(reversed(requests))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    started = time.perf_counter()
    await asyncio.gather(
        *(_connection(port, work, latencies, statuses) for _ in range(concurrency))
    )
    elapsed = time.perf_counter() - started
    latencies.sort()
    ok = statuses.get(202, 0)
    if ok != len(requests):
        raise RuntimeError(f"expected {len(requests)} answers 202, got {statuses}")
    return {
        "rps": len(requests) / elapsed,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    }


def start_uvicorn(target: str, *, directory: Path, env: dict[str, str], factory: bool) -> int:
    port = services.free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        *(["--factory"] if factory else []),
        target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        "--no-server-header",
        "--no-date-header",
    ]
    process = services.start(
        argv, log=directory / f"uvicorn-{port}.log", env={**os.environ, **env}, cwd=directory
    )
    services.wait_for_port(port, process=process)
    PROCESSES.append(process)
    return port


PROCESSES: list[object] = []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4500, help="requests per level")
    parser.add_argument("--concurrency", default="1,8,64", help="comma-separated levels")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per level")
    parser.add_argument(
        "--baseline-queue", type=Path, help="also run the receiver with this queue module"
    )
    args = parser.parse_args()
    levels = [int(level) for level in args.concurrency.split(",")]
    missing = services.tool_missing("redis-server")
    if missing:
        print(f"missing tools: {', '.join(missing)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="webhook-bench-") as temp:
        directory = Path(temp)
        redis_server = services.RedisServer(directory / "redis").start()
        try:
            (directory / "bare_app.py").write_text(BARE_APP)
            env = {
                "PYTHONPATH": f"{REPO_ROOT}:{directory}",
                "LAYERING_WEBHOOK_SECRET": SECRET.decode(),
                "LAYERING_REDIS_URL": redis_server.url,
                "LAYERING_GITHUB_REPOSITORY": FULL_NAME,
                "LAYERING_WORKDIR": str(directory / "work"),
            }
            ports = {
                "receiver": start_uvicorn(
                    "pipeline.web.server:app_from_environment",
                    directory=directory,
                    env=env,
                    factory=True,
                )
            }
            if args.baseline_queue:
                path = str(args.baseline_queue.resolve())
                (directory / "baseline_app.py").write_text(BASELINE_APP.format(path=path))
                ports["baseline"] = start_uvicorn(
                    "baseline_app:app_from_environment",
                    directory=directory,
                    env=env,
                    factory=True,
                )
            ports["bare"] = start_uvicorn(
                "bare_app:app", directory=directory, env=env, factory=False
            )
            print(
                f"{args.requests} signed push deliveries per level and server in {args.rounds} "
                "alternating rounds (medians), 127.0.0.1, one uvicorn process each"
            )
            if args.baseline_queue:
                print(f"baseline: the receiver with {args.baseline_queue} as its queue writer")
            print(
                f"{'conc':>5} {'server':>8} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7}   "
                f"{'bare req/s':>10} {'p50 ms':>7} {'p99 ms':>7}   "
                f"{'thr ratio':>9} {'p99 ratio':>9}"
            )
            for level in levels:
                # warm every server (connections, imports, the Redis script cache)
                for port in ports.values():
                    asyncio.run(drive(port, requests_for(200, "/webhook/github"), level))
                # alternate rounds so that all see the same background load; report medians
                rounds: dict[str, list[dict[str, float]]] = {name: [] for name in ports}
                for _ in range(args.rounds):
                    for name, port in ports.items():
                        batch = requests_for(args.requests // args.rounds, "/webhook/github")
                        rounds[name].append(asyncio.run(drive(port, batch, level)))
                figures = {
                    name: {
                        k: statistics.median(r[k] for r in rounds[name])
                        for k in ("rps", "p50", "p99")
                    }
                    for name in ports
                }
                bare = figures["bare"]
                for name in ports:
                    if name == "bare":
                        continue
                    ours = figures[name]
                    print(
                        f"{level:>5} {name:>8} {ours['rps']:>7.0f} {ours['p50']:>7.2f} "
                        f"{ours['p99']:>7.2f}   "
                        f"{bare['rps']:>10.0f} {bare['p50']:>7.2f} {bare['p99']:>7.2f}   "
                        f"{ours['rps'] / bare['rps']:>9.2f} {ours['p99'] / bare['p99']:>9.2f}"
                    )
                if "baseline" in figures:
                    ours, baseline = figures["receiver"], figures["baseline"]
                    print(
                        f"{level:>5} receiver/baseline: throughput "
                        f"{ours['rps'] / baseline['rps']:.2f}, p99 "
                        f"{ours['p99'] / baseline['p99']:.2f}"
                    )
            queued = services_llen(redis_server.port)
            print(f"tasks queued in Redis by the receivers: {queued}")
        finally:
            for process in PROCESSES:
                services.stop_process(process)  # type: ignore[arg-type]
            redis_server.stop()
    return 0


def services_llen(port: int) -> int:
    import redis

    return int(redis.Redis(port=port).llen("events"))


if __name__ == "__main__":
    sys.exit(main())
