"""`layering serve`: run the web service (webhook receiver, API and dashboard; pipeline/web) on
uvicorn."""

from __future__ import annotations

import argparse

from pipeline.adapters.environment import load_settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the webhook receiver, health checks, metrics, builds API and dashboard",
        description="Serve POST /webhook/github, POST /webhook/git, /healthz, /readyz, "
        "/metrics, /api/builds and the dashboard at / over HTTP (configuration from "
        "LAYERING_* variables).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on")
    parser.add_argument(
        "--access-log", action="store_true", help="log every request (off: it costs throughput)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from pipeline.web import server as web

    settings = load_settings()
    uvicorn.run(
        web.service_app(settings),
        host=args.host,
        port=args.port,
        access_log=args.access_log,
        log_level="info",
        server_header=False,
        date_header=False,
    )
    return 0
