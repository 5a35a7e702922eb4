"""`layering build IMAGE --cluster C [--repo PATH] [--commit SHA] [--push] [--format text|json]`:
the build the worker runs (`build_flow.run_build`), on this machine, with a live progress display;
prints the digest. Without --push it builds only (no registry check, nothing pushed) and prints
the local image id. A Git checkout gives the image its revision and source labels, as the worker
does (adapters/git_provenance.py); what keeps a label off is said once. Does I/O (buildah,
skopeo, Git)."""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.status import Status

from pipeline.adapters import credentials, git_provenance, local_builds, registry, source
from pipeline.adapters.environment import load_settings
from pipeline.cli import EXIT_FINDINGS, EXIT_OK
from pipeline.core import buildah_output, builds, image_changes, ports, retry
from pipeline.core.errors import TemporaryError
from pipeline.core.settings import Settings
from pipeline.flows import build as build_flow


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "build", help="build (and with --push, push) one image for one cluster on this machine"
    )
    parser.add_argument("image", metavar="IMAGE", help="a directory name under images/")
    parser.add_argument("--cluster", required=True, help="the cluster whose base digest to use")
    parser.add_argument("--repo", type=Path, default=Path("."), help="checkout (default: .)")
    parser.add_argument("--commit", help="build the image as of this commit of --repo")
    parser.add_argument("--push", action="store_true", help="push to the cluster's registry")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    origin = git_provenance.read(
        args.repo, image=args.image, cluster=args.cluster, commit=args.commit
    )
    request = builds.BuildRequest(
        source=args.repo,
        image=args.image,
        cluster=args.cluster,
        commit_sha=args.commit,
        push=args.push,
        revision=origin.revision,
        source_url=origin.source_url,
    )
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    for note in origin.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    if args.format == "json" or not console.is_terminal:
        record = _build(settings, request, on_line=lambda line: console.print(line, markup=False))
    else:
        with console.status("preparing", spinner="dots") as status:
            record = _build(settings, request, on_line=_progress(console, status))
    if args.format == "json":
        print(json.dumps(record.to_dict(), indent=2, sort_keys=True))
    else:
        _summary(record)
    return (
        EXIT_OK
        if record.state in (builds.BuildState.SUCCEEDED, builds.BuildState.SKIPPED)
        else EXIT_FINDINGS
    )


def _progress(console: Console, status: Status) -> ports.LineSink:
    def on_line(line: str) -> None:
        step = buildah_output.parse_step(line)
        if step is not None:
            status.update(f"[bold]{escape(str(step))}[/]")
            console.print(f"[bold cyan]{escape(line)}[/]")
        else:
            console.print(f"[dim]{escape(line)}[/]")

    return on_line


def _build(
    settings: Settings, request: builds.BuildRequest, *, on_line: ports.LineSink
) -> builds.BuildRecord:
    from pipeline.adapters import buildah, layer_content
    from pipeline.adapters import image_changes as image_changes_adapter

    content = (
        layer_content.LayerReader(buildah.config_of(settings)) if settings.content_lint else None
    )
    records = local_builds.MemoryRecords()
    secrets = credentials.secret_values(settings)
    build_id = "local-" + time.strftime("%Y%m%d%H%M%S", time.gmtime())
    attempt = 0
    while True:
        try:
            return build_flow.run_build(
                settings,
                request,
                build_id=build_id,
                records=records,
                sources=source.CheckoutLoader(),
                builder=buildah.Buildah.from_settings(settings),
                registry=registry.Registry.from_settings(settings),
                locks=local_builds.LocalLocks(),
                secrets=secrets,
                on_line=on_line,
                final_attempt=attempt >= settings.registry_retries,
                inspector=image_changes_adapter.ImageReader(buildah.config_of(settings)),
                content=content,
            )
        except TemporaryError as exc:
            delay = retry.backoff(
                attempt,
                settings.retry_policy("build"),
                retry_after=exc.retry_after,
                draw=random.random(),  # noqa: S311 - spreading retries, not cryptography
            )
            on_line(f"retrying in {delay:.1f}s")
            time.sleep(delay)
            attempt += 1


def _summary(record: builds.BuildRecord) -> None:
    out = Console(highlight=False, soft_wrap=True)
    if record.state is builds.BuildState.FAILED:
        Console(stderr=True, highlight=False, soft_wrap=True).print(
            f"[bold red]failed[/] {escape(record.error)}"
        )
        return
    if record.changes is not None:
        try:
            lines = image_changes.summary_lines(
                image_changes.ImageChanges.from_json(record.changes)
            )
        except image_changes.InvalidChanges as exc:
            lines = [f"changes: unreadable: {exc}"]
        for line in lines:
            out.print(line, markup=False)
    if record.reference:
        out.print(f"{escape(record.state.value)}: {escape(record.reference)}")
    out.print(record.digest, markup=False)
