"""From a signed delivery (or a plain `git push` with the post-receive hook) to commit statuses
and an image in the registry, with real processes: the receiver over HTTP on a loopback port,
a Celery worker subprocess, a private Redis, a bare Git repository pushed to with GitPython,
docker-registry + buildah (tests/plugins/builds.py) and the GitHub API stand-in, all started by
tests/webhook_pipeline.py."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from pipeline.adapters import build_records, parked_statuses
from pipeline.cli import install_hook
from pipeline.core import commit_status, tasks
from tests import services, webhook_pipeline
from tests.plugins.builds import (
    FAKE_REGISTRY_PASSWORD,
    FAKE_TOKEN,
    BaseImage,
    StartWorker,
    launch_beat,
)
from tests.plugins.github import Fault
from tests.webhook_pipeline import BUILD_TIMEOUT, FULL_NAME, REDIS_PASSWORD, SECRET, Pipeline

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pipeline(
    tmp_path_factory: pytest.TempPathFactory,
    registry: services.Registry,
    base_image: BaseImage,
    start_worker: StartWorker,
) -> Iterator[Pipeline]:
    with webhook_pipeline.launch(
        tmp_path_factory.mktemp("e2e"),
        registry=registry,
        base_image=base_image,
        start_worker=start_worker,
    ) as running:
        yield running


def change_image(pipeline: Pipeline, base: BaseImage, image: str, text: str) -> tuple[str, str]:
    before = pipeline.gitops.head
    pipeline.gitops.write(
        f"images/{image}/Containerfile",
        f"FROM {base.repository}\nRUN {text} && \\\n    ostree container commit\n",
    )
    after = pipeline.gitops.commit(f"change {image}")
    pipeline.gitops.push()
    return before, after


def test_signed_push_builds_and_reports(pipeline: Pipeline, base_image: BaseImage) -> None:
    before, after = change_image(pipeline, base_image, "firewalld", "echo v2 > /etc/motd")
    response = pipeline.deliver(pipeline.push_payload(before, after))
    assert response.status_code == 202, response.text
    wanted = {"layering/lint", "layering/build/firewalld@nonprod"}
    found = pipeline.wait_statuses(after, wanted)
    assert set(found) == wanted
    assert found["layering/build/firewalld@nonprod"] == ["pending", "success"]
    assert found["layering/lint"] == ["success"]
    assert {sha for sha, _ in pipeline.github.all_statuses()} == {after}
    latest = pipeline.github.latest(after)["layering/build/firewalld@nonprod"]
    assert latest["description"].startswith("built ")
    build_id = latest["target_url"].rsplit("/", 1)[-1]
    assert latest["target_url"] == f"http://layering.example.test/builds/{build_id}"
    page = httpx.get(f"{pipeline.receiver_url}/builds/{build_id}")
    assert page.status_code == 200
    assert build_id in page.text
    record = httpx.get(f"{pipeline.receiver_url}/api/builds/{build_id}").json()
    assert record["state"] == "succeeded"
    assert record["commit_sha"] == after
    assert latest["description"] == f"built {record['digest'].removeprefix('sha256:')[:12]}"
    assert record["target"].split(":")[-1] in pipeline.tags("firewalld")
    log = httpx.get(f"{pipeline.receiver_url}/api/builds/{build_id}/log").text
    assert "pushed" in log
    metrics = httpx.get(f"{pipeline.receiver_url}/metrics").text
    assert "layering_build_duration_seconds_count" in metrics
    assert "layering_queue_latency_seconds_count" in metrics


def test_same_delivery_twice_builds_once(pipeline: Pipeline, base_image: BaseImage) -> None:
    before, after = change_image(pipeline, base_image, "chrony", "echo v2 > /etc/chrony")
    payload = pipeline.push_payload(before, after)
    first = pipeline.deliver(payload, delivery_id="same-delivery")
    second = pipeline.deliver(payload, delivery_id="same-delivery")
    assert first.status_code == 202
    assert second.json() == {"duplicate": True}
    found = pipeline.wait_statuses(after, {"layering/build/chrony@nonprod"})
    assert found["layering/build/chrony@nonprod"] == ["pending", "success"]
    builds = httpx.get(f"{pipeline.receiver_url}/api/builds").json()["builds"]
    assert len([b for b in builds if b["commit_sha"] == after]) == 1


def test_wrong_signature_queues_nothing(pipeline: Pipeline, base_image: BaseImage) -> None:
    before, after = change_image(pipeline, base_image, "firewalld", "echo v3 > /etc/motd")
    response = pipeline.deliver(
        pipeline.push_payload(before, after), signature="sha256=" + "0" * 64
    )
    assert response.status_code == 401
    client = redis.Redis.from_url(pipeline.redis.url)
    assert client.llen("events") == 0
    time.sleep(2)
    assert pipeline.github.contexts(after) == {}


def test_push_touching_no_image_builds_nothing(pipeline: Pipeline) -> None:
    before = pipeline.gitops.head
    pipeline.gitops.write("README.md", "docs only\n")
    after = pipeline.gitops.commit("docs")
    pipeline.gitops.push()
    response = pipeline.deliver(pipeline.push_payload(before, after))
    assert response.status_code == 202
    result = pipeline.wait_task(response.json()["task_id"])
    assert result["builds"] == []
    time.sleep(1)
    assert pipeline.github.contexts(after) == {}
    builds = httpx.get(f"{pipeline.receiver_url}/api/builds").json()["builds"]
    assert [b for b in builds if b["commit_sha"] == after] == []


def test_newer_push_supersedes_older_head(pipeline: Pipeline, base_image: BaseImage) -> None:
    first_before, first = change_image(
        pipeline, base_image, "firewalld", "sleep 3; echo v4 > /etc/motd"
    )
    _, second = change_image(pipeline, base_image, "firewalld", "echo v5 > /etc/motd")
    assert pipeline.deliver(pipeline.push_payload(first_before, first)).status_code == 202
    time.sleep(1.0)  # the first head's build is queued or running
    assert pipeline.deliver(pipeline.push_payload(first, second)).status_code == 202
    context = "layering/build/firewalld@nonprod"
    newer = pipeline.wait_statuses(second, {context})
    assert newer[context] == ["pending", "success"]
    older = pipeline.wait_statuses(first, {context})
    latest = pipeline.github.latest(first)[context]
    assert older[context][0] == "pending"
    assert latest["state"] == "error", older
    assert latest["description"] == f"superseded by {second[:12]}"


def test_post_receive_hook_drives_plain_git_push(
    pipeline: Pipeline, base_image: BaseImage, tmp_path: Path
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    hook = install_hook.install(
        pipeline.gitops.origin,
        url=f"{pipeline.receiver_url}/webhook/git",
        secret_file=secret_file,
        repo_url=pipeline.settings.repo_url,
    )
    try:
        _, after = change_image(pipeline, base_image, "chrony", "echo v3 > /etc/chrony")
        wanted = {"layering/lint", "layering/build/chrony@nonprod"}
        found = pipeline.wait_statuses(after, wanted)
        assert set(found) == wanted
        assert found["layering/build/chrony@nonprod"] == ["pending", "success"]
    finally:
        hook.unlink()


def test_redis_down_then_redelivery_builds(pipeline: Pipeline, base_image: BaseImage) -> None:
    before, after = change_image(pipeline, base_image, "firewalld", "echo v6 > /etc/motd")
    payload = pipeline.push_payload(before, after)
    pipeline.redis.stop()
    try:
        down = pipeline.deliver(payload, delivery_id="while-down")
        assert down.status_code == 503
    finally:
        pipeline.redis.start()
    assert httpx.get(f"{pipeline.receiver_url}/readyz").status_code == 200
    again = pipeline.deliver(payload, delivery_id="while-down")
    assert again.status_code == 202, again.text
    found = pipeline.wait_statuses(after, {"layering/build/firewalld@nonprod"})
    assert found["layering/build/firewalld@nonprod"][-1] == "success"


def test_fork_pull_request_is_linted_then_built_after_ok_to_test(
    pipeline: Pipeline, base_image: BaseImage
) -> None:
    gitops = pipeline.gitops
    gitops.checkout("fork-feature", create=True)
    gitops.write(
        "images/chrony/Containerfile",
        f"FROM {base_image.repository}\nRUN echo fork > /etc/chrony && \\\n"
        "    ostree container commit\n",
    )
    head = gitops.commit("fork change")
    gitops.repo.remote("origin").push("refs/heads/fork-feature:refs/pull/7/head").raise_if_error()
    gitops.checkout("main")
    pipeline.github.add_pull(7, head_sha=head, head_ref="fork-feature", head_repo="mallory/layers")
    pipeline.github.permissions.update({"maint": "write", "visitor": "read"})
    repository = {"full_name": FULL_NAME, "clone_url": gitops.origin.as_uri()}
    opened = {
        "action": "opened",
        "number": 7,
        "pull_request": {
            "number": 7,
            "head": {"ref": "fork-feature", "sha": head, "repo": {"full_name": "mallory/layers"}},
            "base": {"ref": "main", "sha": gitops.head, "repo": repository},
        },
        "repository": repository,
        "sender": {"login": "mallory"},
    }
    response = pipeline.deliver(opened, event="pull_request")
    assert response.status_code == 202, response.text
    assert pipeline.wait_task(response.json()["task_id"])["builds"] == []
    found = pipeline.wait_statuses(head, {"layering/lint"})
    assert set(found) == {"layering/lint"}
    assert "/ok-to-test" in pipeline.github.latest(head)["layering/lint"]["description"]

    def comment(user: str) -> dict[str, Any]:
        return {
            "action": "created",
            "issue": {"number": 7, "pull_request": {"url": "https://api.github.com/x"}},
            "comment": {"body": "/ok-to-test", "user": {"login": user}},
            "repository": repository,
        }

    refused = pipeline.deliver(comment("visitor"), event="issue_comment")
    assert "ignored" in pipeline.wait_task(refused.json()["task_id"])
    assert set(pipeline.github.contexts(head)) == {"layering/lint"}
    accepted = pipeline.deliver(comment("maint"), event="issue_comment")
    assert accepted.status_code == 202
    found = pipeline.wait_statuses(head, {"layering/build/chrony@nonprod"})
    assert found["layering/build/chrony@nonprod"] == ["pending", "success"]


def test_status_is_retried_until_github_takes_it(pipeline: Pipeline) -> None:

    sha = "d" * 40
    pipeline.github.inject(
        "repos/create-commit-status",
        Fault(502, {"Retry-After": "1"}),
        Fault(403, {"Retry-After": "1"}, "You have exceeded a secondary rate limit"),
    )

    pipeline.queue_status(sha, commit_status.Status("layering/lint", "success", "no findings"))
    deadline = time.monotonic() + 60
    while not pipeline.github.contexts(sha) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pipeline.github.contexts(sha) == {"layering/lint": ["success"]}
    attempts = [
        r
        for r in pipeline.github.requests
        if r.operation_id == "repos/create-commit-status" and r.path.endswith(sha)
    ]
    assert len(attempts) == 3


def test_older_status_never_overwrites_a_newer_one(pipeline: Pipeline) -> None:

    sha = "e" * 40
    client = redis.Redis.from_url(pipeline.redis.url)
    client.set(parked_statuses.seq_key(sha, "layering/lint"), 5)
    stale = pipeline.worker.app.send_task(
        tasks.ReportStatus.NAME,
        args=[sha, "layering/lint", "pending", "old", None, 4],
        queue="events",
    )
    assert stale.get(timeout=30) == "superseded"
    assert pipeline.github.contexts(sha) == {}


# -- cancellation: supersede and closed pull requests ----------------------------------------


def _build_id(pipeline: Pipeline, sha: str, context: str, timeout: float = 60) -> str:
    """The build id of the pending status of `context` on `sha`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = pipeline.github.latest(sha).get(context)
        if status is not None and status.get("target_url"):
            return str(status["target_url"]).rsplit("/", 1)[-1]
        time.sleep(0.05)
    raise TimeoutError(
        f"no {context} status on {sha[:12]}: {pipeline.worker.log.read_text()[-3000:]}"
    )


def _wait_log(pipeline: Pipeline, build_id: str, text: str, timeout: float = BUILD_TIMEOUT) -> None:
    records = build_records.BuildStore.from_settings(pipeline.settings)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in line for line in records.read_log(build_id, 0, 100_000)):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{text!r} never in the log of {build_id}: {records.get(build_id)}")


def _processes_mentioning(*needles: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(needle in text for needle in needles):
            found.append(f"{cmdline.parent.name}: {text[:200]}")
    return found


def _wait_present(needle: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not _processes_mentioning(needle):
        assert time.monotonic() < deadline, f"no process running {needle!r}"
        time.sleep(0.05)


def _wait_gone(*needles: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while _processes_mentioning(*needles):
        if time.monotonic() > deadline:
            raise AssertionError(f"still running: {_processes_mentioning(*needles)}")
        time.sleep(0.1)


def slow_step(marker: str) -> str:
    """A RUN step that sleeps long enough to be cancelled while it runs; its `sleep` process
    is found by its (unique) duration."""
    return f"echo {marker} && sleep {_seconds(marker)} && echo {marker}-done > /etc/motd"


def _seconds(marker: str) -> int:
    return 600 + int(marker.rsplit("-", 1)[-1], 16) % 1000


def test_supersede_kills_the_running_buildah_and_pushes_nothing(
    pipeline: Pipeline, base_image: BaseImage
) -> None:
    marker = f"slow-{uuid.uuid4().hex[:10]}"
    context = "layering/build/firewalld@nonprod"
    before, first = change_image(pipeline, base_image, "firewalld", slow_step(marker))
    _, second = change_image(pipeline, base_image, "firewalld", "echo v10 > /etc/motd")
    assert pipeline.deliver(pipeline.push_payload(before, first)).status_code == 202
    build_id = _build_id(pipeline, first, context)
    _wait_log(pipeline, build_id, marker)  # the RUN step is sleeping inside buildah
    _wait_present(f"sleep {_seconds(marker)}")
    target = build_records.BuildStore.from_settings(pipeline.settings).get(build_id).target  # type: ignore[union-attr]

    superseded_at = time.monotonic()
    assert pipeline.deliver(pipeline.push_payload(first, second)).status_code == 202
    _wait_log(pipeline, build_id, "nothing pushed", timeout=30)  # the build task has ended
    record = pipeline.worker.wait_for_build(build_id, timeout=5)
    assert record["state"] == "cancelled", record
    _wait_gone(f"sleep {_seconds(marker)}", f"--tag {target}")
    assert time.monotonic() - superseded_at < 30
    assert target.rsplit(":", 1)[-1] not in pipeline.tags("firewalld")
    log = "\n".join(
        build_records.BuildStore.from_settings(pipeline.settings).read_log(build_id, 0, 100_000)
    )
    assert "buildah cancelled: process group" in log, log[-2500:]
    assert f"pushed {target}" not in log

    assert pipeline.wait_statuses(second, {context})[context] == ["pending", "success"]
    older = pipeline.github.latest(first)[context]
    assert (older["state"], older["description"]) == ("error", f"superseded by {second[:12]}")
    # the cancelled build's key lock was released (the build stopped itself, its process was
    # not killed); the second build's may still be held by its clean-up thread
    assert not redis.Redis.from_url(pipeline.redis.url).keys(
        f"layering:lock:build:{record['build_key']}*"
    )
    assert target.rsplit(":", 1)[-1] not in pipeline.tags("firewalld")


def _pull_payload(
    pipeline: Pipeline, action: str, number: int, head: str, ref: str
) -> dict[str, Any]:
    repository = {"full_name": FULL_NAME, "clone_url": pipeline.gitops.origin.as_uri()}
    return {
        "action": action,
        "number": number,
        "pull_request": {
            "number": number,
            "merged": False,
            "head": {"ref": ref, "sha": head, "repo": repository},
            "base": {"ref": "main", "sha": pipeline.gitops.head, "repo": repository},
        },
        "repository": repository,
        "sender": {"login": "alice"},
    }


def test_closed_pull_request_cancels_its_running_build(
    pipeline: Pipeline, base_image: BaseImage
) -> None:
    gitops = pipeline.gitops
    marker = f"closed-{uuid.uuid4().hex[:10]}"
    context = "layering/build/chrony@nonprod"
    gitops.checkout("to-be-closed", create=True)
    gitops.write(
        "images/chrony/Containerfile", pipeline.containerfile(base_image, slow_step(marker))
    )
    head = gitops.commit("slow chrony")
    gitops.repo.remote("origin").push("refs/heads/to-be-closed:refs/pull/8/head").raise_if_error()
    gitops.checkout("main")
    opened = pipeline.deliver(
        _pull_payload(pipeline, "opened", 8, head, "to-be-closed"), event="pull_request"
    )
    assert opened.status_code == 202, opened.text
    build_id = _build_id(pipeline, head, context)
    _wait_log(pipeline, build_id, marker)
    _wait_present(f"sleep {_seconds(marker)}")
    target = build_records.BuildStore.from_settings(pipeline.settings).get(build_id).target  # type: ignore[union-attr]

    closed = pipeline.deliver(
        _pull_payload(pipeline, "closed", 8, head, "to-be-closed"), event="pull_request"
    )
    assert closed.json()["queued"] == "layering.close_pull_request"
    assert pipeline.wait_task(closed.json()["task_id"]) == {"closed": 8, "cancelled": [build_id]}
    _wait_log(pipeline, build_id, "nothing pushed", timeout=30)
    record = pipeline.worker.wait_for_build(build_id, timeout=5)
    assert record["state"] == "cancelled", record
    _wait_gone(f"sleep {_seconds(marker)}", f"--tag {target}")
    found = pipeline.wait_statuses(head, {context, "layering/lint"})
    assert found[context] == ["pending", "error"]
    assert pipeline.github.latest(head)[context]["description"] == "pull request closed"
    assert target.rsplit(":", 1)[-1] not in pipeline.tags("chrony")


# -- statuses GitHub will not take ------------------------------------------------------------


def test_undeliverable_status_is_parked_and_resent_by_beat(pipeline: Pipeline) -> None:
    sha = "f" * 40
    operation = "repos/create-commit-status"
    parked = parked_statuses.ParkedStatuses(
        redis.Redis.from_url(pipeline.redis.url), keep_seconds=3600
    )
    pipeline.github.outage(operation, Fault(502, {"Retry-After": "0"}, "Server Error"))
    beat = launch_beat(pipeline.worker, "e2e")
    try:
        older = commit_status.Status("layering/lint", "pending", "queued: older")
        newer = commit_status.Status("layering/lint", "success", "no findings")
        pipeline.queue_status(sha, older)

        def wait(condition: Any, what: str, timeout: float = 30) -> None:
            deadline = time.monotonic() + timeout
            while not condition():
                assert time.monotonic() < deadline, (
                    f"{what}: {pipeline.worker.log.read_text()[-3000:]}"
                )
                time.sleep(0.05)

        # 1 try + LAYERING_STATUS_RETRIES (2) retries, then parked
        wait(lambda: [s.seq for s in parked.due(time.time() + 3600)] == [1], "older parked")
        assert pipeline.github.attempts(operation, sha) >= 3
        pipeline.queue_status(sha, newer)
        wait(lambda: [s.seq for s in parked.due(time.time() + 3600)] == [2], "newer replaced it")
        # beat keeps trying while GitHub is down
        tried = pipeline.github.attempts(operation, sha)
        wait(lambda: pipeline.github.attempts(operation, sha) >= tried + 1, "beat resends")
        assert pipeline.github.contexts(sha) == {}
        pipeline.github.outage(operation, None)
        wait(lambda: pipeline.github.contexts(sha) != {}, "resent after the outage")
        wait(lambda: parked.count() == 0, "unparked")
        time.sleep(1.5)  # a few more beat ticks: nothing else (the older status) arrives
        assert pipeline.github.contexts(sha) == {"layering/lint": ["success"]}
        assert pipeline.github.latest(sha)["layering/lint"]["description"] == "no findings"
    finally:
        pipeline.github.outage(operation, None)
        services.stop_process(beat)


# -- secrets ----------------------------------------------------------------------------------


def test_secrets_reach_no_log_status_build_log_or_metrics(
    pipeline: Pipeline, base_image: BaseImage
) -> None:
    """Runs last in this module: scans everything the module's flows wrote, after one more flow
    that invites leaks (a RUN step printing its environment, GitHub errors echoing the token)."""
    secrets = {
        "webhook secret": SECRET,
        "GitHub token": FAKE_TOKEN,
        "registry password": FAKE_REGISTRY_PASSWORD,
        "registry auth": base64.b64encode(f"robot:{FAKE_REGISTRY_PASSWORD}".encode()).decode(),
        "Redis password": REDIS_PASSWORD,
    }
    pipeline.github.inject(
        "repos/create-commit-status",
        Fault(502, {"Retry-After": "0"}, f"bad gateway for token {FAKE_TOKEN}"),
    )
    before, after = change_image(
        pipeline, base_image, "chrony", "env; cat /proc/self/environ; echo leak > /etc/chrony"
    )
    assert pipeline.deliver(pipeline.push_payload(before, after)).status_code == 202
    pipeline.wait_statuses(after, {"layering/build/chrony@nonprod"})
    assert (
        pipeline.deliver(pipeline.push_payload(before, after), signature="sha256=0").status_code
        == 401
    )

    texts = {
        "worker log": pipeline.worker.log.read_text(errors="replace"),
        "receiver log": pipeline.receiver_log.read_text(errors="replace"),
        "/metrics": httpx.get(f"{pipeline.receiver_url}/metrics").text,
        "/api/builds": httpx.get(f"{pipeline.receiver_url}/api/builds?limit=1000").text,
    }
    builds_store = build_records.BuildStore.from_settings(pipeline.settings)
    for record in builds_store.recent(1000):
        texts[f"build log {record.id}"] = "\n".join(builds_store.read_log(record.id, 0, 100_000))
        texts[f"build record {record.id}"] = json.dumps(record.to_dict())
    for index, request in enumerate(pipeline.github.requests):
        texts[f"GitHub request body {index}"] = json.dumps(request.body)
    assert len(texts) > 10
    leaks = [
        f"{secret_name} in {where}"
        for where, text in texts.items()
        for secret_name, value in secrets.items()
        if value in text
    ]
    assert leaks == []
