"""pipeline.adapters.github_checks against the GitHub API stand-in (every request checked
against GitHub's OpenAPI schemas) as a GitHub App installation, with a real Redis: one check
run per (sha, name) updated in place, 50 annotations per request, retries and refusals, masking.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
import redis

from pipeline.adapters import github_checks
from pipeline.core import check_runs
from pipeline.core.errors import PermanentError, TemporaryError
from pipeline.core.settings import Settings
from tests import services
from tests.plugins.github import Fault, GitHubStandIn, app_private_key

pytestmark = pytest.mark.integration

NAME = "layering/build/firewalld@nonprod"
SECRET = "registry-password-0123456789"


@pytest.fixture(scope="module")
def app_key() -> str:
    return app_private_key()


def app_settings(stand_in: GitHubStandIn, key: str, **extra: object) -> Settings:
    return Settings(  # type: ignore[arg-type]
        github_api_url=stand_in.url,
        github_repository="acme/layers",
        github_app_id=12,
        github_app_private_key=key,
        github_app_installation_id=34,
        **extra,
    )


@pytest.fixture
def client(redis_server: services.RedisServer) -> Iterator[redis.Redis[bytes]]:
    made = redis.Redis.from_url(redis_server.url)
    yield made
    made.close()


def poster(
    stand_in: GitHubStandIn, key: str, client: redis.Redis[bytes]
) -> github_checks.GitHubChecks:
    made = github_checks.GitHubChecks.from_settings(
        app_settings(stand_in, key), client, secrets=(SECRET,)
    )
    assert made is not None
    return made


def sha() -> str:
    return uuid.uuid4().hex + "0" * 8


def run(
    head_sha: str,
    status: check_runs.CheckStatus,
    conclusion: check_runs.Conclusion | None = None,
    *,
    annotations: int = 0,
    summary: str = "s",
    name: str = NAME,
) -> check_runs.CheckRun:
    return check_runs.CheckRun(
        name=name,
        head_sha=head_sha,
        status=status,
        conclusion=conclusion,
        output=check_runs.Output(
            title=f"{status} {conclusion or ''}",
            summary=summary,
            annotations=tuple(
                check_runs.Annotation(
                    "images/firewalld/Containerfile", n, n, "warning", "LAY005", f"m{n}"
                )
                for n in range(1, annotations + 1)
            ),
        ),
        details_url="http://layering.example.test/builds/b1",
    )


def operations(stand_in: GitHubStandIn) -> list[str]:
    return [r.operation_id or "" for r in stand_in.requests]


def test_a_run_goes_queued_in_progress_completed_in_place(
    github_api: GitHubStandIn, app_key: str, client: redis.Redis[bytes]
) -> None:
    checks, head = poster(github_api, app_key, client), sha()
    assert checks.post(run(head, "queued"), seq=1)
    assert checks.post(run(head, "in_progress"), seq=2)
    assert checks.post(run(head, "completed", "success"), seq=3)
    found = github_api.check_run(head, NAME)
    assert github_api.lifecycle(found) == ["queued", "in_progress", "completed"]
    assert found["conclusion"] == "success"
    assert found["details_url"] == "http://layering.example.test/builds/b1"
    assert operations(github_api) == [
        "apps/create-installation-access-token",
        "checks/list-for-ref",
        "checks/create",
        "checks/update",
        "checks/update",
    ]
    # as the App's installation: GitHub refuses check runs to tokens
    assert all(
        r.headers["Authorization"] == "token ghs_installation34token"
        for r in github_api.requests[1:]
    )


def test_an_older_run_never_overwrites_a_newer_one(
    github_api: GitHubStandIn, app_key: str, client: redis.Redis[bytes]
) -> None:
    checks, head = poster(github_api, app_key, client), sha()
    assert checks.post(run(head, "completed", "success"), seq=5)
    sent = len(github_api.requests)
    assert checks.post(run(head, "queued"), seq=4) is False
    assert len(github_api.requests) == sent
    assert github_api.check_run(head, NAME)["status"] == "completed"


def test_120_annotations_are_sent_50_at_a_time_and_accumulate(
    github_api: GitHubStandIn, app_key: str, client: redis.Redis[bytes]
) -> None:
    checks, head = poster(github_api, app_key, client), sha()
    assert checks.post(run(head, "completed", "failure", annotations=120, name="lint"), seq=1)
    found = github_api.check_run(head, "lint")
    assert [a["start_line"] for a in found["annotations"]] == list(range(1, 121))
    assert found["output"]["annotations_count"] == 120
    sizes = [
        len((r.body.get("output") or {}).get("annotations") or [])
        for r in github_api.requests
        if r.operation_id in ("checks/create", "checks/update")
    ]
    assert sizes == [50, 50, 20]


def test_new_annotations_make_a_new_run_instead_of_piling_up(
    github_api: GitHubStandIn, app_key: str, client: redis.Redis[bytes]
) -> None:
    checks, head = poster(github_api, app_key, client), sha()
    assert checks.post(run(head, "completed", "failure", annotations=2, name="lint"), seq=1)
    assert checks.post(run(head, "completed", "failure", annotations=2, name="lint"), seq=2)
    first, second = github_api.runs_of(head)["lint"]
    assert len(first["annotations"]) == len(second["annotations"]) == 2


def test_a_forgotten_id_is_looked_up_not_duplicated(
    github_api: GitHubStandIn, app_key: str, client: redis.Redis[bytes]
) -> None:
    checks, head = poster(github_api, app_key, client), sha()
    assert checks.post(run(head, "queued"), seq=1)
    client.delete(github_checks.state_key(head, NAME))  # Redis lost it (a flush, a failover)
    assert checks.post(run(head, "completed", "success"), seq=2)
    assert github_api.lifecycle(github_api.check_run(head, NAME)) == ["queued", "completed"]


def test_two_workers_create_one_run(
    github_api: GitHubStandIn, app_key: str, client: redis.Redis[bytes]
) -> None:
    head = sha()
    workers = [poster(github_api, app_key, client) for _ in range(4)]
    threads = [
        threading.Thread(target=w.post, args=(run(head, "queued"),), kwargs={"seq": 1})
        for w in workers
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(github_api.runs_of(head)[NAME]) == 1


def test_502_is_temporary_and_the_retry_lands_on_the_same_run(
    github_api: GitHubStandIn, app_key: str, client: redis.Redis[bytes]
) -> None:
    checks, head = poster(github_api, app_key, client), sha()
    assert checks.post(run(head, "queued"), seq=1)
    github_api.inject("checks/update", Fault(502, message="bad gateway"))
    with pytest.raises(TemporaryError, match="HTTP 502") as raised:
        checks.post(run(head, "in_progress"), seq=2)
    assert raised.value.retry_after > 0
    assert checks.post(run(head, "in_progress"), seq=2)  # what the task's retry does
    assert github_api.lifecycle(github_api.check_run(head, NAME)) == ["queued", "in_progress"]


def test_422_is_permanent(
    github_api: GitHubStandIn, app_key: str, client: redis.Redis[bytes]
) -> None:
    checks = poster(github_api, app_key, client)
    github_api.inject("checks/create", Fault(422, message="Validation Failed"))
    with pytest.raises(PermanentError, match="HTTP 422"):
        checks.post(run(sha(), "queued"), seq=1)


def test_secrets_are_masked_in_everything_sent(
    github_api: GitHubStandIn, app_key: str, client: redis.Redis[bytes]
) -> None:
    checks, head = poster(github_api, app_key, client), sha()
    leaked = f"login with {SECRET} to https://bot:{SECRET}x@registry.example/v2"
    assert checks.post(run(head, "completed", "failure", summary=leaked), seq=1)
    bodies = [str(r.body) for r in github_api.requests if r.operation_id == "checks/create"]
    assert bodies
    assert all(SECRET not in body for body in bodies)
    assert (
        "https://***@registry.example/v2" in github_api.check_run(head, NAME)["output"]["summary"]
    )


def test_only_an_app_gets_check_runs(github_api: GitHubStandIn, client: redis.Redis[bytes]) -> None:
    token_only = Settings(  # type: ignore[arg-type]
        github_api_url=github_api.url, github_repository="acme/layers", github_token="t" * 20
    )
    assert github_checks.GitHubChecks.from_settings(token_only, client) is None
