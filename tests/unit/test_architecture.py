"""The rooms (docs/ARCHITECTURE.md) are enforced: import-linter's contracts in pyproject.toml
hold on this tree, and each one breaks when a probe module crosses its wall. Also: no module in
pipeline/ or workers/ is over 400 lines."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
MAX_LINES = 400


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    # import-linter puts its working directory first on sys.path, so a copy is analysed as is
    # wide enough that no contract name is wrapped
    env = {**os.environ, "COLUMNS": "400"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_the_contracts_hold_on_this_tree() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("rooms")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("pipeline", "workers"):
        shutil.copytree(ROOT / package, target / package, ignore=ignore)
    shutil.copytree(
        ROOT / "tests" / "architecture", target / "tests" / "architecture", ignore=ignore
    )
    (target / "tests" / "__init__.py").write_text("")
    shutil.copy(ROOT / "pyproject.toml", target / "pyproject.toml")
    return target


@pytest.mark.parametrize(
    ("room", "line", "contract", "message"),
    [
        (
            "pipeline/core",
            "from pipeline.adapters import git",
            "core is pure",
            "pipeline.core._probe is not allowed to import pipeline.adapters.git",
        ),
        (
            "pipeline/core",
            "import redis",
            "core is pure",
            "pipeline.core._probe is not allowed to import redis",
        ),
        (
            "pipeline/core",
            "import subprocess",
            "core is pure",
            "pipeline.core._probe is not allowed to import subprocess",
        ),
        (
            "pipeline/flows",
            "from pipeline.adapters import registry",
            "flows orchestrate through ports",
            "pipeline.flows._probe is not allowed to import pipeline.adapters.registry",
        ),
        (
            "pipeline/flows",
            "import celery",
            "flows orchestrate through ports",
            "pipeline.flows._probe is not allowed to import celery",
        ),
        (
            "pipeline/adapters",
            "from pipeline.flows import build",
            "adapters never import flows or entry points",
            "pipeline.adapters._probe -> pipeline.flows.build",
        ),
        (
            "pipeline/web",
            "import workers.app",
            "entry points sit on top",
            "pipeline.web._probe -> workers.app",
        ),
    ],
)
def test_a_probe_crossing_a_wall_breaks_its_contract(
    copy: Path, room: str, line: str, contract: str, message: str
) -> None:
    probe = copy / room / "_probe.py"
    probe.write_text(f"{line}  # noqa\n")
    try:
        result = _lint_imports(copy)
    finally:
        probe.unlink()
    assert result.returncode != 0
    broken = [row for row in result.stdout.splitlines() if row.endswith("BROKEN")]
    assert any(row.startswith(contract) for row in broken), result.stdout
    assert message in " ".join(result.stdout.split()), result.stdout


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for folder in ("pipeline", "workers")
        for path in (ROOT / folder).rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}, f"split these by what they hold: {long}"


def test_test_files_have_unique_names() -> None:
    """Test folders are not packages: pytest imports each file by its basename, and a second
    file of the same name stops the whole collection."""
    seen: dict[str, list[str]] = {}
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        seen.setdefault(path.name, []).append(str(path.relative_to(ROOT)))
    assert {name: paths for name, paths in seen.items() if len(paths) > 1} == {}
