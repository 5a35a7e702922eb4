"""`layering up`: everything on this machine (Redis, registry, receiver, worker, beat), with a
local sandbox repository unless LAYERING_REPO_URL names one. Ctrl-C stops it all; the data
stays in the workdir for the next `layering up`. The work is in pipeline/local/."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rich.console import Console, Group
from rich.markup import escape
from rich.rule import Rule
from rich.text import Text

from pipeline.adapters.environment import load_settings
from pipeline.local import services, workdir

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "up",
        help="run the whole pipeline on this machine (Ctrl-C stops it)",
        description="Start a private Redis, a docker-registry, the receiver, a worker and beat "
        "on 127.0.0.1. Without LAYERING_REPO_URL, also create a local GitOps repository "
        "(seeded from this project's images/ and clusters/) with the post-receive hook, "
        "and a stand-in base image, so that `git push` builds here.",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where data and logs live (default: LAYERING_WORKDIR, else .layering)",
    )
    parser.add_argument("--receiver-port", type=int, default=None, help="default 8080")
    parser.add_argument("--registry-port", type=int, default=None, help="default 5000")
    parser.add_argument("--redis-port", type=int, default=None, help="default 6380")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
    parser.add_argument(
        "--seed",
        type=Path,
        default=PROJECT_ROOT,
        help="tree whose images/ and clusters/ seed the sandbox (default: this project)",
    )
    parser.add_argument(
        "--unsigned",
        action="store_true",
        help="push unsigned (default: signed with a key made in the workdir's signing/)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    console = Console(highlight=False, soft_wrap=True)
    options = workdir.Options(
        workdir=args.workdir or settings.workdir,
        ports={
            "receiver": args.receiver_port,
            "registry": args.registry_port,
            "redis": args.redis_port,
        },
        repo_url=settings.repo_url,
        webhook_secret=(
            settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
        ),
        seed=args.seed,
        concurrency=args.concurrency,
        signing=not args.unsigned,
        buildah_storage=settings.buildah_root is None,
        # only when set in the environment: otherwise `up` probes for oci (services.py)
        isolation=(
            settings.buildah_isolation if "buildah_isolation" in settings.model_fields_set else None
        ),
        # likewise: otherwise `up` probes the storage root for overlay (services.py)
        storage_driver=(
            settings.buildah_storage_driver
            if "buildah_storage_driver" in settings.model_fields_set
            else None
        ),
    )
    mode = settings.repo_url or "a local sandbox repository"

    def say(text: str) -> None:
        console.print(f"[green]•[/] {escape(text)}")

    def ready(started: workdir.Started) -> None:
        # one print, so a reader that waits for the rule finds the summary under it too
        console.print(
            Group(Rule("layering up: ready"), next_steps(started, settings.default_branch))
        )

    console.print(f"[bold]layering up[/]: serving {escape(mode)} from {options.workdir}")
    # children inherit this environment, plus what services.service_environment sets
    return services.run(options, base_env=dict(os.environ), say=say, ready=ready)


def next_steps(started: workdir.Started, default_branch: str) -> Text:
    """What to do now, as plain text (no markup: paths and URLs are printed as they are)."""
    github_url = started.webhook_url.removesuffix("/git") + "/github"
    text = Text()
    for label, value in (
        ("Dashboard", started.dashboard_url),
        ("Webhook", f"{started.webhook_url} (GitHub: {github_url})"),
        ("Registry", f"http://{started.registry_host}"),
        ("Redis", f"{started.redis_url} (password in {started.redis_password_file})"),
        ("Isolation", f"builds run with {started.build_isolation} isolation"),
        ("Storage", f"buildah storage driver {started.storage_driver}"),
        ("Signing", started.signing),
        ("Logs", str(started.workdir / "logs")),
        *((("Clone URL", started.clone_url),) if started.clone_url else ()),
    ):
        text.append(f"{label:<11} ", style="bold")
        text.append(f"{value}\n")
    text.append("\nNext steps\n", style="bold")
    if started.clone_url is not None:
        steps = [
            f"git clone {started.clone_url} gitops && cd gitops",
            "$EDITOR images/htop/Containerfile   # e.g. RUN echo hello > /etc/motd",
            f"git commit -am 'htop: motd' && git push origin {default_branch}",
            "# watch the build on the dashboard, then promote it to nonprod:",
            f"git checkout env/nonprod && git merge --no-edit {default_branch} && git push",
            "git pull   # the MachineConfig is in clusters/nonprod/machineconfigs/",
        ]
    else:
        steps = [
            f"point the repository's webhook at {github_url}",
            f"with the secret in LAYERING_WEBHOOK_SECRET (or {started.secret_file})",
        ]
    for step in steps:
        text.append(f"  {step}\n")
    text.append("\nCtrl-C stops everything; the data stays in the workdir.")
    return text
