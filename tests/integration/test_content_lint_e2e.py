"""Issue 15: the content lint between `buildah build` and push, through the real build path (a
Celery worker, buildah, the session registry, Redis). A Containerfile that leaves RHEL's
redhat.repo behind fails naming LAY111 and its path, nothing is pushed and the local image is
gone; the build log, the commit status, the check run's text and the dashboard's build page
list every finding. The same image with an image.yaml waiver (and its reason) is pushed, its
warning said in the status. Then `layering lint --built` checks that pushed image by hand.
Two builds in all, shared by every test here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from pipeline.adapters import registry as registry_adapter
from pipeline.core import builds, check_output, commit_status
from pipeline.web import build_source, dashboard
from tests import services
from tests.plugins.builds import (
    BaseImage,
    BuildahStorage,
    Worker,
    git_commit_all,
    submit_build,
    write_repository,
)

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
PUBLIC_URL = "http://layering.example.com"
LEAKY = """\
ARG BASE_IMAGE=quay.io/fedora/fedora-coreos:stable
FROM ${BASE_IMAGE}
RUN mkdir -p /etc/yum.repos.d /var/lib/leaky && \\
    printf '[rhel-9-baseos]\\nenabled=1\\n' > /etc/yum.repos.d/redhat.repo && \\
    echo state > /var/lib/leaky/state
RUN ostree container commit
"""
WAIVER = (
    "allow:\n"
    "  - rule: LAY111\n"
    "    reason: the stand-in's redhat.repo carries no entitlement (test fixture)\n"
)
REPO_FILE = "/etc/yum.repos.d/redhat.repo"


def findings_of(record: Mapping[str, object]) -> list[dict[str, Any]]:
    return list(builds.BuildRecord.from_dict(record).content_findings)


def finding(record: Mapping[str, object], rule: str, path: str) -> dict[str, Any]:
    """The record's finding of `rule` about `path` (a finding may name a directory above)."""
    found = [f for f in findings_of(record) if f["id"] == rule]
    assert found, (rule, findings_of(record))
    placed = [f for f in found if path == f["path"] or path.startswith(f["path"] + "/")]
    assert placed, (rule, path, found)
    return placed[0]


def wait_discarded(storage: BuildahStorage, target: str, timeout: float = 60) -> None:
    """Until the worker's clean-up removed `target` from local storage."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = subprocess.run(
            [*storage.argv(), "inspect", "--type", "image", target],
            capture_output=True,
            check=False,
        )
        if found.returncode != 0:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{target} still in local storage after {timeout}s")


@pytest.fixture(scope="module")
def gitops(
    tmp_path_factory: pytest.TempPathFactory, base_image: BaseImage, registry: services.Registry
) -> Path:
    root = tmp_path_factory.mktemp("gitops-content")
    return write_repository(
        root,
        base=base_image,
        registry=f"{registry.host}/layering",
        images={"leaky": {"Containerfile": LEAKY, "nonce": uuid.uuid4().hex}},
        clusters={"dev": {"pools": {"worker": "leaky"}}},
    )


def _build(worker: Worker, root: Path, commit: str) -> dict[str, object]:
    build_id = submit_build(
        worker.app,
        worker.settings,
        source=str(root),
        commit_sha=commit,
        image="leaky",
        cluster="dev",
    )
    return worker.wait_for_build(build_id, timeout=180)


@pytest.fixture(scope="module")
def refused(celery_worker: Worker, gitops: Path) -> dict[str, object]:
    """The build that leaves redhat.repo: failed by the content lint."""
    return _build(celery_worker, gitops, git_commit_all(gitops, "leaky"))


@pytest.fixture(scope="module")
def waived(
    refused: dict[str, object], celery_worker: Worker, gitops: Path, buildah_storage: BuildahStorage
) -> dict[str, object]:
    """The same image with LAY111 waived in image.yaml: pushed."""
    (gitops / "images" / "leaky" / "image.yaml").write_text(WAIVER)
    record = _build(celery_worker, gitops, git_commit_all(gitops, "leaky: waive LAY111"))
    assert record["state"] == "succeeded", record["error"]
    wait_discarded(buildah_storage, str(record["target"]))
    return record


def test_an_error_finding_fails_the_build_and_nothing_is_pushed(
    refused: dict[str, object],
    celery_worker: Worker,
    buildah_storage: BuildahStorage,
) -> None:
    assert refused["state"] == "failed"
    error = str(refused["error"])
    leak = finding(refused, "LAY111", REPO_FILE)
    assert leak["severity"] == "error"
    assert finding(refused, "LAY106", "/var/lib/leaky/state")["severity"] == "warning"
    assert error.startswith(f"LAY111 error {leak['path']}: "), error
    assert "the image was not pushed" in error
    assert "images/leaky/image.yaml allow:" in error
    target = str(refused["target"])
    assert registry_adapter.Registry.from_settings(celery_worker.settings).image_of(target) is None
    gone = subprocess.run(
        [*buildah_storage.argv(), "inspect", "--type", "image", target],
        capture_output=True,
        check=False,
    )
    assert gone.returncode != 0, "the refused image was left in local storage"
    log = celery_worker.env.store().read_log(str(refused["id"]))
    assert "content lint: reading the image's layers" in log
    for each in findings_of(refused):
        line = f"content lint: {each['id']} {each['severity']} {each['path']}: "
        assert any(entry.startswith(line) for entry in log), (line, log)
    assert not any(entry.startswith("pushed ") for entry in log)


def test_the_status_check_run_and_build_page_name_the_finding(
    refused: dict[str, object], celery_worker: Worker
) -> None:
    status = commit_status.build_status(refused, public_url=PUBLIC_URL)
    assert status is not None
    assert status.state == "failure"
    leak = finding(refused, "LAY111", REPO_FILE)
    assert status.description.startswith(f"LAY111 error {leak['path']}")
    assert len(status.description) <= commit_status.DESCRIPTION_LIMIT
    record = builds.BuildRecord.from_dict(refused)
    _, text = check_output.build_summary(record, url=status.target_url)
    assert "### Content lint" in text
    for each in findings_of(refused):
        assert f"| {each['id']} | {each['severity']} | {each['path']} |" in text
    app = FastAPI()
    store = build_source.StoreView(celery_worker.env.store())
    app.include_router(dashboard.router(store, promotion_source=None))
    page = TestClient(app).get(f"/builds/{refused['id']}").text
    assert 'id="findings"' in page  # with the commit's lint findings: none recorded here
    assert f"<code>{leak['path']}</code>" in page
    assert page.count('<tr class="finding finding-') == len(findings_of(refused))


def test_a_waived_rule_is_pushed_and_its_warning_said(
    waived: dict[str, object], celery_worker: Worker
) -> None:
    found = registry_adapter.Registry.from_settings(celery_worker.settings).image_of(
        str(waived["target"])
    )
    assert found is not None
    assert found.digest == waived["digest"]
    finding(waived, "LAY106", "/var/lib/leaky/state")
    severities = [f["severity"] for f in findings_of(waived)]
    assert "error" not in severities
    log = celery_worker.env.store().read_log(str(waived["id"]))
    assert any(
        line.startswith("content lint: waived LAY111 ")
        and line.endswith("(the stand-in's redhat.repo carries no entitlement (test fixture))")
        for line in log
    ), log
    status = commit_status.build_status(waived, public_url=PUBLIC_URL)
    assert status is not None
    assert status.state == "success"
    count = len(severities)
    assert status.description.endswith(f"({count} content warning{'s' if count > 1 else ''})")


def _lint_built(worker: Worker, repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "lint", "--repo", str(repo), *args],
        env={**os.environ, **worker.variables},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_lint_built_checks_a_pushed_image_under_the_repository_waivers(
    refused: dict[str, object],
    waived: dict[str, object],
    celery_worker: Worker,
    gitops: Path,
    tmp_path: Path,
    base_image: BaseImage,
    registry: services.Registry,
) -> None:
    reference = builds.BuildRecord.from_dict(waived).reference
    result = _lint_built(celery_worker, gitops, "--image", "leaky", "--built", reference)
    assert result.returncode == 0, result.stderr
    warned = finding(waived, "LAY106", "/var/lib/leaky/state")
    assert f"{warned['path']}: LAY106 warning: " in result.stdout
    count = len(findings_of(waived))
    summary = f"0 errors, {count} warning{'s' if count > 1 else ''} (1 waived in image.yaml)"
    assert f"{summary} in {reference}" in result.stdout
    assert "waived LAY111 " in result.stderr

    # the same image under a repository without the waiver: the error, as JSON
    bare = write_repository(
        tmp_path / "bare",
        base=base_image,
        registry=f"{registry.host}/layering",
        images={"leaky": {"Containerfile": LEAKY}},
    )
    result = _lint_built(
        celery_worker, bare, "--image", "leaky", "--built", reference, "--format", "json"
    )
    assert result.returncode == 1, result.stderr
    findings = json.loads(result.stdout)
    assert findings[0]["id"] == "LAY111"
    assert findings[0] == finding(refused, "LAY111", REPO_FILE)

    # unusable input: no cluster uses the image (no trusted base), the image has no base
    # label, and no --base; an unknown image
    orphan = write_repository(
        tmp_path / "orphan",
        base=base_image,
        registry=f"{registry.host}/layering",
        images={"leaky": {"Containerfile": LEAKY}},
        clusters={"dev": {"pools": {}}},
    )
    result = _lint_built(celery_worker, orphan, "--image", "leaky", "--built", base_image.ref)
    assert result.returncode == 2, result.stderr
    assert "no cluster uses images/leaky" in result.stderr
    assert "--base REF" in result.stderr
    result = _lint_built(celery_worker, gitops, "--image", "nope", "--built", reference)
    assert result.returncode == 2
    assert "--image 'nope': no such image" in result.stderr
