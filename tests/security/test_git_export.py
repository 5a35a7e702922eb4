"""A build context is written from the repository's objects (adapters/git_export.py), not by
`git archive` + tar: what tarfile's "data" filter refused stays refused. Hostile trees are
built with Git's plumbing (hash-object, mktree, commit-tree), as a fork could push them: names
`..`, links out of the checkout (absolute, relative, and through another link), a
Containerfile over its cap; honest ones come out as `git archive` + tar gave them (modes,
contents, times), with an executable bit, an empty directory and a large file streamed."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from pipeline.adapters import git as gitadapter
from pipeline.adapters import git_export
from pipeline.core import repo_limits
from pipeline.core.errors import PermanentError
from tests.conftest import require_tools

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
IMAGE = "images/demo"
ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
    "GIT_COMMITTER_DATE": "1700000000 +0000",
}


class Objects:
    """A bare repository written object by object."""

    def __init__(self, path: Path) -> None:
        require_tools("git")
        self.path = path
        self.git("init", "-q", "--bare", str(path))

    def git(self, *args: str, stdin: bytes = b"") -> str:
        result = subprocess.run(
            ["git", "-C", str(self.path), *args] if args[0] != "init" else ["git", *args],
            input=stdin,
            capture_output=True,
            env=ENV,
            check=True,
        )
        return result.stdout.decode().strip()

    def blob(self, data: bytes) -> str:
        return self.git("hash-object", "-w", "--stdin", stdin=data)

    def tree(self, entries: dict[str, tuple[str, str]]) -> str:
        """name -> (mode, sha); a tree's type follows from its mode."""
        lines = []
        for name, (mode, sha) in entries.items():
            kind = {"040000": "tree", "160000": "commit"}.get(mode, "blob")
            lines.append(f"{mode} {kind} {sha}\t{name}\n")
        return self.git("mktree", "--missing", stdin="".join(lines).encode())

    def commit(self, image: dict[str, tuple[str, str]]) -> str:
        """A commit whose images/demo holds `image`."""
        images = self.tree({"demo": ("040000", self.tree(image))})
        root = self.tree({"images": ("040000", images)})
        return self.git("commit-tree", root, "-m", "demo")


@pytest.fixture
def objects(tmp_path: Path) -> Objects:
    return Objects(tmp_path / "repo.git")


def containerfile(objects: Objects) -> tuple[str, str]:
    return ("100644", objects.blob(b"FROM x\nRUN true\n"))


def export(objects: Objects, commit: str, destination: Path, **caps: int) -> Path | None:
    destination.mkdir(exist_ok=True)
    with gitadapter.GitRepo.open(objects.path, caps=repo_limits.FileCaps(**caps)) as opened:
        return opened.export(commit, IMAGE, destination)


def refused(objects: Objects, commit: str, tmp_path: Path) -> str:
    """The refusal's message; nothing was written beside the (fresh) destination."""
    before = {p.name for p in tmp_path.iterdir()}
    destination = f"out-{len(before)}"
    with pytest.raises(PermanentError) as caught:
        export(objects, commit, tmp_path / destination)
    assert {p.name for p in tmp_path.iterdir()} == {*before, destination}
    return str(caught.value)


@pytest.mark.parametrize(
    ("target", "why"),
    [
        (b"../../../escape", "outside"),
        (b"/etc/passwd", "absolute"),
        (b"../../../../../../../../../../etc", "outside"),
    ],
)
def test_a_link_out_of_the_checkout_is_refused(
    objects: Objects, tmp_path: Path, target: bytes, why: str
) -> None:
    commit = objects.commit(
        {"Containerfile": containerfile(objects), "link": ("120000", objects.blob(target))}
    )
    message = refused(objects, commit, tmp_path)
    assert f"{IMAGE}/link" in message
    assert why in message


def test_a_link_out_through_another_link_is_refused(objects: Objects, tmp_path: Path) -> None:
    # `a` looks inside when read alone (images/demo/b/../.. is images/), but `b` is itself a
    # link to images/, so `a` really leads to the checkout's parent: resolved once all is written
    commit = objects.commit(
        {
            "Containerfile": containerfile(objects),
            "a": ("120000", objects.blob(b"b/../..")),
            "b": ("120000", objects.blob(b"..")),
        }
    )
    assert f"{IMAGE}/a: symlink leads outside" in refused(objects, commit, tmp_path)


@pytest.mark.parametrize("name", ["..", "."])
def test_a_dot_name_is_refused(objects: Objects, tmp_path: Path, name: str) -> None:
    commit = objects.commit(
        {"Containerfile": containerfile(objects), name: ("100644", objects.blob(b"x"))}
    )
    assert f"entry named {name!r}" in refused(objects, commit, tmp_path)


def test_a_containerfile_over_its_cap_is_refused_unread(objects: Objects, tmp_path: Path) -> None:
    big = ("100644", objects.blob(b"FROM x\n" + b"# pad\n" * 1000))
    commit = objects.commit({"Containerfile": big})
    with pytest.raises(PermanentError) as caught:
        export(objects, commit, tmp_path / "out", containerfile=1024)
    assert f"{IMAGE}/Containerfile is 6007 bytes" in str(caught.value)
    assert repo_limits.CONTAINERFILE_SETTING in str(caught.value)
    assert not (tmp_path / "out" / IMAGE / "Containerfile").exists()


def test_links_inside_are_kept_as_links(objects: Objects, tmp_path: Path) -> None:
    commit = objects.commit(
        {
            "Containerfile": containerfile(objects),
            "conf": ("040000", objects.tree({"a.conf": ("100644", objects.blob(b"a=1\n"))})),
            "link": ("120000", objects.blob(b"conf/a.conf")),
            "up": ("120000", objects.blob(b"../demo/conf")),
        }
    )
    context = export(objects, commit, tmp_path / "out")
    assert context is not None
    assert os.readlink(context / "link") == "conf/a.conf"
    assert os.readlink(context / "up") == "../demo/conf"
    assert (context / "link").read_bytes() == b"a=1\n"


def test_modes_empty_directories_and_a_large_file(objects: Objects, tmp_path: Path) -> None:
    large = os.urandom(3 * 1024 * 1024 + 7)  # over every cap; not a file the model reads
    commit = objects.commit(
        {
            "Containerfile": containerfile(objects),
            "run.sh": ("100755", objects.blob(b"#!/bin/sh\necho hi\n")),
            "empty": ("040000", objects.tree({})),
            "vendor": ("160000", "1" * 40),  # a submodule: an empty directory, as git archive
            "blob.bin": ("100644", objects.blob(large)),
        }
    )
    context = export(objects, commit, tmp_path / "out")
    assert context is not None
    assert (context / "run.sh").stat().st_mode & 0o777 == 0o755
    assert (context / "Containerfile").stat().st_mode & 0o777 == 0o644
    assert list((context / "empty").iterdir()) == []
    assert (context / "empty").is_dir()
    assert list((context / "vendor").iterdir()) == []
    assert (context / "blob.bin").read_bytes() == large
    assert int((context / "blob.bin").stat().st_mtime) == 1700000000


def test_the_repository_reads_on_after_an_export_and_a_refusal(
    objects: Objects, tmp_path: Path
) -> None:
    """A refusal midway leaves the cat-file pipe in step: the next reads answer correctly."""
    bad = objects.commit(
        {"big.bin": ("100644", objects.blob(b"x" * 100_000)), "z": ("120000", objects.blob(b"/"))}
    )
    good = objects.commit({"Containerfile": containerfile(objects)})
    with gitadapter.GitRepo.open(objects.path) as opened:
        with pytest.raises(PermanentError):
            opened.export(bad, IMAGE, tmp_path / "bad")
        assert opened.read_file(good, f"{IMAGE}/Containerfile") == b"FROM x\nRUN true\n"
        assert opened.export(good, "images/none", tmp_path / "none") is None


def test_an_honest_tree_comes_out_as_git_archive_gave_it(objects: Objects, tmp_path: Path) -> None:
    commit = objects.commit(
        {
            "Containerfile": containerfile(objects),
            "files": (
                "040000",
                objects.tree(
                    {
                        "etc": ("040000", objects.tree({"x.conf": ("100644", objects.blob(b"x"))})),
                        "tool": ("100755", objects.blob(b"#!/bin/sh\n")),
                    }
                ),
            ),
            "link": ("120000", objects.blob(b"files/tool")),
        }
    )
    ours = export(objects, commit, tmp_path / "ours")
    archive = tmp_path / "archive.tar"
    objects.git("archive", "--format=tar", f"--output={archive}", commit, "--", IMAGE)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "tar", filter="data")
    assert ours is not None
    assert listing(ours) == listing(tmp_path / "tar" / IMAGE)


def listing(root: Path) -> list[tuple[str, int, str, int | None]]:
    """(path, mode, content or link target, mtime; a link's own time is not kept by tar)."""
    out: list[tuple[str, int, str, int | None]] = []
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if path.is_symlink():
            out.append((str(path.relative_to(root)), info.st_mode, os.readlink(path), None))
        else:
            content = path.read_text() if path.is_file() else ""
            out.append((str(path.relative_to(root)), info.st_mode, content, int(info.st_mtime)))
    return out


def test_a_deep_or_repeated_tree_is_bounded(
    objects: Objects, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = objects.tree({"f": ("100644", objects.blob(b"x"))})
    for _ in range(5):
        tree = objects.tree({"a": ("040000", tree), "b": ("040000", tree)})
    commit = objects.commit({"Containerfile": containerfile(objects), "d": ("040000", tree)})
    monkeypatch.setattr(git_export, "MAX_ENTRIES", 50)
    assert "more than 50 entries" in refused(objects, commit, tmp_path)
    monkeypatch.setattr(git_export, "MAX_ENTRIES", 10_000)
    monkeypatch.setattr(git_export, "MAX_DEPTH", 3)
    assert "deeper than 3 levels" in refused(objects, commit, tmp_path)
