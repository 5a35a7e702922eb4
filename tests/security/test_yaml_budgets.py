"""Finding 1, the parsing half: repository YAML from a fork (cluster.yaml, image.yaml, a
MachineConfig) refuses anchors, aliases, merge keys, complex keys and deep nesting before
anything is expanded, and every hostile document ends as one problem naming the file and line,
never an exception, and within a small memory budget (measured with tracemalloc).

The end-to-end half (a fork pull request through a real worker) is in
tests/security/test_fork_yaml_bomb.py."""

from __future__ import annotations

import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.core import lint, machineconfig, repo, yamlfile

DIGEST = "sha256:" + "1" * 64
CONTAINERFILE = b"ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN ostree container commit\n"
CLUSTER = (
    "environment: nonprod\n"
    f"baseImage: quay.io/openshift-release-dev/ocp-v4.0-art-dev@{DIGEST}\n"
    "registry: registry.example.com/layering\n"
    "pools:\n  worker: demo\n"
)
MACHINECONFIG = (
    "apiVersion: machineconfiguration.openshift.io/v1\n"
    "kind: MachineConfig\n"
    "metadata:\n"
    "  name: 50-extensions\n"
    "  labels:\n"
    "    machineconfiguration.openshift.io/role: worker\n"
)
CLUSTER_PATH = "clusters/nonprod/cluster.yaml"
IMAGE_PATH = "images/demo/image.yaml"
MACHINECONFIG_PATH = "clusters/nonprod/machineconfigs/50-extensions.yaml"
MEMORY_BUDGET = 16 * 1024 * 1024
SECONDS_BUDGET = 2.0  # a guard against exponential expansion, not a performance figure
ANCHORS = "YAML anchors and aliases are not allowed here; write the value out"
MERGE = "YAML merge keys (<<) are not allowed here; write the keys out"
COMPLEX = "a mapping key must be a plain value, not a list or mapping"
DEEP = "maximum nesting depth"


def alias_bomb(levels: int = 9, fan: int = 10) -> str:
    """Billion laughs: `fan ** levels` strings from a few hundred bytes (the lint once turned
    each extension into text, expanding every alias)."""
    lines = ["x0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, levels):
        lines.append(f"x{level}: &x{level} [" + ", ".join([f"*x{level - 1}"] * fan) + "]")
    return "\n".join(lines) + "\n"


def merge_bomb(levels: int = 24) -> str:
    """Merge keys nested in merge keys, each level merging the previous one twice."""
    node = "&m0 {a: 1}"
    for level in range(1, levels):
        node = f"&m{level} {{<<: [{node}, *m{level - 1}]}}"
    return f"bomb: {node}\n"


def deep(levels: int) -> str:
    return "deep: " + "[" * levels + "]" * levels + "\n"


# (document appended to the file, the message, the 1-based line named); the hostile part comes
# after the honest keys, so the line shows the problem is found where it is
HOSTILE: dict[str, tuple[str, str, int]] = {
    "alias bomb": (alias_bomb(), ANCHORS, 1),
    "merge bomb": (merge_bomb(), ANCHORS, 1),
    "merge key": ("merged:\n  <<: {a: 1}\n", MERGE, 2),
    "merge key with a tag": ("merged: {!!merge x: {a: 1}}\n", MERGE, 1),
    "anchor alone": ("anchored: &x 1\n", ANCHORS, 1),
    "alias to a scalar": ("one: &one 1\ntwo: *one\n", ANCHORS, 1),
    "anchor on a mapping": ("outer:\n  inner: &m {a: 1}\n", ANCHORS, 2),
    "complex key, block": ("? [a, b]\n: 1\n", COMPLEX, 1),
    "complex key, flow": ("flow: {[a, b]: 1}\n", COMPLEX, 1),
    "complex key, nested": ("outer:\n  inner:\n    ? {a: 1}\n    : 2\n", COMPLEX, 3),
    "deep nesting": (deep(200), DEEP, 1),
    "very deep nesting": (deep(5000), DEEP, 1),
    "invalid date": ("when: 2001-02-30\n", "2001-02-30", 1),
    "number too long": ("big: " + "1" * 5000 + "\n", "number", 1),
    "sexagesimal overflow": ("big: 1" + ":1" * 5000 + ".5\n", "number", 1),
    "binary digits without digits": ("bits: 0b__\n", "0b__", 1),
    "timestamp tag on text": ("when: !!timestamp soon\n", "invalid value 'soon'", 1),
    "int tag on nothing": ("count: !!int\n", "invalid value ''", 1),
}

# each file kind: (path, the honest start of the file)
KINDS: dict[str, tuple[str, str]] = {
    "cluster.yaml": (CLUSTER_PATH, CLUSTER),
    "image.yaml": (IMAGE_PATH, "buildArgs:\n  EPEL: '9'\n"),
    "MachineConfig": (MACHINECONFIG_PATH, MACHINECONFIG),
}


def repository_files(kind: str, hostile: str) -> dict[str, bytes]:
    path, start = KINDS[kind]
    files = {
        "images/demo/Containerfile": CONTAINERFILE,
        CLUSTER_PATH: CLUSTER.encode(),
    }
    files[path] = (start + hostile).encode()
    return files


def measured(call: Callable[[], object]) -> tuple[object, int, float]:
    """(result, peak bytes allocated, seconds) of one call."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        result = call()
    finally:
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return result, peak, elapsed


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("document", "message", "line"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_yaml_is_a_lint_error_naming_file_and_line(
    kind: str, document: str, message: str, line: int
) -> None:
    path, start = KINDS[kind]
    expected_line = start.count("\n") + line
    files = repository_files(kind, document)

    def parse_and_lint() -> lint.Report:
        return lint.report(repo.parse_files(files))

    report, peak, elapsed = measured(parse_and_lint)
    assert isinstance(report, lint.Report)
    about = [f for f in report.errors if f.path == path]
    assert about, [str(f) for f in report.findings]
    first = about[0]
    assert (first.id, first.line) == ("LAY006", expected_line), str(first)
    assert message in first.message, str(first)
    assert "\n" not in first.message
    assert peak < MEMORY_BUDGET, f"{peak / 2**20:.1f} MiB"
    assert elapsed < SECONDS_BUDGET, f"{elapsed:.2f} s"


@pytest.mark.parametrize(("document", "message", "line"), HOSTILE.values(), ids=HOSTILE.keys())
def test_load_refuses_before_expanding(document: str, message: str, line: int) -> None:
    """yamlfile.load raises YamlProblem (a ValueError) with the line, nothing else."""
    with pytest.raises(yamlfile.YamlProblem) as caught:
        yamlfile.load(document.encode())
    assert caught.value.line == line
    assert message in str(caught.value)


def test_problem_reads_as_one_line_naming_file_and_line() -> None:
    hostile = "pools:\n  worker: &w demo\n  infra: *w\n"
    files = {CLUSTER_PATH: CLUSTER.replace("pools:\n  worker: demo\n", hostile).encode()}
    problems = [str(p) for p in repo.parse_files(files).problems]
    assert problems == [f"{CLUSTER_PATH}:5: {ANCHORS}"]


def test_machineconfig_with_an_alias_is_not_taken_for_ours() -> None:
    """parse_managed reads committed MachineConfigs; an alias makes one unreadable, not ours."""
    raw = (
        MACHINECONFIG
        + "    app.kubernetes.io/managed-by: &m coreos-layering-pipeline\n"
        + "spec: {osImageURL: *m}\n"
    )
    assert machineconfig.parse_managed(raw.encode()) is None
    honest = raw.replace("&m ", "").replace("*m", "quay.io/a/b@" + DIGEST)
    assert machineconfig.parse_managed(honest.encode()) is not None


def test_honest_yaml_still_loads() -> None:
    """Anchors are refused, not `&` and `*` inside values, quoted `<<`, or 32 levels."""
    text = (
        "url: 'https://example.com/?a=1&b=2'\n"
        "glob: a*b\n"
        "star: '*x'\n"
        "amp: '&x'\n"
        "'<<': quoted keys are plain strings\n"
        "when: 2001-02-03\n"
        "count: 0x1F\n"
        "sexagesimal: 1:30\n"
        "nested: " + "[" * 31 + "1" + "]" * 31 + "\n"
    )
    document = yamlfile.load(text)
    assert document["url"] == "https://example.com/?a=1&b=2"
    assert (document["glob"], document["star"], document["amp"]) == ("a*b", "*x", "&x")
    assert document["<<"] == "quoted keys are plain strings"
    assert (document["count"], document["sexagesimal"]) == (31, 90)


LAYERING = Path(sys.executable).with_name("layering")


def layering_lint(root: Path) -> subprocess.CompletedProcess[str]:
    command = [str(LAYERING)] if LAYERING.exists() else [sys.executable, "-m", "pipeline.cli"]
    return subprocess.run(
        [*command, "lint", "--repo", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("kind", "document", "message"),
    [
        ("cluster.yaml", "? [a, b]\n: 1\n", COMPLEX),
        ("image.yaml", "? [a, b]\n: 1\n", COMPLEX),
        ("MachineConfig", "? [a, b]\n: 1\n", COMPLEX),
        ("cluster.yaml", alias_bomb(), ANCHORS),
        ("MachineConfig", "spec: {extensions: &e [usbguard], again: *e}\n", ANCHORS),
    ],
)
def test_layering_lint_exits_1_naming_file_and_line(
    tmp_path: Path, kind: str, document: str, message: str
) -> None:
    """`layering lint` ends with a finding and exit 1, never an internal error (exit 70)."""
    path, start = KINDS[kind]
    for relative, content in repository_files(kind, document).items():
        target = tmp_path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    result = layering_lint(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    line = start.count("\n") + 1
    assert f"{path}:{line}: LAY006 error: " in result.stdout
    assert message in result.stdout
    assert "internal error" not in result.stderr
