"""Real Git repositories for tests: a work tree holding images/ and clusters/ with a bare
`origin`, built with GitPython (registered in tests/conftest.py).

    def test_x(gitops_repo: GitopsRepo) -> None:
        gitops_repo.add_image("firewalld")
        gitops_repo.add_cluster("nonprod", pools={"worker": "firewalld"})
        first = gitops_repo.commit("seed")
        gitops_repo.write("images/firewalld/Containerfile", "...")
        second = gitops_repo.commit("change")
        gitops_repo.push()                      # main -> origin (bare, `gitops_repo.origin`)

`example_repo` is the same with two images and clusters nonprod/prod already committed and
pushed. Fixtures need only `git` on PATH.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import git
import pytest
import yaml

from tests.conftest import require_tools

BASE_REPOSITORY = "quay.io/openshift-release-dev/ocp-v4.0-art-dev"
REGISTRY = "registry.example.com/layering"
DEFAULT_BRANCH = "main"


def digest(char: str) -> str:
    """A well-formed sha256 digest made of one repeated hex character."""
    return "sha256:" + char * 64


def containerfile(package: str = "htop") -> str:
    return (
        f"FROM {BASE_REPOSITORY}\n"
        f"RUN rpm-ostree install {package} && \\\n"
        "    ostree container commit\n"
    )


def cluster_yaml(
    *,
    environment: str = "nonprod",
    base_digest: str = digest("a"),
    pools: Mapping[str, str] | None = None,
    registry: str = REGISTRY,
    promotes_from: str | None = None,
    soak: str = "0s",
) -> str:
    document: dict[str, object] = {
        "environment": environment,
        "baseImage": f"{BASE_REPOSITORY}@{base_digest}",
        "registry": registry,
        "pools": dict(pools or {}),
        "promotesFrom": promotes_from,
        "soak": soak,
    }
    return yaml.safe_dump(document, sort_keys=False)


class GitopsRepo:
    """A work tree with a bare `origin`; paths are relative to the work tree."""

    def __init__(self, path: Path, origin: Path, *, branch: str = DEFAULT_BRANCH) -> None:
        self.path = path
        self.origin = origin
        git.Repo.init(origin, bare=True, initial_branch=branch)
        self.repo = git.Repo.init(path, initial_branch=branch)
        with self.repo.config_writer() as config:
            config.set_value("user", "name", "Layering Tests")
            config.set_value("user", "email", "tests@layering.invalid")
            config.set_value("commit", "gpgsign", "false")
        self.repo.create_remote("origin", origin.as_uri())

    @property
    def head(self) -> str:
        return self.repo.head.commit.hexsha

    @property
    def branch(self) -> str:
        return self.repo.active_branch.name

    def write(self, path: str, text: str | bytes) -> Path:
        target = self.path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            target.write_bytes(text)
        else:
            target.write_text(text)
        return target

    def remove(self, path: str) -> None:
        """Remove a file or a whole directory."""
        target = self.path / path
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()

    def commit(self, message: str = "change") -> str:
        """Stage everything (additions and removals) and commit; returns the commit sha."""
        self.repo.git.add("-A")
        self.repo.git.commit("-m", message, "--allow-empty", "--no-verify")
        return self.head

    def add_image(
        self,
        name: str,
        *,
        package: str = "htop",
        build_args: Mapping[str, str] | None = None,
        files: Mapping[str, str] | None = None,
    ) -> None:
        self.write(f"images/{name}/Containerfile", containerfile(package))
        if build_args is not None:
            self.write(f"images/{name}/image.yaml", yaml.safe_dump({"buildArgs": dict(build_args)}))
        for relative, text in (files or {}).items():
            self.write(f"images/{name}/{relative}", text)

    def add_cluster(self, name: str, **settings: Any) -> None:
        """Write clusters/<name>/cluster.yaml; keywords as cluster_yaml() takes them."""
        self.write(f"clusters/{name}/cluster.yaml", cluster_yaml(**settings))

    def update_cluster(self, name: str, **fields: Any) -> None:
        """Change keys of an existing cluster.yaml, spelled as in the file (baseImage=...)."""
        path = f"clusters/{name}/cluster.yaml"
        document = yaml.safe_load((self.path / path).read_text())
        document.update(fields)
        self.write(path, yaml.safe_dump(document, sort_keys=False))

    def checkout(self, branch: str, *, create: bool = False, start: str | None = None) -> None:
        if create:
            self.repo.git.checkout("-b", branch, *([start] if start else []))
        else:
            self.repo.git.checkout(branch)

    def reset_hard(self, rev: str) -> None:
        self.repo.git.reset("--hard", rev)

    def push(self, branch: str | None = None, *, force: bool = False) -> None:
        """Push a branch (default: the current one) to the bare origin; raises on rejection."""
        name = branch or self.branch
        refspec = f"{'+' if force else ''}refs/heads/{name}:refs/heads/{name}"
        self.repo.remote("origin").push(refspec).raise_if_error()


def seed_example(gitops: GitopsRepo) -> str:
    """Two images, nonprod (worker: firewalld, infra: htop) and prod (worker: firewalld)."""
    gitops.add_image("firewalld", package="firewalld")
    gitops.add_image("htop", build_args={"EPEL": "9"})
    gitops.add_cluster(
        "nonprod", environment="nonprod", pools={"worker": "firewalld", "infra": "htop"}
    )
    gitops.add_cluster(
        "prod",
        environment="prod",
        base_digest=digest("b"),
        pools={"worker": "firewalld"},
        promotes_from="nonprod",
        soak="24h",
    )
    gitops.write("README.md", "example gitops repository\n")
    return gitops.commit("seed")


@pytest.fixture
def gitops_repo(tmp_path: Path) -> Iterator[GitopsRepo]:
    require_tools("git")
    gitops = GitopsRepo(tmp_path / "work", tmp_path / "origin.git")
    yield gitops
    gitops.repo.close()


@pytest.fixture
def example_repo(gitops_repo: GitopsRepo) -> GitopsRepo:
    seed_example(gitops_repo)
    gitops_repo.push()
    return gitops_repo
