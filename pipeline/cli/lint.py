"""`layering lint`: check the watched repository against the layering rules (LAY001..LAY008).
Reads the repository directory; prints text, JSON or GitHub Actions annotations.

Exit codes: 0 clean (warnings allowed), 1 when any finding is an error, 2 on unusable input
(no such directory, unknown --image, a malformed LAYERING_ setting). Hostile repository content
(a YAML bomb, an oversized file) is a finding (LAY006) naming the file, never an internal error.
The size caps come from LAYERING_REPO_CONTAINERFILE_MAX_BYTES and LAYERING_REPO_YAML_MAX_BYTES."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from pipeline.adapters import environment, fs
from pipeline.cli import EXIT_FINDINGS, EXIT_OK
from pipeline.core import lint, repo_limits
from pipeline.core.errors import InputError

FORMATS = ("text", "json", "github")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "lint",
        help="check images and clusters against the layering rules",
        description="Lint every image of the repository (or one) against the layering rules "
        "LAY001..LAY008. Exit 0 when clean (warnings allowed), 1 on any error finding, "
        "2 on unusable input. Findings waived in image.yaml `allow:` are left out and counted "
        "in the text summary.",
    )
    parser.add_argument("--repo", type=Path, default=Path("."), help="repository checkout")
    parser.add_argument("--image", default=None, help="lint only this image (images/<name>/)")
    parser.add_argument("--format", choices=FORMATS, default="text", help="output format")
    parser.add_argument(
        "--built",
        metavar="REF",
        default=None,
        help="content-lint this pushed image of --image (LAY101..LAY113): pulled into the "
        "configured buildah storage, its layers read against its base",
    )
    parser.add_argument(
        "--base",
        metavar="REF",
        default=None,
        help="the base --built was built on (default: its org.opencontainers.image.base.name "
        "label)",
    )
    parser.set_defaults(handler=run)


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_annotation(finding: lint.Finding) -> str:
    """A GitHub Actions workflow command: `::error file=…,line=…,title=LAY001::message`."""
    properties = [f"file={_escape_property(finding.path)}"]
    if finding.line is not None:
        properties.append(f"line={finding.line}")
    properties.append(f"title={finding.id}")
    return f"::{finding.severity} {','.join(properties)}::{_escape_data(finding.message)}"


def summary(report: lint.Report) -> str:
    errors, warnings = len(report.errors), len(report.warnings)
    images = len(report.images)
    parts = [
        f"{errors} error{'s' if errors != 1 else ''}",
        f"{warnings} warning{'s' if warnings != 1 else ''}",
    ]
    text = f"{', '.join(parts)} in {images} image{'s' if images != 1 else ''}"
    if report.waived:
        text += f" ({len(report.waived)} waived in image.yaml)"
    return text


def _print_text(report: lint.Report) -> None:
    print_findings(report.findings, summary(report))


def print_findings(findings: Sequence[lint.Finding], summary_text: str) -> None:
    """Each finding as `path[:line]: ID severity: message`, then the summary line."""
    console = Console(highlight=False, soft_wrap=True)
    styles = {lint.ERROR: "bold red", lint.WARNING: "yellow"}
    for finding in findings:
        where = finding.path if finding.line is None else f"{finding.path}:{finding.line}"
        console.print(
            f"{where}: {finding.id} [{styles[finding.severity]}]{finding.severity}[/]: ",
            end="",
        )
        console.print(finding.message, markup=False)
    console.print(summary_text, markup=False)


def run(args: argparse.Namespace) -> int:
    if args.built is not None or args.base is not None:
        from pipeline.cli import lint_built  # buildah and the registry only when asked for

        return lint_built.run(args)
    root: Path = args.repo
    caps = repo_limits.from_settings(environment.load_settings())
    try:
        repository = fs.load(root, caps)
    except OSError as exc:
        where = exc.filename or root
        raise InputError(f"{where}: cannot read: {exc.strerror or exc}") from None
    if args.image is not None and args.image not in repository.images:
        known = ", ".join(sorted(repository.images)) or "none"
        raise InputError(f"--image {args.image!r}: no such image under images/ (known: {known})")
    report = lint.report(repository, args.image)
    if args.format == "json":
        print(json.dumps([f.as_dict() for f in report.findings], indent=2))
    elif args.format == "github":
        for finding in report.findings:
            print(github_annotation(finding))
    else:
        _print_text(report)
    return EXIT_FINDINGS if report.errors else EXIT_OK
