from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pipeline.adapters import fs
from pipeline.core import content_address


def test_tree_id_matches_git_write_tree(tmp_path: Path) -> None:
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "Containerfile").write_text("FROM x\n")
    (tmp_path / "sub" / "a.conf").write_bytes(b"\x00binary\xff")
    (tmp_path / "sub" / "deeper" / "run.sh").write_text("#!/bin/sh\n")
    (tmp_path / "sub" / "deeper" / "run.sh").chmod(0o755)
    (tmp_path / "sub-file").write_text("sorts between sub and sub/\n")
    (tmp_path / "link").symlink_to("sub/a.conf")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "add", "-A"], check=True)
    expected = subprocess.run(
        ["git", "-C", str(tmp_path), "write-tree"], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert fs.directory_tree_id(tmp_path) == expected


BASE = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("change", "same"),
    [
        ({}, True),
        ({"tree_id": "f" * 40}, False),
        ({"base_digest": "sha256:" + "b" * 64}, False),
        ({"build_args": {"X": "2"}}, False),
        ({"builder_version": "other"}, False),
    ],
)
def test_build_key_depends_on_each_input(change: dict[str, object], same: bool) -> None:
    inputs: dict[str, object] = {
        "tree_id": "e" * 40,
        "base_digest": BASE,
        "build_args": {"X": "1"},
        "builder_version": content_address.BUILDER_VERSION,
    }
    assert (
        content_address.build_key(**inputs) == content_address.build_key(**{**inputs, **change})
    ) is same  # type: ignore[arg-type]


def test_build_arg_order_does_not_matter() -> None:
    first = content_address.build_key(
        tree_id="e" * 40, base_digest=BASE, build_args={"A": "1", "B": "2"}
    )
    second = content_address.build_key(
        tree_id="e" * 40, base_digest=BASE, build_args={"B": "2", "A": "1"}
    )
    assert first == second
    assert len(content_address.tag(first)) == 20
