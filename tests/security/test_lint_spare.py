"""The warm spare of the lint subprocess (adapters/sandboxed_lint.py, `warm=True`, what the
worker uses): the next subprocess is started before its head arrives and gets the request on
stdin, so its Python start-up is off the event's path (tests/bench/fanout_bench.py). It must
answer as the cold subprocess does, carry ids and paths only, count its CPU-time limit from the
request (not from its start-up), and leave nothing behind when its worker goes away."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.adapters import git as gitadapter
from pipeline.adapters import sandboxed_lint
from pipeline.core import head_lint
from pipeline.flows import head as head_flow
from tests import hostile
from tests.plugins.gitrepos import GitopsRepo
from tests.security.test_lint_subprocess import mirror, pull_request, request, script

pytestmark = pytest.mark.integration

__all__ = ["mirror"]  # the fixture, used by name


def wait_for_spare(linter: sandboxed_lint.SandboxedLinter) -> int:
    deadline = time.monotonic() + 30
    while (pid := linter.spare_pid()) is None:
        assert time.monotonic() < deadline, "no spare started"
        time.sleep(0.05)
    return pid


def test_a_warm_linter_answers_as_the_cold_one_from_a_spare(mirror: GitopsRepo) -> None:
    first = pull_request(mirror, 5, {"images/htop/Containerfile": "FROM x\nRUN echo hi\n"})
    second = pull_request(mirror, 6, {"images/firewalld/Containerfile": "FROM x\nRUN echo fw\n"})
    linter = sandboxed_lint.SandboxedLinter(cpu_seconds=20, memory_mb=1024, warm=True)
    cold = sandboxed_lint.SandboxedLinter(cpu_seconds=20, memory_mb=1024)
    try:
        linter.prepare()
        spares = []
        for sha in (first, second):
            spares.append(wait_for_spare(linter))
            outcome = linter.lint(request(mirror, sha))
            assert outcome == cold.lint(request(mirror, sha))
            with gitadapter.GitRepo.open(mirror.origin) as in_process:
                assert outcome == head_flow.read_head(in_process, request(mirror, sha))
        # each head was read by the spare started before it; a new one waits for the next
        after = wait_for_spare(linter)
        assert len({*spares, after}) == 3
    finally:
        linter.close()
    assert linter.spare_pid() is None


def test_the_spare_gets_ids_and_paths_on_stdin_and_its_limits_on_argv(
    mirror: GitopsRepo, tmp_path: Path
) -> None:
    seen = tmp_path / "seen.json"
    spy = script(
        tmp_path,
        "spy",
        "import json, sys\n"
        "line = sys.stdin.readline()\n"
        f"open({str(seen)!r}, 'w').write(json.dumps([sys.argv, line]))\n"
        "raise SystemExit(1)\n",
    )
    linter = sandboxed_lint.SandboxedLinter(cpu_seconds=20, memory_mb=1024, command=spy, warm=True)
    try:
        linter.prepare()
        outcome = linter.lint(request(mirror, mirror.head))
    finally:
        linter.close()
    assert outcome == head_lint.Stopped(head_lint.crashed("exit status 1"))
    argv, line = json.loads(seen.read_text())
    assert argv[1:] == [
        "--cpu-seconds",
        "20",
        "--memory-mb",
        "1024",
        "--wall-seconds",
        "90",
        sandboxed_lint.REQUEST_ON_STDIN,
    ]
    assert json.loads(line) == request(mirror, mirror.head).argv()


def test_the_cpu_limit_counts_from_the_request_not_the_start_up(mirror: GitopsRepo) -> None:
    """A spare has spent most of a second importing Python before its request arrives; its
    1 s limit counts from then, so it is stopped while reading the head's files."""
    sha = hostile.many_images_commit(
        mirror.origin,
        mirror.head,
        count=5000,
        containerfile="FROM x\n" + "RUN echo layer && ostree container commit\n" * 30,
        ref="refs/pull/8/head",
    )
    linter = sandboxed_lint.SandboxedLinter(cpu_seconds=1, memory_mb=1024, warm=True)
    try:
        linter.prepare()
        wait_for_spare(linter)
        outcome = linter.lint(request(mirror, sha))
    finally:
        linter.close()
    assert isinstance(outcome, head_lint.Stopped), outcome
    assert outcome.reason == "exceeded the 1 s CPU-time limit (LAYERING_LINT_CPU_SECONDS)"
    assert outcome.at is not None, outcome
    assert outcome.at.startswith("images/m"), outcome


def test_a_spare_whose_worker_went_away_exits_quietly() -> None:
    spare = subprocess.run(
        [
            sys.executable,
            "-m",
            sandboxed_lint.ENTRY,
            "--cpu-seconds",
            "5",
            "--memory-mb",
            "512",
            "--wall-seconds",
            "30",
            sandboxed_lint.REQUEST_ON_STDIN,
        ],
        stdin=subprocess.DEVNULL,  # end-of-file: no request will come
        capture_output=True,
        timeout=60,
        check=False,
        env=sandboxed_lint.environment() | {"PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert (spare.returncode, spare.stdout, spare.stderr) == (0, b"", b"")
