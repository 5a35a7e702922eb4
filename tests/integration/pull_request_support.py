"""Helpers for the pull-request mode tests: a GitOps repository with one first environment
(nonprod), the GitHub stand-in wired to its bare origin (a pull request's head is the branch's
tip there, and merging it makes the merge commit GitHub would, pushed by the test acting as
GitHub), and the promote flow run with the real adapters."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import git
import redis
from pydantic import SecretStr

from pipeline.adapters import branch_writer, github, promotion_requests
from pipeline.adapters.promotion_store import PromotionStore
from pipeline.core import ports, promotion
from pipeline.core.settings import Settings
from pipeline.flows import promote as promote_flow
from pipeline.flows import promotion_inputs
from tests.integration.promotion_support import (
    EnvRepo,
    HttpRegistry,
    NoClusters,
    Recorder,
    push_targets,
    recorded_builds,
)
from tests.plugins.builds import VERIFICATION_KEY
from tests.plugins.github import GitHubStandIn

TOKEN = "ghp_prmodetoken1234567890"


def nonprod_repo(root: Path, registry_host: str, redis_url: str) -> EnvRepo:
    """main with images firewalld and htop and cluster nonprod (worker, infra); env/nonprod has
    main merged; every target built and recorded."""
    gitops = EnvRepo(root)
    gitops.commit("root")
    gitops.repo.git.branch("env/nonprod")
    gitops.push("env/nonprod")
    gitops.registry_prefix = f"{registry_host}/t{uuid.uuid4().hex[:12]}"
    gitops.add_image("firewalld", "firewalld")
    gitops.add_image("htop", "htop")
    add_nonprod(gitops)
    gitops.commit("seed")
    gitops.push("main")
    build_main(gitops, registry_host, redis_url)
    gitops.merge_into("main", "env/nonprod")
    return gitops


def add_nonprod(gitops: EnvRepo) -> None:
    gitops.add_cluster(
        "nonprod",
        environment="nonprod",
        registry=gitops.registry_prefix,
        pools={"worker": "firewalld", "infra": "htop"},
    )


def build_main(gitops: EnvRepo, registry_host: str, redis_url: str) -> dict[str, str]:
    model = gitops.origin_model("refs/heads/main")
    targets = promotion.targets(model, "nonprod")
    return push_targets(registry_host, targets, built=recorded_builds(redis_url))


def branch_head(gitops: EnvRepo, branch: str) -> str | None:
    try:
        return str(git.Repo(gitops.origin).git.rev_parse("--verify", "-q", f"refs/heads/{branch}"))
    except git.GitCommandError:
        return None


def wire(stand_in: GitHubStandIn, gitops: EnvRepo) -> None:
    """Pull request heads from the origin; a merge through the API merges there."""

    def merge(pull: dict[str, Any]) -> str | None:
        head, base = pull["head"]["ref"], pull["base"]["ref"]
        repo = gitops.repo
        repo.git.fetch("origin")
        repo.git.checkout("-B", base, f"origin/{base}")
        repo.git.merge("--no-ff", "--no-edit", "-m", f"Merge {head} into {base}", f"origin/{head}")
        repo.remote("origin").push(f"refs/heads/{base}:refs/heads/{base}").raise_if_error()
        sha = repo.head.commit.hexsha
        repo.git.checkout("main")
        return sha

    stand_in.branch_head = lambda ref: branch_head(gitops, ref)
    stand_in.merger = merge


def client(stand_in: GitHubStandIn) -> github.GitHubClient:
    made = github.GitHubClient.from_settings(
        Settings(
            github_api_url=stand_in.url,
            github_repository="acme/layers",
            github_token=SecretStr(TOKEN),
        )
    )
    assert made is not None
    return made


def pr_writer(
    gitops: EnvRepo, workdir: Path, stand_in: GitHubStandIn, client_: redis.Redis[bytes]
) -> promotion_requests.PullRequestWriter:
    return promotion_requests.PullRequestWriter(
        requests=promotion_requests.GitHubPromotionRequests(client(stand_in)),
        url=gitops.url,
        workdir=workdir,
        lock=branch_writer.RedisBranchLock(client_),
    )


def sources(client_: redis.Redis[bytes], redis_url: str) -> promotion_inputs.Sources:
    return promotion_inputs.Sources(
        registry=HttpRegistry(),
        store=PromotionStore(client_, key=VERIFICATION_KEY.encode()),
        built=recorded_builds(redis_url),
        clusters=NoClusters(),
    )


def promote(
    gitops: EnvRepo,
    writer: ports.BranchWriter,
    client_: redis.Redis[bytes],
    redis_url: str,
    recorder: Recorder,
) -> promote_flow.PromotionOutcome:
    return promote_flow.promote(
        gitops.origin_head("env/nonprod"),
        "nonprod",
        writer=writer,
        sources=sources(client_, redis_url),
        reporter=recorder,
        now=lambda: 1_800_000_000.0,
    )
