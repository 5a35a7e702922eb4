"""Check runs end to end, in GitHub App mode (LAYERING_GITHUB_CHECKS=auto with the App's
credentials): signed pull-request deliveries to the receiver, a real Celery worker, buildah and
a registry, and the GitHub API stand-in holding the check runs (every request checked against
GitHub's OpenAPI schemas). tests/webhook_pipeline.py starts it all.

- two lint findings -> a `layering/lint` check run with exactly two annotations on their lines;
- a failing RUN -> the build's check run fails with its step, its Containerfile line and a log
  excerpt in which a configured secret is masked;
- a passing build -> one check run going queued -> in_progress -> completed, with digest and
  build key.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests import services, webhook_pipeline
from tests.plugins.builds import FAKE_REGISTRY_PASSWORD, BaseImage, StartWorker
from tests.plugins.github import app_private_key
from tests.webhook_pipeline import BUILD_TIMEOUT, PUBLIC_URL, Pipeline

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pipeline(
    tmp_path_factory: pytest.TempPathFactory,
    registry: services.Registry,
    base_image: BaseImage,
    start_worker: StartWorker,
) -> Iterator[Pipeline]:
    with webhook_pipeline.launch(
        tmp_path_factory.mktemp("checks-e2e"),
        registry=registry,
        base_image=base_image,
        start_worker=start_worker,
        name="checks",
        extra_env={
            "LAYERING_GITHUB_APP_ID": "12",
            "LAYERING_GITHUB_APP_PRIVATE_KEY": app_private_key(),
            "LAYERING_GITHUB_APP_INSTALLATION_ID": "34",
        },
    ) as running:
        assert running.settings.resolved_github_checks == "check-runs"
        yield running


def open_pull(pipeline: Pipeline, number: int, files: dict[str, str]) -> str:
    branch = f"checks-{number}"
    head = pipeline.push_pull_head(number, branch, files)
    response = pipeline.deliver(
        pipeline.pull_payload("opened", number, head, branch), event="pull_request"
    )
    assert response.status_code == 202, response.text
    return head


def wait_completed(
    pipeline: Pipeline, sha: str, names: set[str], timeout: float = BUILD_TIMEOUT
) -> dict[str, list[dict[str, Any]]]:
    """The check runs of `sha` once each of `names` has a completed run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = pipeline.github.runs_of(sha)
        if all(found.get(n) and found[n][-1]["status"] == "completed" for n in names):
            time.sleep(1.0)  # let any stray later request arrive before judging
            return pipeline.github.runs_of(sha)
        if pipeline.worker.process.poll() is not None:
            raise RuntimeError(pipeline.worker.log.read_text()[-3000:])
        time.sleep(0.2)
    raise TimeoutError(
        f"check runs on {sha[:12]}: {pipeline.github.runs_of(sha)}; worker log:\n"
        + pipeline.worker.log.read_text()[-4000:]
    )


def test_two_lint_findings_are_two_annotations_on_their_lines(
    pipeline: Pipeline, base_image: BaseImage
) -> None:
    containerfile = (
        "FROM quay.io/other/base\n"  # LAY001: not the cluster's base repository
        "ADD https://example.com/tool /usr/bin/tool\n"  # LAY007: remote content not pinned
        "RUN echo x && \\\n"
        "    ostree container commit\n"
    )
    head = open_pull(pipeline, 31, {"images/firewalld/Containerfile": containerfile})
    found = wait_completed(pipeline, head, {"layering/lint", "layering/build/firewalld@nonprod"})
    [lint] = found["layering/lint"]
    assert lint["conclusion"] == "failure"
    assert [
        (a["path"], a["start_line"], a["end_line"], a["annotation_level"], a["title"])
        for a in lint["annotations"]
    ] == [
        ("images/firewalld/Containerfile", 1, 1, "failure", "LAY001"),
        ("images/firewalld/Containerfile", 2, 2, "failure", "LAY007"),
    ]
    assert "not pinned" in lint["annotations"][1]["message"]
    assert lint["output"]["annotations_count"] == 2
    assert "| firewalld | nonprod | 2 | 0 | 0 | held back: lint errors |" in (
        lint["output"]["summary"].splitlines()
    )
    [build] = found["layering/build/firewalld@nonprod"]
    assert build["conclusion"] == "failure"
    assert "lint errors" in build["output"]["title"]
    # check runs replace the commit statuses of lint and builds
    assert pipeline.github.contexts(head) == {}


def test_failing_run_shows_step_line_and_masked_excerpt(
    pipeline: Pipeline, base_image: BaseImage
) -> None:
    # the step's output holds the registry password (from the worker's authfile), its text
    # does not: only masking keeps it out of the check run
    half = len(FAKE_REGISTRY_PASSWORD) // 2
    first, second = FAKE_REGISTRY_PASSWORD[:half], FAKE_REGISTRY_PASSWORD[half:]
    containerfile = (
        f"FROM {base_image.repository}\n"
        f'RUN p={first} && echo "logging in with ${{p}}{second}" && exit 3 && \\\n'
        "    ostree container commit\n"
    )
    head = open_pull(pipeline, 32, {"images/chrony/Containerfile": containerfile})
    name = "layering/build/chrony@nonprod"
    [build] = wait_completed(pipeline, head, {name})[name]
    assert build["conclusion"] == "failure"
    output = build["output"]
    assert "Failing step: `STEP 2/" in output["summary"]
    assert "RUN p=" in output["summary"]
    assert "images/chrony/Containerfile:2" in output["summary"]
    assert "Log excerpt (secrets masked)" in output["text"]
    assert "logging in with ***" in output["text"], output["text"]
    assert build["details_url"].startswith(f"{PUBLIC_URL}/builds/")
    assert build["details_url"] in output["summary"]
    sent = [
        str(r.body)
        for r in pipeline.github.requests
        if r.operation_id and "checks" in r.operation_id
    ]
    assert all(FAKE_REGISTRY_PASSWORD not in body for body in sent)


def test_passing_build_is_one_run_queued_in_progress_completed(
    pipeline: Pipeline, base_image: BaseImage
) -> None:
    containerfile = (
        f"FROM {base_image.repository}\n"
        # a little time in buildah, so "in progress" is seen before the result
        "RUN sleep 2 && echo checks > /etc/motd && \\\n"
        "    ostree container commit\n"
    )
    head = open_pull(pipeline, 33, {"images/firewalld/Containerfile": containerfile})
    name = "layering/build/firewalld@nonprod"
    found = wait_completed(pipeline, head, {name, "layering/lint"})
    [build] = found[name]  # one run, updated in place
    assert pipeline.github.lifecycle(build) == ["queued", "in_progress", "completed"]
    assert build["conclusion"] == "success"
    summary = build["output"]["summary"]
    assert "| digest | `sha256:" in summary
    assert "| build key | `" in summary
    assert "/layering/firewalld@sha256:" in summary
    [lint] = found["layering/lint"]
    assert lint["conclusion"] == "success"
    assert lint["annotations"] == []


def wait_for_summary(
    pipeline: Pipeline, sha: str, name: str, text: str, timeout: float = BUILD_TIMEOUT
) -> dict[str, Any]:
    """The check run `name` of `sha` once its summary holds `text` (the image changes arrive
    after the result: the run is drawn again from the record)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = pipeline.github.runs_of(sha).get(name) or []
        if runs and text in str(runs[-1]["output"].get("summary") or ""):
            return runs[-1]
        time.sleep(0.2)
    raise TimeoutError(f"{name} on {sha[:12]}: {pipeline.github.runs_of(sha).get(name)}")


def test_a_build_on_the_rpm_base_shows_the_added_package_in_its_check(
    pipeline: Pipeline, base_image: BaseImage
) -> None:
    """The stand-in base carries a real rpm database; `rpm-ostree install tmux` installs the
    stand-in's tmux package with the real rpm, and the build's check run lists it."""
    containerfile = (
        f"FROM {base_image.repository}\n"
        "RUN rpm-ostree install tmux && echo layered > /etc/layered.conf && \\\n"
        "    ostree container commit\n"
    )
    head = open_pull(pipeline, 34, {"images/firewalld/Containerfile": containerfile})
    name = "layering/build/firewalld@nonprod"
    build = wait_for_summary(pipeline, head, name, "| `tmux` | added |")
    assert build["conclusion"] == "success"
    summary = build["output"]["summary"]
    assert "### What this image changes" in summary
    assert "`/etc/layered.conf`" in summary, summary
    [only] = pipeline.github.runs_of(head)[name]  # the refresh updated the same run
    assert only["id"] == build["id"]
