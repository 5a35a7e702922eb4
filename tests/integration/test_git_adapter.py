"""adapters.git.GitRepo against real repositories: object reads, tree diff, ancestry, mirror."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipeline.adapters import fs
from pipeline.adapters import git as gitadapter
from pipeline.core.errors import InputError, PermanentError, TemporaryError
from tests import services
from tests.plugins.gitrepos import GitopsRepo


def git_diff(path: Path, a: str, b: str) -> list[str]:
    out = subprocess.run(
        ["git", "-C", str(path), "diff", "--no-renames", "--name-only", a, b],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(out.split())


def test_changed_paths_agree_with_git_diff(example_repo: GitopsRepo) -> None:
    commits = [example_repo.head]
    example_repo.write("images/htop/files/etc/motd", "hello\n")
    example_repo.write("docs/a/b/c.md", "deep\n")
    commits.append(example_repo.commit("add nested files"))
    (example_repo.path / "images/htop/Containerfile").chmod(0o700)
    example_repo.remove("docs/a")
    example_repo.write("docs/a", "a file where a directory was\n")
    (example_repo.path / "images/firewalld/link").symlink_to("Containerfile")
    commits.append(example_repo.commit("mode, file-for-directory, symlink"))
    example_repo.remove("images/htop")
    commits.append(example_repo.commit("remove a directory"))

    with gitadapter.GitRepo.open(example_repo.path) as git_repo:
        for a in commits:
            for b in commits:
                assert git_repo.changed_paths(a, b) == git_diff(example_repo.path, a, b), (a, b)
        assert git_repo.changed_paths(commits[0], commits[2], prefixes=("images",)) == [
            "images/firewalld/link",
            "images/htop/Containerfile",
            "images/htop/files/etc/motd",
        ]


def test_listing_matches_the_directory_adapter(example_repo: GitopsRepo) -> None:
    example_repo.write("images/htop/files/etc/motd", "hello\n")
    example_repo.write("clusters/prod/machineconfigs/99-layering-worker-os-image.yaml", "a: 1\n")
    example_repo.commit("more files")

    with gitadapter.GitRepo.open(example_repo.path) as git_repo:
        from_git = git_repo.listing("HEAD")
        partial = git_repo.listing("HEAD", images=["htop"], machineconfigs=False)
        assert git_repo.load("HEAD").images["htop"].settings.build_args == {"EPEL": "9"}
    from_disk = fs.listing(example_repo.path)

    assert dict(from_git.image_dirs) == dict(from_disk.image_dirs)
    assert sorted(from_git.cluster_dirs) == sorted(from_disk.cluster_dirs)
    assert dict(from_git.files) == dict(from_disk.files)
    assert partial.image_dirs == from_git.image_dirs
    assert sorted(partial.files) == [
        "clusters/nonprod/cluster.yaml",
        "clusters/prod/cluster.yaml",
        "images/htop/Containerfile",
        "images/htop/image.yaml",
    ]


def test_listing_of_a_commit_without_images_or_clusters(gitops_repo: GitopsRepo) -> None:
    gitops_repo.write("README.md", "empty\n")
    gitops_repo.commit("nothing yet")

    with gitadapter.GitRepo.open(gitops_repo.path) as git_repo:
        listing = git_repo.listing("HEAD")
        assert git_repo.image_trees("HEAD") == {}

    assert (dict(listing.image_dirs), list(listing.cluster_dirs), dict(listing.files)) == (
        {},
        [],
        {},
    )


def test_resolve_and_read(example_repo: GitopsRepo) -> None:
    example_repo.repo.create_tag("v1", message="annotated")
    head = example_repo.head

    with gitadapter.GitRepo.open(example_repo.path) as git_repo:
        assert git_repo.resolve("v1") == head
        assert git_repo.resolve(head[:10]) == head
        assert git_repo.resolve("main") == head
        assert git_repo.read_file("HEAD", "README.md") == b"example gitops repository\n"
        assert git_repo.read_file("HEAD", "missing") is None
        assert git_repo.image_trees("HEAD")["htop"] == example_repo.repo.git.rev_parse(
            "HEAD:images/htop"
        )
        with pytest.raises(InputError, match="unknown revision"):
            git_repo.resolve("HEAD:images")  # a tree, not a commit
        with pytest.raises(InputError, match="not a valid revision"):
            git_repo.resolve("a b")
        assert not git_repo.exists("nope")
        assert gitadapter.branch_commit(git_repo, "main") == head
        assert gitadapter.branch_commit(git_repo, "nope") is None
    assert gitadapter.head_commit(example_repo.path) == head


def test_ancestry_walks_past_the_in_process_limit(gitops_repo: GitopsRepo) -> None:
    first = gitops_repo.commit("root")
    for number in range(80):
        gitops_repo.write("n", str(number))
        gitops_repo.commit(f"commit {number}")
    last = gitops_repo.head
    gitops_repo.checkout("side", create=True, start=first)
    side = gitops_repo.commit("side")
    gitops_repo.repo.git.checkout("--orphan", "unrelated")
    unrelated = gitops_repo.commit("unrelated")

    with gitadapter.GitRepo.open(gitops_repo.path) as git_repo:
        assert git_repo.is_ancestor(first, last)
        assert git_repo.is_ancestor(last, last)
        assert not git_repo.is_ancestor(last, first)
        assert not git_repo.is_ancestor(side, last)
        assert not git_repo.is_ancestor(unrelated, last)
        assert git_repo.merge_base(side, last) == first
        assert git_repo.merge_base(unrelated, last) is None
        merge = git_repo.merge(last, unrelated)
        assert (merge.commit_sha, merge.unrelated) == (None, True)
        assert git_repo.merge(last, side).commit_sha is not None


def test_first_clones_racing_share_one_mirror(example_repo: GitopsRepo, tmp_path: Path) -> None:
    url = example_repo.origin.as_uri()
    mirror_path = tmp_path / "state" / "mirror.git"

    def clone_and_resolve(_: int) -> str:
        with gitadapter.GitRepo.ensure_mirror(mirror_path, url) as mirror:
            return mirror.resolve("main")

    with ThreadPoolExecutor(max_workers=6) as pool:
        heads = list(pool.map(clone_and_resolve, range(6)))
    assert heads == [example_repo.head] * 6
    assert sorted(p.name for p in mirror_path.parent.iterdir()) == [
        ".mirror.git.lock",
        "mirror.git",
    ]


def test_mirror_clone_and_fetch(example_repo: GitopsRepo, tmp_path: Path) -> None:
    url = example_repo.origin.as_uri()
    mirror_path = tmp_path / "state" / "mirror.git"

    with gitadapter.GitRepo.ensure_mirror(mirror_path, url) as mirror:
        assert mirror.bare
        assert mirror.resolve("main") == example_repo.head
    example_repo.write("images/htop/Containerfile", "FROM new\n")
    newer = example_repo.commit("newer")
    example_repo.push()
    example_repo.checkout("feature", create=True)
    feature = example_repo.commit("feature")
    example_repo.push()

    with gitadapter.GitRepo.ensure_mirror(mirror_path, url) as mirror:
        assert mirror.resolve("main") != newer
        mirror.fetch("main")
        assert mirror.resolve("main") == newer
        assert not mirror.exists("feature")
        mirror.fetch()
        assert mirror.resolve("refs/heads/feature") == feature
        with pytest.raises(PermanentError, match="couldn't find remote ref"):
            mirror.fetch("no-such-branch")
    assert sorted(p.name for p in mirror_path.parent.iterdir()) == [
        ".mirror.git.lock",
        "mirror.git",
    ]


def test_network_fault_is_temporary_and_hides_credentials(tmp_path: Path) -> None:
    url = f"http://layering:s3cr3t-token@127.0.0.1:{services.free_port()}/repo.git"

    with pytest.raises(TemporaryError) as raised:
        gitadapter.GitRepo.ensure_mirror(tmp_path / "mirror.git", url)

    assert "s3cr3t" not in str(raised.value)
    assert "http://***@127.0.0.1" in str(raised.value)
    assert not (tmp_path / "mirror.git").exists()


def test_missing_repository_is_permanent(tmp_path: Path) -> None:
    with pytest.raises(PermanentError) as raised:
        gitadapter.GitRepo.ensure_mirror(tmp_path / "m.git", (tmp_path / "none.git").as_uri())

    assert not isinstance(raised.value, TemporaryError)


def test_open_refuses_what_is_not_a_repository(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such directory"):
        gitadapter.GitRepo.open(tmp_path / "missing")
    with pytest.raises(InputError, match="not a Git repository"):
        gitadapter.GitRepo.open(tmp_path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://user:token@github.com/o/r.git", "https://***@github.com/o/r.git"),
        ("fatal: unable to access 'https://x-access-token:ghs_abc@h/r/'", "'https://***@h/r/'"),
        ("ssh://git@host/r and http://a@b/c", "ssh://***@host/r and http://***@b/c"),
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
        ("no url here", "no url here"),
    ],
)
def test_strip_credentials(text: str, expected: str) -> None:
    assert expected in gitadapter.strip_credentials(text)
