"""pipeline.core.check_runs and check_output: statuses as check runs, GitHub's limits
(50 annotations per request, 65535 characters), lint annotations and table, build outputs
drawn from the record with the log excerpt masked; LAYERING_GITHUB_CHECKS."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from pipeline.adapters import environment
from pipeline.core import (
    builds,
    changes,
    check_output,
    check_runs,
    commit_status,
    head,
    image_changes,
    rpm_packages,
)
from pipeline.core.errors import InputError
from pipeline.core.settings import Settings

SHA = "a" * 40
URL = "http://layering.example.test"
DIGEST = "sha256:" + "c7ffdd54818a" + "0" * 52
APP = {"github_app_id": 1, "github_app_private_key": "key", "github_app_installation_id": 2}


def annotations(count: int) -> tuple[check_runs.Annotation, ...]:
    return tuple(
        check_runs.Annotation("images/a/Containerfile", n, n, "warning", "LAY005", f"m{n}")
        for n in range(1, count + 1)
    )


def run(count: int, **output: Any) -> check_runs.CheckRun:
    return check_runs.CheckRun(
        name="layering/lint",
        head_sha=SHA,
        status="completed",
        conclusion="failure",
        output=check_runs.Output(title="t", summary="s", annotations=annotations(count), **output),
        details_url=f"{URL}/x",
    )


# -- requests and limits --------------------------------------------------------------------


def test_120_annotations_go_in_three_requests() -> None:
    bodies = run(120).requests()
    assert [len(b["output"].get("annotations", [])) for b in bodies] == [50, 50, 20]
    assert bodies[0]["status"] == "completed"
    assert bodies[0]["conclusion"] == "failure"
    assert bodies[0]["details_url"] == f"{URL}/x"
    # follow-ups only add annotations (GitHub appends them) and keep the output's text
    assert all(set(b) == {"output"} for b in bodies[1:])
    assert all(b["output"]["title"] == "t" and b["output"]["summary"] == "s" for b in bodies)
    sent = [a["start_line"] for b in bodies for a in b["output"]["annotations"]]
    assert sent == list(range(1, 121))


@pytest.mark.parametrize(("count", "requests"), [(0, 1), (1, 1), (50, 1), (51, 2), (100, 2)])
def test_request_count(count: int, requests: int) -> None:
    assert len(run(count).requests()) == requests


def test_summary_text_and_title_are_cut_to_github_limits() -> None:
    output = check_runs.Output(title="x" * 500, summary="y" * 70_000, text="z" * 70_000)
    assert len(output.summary) == len(output.text) == check_runs.TEXT_LIMIT
    assert output.summary.endswith("(cut: GitHub takes at most 65535 characters here)")
    assert len(output.title) <= 140
    long = check_runs.Annotation("p", 0, 0, "notice", "T" * 300, "m" * 10_000)
    assert (long.start_line, long.end_line) == (1, 1)
    assert len(long.title) == 255
    assert len(long.message) == check_runs.MESSAGE_LIMIT


def test_a_conclusion_goes_with_completed_only() -> None:
    with pytest.raises(ValueError, match="conclusion"):
        check_runs.CheckRun("n", SHA, "queued", "success", check_runs.Output("t", "s"))


# -- statuses -> check runs -----------------------------------------------------------------


PREVIOUS = head.Head(SHA, 1.0, (head.HeadBuild("b1", "build-b1", "k", "firewalld", "nonprod"),))


@pytest.mark.parametrize(
    ("status", "lifecycle"),
    [
        (
            commit_status.pending_build("firewalld", "nonprod", build_id="b1", public_url=URL),
            ("queued", None),
        ),
        (
            commit_status.build_started("firewalld", "nonprod", build_id="b1", public_url=URL),
            ("in_progress", None),
        ),
        (
            commit_status.build_status(
                {"id": "b1", "image": "i", "cluster": "c", "state": "succeeded", "digest": DIGEST},
                public_url=URL,
            ),
            ("completed", "success"),
        ),
        (
            commit_status.build_status(
                {"id": "b1", "image": "i", "cluster": "c", "state": "failed", "failing_step": "S"},
                public_url=URL,
            ),
            ("completed", "failure"),
        ),
        (
            commit_status.crashed("firewalld", "nonprod", build_id="b1", public_url=URL),
            ("completed", "failure"),
        ),
        (
            head.supersede(PREVIOUS, new_sha="b" * 40, new_keys=(), public_url=URL)[0].status,
            ("completed", "cancelled"),
        ),
        (head.close(PREVIOUS, public_url=URL)[0].status, ("completed", "cancelled")),
        (commit_status.not_built("i", "c", "lint errors"), ("completed", "failure")),
        (commit_status.lint_status([]), ("completed", "success")),
    ],
)
def test_lifecycle_of_each_status(
    status: commit_status.Status | None, lifecycle: tuple[str, str | None]
) -> None:
    assert status is not None
    assert check_runs.lifecycle(status.state, status.details) == lifecycle


def test_cancelled_and_build_statuses_name_their_build() -> None:
    [cancel] = head.supersede(PREVIOUS, new_sha="b" * 40, new_keys=(), public_url=URL)
    assert cancel.status.build_id == "b1"
    assert head.close(PREVIOUS, public_url=URL)[0].status.build_id == "b1"
    pending = commit_status.pending_build("i", "c", build_id="b7", public_url=URL)
    assert pending.build_id == "b7"


@pytest.mark.parametrize(
    ("context", "checked"),
    [
        ("layering/lint", True),
        ("layering/build/firewalld@nonprod", True),
        ("layering/promote/nonprod", False),
        ("layering/gate/prod", False),
        ("layering/rollout/nonprod", False),
    ],
)
def test_lint_and_builds_are_check_runs_the_rest_stay_statuses(context: str, checked: bool) -> None:
    assert check_runs.is_check(context) is checked


def test_a_status_without_details_is_drawn_from_what_it_says() -> None:
    status = commit_status.Status("layering/lint", "failure", "lint stopped: limit", f"{URL}/l")
    found = check_output.render(SHA, status, record=None, public_url=URL)
    assert (found.name, found.status, found.conclusion) == ("layering/lint", "completed", "failure")
    assert found.output.title == "lint stopped: limit"
    assert f"{URL}/l" in found.output.summary
    assert found.details_url == f"{URL}/l"


# -- lint -----------------------------------------------------------------------------------

ERROR = commit_status.LintFinding(
    "LAY001", "error", "images/firewalld/Containerfile", 1, "FROM is not the base"
)
WARNING = commit_status.LintFinding(
    "LAY005", "warning", "images/chrony/Containerfile", 3, "usbguard is an extension", 4
)
WHOLE_FILE = commit_status.LintFinding("LAY003", "error", "images/chrony/Containerfile", None, "x")


@pytest.mark.parametrize(
    ("finding", "expected"),
    [
        (ERROR, ("images/firewalld/Containerfile", 1, 1, "failure", "LAY001")),
        (WARNING, ("images/chrony/Containerfile", 3, 4, "warning", "LAY005")),
        (WHOLE_FILE, ("images/chrony/Containerfile", 1, 1, "failure", "LAY003")),
        (
            commit_status.LintFinding("LAY900", "info", "images/a/image.yaml", 2, "note"),
            ("images/a/image.yaml", 2, 2, "notice", "LAY900"),
        ),
    ],
)
def test_annotation_of_a_finding(
    finding: commit_status.LintFinding, expected: tuple[Any, ...]
) -> None:
    made = check_output.annotation(finding)
    assert (made.path, made.start_line, made.end_line, made.level, made.title) == expected
    assert made.message.endswith(finding.message)
    assert made.message.startswith(check_output.NO_LINE) is (finding.line is None)


def lint_status(fork: bool = False) -> commit_status.Status:
    details = check_output.lint_details(
        problems=[],
        findings={"firewalld": [ERROR], "chrony": [WARNING, WHOLE_FILE]},
        images=["chrony", "firewalld", "unused"],
        targets=[("firewalld", "nonprod"), ("firewalld", "prod"), ("chrony", "nonprod")],
        fork=fork,
    )
    base = commit_status.lint_status([ERROR, WARNING, WHOLE_FILE], fork=fork)
    return commit_status.Status(base.context, base.state, base.description, details=details)


def test_lint_check_run_has_one_annotation_per_finding_and_a_table() -> None:
    found = check_output.render(SHA, lint_status(), record=None, public_url=URL)
    assert (found.status, found.conclusion) == ("completed", "failure")
    assert [(a.title, a.path, a.start_line) for a in found.output.annotations] == [
        ("LAY005", "images/chrony/Containerfile", 3),
        ("LAY003", "images/chrony/Containerfile", 1),
        ("LAY001", "images/firewalld/Containerfile", 1),
    ]
    table = found.output.summary.splitlines()
    assert "| image | cluster | errors | warnings | notices | build |" in table
    assert "| chrony | nonprod | 1 | 1 | 0 | held back: lint errors |" in table
    assert "| firewalld | nonprod | 1 | 0 | 0 | held back: lint errors |" in table
    assert "| firewalld | prod | 1 | 0 | 0 | held back: lint errors |" in table
    assert "| unused | - | 0 | 0 | 0 | - |" in table


def test_lint_table_of_a_fork() -> None:
    found = check_output.render(SHA, lint_status(fork=True), record=None, public_url=URL)
    assert "| firewalld | nonprod | 1 | 0 | 0 | not built: fork (lint only) |" in (
        found.output.summary.splitlines()
    )


def test_decide_attaches_the_lint_details() -> None:
    target = changes.BuildTarget(
        image="firewalld",
        cluster="nonprod",
        environment="nonprod",
        build_key="k" * 64,
        tree_id="t",
        base_image="quay.io/fedora/fedora-coreos:stable",
        base_digest="sha256:" + "1" * 64,
        repository="registry.example.com/layering/firewalld",
        pools=("worker",),
        reason="images/firewalld changed",
    )
    plan = changes.Plan(builds=(target,))
    decision = head.decide(plan, {"firewalld": [ERROR]}, None, sha=SHA, public_url=URL)
    lint = decision.statuses[0]
    assert lint.details is not None
    assert lint.details["findings"][0]["message"] == "FROM is not the base"
    assert lint.details["rows"][0]["build"] == "held back: lint errors"


def test_hostile_table_cells_and_findings_without_a_path() -> None:
    status = commit_status.Status(
        "layering/lint",
        "failure",
        "1 error(s)",
        details={
            "findings": [
                {"id": "LAY006", "severity": "error", "path": "", "line": None, "message": "m|<b>"}
            ],
            "rows": [{"image": "a|b\n<script>", "cluster": "c", "build": "-"}],
        },
    )
    found = check_output.render(SHA, status, record=None, public_url=URL)
    assert found.output.annotations == ()  # GitHub needs a path: listed in the text instead
    assert "LAY006" in found.output.text
    assert "| a\\|b &lt;script> | c |" in found.output.summary


# -- builds ---------------------------------------------------------------------------------


def record(**changes: Any) -> builds.BuildRecord:
    base = builds.queued("b1", image="firewalld", cluster="nonprod", now=1.0, commit_sha=SHA)
    return builds.BuildRecord.from_dict({**base.to_dict(), **changes})


def draw(found: builds.BuildRecord, **options: Any) -> check_runs.CheckRun:
    status = commit_status.build_status(found.to_dict(), public_url=URL)
    assert status is not None
    return check_output.render(SHA, status, record=found, public_url=URL, **options)


def test_failed_build_shows_step_line_and_masked_excerpt() -> None:
    tail = "\n".join(
        [
            "STEP 2/2: RUN curl https://deploy:hunter2secret@repo.example/x && false",
            "```",
            "error: exit status 1",
        ]
    )
    failed = record(
        state="failed",
        failing_step="STEP 2/2: RUN curl https://deploy:hunter2secret@repo.example/x",
        failing_line=2,
        error=f"images/firewalld/Containerfile:2: RUN failed{check_output.OUTPUT_TAIL}{tail}",
    )
    found = draw(failed)
    assert (found.status, found.conclusion) == ("completed", "failure")
    assert "images/firewalld/Containerfile:2" in found.output.summary
    assert "STEP 2/2: RUN curl" in found.output.summary
    assert "error: exit status 1" in found.output.text
    assert "hunter2secret" not in found.output.title + found.output.summary + found.output.text
    assert "https://***@repo.example" in found.output.text
    # the backticks of the log cannot close the excerpt's fence
    assert "\n````text\n" in "\n" + found.output.text.split("\n\n", 1)[1]
    assert f"{URL}/builds/b1" in found.output.summary


def test_passing_build_shows_digest_build_key_and_reference() -> None:
    passed = record(
        state="succeeded",
        digest=DIGEST,
        build_key="k" * 64,
        target="registry.example/layering/firewalld:" + "k" * 20,
    )
    found = draw(passed)
    assert (found.status, found.conclusion) == ("completed", "success")
    summary = found.output.summary
    assert f"| digest | `{DIGEST}` |" in summary
    assert f"| build key | `{'k' * 64}` |" in summary
    assert f"registry.example/layering/firewalld@{DIGEST}" in summary
    assert f"[Build record and full log]({URL}/builds/b1)" in summary


def test_image_changes_of_the_record_are_shown() -> None:
    changes = image_changes.compare(
        base_packages=[rpm_packages.Package("bash", "5.2-1", "x86_64")],
        built_packages=[
            rpm_packages.Package("bash", "5.2-1", "x86_64"),
            rpm_packages.Package("tmux", "3.3a-1", "x86_64"),
        ],
        base_files=[],
        built_files=[],
    )
    found = draw(record(state="succeeded", digest=DIGEST, changes=changes.to_json()))
    summary = found.output.summary
    assert "### What this image changes" in summary
    assert "| `tmux` | added | - | `3.3a-1.x86_64` |" in summary
    assert summary.index("[Build record and full log]") < summary.index("### What this image")


def test_unreadable_image_changes_say_so() -> None:
    found = draw(record(state="succeeded", digest=DIGEST, changes={"added": "not a list"}))
    assert "image changes recorded for this build are unreadable" in found.output.summary


def test_running_build_is_in_progress() -> None:
    status = commit_status.build_started("firewalld", "nonprod", build_id="b1", public_url=URL)
    found = check_output.render(
        SHA, status, record=record(state="running", started_at=2.0), public_url=URL
    )
    assert (found.status, found.conclusion) == ("in_progress", None)
    assert found.output.summary.startswith("Building `firewalld`")


# -- parked statuses keep their check details -----------------------------------------------


def test_parked_status_keeps_details_and_build_id() -> None:
    parked = commit_status.ParkedStatus(
        SHA, "layering/lint", "failure", "d", None, 3, 1.0, details={"rows": []}, build_id="b1"
    )
    assert commit_status.ParkedStatus.from_json(parked.to_json()) == parked
    old = {k: v for k, v in parked.to_json().items() if k not in ("details", "build_id")}
    assert commit_status.ParkedStatus.from_json(old).details is None


# -- LAYERING_GITHUB_CHECKS -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "mode"),
    [
        ({}, "statuses"),
        ({"github_token": "t" * 20}, "statuses"),
        (APP, "check-runs"),
        ({**APP, "github_checks": "statuses"}, "statuses"),
        ({**APP, "github_checks": "check-runs"}, "check-runs"),
    ],
)
def test_checks_mode_resolves_auto(values: dict[str, Any], mode: str) -> None:
    assert Settings(**values).resolved_github_checks == mode


def test_check_runs_without_an_app_stop_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="GitHub App credentials"):
        Settings(github_checks="check-runs", github_token="t" * 20)
    monkeypatch.setenv("LAYERING_GITHUB_CHECKS", "check-runs")
    with pytest.raises(InputError, match=r"LAYERING_GITHUB_CHECKS: .*refuses check runs to tokens"):
        environment.load_settings()
