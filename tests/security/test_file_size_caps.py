"""Each repository file kind has a size cap (LAYERING_REPO_CONTAINERFILE_MAX_BYTES for
Containerfiles, LAYERING_REPO_YAML_MAX_BYTES for cluster.yaml, image.yaml and MachineConfigs).
A file over its cap is a configuration problem naming the file, its size, the cap and the
setting; the adapters look at the size first (`stat`, `git cat-file` object size) and do not read
an oversized file into memory (measured with tracemalloc), whether it comes from a checkout or a
real Git repository."""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from pipeline.adapters import environment, fs
from pipeline.adapters import git as gitadapter
from pipeline.core import lint, promotion, repo, repo_limits
from pipeline.core.settings import Settings
from tests.plugins.gitrepos import GitopsRepo, cluster_yaml

T = TypeVar("T")
KiB = 1024
MiB = 1024 * KiB
YAML_SETTING = "LAYERING_REPO_YAML_MAX_BYTES"
CONTAINERFILE_SETTING = "LAYERING_REPO_CONTAINERFILE_MAX_BYTES"
DIGEST = "sha256:" + "1" * 64
CONTAINERFILE = b"ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN ostree container commit\n"
CLUSTER = (
    "environment: nonprod\n"
    f"baseImage: quay.io/openshift-release-dev/ocp-v4.0-art-dev@{DIGEST}\n"
    "registry: registry.example.com/layering\n"
    "pools:\n  worker: demo\n"
).encode()
# (path, setting) of each kind of file the repository model reads
KINDS = {
    "Containerfile": ("images/demo/Containerfile", CONTAINERFILE_SETTING),
    "image.yaml": ("images/demo/image.yaml", YAML_SETTING),
    "cluster.yaml": ("clusters/nonprod/cluster.yaml", YAML_SETTING),
    "MachineConfig": ("clusters/nonprod/machineconfigs/50-big.yaml", YAML_SETTING),
}


def padded(start: bytes, size: int) -> bytes:
    """`start` followed by comment lines up to exactly `size` bytes (valid for both kinds)."""
    line = b"# " + b"x" * 77 + b"\n"
    body = start + line * ((size - len(start)) // len(line) + 1)
    return body[:size]


def honest_files() -> dict[str, bytes]:
    return {"images/demo/Containerfile": CONTAINERFILE, "clusters/nonprod/cluster.yaml": CLUSTER}


def peak_memory(call: Callable[[], T]) -> tuple[T, int]:
    tracemalloc.start()
    try:
        result = call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


def test_defaults_and_settings() -> None:
    settings = Settings()
    assert settings.repo_containerfile_max_bytes == 256 * KiB
    assert settings.repo_yaml_max_bytes == 256 * KiB
    assert repo_limits.from_settings(settings) == repo_limits.DEFAULT_CAPS
    loaded = environment.load_settings(repo_yaml_max_bytes=4096, repo_containerfile_max_bytes=8192)
    assert repo_limits.from_settings(loaded) == repo_limits.FileCaps(containerfile=8192, yaml=4096)


@pytest.mark.parametrize("kind", KINDS)
def test_file_over_its_cap_is_a_problem_naming_size_cap_and_setting(kind: str) -> None:
    path, setting = KINDS[kind]
    cap = 256 * KiB
    files = honest_files()
    start = files.get(path, b"# start\n")
    files[path] = padded(start, cap + 1)
    repository = repo.parse_files(files)
    problems = [p for p in repository.problems if p.path == path]
    assert len(problems) == 1, [str(p) for p in repository.problems]
    text = str(problems[0])
    assert text.startswith(f"{path}: ")
    for part in (f"is {cap + 1} bytes", f"more than the {cap} allowed", setting):
        assert part in text, text
    # the file counts as unreadable, not as missing, and the lint says so once
    assert not [p for p in repository.problems if "missing" in p.message]
    findings = [f for f in lint.report(repository).errors if f.path == path]
    assert [f.id for f in findings] == ["LAY006"]


@pytest.mark.parametrize("kind", KINDS)
def test_file_at_its_cap_is_read(kind: str) -> None:
    path, _ = KINDS[kind]
    files = honest_files()
    files[path] = padded(files.get(path, b"# start\n"), 256 * KiB)
    assert [p for p in repo.parse_files(files).problems if p.path == path] == []


def test_oversized_machineconfig_refuses_the_promotion_and_the_gate() -> None:
    """An oversized MachineConfig is never read, so nothing can show it does not set
    osImageURL: the promotion (and the gate, which plans it) refuses, naming the file."""
    path = "clusters/nonprod/machineconfigs/99-zzz.yaml"
    cluster = CLUSTER.replace(b"pools:\n  worker: demo\n", b"pools: {}\n")
    listing = repo.TreeListing(
        {}, ["nonprod"], {"clusters/nonprod/cluster.yaml": cluster}, oversized={path: 300 * KiB}
    )
    planned = promotion.plan(
        repo.parse(listing),
        environment="nonprod",
        source_commit="1" * 40,
        lookups={},
        verifications={},
        now=0.0,
    )
    assert planned.refused
    reasons = [refusal.reason for refusal in planned.refusals]
    assert any(path in reason and YAML_SETTING in reason for reason in reasons), reasons


def test_caps_come_from_the_listing() -> None:
    caps = repo_limits.FileCaps(containerfile=32, yaml=1024)
    listing = repo.TreeListing({"demo": None}, ["nonprod"], honest_files(), caps=caps, oversized={})
    problems = [str(p) for p in repo.parse(listing).problems]
    assert problems == [
        f"images/demo/Containerfile: is {len(CONTAINERFILE)} bytes, more than the 32 allowed "
        f"for a Containerfile ({CONTAINERFILE_SETTING}); make it smaller or raise the setting"
    ]


def test_directory_adapter_does_not_read_an_oversized_file(tmp_path: Path) -> None:
    """A 256 MiB (sparse) MachineConfig in a checkout: `stat` first, never read."""
    for relative, content in honest_files().items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(content)
    big = tmp_path / KINDS["MachineConfig"][0]
    big.parent.mkdir(parents=True)
    with big.open("wb") as handle:
        handle.truncate(256 * MiB)
    listing, peak = peak_memory(lambda: fs.listing(tmp_path))
    assert peak < 8 * MiB, f"{peak / MiB:.1f} MiB"
    assert listing.oversized == {KINDS["MachineConfig"][0]: 256 * MiB}
    assert KINDS["MachineConfig"][0] not in listing.files
    problems = [str(p) for p in repo.parse(listing).problems]
    assert problems == [
        f"{KINDS['MachineConfig'][0]}: is {256 * MiB} bytes, more than the {256 * KiB} allowed "
        f"for a YAML file ({YAML_SETTING}); make it smaller or raise the setting"
    ]


def test_directory_adapter_takes_the_caps_it_is_given(tmp_path: Path) -> None:
    for relative, content in honest_files().items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(content)
    caps = repo_limits.FileCaps(containerfile=32, yaml=100)
    listing = fs.listing(tmp_path, caps=caps)
    assert listing.oversized == {
        "images/demo/Containerfile": len(CONTAINERFILE),
        "clusters/nonprod/cluster.yaml": len(CLUSTER),
    }
    assert listing.caps == caps


def test_git_adapter_checks_the_object_size_before_reading(gitops_repo: GitopsRepo) -> None:
    """A 64 MiB Containerfile and a 64 MiB cluster.yaml committed to a real repository: the
    listing asks Git for each blob's size and reads neither."""
    gitops_repo.write("images/demo/Containerfile", padded(CONTAINERFILE, 64 * MiB))
    gitops_repo.write("clusters/nonprod/cluster.yaml", padded(CLUSTER, 64 * MiB))
    gitops_repo.write("clusters/other/cluster.yaml", cluster_yaml(pools={"worker": "demo"}))
    commit = gitops_repo.commit("oversized files")
    with gitadapter.GitRepo.open(gitops_repo.path) as git_repo:
        listing, peak = peak_memory(lambda: git_repo.listing(commit))
    assert peak < 8 * MiB, f"{peak / MiB:.1f} MiB"
    assert listing.oversized == {
        "images/demo/Containerfile": 64 * MiB,
        "clusters/nonprod/cluster.yaml": 64 * MiB,
    }
    assert "clusters/other/cluster.yaml" in listing.files
    problems = {p.path: str(p) for p in repo.parse(listing).problems}
    assert CONTAINERFILE_SETTING in problems["images/demo/Containerfile"]
    assert YAML_SETTING in problems["clusters/nonprod/cluster.yaml"]


def test_git_adapter_takes_the_caps_it_is_given(gitops_repo: GitopsRepo) -> None:
    gitops_repo.write("images/demo/Containerfile", CONTAINERFILE)
    gitops_repo.write("clusters/nonprod/cluster.yaml", CLUSTER)
    commit = gitops_repo.commit("honest files")
    caps = repo_limits.FileCaps(containerfile=32, yaml=1 * MiB)
    with gitadapter.GitRepo.open(gitops_repo.path, caps=caps) as git_repo:
        listing = git_repo.listing(commit)
    assert listing.oversized == {"images/demo/Containerfile": len(CONTAINERFILE)}
    assert listing.caps == caps


LAYERING = Path(sys.executable).with_name("layering")


def test_layering_lint_names_the_cap_and_honours_the_setting(tmp_path: Path) -> None:
    for relative, content in honest_files().items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(content)
    (tmp_path / "images/demo/Containerfile").write_bytes(padded(CONTAINERFILE, 300 * KiB))
    command = [str(LAYERING)] if LAYERING.exists() else [sys.executable, "-m", "pipeline.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAYERING_")}

    def lint_with(extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, "lint", "--repo", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**env, **extra},
        )

    refused = lint_with({})
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert (
        f"images/demo/Containerfile: LAY006 error: is {300 * KiB} bytes, more than the "
        f"{256 * KiB} allowed for a Containerfile ({CONTAINERFILE_SETTING})" in refused.stdout
    )
    allowed = lint_with({CONTAINERFILE_SETTING: str(1 * MiB)})
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
