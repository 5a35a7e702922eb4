"""pipeline.core.commit_status: status contexts and descriptions; core.head: which builds a newer
head cancels."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.core import commit_status, head

URL = "https://layering.example.com"
DIGEST = "sha256:" + "c7ffdd54818a" + "0" * 52


def record(**extra: Any) -> dict[str, Any]:
    document: dict[str, Any] = {"id": "b1", "image": "firewalld", "cluster": "nonprod"}
    document.update(extra)
    return document


@pytest.mark.parametrize(
    ("document", "state", "description"),
    [
        (record(state="succeeded", digest=DIGEST), "success", "built c7ffdd54818a"),
        (record(state="skipped", digest=DIGEST), "success", "reused c7ffdd54818a (already built)"),
        (
            record(state="failed", failing_step="STEP 2/3: RUN make", failing_line=4),
            "failure",
            "failed at STEP 2/3: RUN make (Containerfile line 4)",
        ),
        (
            record(state="failed", error="gave up after 3 attempt(s): registry 503\ntail"),
            "error",
            "gave up after 3 attempt(s): registry 503",
        ),
    ],
)
def test_build_status(document: dict[str, Any], state: str, description: str) -> None:
    status = commit_status.build_status(document, public_url=URL)
    assert status is not None
    assert status.context == "layering/build/firewalld@nonprod"
    assert (status.state, status.description) == (state, description)
    assert status.target_url == f"{URL}/builds/b1"


@pytest.mark.parametrize("state", ["queued", "running", "cancelled"])
def test_unfinished_or_cancelled_builds_report_nothing(state: str) -> None:
    assert commit_status.build_status(record(state=state), public_url=URL) is None


def test_descriptions_fit_github_limit() -> None:
    status = commit_status.build_status(
        record(state="failed", failing_step="STEP 1/1: RUN " + "x" * 300), public_url=URL
    )
    assert status is not None
    assert len(status.description) <= 140


@pytest.mark.parametrize(
    ("findings", "fork", "state", "description"),
    [
        ([], False, "success", "no findings"),
        (
            [commit_status.LintFinding("LAY005", "warning", "images/a/Containerfile", 3)],
            False,
            "success",
            "passed with 1 warning(s): LAY005",
        ),
        (
            [
                commit_status.LintFinding("LAY001", "error", "images/a/Containerfile", 1),
                commit_status.LintFinding("LAY003", "error", "images/a/Containerfile", 5),
            ],
            False,
            "failure",
            "2 error(s): LAY001 at images/a/Containerfile:1 (+1 more)",
        ),
        ([], True, "success", f"no findings; {commit_status.FORK_NOTE}"),
    ],
)
def test_lint_status(
    findings: list[commit_status.LintFinding], fork: bool, state: str, description: str
) -> None:
    status = commit_status.lint_status(findings, fork=fork)
    assert (status.context, status.state, status.description) == (
        "layering/lint",
        state,
        description,
    )


def test_superseded_keeps_shared_keys() -> None:
    old = [
        head.HeadBuild("b1", "build-b1", "k1", "firewalld", "nonprod"),
        head.HeadBuild("b2", "build-b2", "k2", "chrony", "nonprod"),
    ]
    assert head.superseded_builds(old, ["k2", "k3"]) == [old[0]]
    assert head.superseded_builds(old, []) == old
    assert head.HeadBuild.from_json(old[0].to_json()) == old[0]
    status = commit_status.superseded(old[0].context, by_sha="f" * 40)
    assert (status.state, status.description) == ("error", "superseded by ffffffffffff")
