"""pipeline.adapters.github against the local GitHub API stand-in (schema-checked requests)."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pipeline.adapters import github
from pipeline.core.errors import PermanentError, TemporaryError
from pipeline.core.settings import Settings
from tests.plugins.github import Fault, GitHubStandIn

pytestmark = pytest.mark.integration

SHA = "c" * 40
TOKEN = "ghp_testtoken1234567890"


def client(stand_in: GitHubStandIn, **extra: object) -> github.GitHubClient:
    options: dict[str, object] = {
        "github_api_url": stand_in.url,
        "github_repository": "acme/layers",
        "github_token": TOKEN,
    }
    options.update(extra)
    made = github.GitHubClient.from_settings(Settings(**options))  # type: ignore[arg-type]
    assert made is not None
    return made


def test_status_is_posted_truncated_and_scrubbed(github_api: GitHubStandIn) -> None:
    gh = client(github_api)
    gh.set_status(
        SHA,
        context="layering/build/firewalld@nonprod",
        state="failure",
        description=f"push to https://user:{TOKEN}@registry.example.com failed; token {TOKEN} "
        + "x" * 200,
        target_url="http://127.0.0.1:8080/builds/b1",
    )
    [status] = github_api.statuses[SHA]
    assert status["context"] == "layering/build/firewalld@nonprod"
    assert status["state"] == "failure"
    assert len(status["description"]) <= 140
    assert TOKEN not in status["description"]
    assert "user:" not in status["description"]
    [request] = [r for r in github_api.requests if r.operation_id == "repos/create-commit-status"]
    assert request.headers["Authorization"] == f"token {TOKEN}"


def test_rate_limit_and_5xx_are_temporary(github_api: GitHubStandIn) -> None:
    gh = client(github_api)
    reset = int(time.time()) + 120
    github_api.inject(
        "repos/create-commit-status",
        Fault(
            403,
            {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)},
            "API rate limit exceeded",
        ),
        Fault(429, {"Retry-After": "7"}),
        Fault(502),
        Fault(401, message="Bad credentials"),
        Fault(422),
    )
    with pytest.raises(TemporaryError) as limited:
        gh.set_status(SHA, context="c", state="pending", description="d", target_url=None)
    assert 100 < limited.value.retry_after <= 121
    with pytest.raises(TemporaryError) as secondary:
        gh.set_status(SHA, context="c", state="pending", description="d", target_url=None)
    assert secondary.value.retry_after == 7
    with pytest.raises(TemporaryError):
        gh.set_status(SHA, context="c", state="pending", description="d", target_url=None)
    with pytest.raises(TemporaryError, match="check LAYERING_GITHUB_TOKEN") as unauthorised:
        gh.set_status(SHA, context="c", state="pending", description="d", target_url=None)
    assert unauthorised.value.retry_after == 300
    with pytest.raises(PermanentError):
        gh.set_status(SHA, context="c", state="pending", description="d", target_url=None)
    gh.set_status(SHA, context="c", state="success", description="d", target_url=None)
    assert github_api.contexts(SHA) == {"c": ["success"]}


def test_unreachable_api_is_temporary(github_api: GitHubStandIn) -> None:
    gh = client(github_api, github_api_url="http://127.0.0.1:9")
    with pytest.raises(TemporaryError):
        gh.set_status(SHA, context="c", state="pending", description="d", target_url=None)


def test_permission_and_pull_head(github_api: GitHubStandIn) -> None:
    gh = client(github_api)
    github_api.permissions.update({"maint": "admin", "reader": "read"})
    assert gh.can_write("maint")
    assert not gh.can_write("reader")
    assert not gh.can_write("stranger")
    github_api.add_pull(5, head_sha=SHA, head_ref="feature", head_repo="mallory/layers")
    head = gh.pull_head(5)
    assert (head.head_sha, head.head_ref, head.head_repository, head.base_ref) == (
        SHA,
        "feature",
        "mallory/layers",
        "main",
    )
    assert head.state == "open"
    github_api.pulls[5]["state"] = "closed"
    assert gh.pull_head(5).state == "closed"


def test_github_app_installation_auth(github_api: GitHubStandIn) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    gh = client(
        github_api,
        github_token=None,
        github_app_id=12,
        github_app_private_key=pem,
        github_app_installation_id=34,
    )
    gh.set_status(SHA, context="layering/lint", state="success", description="ok", target_url=None)
    operations = [r.operation_id for r in github_api.requests]
    assert operations == ["apps/create-installation-access-token", "repos/create-commit-status"]
    assert github_api.requests[1].headers["Authorization"] == "token ghs_installation34token"
