"""Hostile repository content for tests: small YAML bombs (aliases, merge keys, a complex key)
and a legal commit too large to plan and lint under a lowered memory or CPU-time limit, made
with Git plumbing so that it costs kilobytes on disk. Used by tests/security/."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _nested_lists(levels: int, width: int, indent: str = "") -> list[str]:
    """Anchors a0..a<levels-1>: each a list of `width` aliases of the one before."""
    lines = [f"{indent}- &a0 [" + ", ".join(["xx"] * width) + "]"]
    for n in range(1, levels):
        lines.append(f"{indent}- &a{n} [" + ", ".join([f"*a{n - 1}"] * width) + "]")
    return lines


def machineconfig_bomb(levels: int = 9, width: int = 9) -> str:
    """A MachineConfig (~650 bytes) whose `extensions` alias a width**levels nested list: lint
    turns each extension into a string, which PyYAML's shared references make exponential."""
    lines = [
        "apiVersion: machineconfiguration.openshift.io/v1",
        "kind: MachineConfig",
        "metadata:",
        "  name: 99-worker-bomb",
        "  labels: {machineconfiguration.openshift.io/role: worker}",
        "anchors:",
        *_nested_lists(levels, width, "  "),
        f"spec: {{extensions: [*a{levels - 1}]}}",
    ]
    return "\n".join(lines) + "\n"


def cluster_yaml_bomb(*, base_image: str, registry: str) -> str:
    """A cluster.yaml (~500 bytes) with nested merge keys and aliases under extra keys."""
    lines = [
        "environment: nonprod",
        f"baseImage: {base_image}",
        f"registry: {registry}",
        "pools: {worker: firewalld, infra: chrony}",
        "m0: &m0 {k0: v, k1: v, k2: v}",
        "m1: &m1 {<<: [*m0, *m0, *m0], k3: *m0, k4: *m0}",
        "m2: &m2 {<<: [*m1, *m1, *m1], k5: *m1, k6: *m1}",
        "m3: &m3 {<<: [*m2, *m2, *m2], k7: *m2, k8: *m2}",
        "lists:",
        *_nested_lists(6, 6, "  "),
        "<<: [*m3, *m3]",
    ]
    return "\n".join(lines) + "\n"


def image_yaml_bomb() -> str:
    """An image.yaml (~300 bytes): merge keys, aliases and a complex mapping key."""
    lines = [
        "b0: &b0 {A: '1', B: '2'}",
        "b1: &b1 {<<: [*b0, *b0], C: *b0}",
        "b2: &b2 {<<: [*b1, *b1], D: *b1}",
        "buildArgs:",
        "  <<: *b2",
        "? [complex, key]",
        ": *b2",
    ]
    return "\n".join(lines) + "\n"


def _git(repository: Path, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["git", "-C", str(repository), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def many_images_commit(
    repository: Path, parent: str, *, count: int, containerfile: str, ref: str
) -> str:
    """A commit on top of `parent` in `repository` (bare or not) adding `count` images
    (`images/m00000`...) that share one Containerfile: legal, and each is parsed and linted.
    Git stores one blob and one tree for them all. Points `ref` at it; returns its sha."""
    blob = _git(repository, "hash-object", "-w", "--stdin", stdin=containerfile)
    image_tree = _git(repository, "mktree", stdin=f"100644 blob {blob}\tContainerfile\n")
    root = _git(repository, "ls-tree", parent)
    images_line = next(line for line in root.splitlines() if line.endswith("\timages"))
    existing = _git(repository, "ls-tree", images_line.split()[2])
    added = "".join(f"040000 tree {image_tree}\tm{n:05d}\n" for n in range(count))
    images_tree = _git(repository, "mktree", stdin=existing + "\n" + added)
    entries = [
        line if not line.endswith("\timages") else f"040000 tree {images_tree}\timages"
        for line in root.splitlines()
    ]
    root_tree = _git(repository, "mktree", stdin="\n".join(entries) + "\n")
    commit = _git(
        repository,
        "-c",
        "user.name=Mallory",
        "-c",
        "user.email=mallory@example.invalid",
        "commit-tree",
        root_tree,
        "-p",
        parent,
        "-m",
        f"{count} images",
    )
    _git(repository, "update-ref", ref, commit)
    return commit
