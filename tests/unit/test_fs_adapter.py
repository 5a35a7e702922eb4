from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.adapters import fs
from pipeline.core.errors import InputError


def test_symlinked_containerfile_is_refused(tmp_path: Path) -> None:
    (tmp_path / "images" / "evil").mkdir(parents=True)
    (tmp_path / "images" / "evil" / "Containerfile").symlink_to("/etc/passwd")
    with pytest.raises(InputError, match=r"images/evil/Containerfile: is a symbolic link"):
        fs.load(tmp_path)


def test_not_a_repository(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="neither images/ nor clusters/"):
        fs.load(tmp_path)
    with pytest.raises(InputError, match="not a directory"):
        fs.load(tmp_path / "missing")
