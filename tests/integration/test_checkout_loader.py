"""CheckoutLoader on a worker's mirror (adapters/source.py): one open repository per checkout,
or, with `keep_mirror` (a build worker process's loader), one kept across checkouts. The kept
one reads a commit fetched after it was opened, starts afresh after a failed checkout, and
notices a mirror replaced on disk. Real bare repositories on disk."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.adapters import git as gitadapter
from pipeline.adapters import source
from pipeline.core.errors import PermanentError
from tests.plugins.gitrepos import GitopsRepo


def loader(gitops: GitopsRepo, workdir: Path, *, keep: bool) -> source.CheckoutLoader:
    return source.CheckoutLoader(workdir=workdir, repo_url=gitops.origin.as_uri(), keep_mirror=keep)


def containerfile(
    checkouts: source.CheckoutLoader, mirror: Path, commit: str, image: str = "htop"
) -> str:
    with checkouts.checkout(mirror, image=image, commit_sha=commit) as loaded:
        assert loaded.repository.images[image].name == image
        return (loaded.context / "Containerfile").read_text()


@pytest.mark.parametrize("keep", [True, False])
def test_a_commit_pushed_later_is_fetched_and_checked_out(
    example_repo: GitopsRepo, tmp_path: Path, keep: bool
) -> None:
    checkouts = loader(example_repo, tmp_path / "work", keep=keep)
    mirror = gitadapter.mirror_path(tmp_path / "work", example_repo.origin.as_uri())
    first = containerfile(checkouts, mirror, example_repo.head)
    example_repo.write("images/htop/Containerfile", first + "RUN echo second\n")
    second = example_repo.commit("htop: second")
    example_repo.push()
    assert containerfile(checkouts, mirror, second).endswith("RUN echo second\n")
    assert containerfile(checkouts, mirror, second, image="firewalld").startswith("FROM")
    checkouts.close()


def test_the_kept_mirror_is_one_repository_across_checkouts(
    example_repo: GitopsRepo, tmp_path: Path
) -> None:
    checkouts = loader(example_repo, tmp_path / "work", keep=True)
    mirror = gitadapter.mirror_path(tmp_path / "work", example_repo.origin.as_uri())
    containerfile(checkouts, mirror, example_repo.head)
    kept = checkouts._kept
    containerfile(checkouts, mirror, example_repo.head, image="firewalld")
    assert kept is not None
    assert checkouts._kept is kept
    checkouts.close()
    assert checkouts._kept is None


def test_a_failed_checkout_opens_the_kept_mirror_afresh(
    example_repo: GitopsRepo, tmp_path: Path
) -> None:
    checkouts = loader(example_repo, tmp_path / "work", keep=True)
    mirror = gitadapter.mirror_path(tmp_path / "work", example_repo.origin.as_uri())
    containerfile(checkouts, mirror, example_repo.head)
    with pytest.raises(PermanentError, match="is not in"):
        containerfile(checkouts, mirror, "f" * 40)
    assert checkouts._kept is None
    assert containerfile(checkouts, mirror, example_repo.head).startswith("FROM")
    checkouts.close()


def test_a_replaced_mirror_is_opened_again(example_repo: GitopsRepo, tmp_path: Path) -> None:
    checkouts = loader(example_repo, tmp_path / "work", keep=True)
    mirror = gitadapter.mirror_path(tmp_path / "work", example_repo.origin.as_uri())
    containerfile(checkouts, mirror, example_repo.head)
    shutil.rmtree(mirror)  # e.g. the workdir wiped; the next checkout clones it again
    assert containerfile(checkouts, mirror, example_repo.head).startswith("FROM")
    assert mirror.is_dir()
    checkouts.close()
