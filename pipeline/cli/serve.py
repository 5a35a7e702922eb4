"""`layering serve`: run the web service (webhook receiver, API and dashboard; pipeline/web) on
uvicorn. With LAYERING_READ_LISTEN set it listens twice in one process: --host/--port for the
webhook and the health checks, LAYERING_READ_LISTEN for the dashboard, /api and /metrics
(pipeline/web/listeners.py)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket

from pipeline.adapters.environment import load_settings
from pipeline.core.errors import InputError
from pipeline.core.settings import Settings

log = logging.getLogger("uvicorn.error")
BACKLOG = 2048  # uvicorn's own default


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the webhook receiver, health checks, metrics, builds API and dashboard",
        description="Serve POST /webhook/github, POST /webhook/git, /healthz, /readyz, "
        "/metrics, /api/builds and the dashboard at / over HTTP (configuration from "
        "LAYERING_* variables). With LAYERING_READ_LISTEN=host:port the dashboard, /api and "
        "/metrics move to that listener and --host/--port serve only the webhook and the "
        "health checks; with LAYERING_READ_TOKEN they need that token.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on")
    parser.add_argument(
        "--access-log", action="store_true", help="log every request (off: it costs throughput)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from pipeline.web import listeners
    from pipeline.web import server as web

    settings = load_settings()
    read = settings.read_address
    options = {
        "access_log": args.access_log,
        "log_level": "info",
        "server_header": False,
        "date_header": False,
    }
    if read is None:
        config = uvicorn.Config(
            web.service_app(settings), host=args.host, port=args.port, **options
        )
        if settings.read_token is None and not _loopback(args.host):
            log.warning(
                "the dashboard, /api and /metrics are open to whoever reaches %s: set "
                "LAYERING_READ_LISTEN and/or LAYERING_READ_TOKEN (docs/private-dashboard.md)",
                _url(args.host, args.port),
            )
        uvicorn.Server(config).run()  # exits 3 when it cannot listen, as uvicorn.run does
        return 0
    read_host, read_port = read
    if read_port == args.port:
        raise InputError(
            f"LAYERING_READ_LISTEN={settings.read_listen} uses the webhook's port {args.port}: "
            "give the read listener a port of its own (e.g. 127.0.0.1:8081)"
        )
    sockets = [
        _bind(args.host, args.port, what="--host/--port"),
        _bind(read_host, read_port, what="LAYERING_READ_LISTEN"),
    ]
    front = web.service_app(settings)
    app = listeners.ByListener(front, front.app, read_ports={read_port})
    config = uvicorn.Config(app, **options)
    log.info("%s", _started(settings, args.host, args.port, read_host, read_port))
    uvicorn.Server(config).run(sockets=sockets)
    return 0


def _started(settings: Settings, host: str, port: int, read_host: str, read_port: int) -> str:
    guarded = "the read token required" if settings.read_token else "no read token"
    return (
        f"webhook listener on {_url(host, port)} (/webhook/*, /healthz, /readyz); read listener "
        f"on {_url(read_host, read_port)} (dashboard, /api, /metrics; {guarded})"
    )


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _bind(host: str, port: int, *, what: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=BACKLOG)
    except OSError as exc:
        raise InputError(f"cannot listen on {_url(host, port)} ({what}): {exc}") from None
