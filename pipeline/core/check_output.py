"""What the `layering/lint` and build check runs show, as data. No I/O.

- Lint: one annotation per finding on its file and line (a finding without a line goes on
  line 1 and says so), titled with the rule id; the summary is a Markdown table per image x
  cluster: findings by severity and whether the build was sent or held back. The findings and
  the table travel with the lint status as its `details` (`lint_details`).
- Builds: drawn from the build record as it is when the check run is sent (`render`), so a
  later refresh (the image changes added to the record) is never overwritten by an older
  drawing: on failure the failing step, its Containerfile line and a secret-masked excerpt of
  the log tail; on success the digest, build key and reference; always the dashboard link;
  and the record's image changes, when it has them; the content lint's findings (LAY101..LAY113)
  in the output text, one table row each.

Text from the watched repository and from build logs is hostile: it is masked
(core/redaction.py; the adapter masks the configured secrets once more) and fenced so that
nothing in it can close the fence.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pipeline.core import builds, check_runs, commit_status, image_changes, redaction

# flows/build.py puts the log's tail under this line in a failed record's error
OUTPUT_TAIL = "\n--- output tail ---\n"
NO_LINE = "(the finding names no line: shown on line 1) "
SEVERITIES = ("error", "warning", "info")
SENT, HELD, FORK, UNUSED = "sent", "held back: lint errors", "not built: fork (lint only)", "-"


# -- lint -----------------------------------------------------------------------------------


def finding_json(finding: commit_status.LintFinding) -> dict[str, Any]:
    return {
        "id": finding.id,
        "severity": finding.severity,
        "path": finding.path,
        "line": finding.line,
        "end_line": finding.end_line,
        "message": finding.message,
    }


def finding_of(document: Mapping[str, Any]) -> commit_status.LintFinding:
    line, end_line = document.get("line"), document.get("end_line")
    return commit_status.LintFinding(
        id=str(document.get("id", "")),
        severity=str(document.get("severity", "error")),
        path=str(document.get("path", "")),
        line=line if isinstance(line, int) else None,
        message=str(document.get("message", "")),
        end_line=end_line if isinstance(end_line, int) else None,
    )


def lint_details(
    *,
    problems: Sequence[commit_status.LintFinding],
    findings: Mapping[str, Sequence[commit_status.LintFinding]],
    images: Sequence[str],
    targets: Iterable[tuple[str, str]],
    fork: bool,
) -> commit_status.Details:
    """The `details` of a lint status: every finding, and one row per (image, cluster) built
    (or per image no cluster uses), with its counts by severity and what became of its build;
    repository problems (LAY006) on a row of their own."""
    by_image: dict[str, list[str]] = {}
    for image, cluster in targets:
        by_image.setdefault(image, []).append(cluster)
    rows: list[dict[str, Any]] = []
    if problems:
        rows.append(_row("(repository)", "-", problems, "-"))
    for image in sorted(set(images) | set(by_image)):
        own = findings.get(image, ())
        held = any(f.severity == "error" for f in own)
        for cluster in by_image.get(image, ["-"]):
            build = UNUSED if cluster == "-" else FORK if fork else HELD if held else SENT
            rows.append(_row(image, cluster, own, build))
    every = [*problems, *(f for image in images for f in findings.get(image, ()))]
    return {"findings": [finding_json(f) for f in every], "rows": rows}


def _row(
    image: str, cluster: str, found: Sequence[commit_status.LintFinding], build: str
) -> dict[str, Any]:
    counts = {s: sum(1 for f in found if f.severity == s) for s in SEVERITIES}
    return {"image": image, "cluster": cluster, **counts, "build": build}


def annotation(finding: commit_status.LintFinding) -> check_runs.Annotation:
    message = redaction.scrub(finding.message or finding.id)
    if finding.line is None:
        message = NO_LINE + message
    start = finding.line or 1
    return check_runs.Annotation(
        path=finding.path,
        start_line=start,
        end_line=finding.end_line or start,
        level=check_runs.LEVELS.get(finding.severity, "failure"),
        title=finding.id,
        message=message,
    )


def lint_run(sha: str, status: commit_status.Status) -> check_runs.CheckRun:
    """The `layering/lint` check run of a lint status (its details: `lint_details`)."""
    details = status.details or {}
    raw = details.get("findings")
    findings = (
        [finding_of(f) for f in raw if isinstance(f, Mapping)] if isinstance(raw, list) else []
    )
    raw_rows = details.get("rows")
    rows = [r for r in raw_rows if isinstance(r, Mapping)] if isinstance(raw_rows, list) else []
    placed = [f for f in findings if f.path]
    lines = [f"**{status.description}**", ""]
    if rows:
        lines += [
            "| image | cluster | errors | warnings | notices | build |",
            "|---|---|---:|---:|---:|---|",
            *(
                "| {} | {} | {} | {} | {} | {} |".format(
                    *(_cell(row.get(k)) for k in ("image", "cluster", *SEVERITIES, "build"))
                )
                for row in rows
            ),
        ]
    unplaced = [f for f in findings if not f.path]
    text = "\n".join(f"- {_cell(f.id)} {_cell(f.severity)}: {_cell(f.message)}" for f in unplaced)
    return check_runs.plain(
        sha,
        status,
        summary="\n".join(lines),
        text=redaction.scrub(text),
        annotations=[annotation(f) for f in placed],
    )


def _cell(value: object) -> str:
    """A table cell: one line, no column separator, no HTML."""
    text = " ".join(str(value if value is not None else "").split())
    return text.replace("|", "\\|").replace("<", "&lt;")


# -- builds ---------------------------------------------------------------------------------


def fenced(text: str, language: str = "text") -> str:
    """`text` in a code fence longer than any run of backticks in it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text}\n{fence}"


def build_summary(
    record: builds.BuildRecord, *, url: str, changes_markdown: str = ""
) -> tuple[str, str]:
    """(summary, text) of a build's check run from its record."""
    state = record.state
    what = f"`{record.image}` for cluster `{record.cluster}`"
    lines: list[str] = []
    text = ""
    if state in (builds.BuildState.SUCCEEDED, builds.BuildState.SKIPPED):
        verb = "Built" if state is builds.BuildState.SUCCEEDED else "Reused (already built)"
        lines += [f"{verb}: {what}.", "", "| | |", "|---|---|"]
        lines += [
            f"| {name} | `{_cell(value)}` |"
            for name, value in (
                ("digest", record.digest),
                ("build key", record.build_key),
                ("reference", record.reference),
                ("commit", record.commit_sha),
            )
            if value
        ]
    elif state is builds.BuildState.FAILED:
        error, _, tail = record.error.partition(OUTPUT_TAIL)
        first = error.splitlines()[0] if error else "build failed"
        lines.append(f"Failed: {what}.")
        if record.failing_step:
            where = f"images/{record.image}/Containerfile"
            if record.failing_line:
                where += f":{record.failing_line}"
            step = _cell(redaction.scrub(record.failing_step))
            lines += ["", f"Failing step: `{step}` at `{where}`"]
        lines += ["", _cell(redaction.scrub(first))]
        if tail:
            text = "### Log excerpt (secrets masked)\n\n" + fenced(redaction.scrub(tail))
    elif state is builds.BuildState.CANCELLED:
        lines.append(f"Cancelled: {what}" + (f": {_cell(record.error)}" if record.error else "."))
    elif state is builds.BuildState.RUNNING:
        lines.append(f"Building {what}; the log is live on the dashboard.")
    else:
        lines.append(f"Queued: {what}.")
    lines += ["", f"[Build record and full log]({url})"]
    if changes_markdown:
        lines += ["", changes_markdown]
    if record.content_findings:
        text = content_markdown(record.content_findings) + ("\n\n" + text if text else "")
    return "\n".join(lines), text


def content_markdown(findings: Sequence[Mapping[str, Any]]) -> str:
    """The content lint's findings of a build as a Markdown table (masked: paths and messages
    come from the built image)."""
    rows = [
        "| {} | {} | {} | {} |".format(
            *(
                _cell(redaction.scrub(str(f.get(k) or "")))
                for k in ("id", "severity", "path", "message")
            )
        )
        for f in findings
    ]
    return "\n".join(
        ["### Content lint", "", "| rule | severity | path | finding |", "|---|---|---|---|", *rows]
    )


def changes_markdown(document: object) -> str:
    """The Markdown of a record's image changes (core/image_changes.py); "" when it has none."""
    if not document:
        return ""
    try:
        return image_changes.summary_markdown(image_changes.ImageChanges.from_json(document))
    except image_changes.InvalidChanges as exc:
        return f"The image changes recorded for this build are unreadable: {_cell(exc)}"


def render(
    sha: str,
    status: commit_status.Status,
    *,
    record: builds.BuildRecord | None,
    public_url: str,
) -> check_runs.CheckRun:
    """The check run of `status` on `sha`: a lint status's findings and table, a build
    status's record as it is now (`record`: None when it is gone or unknown), else what the
    status says."""
    if status.context == commit_status.LINT_CONTEXT and status.details:
        return lint_run(sha, status)
    if record is None:
        return check_runs.plain(sha, status)
    url = status.target_url or commit_status.log_url(public_url, record.id)
    markdown = changes_markdown(record.changes)
    summary, text = build_summary(record, url=url, changes_markdown=markdown)
    return check_runs.plain(sha, status, summary=summary, text=text)
