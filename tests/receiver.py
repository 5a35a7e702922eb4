"""The webhook receiver for tests and benchmarks: a uvicorn server on a free loopback port in a
background thread, and signed deliveries to send to it."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from pipeline.core import events
from tests import services


class ThreadedServer:
    def __init__(self, app: ASGIApp, port: int | None = None) -> None:
        self.port = port or services.free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@contextmanager
def serving(app: ASGIApp) -> Iterator[ThreadedServer]:
    server = ThreadedServer(app).start()
    try:
        yield server
    finally:
        server.stop()


def delivery(
    secret: bytes,
    event: str,
    payload: Mapping[str, Any] | bytes,
    *,
    delivery_id: str | None = None,
    hook_id: str = "1",
    signature: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a GitHub-style delivery, signed with `secret` unless `signature`."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": hook_id,
        "X-Hub-Signature-256": signature or events.signature(secret, body),
        "User-Agent": "GitHub-Hookshot/test",
    }
    return body, headers


def push_payload(
    *,
    full_name: str,
    clone_url: str,
    ref: str,
    before: str,
    after: str,
    message: str = "change",
    forced: bool = False,
) -> dict[str, Any]:
    return {
        "ref": ref,
        "before": before,
        "after": after,
        "created": before == events.ZERO_SHA,
        "deleted": after == events.ZERO_SHA,
        "forced": forced,
        "repository": {"full_name": full_name, "clone_url": clone_url},
        "pusher": {"name": "tester"},
        "head_commit": {"id": after, "message": message},
        "commits": [],
    }
