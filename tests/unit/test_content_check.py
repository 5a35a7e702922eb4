"""The content lint stage of run_build (flows/content_check.py) against a ContentReader fake and
the real rules: an error stops the push and removes the local image, waivers let it through,
`layering build` without --push keeps the image; the findings on the record survive Redis's
JSON (malformed ones dropped) and reach the commit status and the check run's text."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.adapters import credentials, local_builds, source
from pipeline.adapters.environment import load_settings
from pipeline.core import builds, check_output, commit_status, content_lint
from pipeline.core.errors import PermanentError
from pipeline.core.file_index import FileEntry
from pipeline.flows import build as build_flow
from tests.plugins.builds import BaseImage, write_repository

BASE = "registry.example.com/os/base@sha256:" + "a" * 64
DIGEST = "sha256:" + "d" * 64
IMAGE_ID = "1" * 64
REPO_FILE = "/etc/yum.repos.d/redhat.repo"
FCOS = {
    "/etc": FileEntry("dir", 0o755),
    "/usr": FileEntry("dir", 0o755),
    "/var": FileEntry("dir", 0o755),
    "/var/lib": FileEntry("dir", 0o755),
    "/run": FileEntry("dir", 0o755),
    "/var/run": FileEntry("link", 0o777, target="../run"),
}


class Builder:
    """ports.ImageBuilder: records what it was asked to do."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def build(self, spec: builds.BuildSpec, *, on_line: Callable[[str], None]) -> str:
        self.calls.append("build")
        return IMAGE_ID

    def push(self, spec: builds.BuildSpec, *, on_line: Callable[[str], None]) -> str:
        self.calls.append("push")
        return DIGEST

    def discard(self, spec: builds.BuildSpec, *, on_line: Callable[[str], None]) -> None:
        self.calls.append("discard")

    def has_entitlement(self) -> bool:
        return False


class Registry:
    def digest_of(self, reference: str) -> str | None:
        return None

    def image_of(self, reference: str) -> builds.RegistryImage | None:
        return None


class Reader:
    """ports_content.ContentReader over fixed layer changes (or an error to raise)."""

    def __init__(self, *added: str, error: Exception | None = None) -> None:
        self.changes = [
            content_lint.LayerChange(path, FileEntry("file", 0o644, 5)) for path in added
        ]
        self.error = error
        self.asked: list[tuple[str, str]] = []
        self.prepared: list[str] = []

    def prepare(self, base: str) -> None:
        self.prepared.append(base)

    def content(self, image: str, *, base: str) -> content_lint.ImageContent:
        self.asked.append((image, base))
        if self.error is not None:
            raise self.error
        return content_lint.ImageContent(base=FCOS, changes=self.changes, notes=("no rpm db",))


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    return write_repository(
        tmp_path,
        base=BaseImage("registry.example.com/os/base", "sha256:" + "a" * 64),
        registry="registry.example.com/layering",
        images={"hello": {"Containerfile": "FROM registry.example.com/os/base\nRUN echo hi\n"}},
        clusters={"dev": {"pools": {"worker": "hello"}}},
    )


def run(
    checkout: Path, reader: Reader, *, push: bool = True
) -> tuple[builds.BuildRecord, Builder, list[str]]:
    settings = load_settings()
    records, builder = local_builds.MemoryRecords(), Builder()
    record = build_flow.run_build(
        settings,
        builds.BuildRequest(source=checkout, image="hello", cluster="dev", push=push),
        build_id="b1",
        records=records,
        sources=source.CheckoutLoader(),
        builder=builder,
        registry=Registry(),
        locks=local_builds.LocalLocks(),
        secrets=credentials.secret_values(settings),
        clock=lambda: 100.0,
        content=reader,
    )
    assert records.get("b1") == record
    return record, builder, records.logs["b1"]


def test_an_error_finding_fails_the_build_before_the_push(checkout: Path) -> None:
    reader = Reader(REPO_FILE, "/var/lib/app/state")
    record, builder, log = run(checkout, reader)
    assert reader.asked == [(IMAGE_ID, BASE)]
    assert builder.calls == ["build", "discard"]
    assert record.state is builds.BuildState.FAILED
    assert record.digest == ""
    assert record.error.startswith("LAY111 error /etc/yum.repos.d: ")
    assert record.error.endswith(
        "the image was not pushed: fix the finding or waive the rule in "
        "images/hello/image.yaml allow: with a reason"
    )
    assert [(f["id"], f["severity"]) for f in record.content_findings] == [
        ("LAY111", "error"),
        ("LAY106", "warning"),
    ]
    assert "content lint: reading the image's layers" in log
    assert "content lint: note: no rpm db" in log
    assert any(line.startswith("content lint: LAY111 error /etc/yum.repos.d: ") for line in log)
    assert any(line.startswith("content lint: LAY106 warning /var/lib/app") for line in log)
    assert "content lint: 1 error, 1 warning" in log


def test_a_waived_error_is_pushed_and_a_stale_waiver_said(checkout: Path) -> None:
    (checkout / "images" / "hello" / "image.yaml").write_text(
        "allow:\n"
        "  - {rule: LAY111, reason: a stand-in repo file}\n"
        "  - {rule: LAY109, reason: the old /boot}\n"
    )
    record, builder, log = run(checkout, Reader(REPO_FILE, "/var/lib/app/state"))
    assert builder.calls == ["build", "push", "discard"]
    assert record.state is builds.BuildState.SUCCEEDED
    assert [f["id"] for f in record.content_findings] == ["LAY106"]
    assert "content lint: waived LAY111 /etc/yum.repos.d (a stand-in repo file)" in log
    assert any("image.yaml allow: LAY109 matched nothing" in line for line in log)
    assert "content lint: 0 errors, 1 warning (1 waived in image.yaml)" in log
    status = commit_status.build_status(record.to_dict(), public_url="http://x")
    assert status is not None
    assert (status.state, status.description) == (
        "success",
        "built dddddddddddd (1 content warning)",
    )


def test_without_push_the_refused_image_stays_for_a_look(checkout: Path) -> None:
    record, builder, _ = run(checkout, Reader(REPO_FILE), push=False)
    assert builder.calls == ["build"]
    assert record.state is builds.BuildState.FAILED
    assert record.error.startswith("LAY111 error")


def test_an_unreadable_image_fails_and_is_removed(checkout: Path) -> None:
    reader = Reader(error=PermanentError("layers.json: missing; set LAYERING_CONTENT_LINT=false"))
    record, builder, _ = run(checkout, reader)
    assert builder.calls == ["build", "discard"]
    assert record.state is builds.BuildState.FAILED
    assert "LAYERING_CONTENT_LINT=false" in record.error


def test_findings_survive_json_and_malformed_ones_are_dropped() -> None:
    good = {"id": "LAY106", "severity": "warning", "path": "/var/x", "line": None, "message": "m"}
    record = builds.BuildRecord("b1", "hello", "dev", content_findings=(good,))
    assert builds.BuildRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    stored = {
        **record.to_dict(),
        "content_findings": [
            good,
            "LAY101",
            {**good, "severity": "fatal"},
            {**good, "line": "3"},
            {"id": "LAY101"},
        ],
    }
    assert builds.BuildRecord.from_dict(stored).content_findings == (good,)
    assert builds.BuildRecord.from_dict({**stored, "content_findings": 7}).content_findings == ()


def test_the_failed_status_names_the_rule_and_path_within_140_characters() -> None:
    path = "/etc/pki/entitlement"
    error = f"LAY111 error {path}: " + "x" * 300 + "; the image was not pushed"
    document = {
        **builds.BuildRecord("b1", "hello", "dev").to_dict(),
        "state": "failed",
        "error": error,
        "content_findings": [
            {"id": "LAY111", "severity": "error", "path": path, "line": None, "message": "m"}
        ],
    }
    status = commit_status.build_status(document, public_url="http://x")
    assert status is not None
    assert status.state == "failure"
    assert status.description.startswith(f"LAY111 error {path}: ")
    assert len(status.description) == commit_status.DESCRIPTION_LIMIT


def test_the_check_run_text_lists_every_finding_masked_and_in_cells() -> None:
    record = builds.BuildRecord(
        "b1",
        "hello",
        "dev",
        state=builds.BuildState.FAILED,
        error="LAY111 error /root: …",
        content_findings=(
            {"id": "LAY111", "severity": "error", "path": "/root", "line": None, "message": "a|b"},
            {"id": "LAY107", "severity": "warning", "path": "/tmp", "line": None, "message": "c"},
        ),
    )
    _, text = check_output.build_summary(record, url="http://x/builds/b1")
    assert text.splitlines()[:6] == [
        "### Content lint",
        "",
        "| rule | severity | path | finding |",
        "|---|---|---|---|",
        "| LAY111 | error | /root | a\\|b |",
        "| LAY107 | warning | /tmp | c |",
    ]
