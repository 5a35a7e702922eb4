"""`layering plan` and history.plan_range on real Git repositories built with GitPython."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.adapters import git as gitadapter
from pipeline.core import changes, content_address
from pipeline.core.errors import InputError
from pipeline.flows import history
from tests.plugins.gitrepos import BASE_REPOSITORY, GitopsRepo, digest

ZERO = gitadapter.ZERO_SHA


@pytest.fixture
def git_repo(example_repo: GitopsRepo) -> Iterator[gitadapter.GitRepo]:
    with gitadapter.GitRepo.open(example_repo.path) as opened:
        yield opened


def pairs(plan: changes.Plan) -> list[tuple[str, str]]:
    return [(target.image, target.cluster) for target in plan.builds]


def tree_of(gitops: GitopsRepo, rev: str, image: str) -> str:
    return str(gitops.repo.git.rev_parse(f"{rev}:images/{image}"))


def test_one_commit_push_rebuilds_the_image_on_every_cluster_using_it(
    example_repo: GitopsRepo, git_repo: gitadapter.GitRepo
) -> None:
    before = example_repo.head
    example_repo.write("images/firewalld/Containerfile", "FROM x\nRUN true\n")
    after = example_repo.commit("firewalld: change")

    plan = history.plan_range(git_repo, before, after)

    assert pairs(plan) == [("firewalld", "nonprod"), ("firewalld", "prod")]
    assert plan.environments == ("nonprod", "prod")
    assert (plan.base, plan.head, plan.deleted_images) == (before, after, ())
    nonprod = plan.builds[0]
    assert nonprod.tree_id == tree_of(example_repo, after, "firewalld")
    assert nonprod.build_key == content_address.build_key(
        tree_id=nonprod.tree_id, base_digest=digest("a"), build_args={}
    )
    assert nonprod.pools == ("worker",)
    assert nonprod.image_ref == f"registry.example.com/layering/firewalld:{nonprod.build_key[:20]}"
    assert plan.builds[1].base_digest == digest("b")


def test_build_args_from_image_yaml_enter_the_key(
    example_repo: GitopsRepo, git_repo: gitadapter.GitRepo
) -> None:
    before = example_repo.head
    example_repo.write("images/htop/extra.conf", "x = 1\n")
    after = example_repo.commit("htop: add a file to the build context")

    (target,) = history.plan_range(git_repo, before, after).builds

    assert (target.image, target.cluster, target.build_args) == ("htop", "nonprod", {"EPEL": "9"})
    assert target.build_key == content_address.build_key(
        tree_id=tree_of(example_repo, after, "htop"),
        base_digest=digest("a"),
        build_args={"EPEL": "9"},
    )


def test_a_change_reverted_within_the_range_builds_nothing(
    example_repo: GitopsRepo, git_repo: gitadapter.GitRepo
) -> None:
    before = example_repo.head
    original = (example_repo.path / "images/htop/Containerfile").read_text()
    example_repo.write("images/htop/Containerfile", "FROM y\n")
    example_repo.commit("break")
    example_repo.write("images/htop/Containerfile", original)
    example_repo.write("README.md", "docs only\n")
    after = example_repo.commit("revert")

    plan = history.plan_range(git_repo, before, after)

    assert (plan.builds, plan.environments, plan.changed_images) == ((), (), ())


def test_new_branch_compares_with_the_merge_base_of_the_default_branch(
    example_repo: GitopsRepo, git_repo: gitadapter.GitRepo
) -> None:
    example_repo.write("images/firewalld/Containerfile", "FROM main-moved-on\n")
    example_repo.commit("main moves on")
    example_repo.checkout("feature", create=True, start="HEAD~1")
    example_repo.write("images/htop/Containerfile", "FROM feature\n")
    head = example_repo.commit("feature: htop")

    plan = history.plan_range(git_repo, ZERO, head, "main")

    assert pairs(plan) == [("htop", "nonprod")]
    assert plan.base == example_repo.repo.git.rev_parse("HEAD~1")
    assert "new branch" in plan.note


def test_new_branch_without_the_default_branch_counts_everything(
    example_repo: GitopsRepo, git_repo: gitadapter.GitRepo
) -> None:
    plan = history.plan_range(git_repo, ZERO, example_repo.head, "trunk")

    assert pairs(plan) == [("firewalld", "nonprod"), ("firewalld", "prod"), ("htop", "nonprod")]
    assert plan.base is None
    assert plan.environments == ("nonprod", "prod")
    assert "trunk not found" in plan.note


def test_first_push_of_the_default_branch_counts_everything(
    example_repo: GitopsRepo, git_repo: gitadapter.GitRepo
) -> None:
    plan = history.plan_range(git_repo, ZERO, example_repo.head, "main", branch="main")

    assert len(plan.builds) == 3


def test_new_branch_without_commits_of_its_own_builds_nothing(
    example_repo: GitopsRepo, git_repo: gitadapter.GitRepo
) -> None:
    plan = history.plan_range(git_repo, ZERO, example_repo.head, "main", branch="feature")

    assert plan.builds == ()
    assert plan.base == example_repo.head


def test_force_push_compares_with_the_merge_base_of_old_and_new_head(
    example_repo: GitopsRepo, git_repo: gitadapter.GitRepo
) -> None:
    seed = example_repo.head
    example_repo.write("images/firewalld/Containerfile", "FROM old-head\n")
    old_head = example_repo.commit("firewalld")
    example_repo.push()
    example_repo.reset_hard(seed)
    example_repo.write("images/htop/Containerfile", "FROM new-head\n")
    new_head = example_repo.commit("htop instead")
    example_repo.push(force=True)

    assert not git_repo.is_ancestor(old_head, new_head)
    plan = history.plan_range(git_repo, old_head, new_head)

    assert pairs(plan) == [("htop", "nonprod")]
    assert plan.base == seed
    assert "force push" in plan.note


def test_force_push_onto_unrelated_history_falls_back_to_the_default_branch(
    example_repo: GitopsRepo, git_repo: gitadapter.GitRepo
) -> None:
    seed = example_repo.head
    example_repo.repo.git.checkout("--orphan", "orphan")
    example_repo.write("images/firewalld/Containerfile", "FROM unrelated\n")
    orphan = example_repo.commit("unrelated history")

    plan = history.plan_range(git_repo, seed, orphan, "main")

    assert plan.base is None
    assert "no common history" in plan.note
    assert len(plan.builds) == 3


def test_deleted_image_builds_nothing_and_is_listed(
    example_repo: GitopsRepo, git_repo: gitadapter.GitRepo
) -> None:
    before = example_repo.head
    example_repo.remove("images/htop")
    example_repo.update_cluster("nonprod", pools={"worker": "firewalld"})
    after = example_repo.commit("drop htop")

    plan = history.plan_range(git_repo, before, after)

    assert plan.deleted_images == ("htop",)
    assert "htop" not in {target.image for target in plan.builds}
    assert plan.environments == ("nonprod",)
    assert plan.problems == ()


def test_deleted_image_still_in_a_pool_is_a_problem(
    example_repo: GitopsRepo, git_repo: gitadapter.GitRepo
) -> None:
    before = example_repo.head
    example_repo.remove("images/htop")
    after = example_repo.commit("drop htop, forget the pool")

    plan = history.plan_range(git_repo, before, after)

    assert (plan.builds, plan.deleted_images) == ((), ("htop",))
    assert plan.environments == ("nonprod",)
    assert [p.path for p in plan.problems] == ["clusters/nonprod/cluster.yaml"]
    assert "'htop' does not exist" in str(plan.problems[0])


def test_base_image_bump_of_one_cluster_rebuilds_all_its_images_only(
    example_repo: GitopsRepo, git_repo: gitadapter.GitRepo
) -> None:
    before = example_repo.head
    example_repo.update_cluster("nonprod", baseImage=f"{BASE_REPOSITORY}@{digest('c')}")
    after = example_repo.commit("nonprod: new base")

    plan = history.plan_range(git_repo, before, after)

    assert pairs(plan) == [("firewalld", "nonprod"), ("htop", "nonprod")]
    assert {target.base_digest for target in plan.builds} == {digest("c")}
    assert plan.environments == ("nonprod",)
    assert all("baseImage changed" in target.reason for target in plan.builds)
    old_key = content_address.build_key(
        tree_id=tree_of(example_repo, before, "firewalld"), base_digest=digest("a"), build_args={}
    )
    assert plan.builds[0].build_key != old_key


def test_pools_change_rebuilds_the_cluster_images_and_affects_its_environment(
    example_repo: GitopsRepo, git_repo: gitadapter.GitRepo
) -> None:
    before = example_repo.head
    example_repo.update_cluster("prod", pools={"worker": "firewalld", "infra": "htop"})
    after = example_repo.commit("prod: htop on infra")

    plan = history.plan_range(git_repo, before, after)

    assert pairs(plan) == [("firewalld", "prod"), ("htop", "prod")]
    assert plan.builds[1].build_args == {"EPEL": "9"}
    assert plan.environments == ("prod",)
    assert plan.changed_clusters == ("prod",)


def test_soak_change_builds_nothing(example_repo: GitopsRepo, git_repo: gitadapter.GitRepo) -> None:
    before = example_repo.head
    example_repo.update_cluster("prod", soak="48h")
    after = example_repo.commit("prod: soak longer")

    plan = history.plan_range(git_repo, before, after)

    assert (plan.builds, plan.environments, plan.changed_clusters) == ((), (), ("prod",))


def test_branch_deletion_builds_nothing(git_repo: gitadapter.GitRepo) -> None:
    plan = history.plan_range(git_repo, git_repo.resolve("HEAD"), ZERO)

    assert plan.builds == ()


@pytest.mark.parametrize("which", ["from", "to"])
def test_unknown_revision_is_an_input_error_naming_it(
    example_repo: GitopsRepo, git_repo: gitadapter.GitRepo, which: str
) -> None:
    revs = {"from": example_repo.head, "to": example_repo.head, which: "deadbeef" * 5}

    with pytest.raises(InputError, match="deadbeef"):
        history.plan_range(git_repo, revs["from"], revs["to"])


def test_unknown_from_can_fall_back_to_the_default_branch(
    example_repo: GitopsRepo, git_repo: gitadapter.GitRepo
) -> None:
    example_repo.checkout("feature", create=True)
    example_repo.write("images/htop/Containerfile", "FROM z\n")
    head = example_repo.commit("htop")

    plan = history.plan_range(git_repo, "deadbeef" * 5, head, "main", unknown_from="default-branch")

    assert pairs(plan) == [("htop", "nonprod")]
    assert "deadbeef" in plan.note


# -- the command line ---------------------------------------------------------------------------


def layering(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("layering")), *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_cli_json(example_repo: GitopsRepo) -> None:
    before = example_repo.head
    example_repo.write("images/htop/Containerfile", "FROM cli\n")
    after = example_repo.commit("htop")

    result = layering(
        "plan", "--repo", example_repo.path, "--from", before, "--to", after, "--format", "json"
    )

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["environments"] == ["nonprod"]
    assert (document["base"], document["head"]) == (before, after)
    (build,) = document["builds"]
    assert {"image", "cluster", "environment", "build_key", "tag", "tree_id", "base_digest"} <= set(
        build
    )
    assert (build["image"], build["cluster"], build["build_args"]) == (
        "htop",
        "nonprod",
        {"EPEL": "9"},
    )
    assert build["tag"] == build["build_key"][:20]


def test_cli_text(example_repo: GitopsRepo) -> None:
    before = example_repo.head
    example_repo.write("images/firewalld/Containerfile", "FROM cli\n")
    after = example_repo.commit("firewalld")

    result = layering("plan", "--repo", example_repo.path, "--from", before, "--to", after)

    assert result.returncode == 0, result.stderr
    assert "firewalld@nonprod" in result.stdout
    assert "firewalld@prod" in result.stdout
    assert "environments: nonprod, prod" in result.stdout


def test_cli_exit_1_when_the_plan_has_problems(example_repo: GitopsRepo) -> None:
    before = example_repo.head
    example_repo.remove("images/htop")
    after = example_repo.commit("drop htop, forget the pool")

    result = layering("plan", "--repo", example_repo.path, "--from", before, "--to", after)

    assert result.returncode == 1
    assert "problem: clusters/nonprod/cluster.yaml: pools.infra" in result.stdout


@pytest.mark.parametrize(
    ("from_rev", "to_rev", "expected"),
    [
        ("HEAD", "no-such-branch", "unknown revision 'no-such-branch'"),
        ("nope~3", "HEAD", "unknown revision 'nope~3'"),
        ("--upload-pack=x", "HEAD", "not a valid revision name"),
    ],
)
def test_cli_bad_revision_is_one_line_exit_2(
    example_repo: GitopsRepo, from_rev: str, to_rev: str, expected: str
) -> None:
    result = layering("plan", "--repo", example_repo.path, f"--from={from_rev}", "--to", to_rev)

    assert result.returncode == 2
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_cli_not_a_repository_exit_2(tmp_path: Path) -> None:
    result = layering("plan", "--repo", tmp_path / "missing", "--from", "a", "--to", "b")

    assert result.returncode == 2
    assert "no such directory" in result.stderr
    assert "Traceback" not in result.stderr
