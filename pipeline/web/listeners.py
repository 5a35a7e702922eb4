"""Which listener serves what when LAYERING_READ_LISTEN is set (issue 10, finding 7): the
webhook listener (public: GitHub must reach it) serves only the webhook and the health checks;
the read listener (private: loopback behind an oauth-proxy, or an internal network) serves only
the dashboard, the builds API and /metrics. Both are sockets of one server in one process (one
set of adapters, one metrics registry, one lifespan), told apart by the local port a connection
arrived on. Without a read listener nothing here is used and the receiver's path is unchanged.
No I/O.
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.types import ASGIApp, Receive, Scope, Send

from pipeline.web import receiver

WEBHOOK_SIDE = frozenset({*receiver.WEBHOOK_PATHS, "/healthz", "/readyz"})
_NOT_FOUND = b'{"error":"not found"}'


class ByListener:
    """`webhook` answers what arrives on any port but `read_ports` (and runs the lifespan);
    `read` answers what arrives on `read_ports`; each refuses the other's paths with 404."""

    def __init__(self, webhook: ASGIApp, read: ASGIApp, *, read_ports: Collection[int]) -> None:
        self._webhook = webhook
        self._read = read
        self._read_ports = frozenset(read_ports)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self._webhook(scope, receive, send)  # lifespan: start and close the adapters
            return
        server = scope.get("server")
        on_read = server is not None and server[1] in self._read_ports
        webhook_path = scope.get("path", "") in WEBHOOK_SIDE
        if scope["type"] == "http" and on_read != webhook_path:
            await (self._read if on_read else self._webhook)(scope, receive, send)
            return
        await _not_found(scope, send)


async def _not_found(scope: Scope, send: Send) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(_NOT_FOUND)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _NOT_FOUND})
