"""`layering lint` as a real process (the installed console script) on temporary repositories."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

LAYERING = Path(sys.executable).with_name("layering")
REPO_ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "9a2b" * 16
CLUSTER = (
    "environment: nonprod\n"
    f"baseImage: quay.io/openshift-release-dev/ocp-v4.0-art-dev@{DIGEST}\n"
    "registry: registry.example.com/layering\n"
    "pools:\n  worker: demo\n"
)
GOOD = (
    "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN rpm-ostree install tmux && ostree container commit\n"
)


def layering(*args: str) -> subprocess.CompletedProcess[str]:
    command = [str(LAYERING)] if LAYERING.exists() else [sys.executable, "-m", "pipeline.cli"]
    return subprocess.run(
        [*command, "lint", *args], capture_output=True, text=True, timeout=60, check=False
    )


def write(root: Path, files: dict[str, bytes | str | None]) -> Path:
    for path, content in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        elif content is not None:
            target.write_text(content)
    return root


def example(root: Path, **changes: bytes | str | None) -> Path:
    files: dict[str, bytes | str | None] = {
        "images/demo/Containerfile": GOOD,
        "clusters/nonprod/cluster.yaml": CLUSTER,
    }
    files.update({path.replace("@", "/"): content for path, content in changes.items()})
    return write(root, files)


def test_clean_repository_exits_0(tmp_path: Path) -> None:
    result = layering("--repo", str(example(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0 errors, 0 warnings in 1 image"
    assert result.stderr == ""


def test_example_repository_passes_with_its_warning() -> None:
    result = layering("--repo", str(REPO_ROOT))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "images/libreswan/Containerfile:" in result.stdout
    assert "LAY005 warning" in result.stdout
    assert result.stdout.strip().splitlines()[-1].startswith("0 errors, 1 warning in ")


BAD_INPUT = [
    pytest.param(
        {"clusters/nonprod/cluster.yaml": "environment: [nonprod\n"},
        "clusters/nonprod/cluster.yaml",
        id="malformed-yaml",
    ),
    pytest.param(
        {"clusters/nonprod/cluster.yaml": CLUSTER + "colour: blue\n"},
        "clusters/nonprod/cluster.yaml:6: LAY006 error: colour: unknown key",
        id="unknown-key",
    ),
    pytest.param(
        {"images/demo/image.yaml": "entitelment: true\n"},
        "images/demo/image.yaml:1: LAY006 error: entitelment: unknown key",
        id="unknown-key-image-yaml",
    ),
    pytest.param(
        {"images/Demo_Image/Containerfile": GOOD},
        "images/Demo_Image: LAY006 error: image name must be a DNS label",
        id="name-not-dns-label",
    ),
    pytest.param(
        {"clusters/nonprod/cluster.yaml": CLUSTER + "  worker: htop\n"},
        "clusters/nonprod/cluster.yaml:6: LAY006 error: key 'worker' appears twice",
        id="pool-with-two-images-duplicate-key",
    ),
    pytest.param(
        {"clusters/nonprod/cluster.yaml": CLUSTER.replace("worker: demo", "worker: [demo, x]")},
        "clusters/nonprod/cluster.yaml:4: LAY006 error: pools: pool 'worker' must name exactly",
        id="pool-with-two-images-list",
    ),
    pytest.param(
        {"images/demo/Containerfile": GOOD.replace("RUN", "COPY ../../etc/passwd /etc/\nRUN")},
        "images/demo/Containerfile:3: LAY008 error: COPY ../../etc/passwd reaches outside",
        id="copy-escapes-context",
    ),
    pytest.param(
        {"images/demo/Containerfile": None, "images/demo/image.yaml": "entitlement: true\n"},
        "images/demo/Containerfile: LAY006 error: missing",
        id="missing-containerfile",
    ),
    pytest.param(
        {"images/demo/Containerfile": b"\x7fELF\x02\x01\x01\x00\x00\x00\xff\xfe"},
        "images/demo/Containerfile: LAY006 error: is a binary file",
        id="binary-containerfile",
    ),
    pytest.param(
        {"images/demo/Containerfile": "FROM a\nRUN x\nCOPPY a b\n"},
        "images/demo/Containerfile:3: LAY006 error: unknown instruction 'COPPY'",
        id="unparseable-containerfile",
    ),
    pytest.param(
        {"clusters/nonprod/cluster.yaml": b"\x00\x00binary"},
        "clusters/nonprod/cluster.yaml: LAY006 error: not a text file",
        id="binary-cluster-yaml",
    ),
]


@pytest.mark.parametrize(("changes", "expected"), BAD_INPUT)
def test_bad_input_exits_1_naming_the_file(
    tmp_path: Path, changes: dict[str, bytes | str | None], expected: str
) -> None:
    root = example(tmp_path)
    if changes.get("images/demo/Containerfile", "") is None:
        (root / "images/demo/Containerfile").unlink()
    write(root, changes)
    result = layering("--repo", str(root))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if expected in line]
    assert len(lines) == 1, result.stdout
    assert result.stdout.splitlines()[-1].startswith(("1 error", "2 errors"))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--repo", "/nonexistent/repository"], "/nonexistent/repository: not a directory"),
        (["--image", "nosuch"], "--image 'nosuch': no such image under images/ (known: demo)"),
    ],
)
def test_unusable_input_exits_2(tmp_path: Path, args: list[str], expected: str) -> None:
    root = example(tmp_path)
    result = layering("--repo", str(root), *args)
    assert result.returncode == 2
    assert result.stderr.startswith(f"layering lint: {expected}")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_empty_directory_is_unusable(tmp_path: Path) -> None:
    result = layering("--repo", str(tmp_path))
    assert result.returncode == 2
    assert "has neither images/ nor clusters/" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_json_output(tmp_path: Path) -> None:
    root = example(
        tmp_path, **{"images@demo@Containerfile": GOOD.replace(" && ostree container commit", "")}
    )
    result = layering("--repo", str(root), "--format", "json")
    assert result.returncode == 1
    assert json.loads(result.stdout) == [
        {
            "id": "LAY003",
            "severity": "error",
            "path": "images/demo/Containerfile",
            "line": 3,
            "message": "the last RUN of the final stage does not end with `ostree container "
            "commit` (or `bootc container lint`); append `&& ostree container commit` to it",
        }
    ]


def test_github_annotations(tmp_path: Path) -> None:
    root = example(
        tmp_path,
        **{
            "images@demo@Containerfile": GOOD.replace("tmux", "libreswan"),
            "images@Bad_Name@Containerfile": GOOD,
        },
    )
    result = layering("--repo", str(root), "--format", "github")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "::error file=images/Bad_Name,title=LAY006::image name must be a DNS label "
        "(a-z, 0-9, '-', at most 63)"
    )
    assert lines[1].startswith(
        "::warning file=images/demo/Containerfile,line=3,title=LAY005::installs libreswan"
    )
    assert len(lines) == 2


def test_waived_findings_are_counted_not_shown(tmp_path: Path) -> None:
    root = example(
        tmp_path,
        **{
            "images@demo@Containerfile": GOOD.replace("tmux", "https://e.com/x.rpm"),
            "images@demo@image.yaml": "allow:\n  - rule: LAY007\n    reason: GPG-checked\n",
        },
    )
    result = layering("--repo", str(root), "--image", "demo")
    assert result.returncode == 0, result.stdout
    assert result.stdout.strip() == "0 errors, 0 warnings in 1 image (1 waived in image.yaml)"


def test_containerfile_that_is_a_directory(tmp_path: Path) -> None:
    root = example(tmp_path)
    (root / "images/demo/Containerfile").unlink()
    (root / "images/demo/Containerfile").mkdir()
    result = layering("--repo", str(root))
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert "images/demo/Containerfile: LAY006 error: missing" in result.stdout
