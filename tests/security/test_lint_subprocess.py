"""Finding 1, the worker half: the plan and lint of each head run in a subprocess
(adapters/sandboxed_lint.py -> python -m pipeline.cli.lint_sandbox) under CPU-time and memory
limits, against a real bare Git repository. Whatever the head holds (a YAML bomb, a legal
repository too large for the limits) and however the subprocess ends (a limit, a crash, a hang,
garbage on stdout), the caller gets a failed `layering/lint` status naming the limit or the
crash, and the file it was reading; its argv and environment carry no secret."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from pipeline.adapters import git as gitadapter
from pipeline.adapters import sandboxed_lint
from pipeline.core import commit_status, head, head_lint
from pipeline.core.errors import InputError
from pipeline.flows import head as head_flow
from tests import hostile
from tests.plugins.gitrepos import BASE_REPOSITORY, GitopsRepo, seed_example

pytestmark = pytest.mark.integration

URL = "https://layering.example.com"
SECRET = "ghp_lint-subprocess-must-not-see-this"


@pytest.fixture
def mirror(gitops_repo: GitopsRepo) -> GitopsRepo:
    """The example repository pushed to its bare origin (which plays the worker's mirror)."""
    seed_example(gitops_repo)
    gitops_repo.push()
    return gitops_repo


def pull_request(mirror: GitopsRepo, number: int, files: dict[str, str]) -> str:
    """A fork's pull request head (refs/pull/<n>/head in the bare origin) changing `files`."""
    mirror.checkout(f"fork-{number}", create=True)
    for path, text in files.items():
        mirror.write(path, text)
    sha = mirror.commit(f"fork change {number}")
    mirror.repo.remote("origin").push(f"HEAD:refs/pull/{number}/head").raise_if_error()
    mirror.checkout("main")
    return sha


def request(mirror: GitopsRepo, sha: str) -> head_lint.Request:
    return head_lint.Request(str(mirror.origin), head.ZERO_SHA, sha, "main")


def lint_status(outcome: head_lint.Reading | head_lint.Stopped) -> commit_status.Status:
    """The `layering/lint` status the head flow posts for a fork's head with this outcome."""
    if isinstance(outcome, head_lint.Stopped):
        decision = head.decide_stopped(outcome, None, sha="f" * 40, public_url=URL)
    else:
        decision = head.decide(
            outcome.plan, outcome.findings, None, sha="f" * 40, public_url=URL, fork=True
        )
    [status] = [s for s in decision.statuses if s.context == commit_status.LINT_CONTEXT]
    return status


def script(tmp_path: Path, name: str, body: str) -> list[str]:
    """A stand-in for the lint entry: a Python script run with this interpreter."""
    path = tmp_path / f"{name}.py"
    path.write_text(body)
    return [sys.executable, str(path)]


def test_an_honest_head_reads_as_it_does_in_process(mirror: GitopsRepo) -> None:
    sha = pull_request(mirror, 5, {"images/htop/Containerfile": "FROM x\nRUN echo hi\n"})
    linter = sandboxed_lint.SandboxedLinter(cpu_seconds=20, memory_mb=1024)

    outcome = linter.lint(request(mirror, sha))

    with gitadapter.GitRepo.open(mirror.origin) as in_process:
        assert outcome == head_flow.read_head(in_process, request(mirror, sha))
    assert isinstance(outcome, head_lint.Reading)
    assert [target.image for target in outcome.plan.builds] == ["htop"]


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("clusters/nonprod/machineconfigs/99-bomb.yaml", hostile.machineconfig_bomb()),
        (
            "clusters/nonprod/cluster.yaml",
            hostile.cluster_yaml_bomb(
                base_image=f"{BASE_REPOSITORY}@sha256:{'a' * 64}",
                registry="registry.example.com/layering",
            ),
        ),
        ("images/htop/image.yaml", hostile.image_yaml_bomb()),
    ],
)
def test_a_yaml_bomb_fails_lint_naming_the_file(mirror: GitopsRepo, path: str, text: str) -> None:
    assert len(text) < 700
    honest = f"FROM {BASE_REPOSITORY}\nRUN echo bomb && ostree container commit\n"
    sha = pull_request(mirror, 6, {path: text, "images/htop/Containerfile": honest})
    linter = sandboxed_lint.SandboxedLinter(cpu_seconds=20, memory_mb=1024)

    started = time.monotonic()
    status = lint_status(linter.lint(request(mirror, sha)))

    assert status.state == "failure", status
    assert path in status.description, status
    assert time.monotonic() - started < linter.timeout


def test_the_memory_limit_stops_a_legal_but_large_head(mirror: GitopsRepo) -> None:
    sha = hostile.many_images_commit(
        mirror.origin,
        mirror.head,
        count=2000,
        containerfile="FROM x\nRUN echo big\n" + "# " + "padding " * 6000 + "\n",
        ref="refs/pull/7/head",
    )
    # the smallest limit the settings allow; 2000 Containerfiles of 48 KiB need more
    linter = sandboxed_lint.SandboxedLinter(cpu_seconds=20, memory_mb=64)

    outcome = linter.lint(request(mirror, sha))

    assert isinstance(outcome, head_lint.Stopped), outcome
    assert outcome.reason == "exceeded the 64 MiB memory limit (LAYERING_LINT_MEMORY_MB)"
    assert lint_status(outcome).state == "failure"


def test_the_cpu_limit_stops_a_legal_but_slow_head(mirror: GitopsRepo) -> None:
    sha = hostile.many_images_commit(
        mirror.origin,
        mirror.head,
        # about 15 s of CPU time in one process here: far beyond 1 s, however fast lint gets
        count=5000,
        containerfile="FROM x\n" + "RUN echo layer && ostree container commit\n" * 30,
        ref="refs/pull/8/head",
    )
    linter = sandboxed_lint.SandboxedLinter(cpu_seconds=1, memory_mb=1024)

    outcome = linter.lint(request(mirror, sha))

    assert isinstance(outcome, head_lint.Stopped), outcome
    assert outcome.reason == "exceeded the 1 s CPU-time limit (LAYERING_LINT_CPU_SECONDS)"
    assert outcome.at is not None
    assert outcome.at.startswith("images/m"), outcome
    assert lint_status(outcome).description.startswith(
        "lint stopped: exceeded the 1 s CPU-time limit (LAYERING_LINT_CPU_SECONDS) at images/m"
    )


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n", head_lint.crashed("SIGSEGV")),
        ("raise SystemExit(9)\n", head_lint.crashed("exit status 9")),
        ("print('not json')\n", head_lint.malformed()),
        ('print(\'{"reading": {"plan": 3}}\')\n', head_lint.malformed()),
        ("import time\ntime.sleep(60)\n", head_lint.timed_out(1.5)),
        ("raise MemoryError\n", head_lint.memory_limit(1024)),
    ],
    ids=["segfault", "exit-9", "garbage", "wrong-shape", "hang", "memory-error"],
)
def test_any_other_end_is_a_stopped_lint(
    mirror: GitopsRepo, tmp_path: Path, body: str, reason: str
) -> None:
    linter = sandboxed_lint.SandboxedLinter(
        cpu_seconds=20, memory_mb=1024, timeout=1.5, command=script(tmp_path, "entry", body)
    )
    started = time.monotonic()
    outcome = linter.lint(request(mirror, mirror.head))
    assert outcome == head_lint.Stopped(reason)
    assert lint_status(outcome).state == "failure"
    assert time.monotonic() - started < 30


def test_an_unknown_revision_is_an_input_error(mirror: GitopsRepo) -> None:
    linter = sandboxed_lint.SandboxedLinter(cpu_seconds=20, memory_mb=1024)
    with pytest.raises(InputError, match="1234567"):
        linter.lint(request(mirror, "1234567" * 5 + "12345"))


def test_argv_and_environment_carry_ids_and_paths_only(
    mirror: GitopsRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("LAYERING_GITHUB_TOKEN", "LAYERING_REDIS_URL", "LAYERING_WEBHOOK_SECRET"):
        monkeypatch.setenv(name, f"redis://:{SECRET}@127.0.0.1:1/0")
    seen = tmp_path / "seen.json"
    spy = script(
        tmp_path,
        "spy",
        "import json, os, sys\n"
        f"open({str(seen)!r}, 'w').write(json.dumps([sys.argv, dict(os.environ)]))\n"
        "raise SystemExit(1)\n",
    )
    linter = sandboxed_lint.SandboxedLinter(cpu_seconds=20, memory_mb=1024, command=spy)

    linter.lint(request(mirror, mirror.head))

    argv, environment = json.loads(seen.read_text())
    assert SECRET not in json.dumps(argv) + json.dumps(environment)
    assert not [name for name in environment if name.startswith("LAYERING_")]
    assert argv[1:] == [
        "--cpu-seconds",
        "20",
        "--memory-mb",
        "1024",
        "--wall-seconds",
        "90",
        "--mirror",
        str(mirror.origin),
        "--from",
        head.ZERO_SHA,
        "--to",
        mirror.head,
        "--default-branch",
        "main",
    ]


def test_the_subprocess_sets_its_limits_first() -> None:
    probe = (
        "import resource, sys\n"
        "from pipeline.adapters import sandboxed_lint\n"
        "sandboxed_lint.apply_limits(cpu_seconds=7, memory_mb=300, wall=50)\n"
        "print(resource.getrlimit(resource.RLIMIT_CPU), resource.getrlimit(resource.RLIMIT_AS),"
        " resource.getrlimit(resource.RLIMIT_CORE))\n"
    )
    import subprocess

    shown = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ},
    ).stdout.strip()
    assert shown == f"(7, 8) ({300 * 1024 * 1024}, {300 * 1024 * 1024}) (0, 0)"
