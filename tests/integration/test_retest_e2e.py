"""`/retest` end to end (issue 13): a pull request whose builds fail on a flaky RUN step (a
`wget` from a loopback HTTP server this test controls, answering 500 once and 200 after: builds
run with chroot isolation and share the host's loopback network) is built again on a
maintainer's comment, one build or every failed one; everyone else, a malformed target, a build
that does not exist and a fork's unapproved head get a reply and nothing runs. Real receiver,
Celery worker, Redis, bare Git repository, buildah + registry and the GitHub API stand-in
(tests/webhook_pipeline.py)."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from pipeline.core import commit_status, head, retest
from tests import services, webhook_pipeline
from tests.plugins.builds import BaseImage, StartWorker
from tests.webhook_pipeline import FULL_NAME, Pipeline

pytestmark = pytest.mark.integration

LINT = "layering/lint"
CHRONY = "layering/build/chrony@nonprod"
FIREWALLD = "layering/build/firewalld@nonprod"
OK = "ok\n"
OK_SHA256 = hashlib.sha256(OK.encode()).hexdigest()


class Flaky:
    """A loopback HTTP server that answers 500 to the first request for each path, 200 after."""

    def __init__(self) -> None:
        self.server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
        self.hits: dict[str, int] = {}
        self._lock = threading.Lock()
        self.server.expect_request(re.compile(".*")).respond_with_handler(self._handle)

    def _handle(self, request: Request) -> Response:
        with self._lock:
            self.hits[request.path] = self.hits.get(request.path, 0) + 1
            first = self.hits[request.path] == 1
        return Response("flaky\n" if first else OK, status=500 if first else 200)

    def download(self, path: str, target: str) -> str:
        """A RUN step fetching `path` into `target`, checked as LAY007 wants."""
        return (
            f"wget -q -O {target} {self.server.url_for(path)} && "
            f"echo '{OK_SHA256}  {target}' | sha256sum -c"
        )


@pytest.fixture(scope="module")
def flaky() -> Iterator[Flaky]:
    server = Flaky()
    server.server.start()
    yield server
    server.server.clear()
    server.server.stop()


@pytest.fixture(scope="module")
def pipeline(
    tmp_path_factory: pytest.TempPathFactory,
    registry: services.Registry,
    base_image: BaseImage,
    start_worker: StartWorker,
) -> Iterator[Pipeline]:
    with webhook_pipeline.launch(
        tmp_path_factory.mktemp("retest"),
        registry=registry,
        base_image=base_image,
        start_worker=start_worker,
        name=f"retest-{uuid.uuid4().hex[:6]}",
    ) as running:
        running.github.permissions.update({"maint": "write", "reader": "read"})
        yield running


def comment(pipeline: Pipeline, number: int, body: str, *, user: str = "maint") -> Any:
    """Deliver a comment; the worker's answer, once the reply is posted."""
    delivered = pipeline.deliver(
        pipeline.comment_payload(number, body, user=user), event="issue_comment"
    )
    assert delivered.status_code == 202, delivered.text
    return pipeline.wait_task(delivered.json()["task_id"])


def last_reply(pipeline: Pipeline, number: int) -> str:
    return pipeline.github.comments[number][-1]


def wait_after(
    pipeline: Pipeline, sha: str, context: str, seen: int, timeout: float = 240
) -> list[str]:
    """The states of `context` on `sha` once more than `seen` were posted and the last one is
    final."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = pipeline.github.contexts(sha).get(context, [])
        if len(states) > seen and states[-1] != "pending":
            return states
        time.sleep(0.1)
    raise TimeoutError(f"{context} on {sha[:12]}: {pipeline.github.contexts(sha)}")


def recorded_builds(pipeline: Pipeline, number: int) -> list[head.HeadBuild]:
    raw = redis.Redis.from_url(pipeline.redis.url).get(f"layering:head:pr:{number}")
    assert raw is not None
    return list(head.Head.from_json(json.loads(raw)).builds)


def test_retest_reruns_failed_builds_for_writers_only(
    pipeline: Pipeline, base_image: BaseImage, flaky: Flaky
) -> None:
    number, branch = 70, "flaky-70"
    sha = pipeline.push_pull_head(
        number,
        branch,
        {
            f"images/{image}/Containerfile": pipeline.containerfile(
                base_image, flaky.download(f"/{number}/{image}", f"/etc/{image}.flaky")
            )
            for image in ("chrony", "firewalld")
        },
    )
    pipeline.github.add_pull(number, head_sha=sha, head_ref=branch, head_repo=FULL_NAME)
    opened = pipeline.deliver(
        pipeline.pull_payload("opened", number, sha, branch), event="pull_request"
    )
    assert opened.status_code == 202, opened.text
    assert len(pipeline.wait_task(opened.json()["task_id"])["builds"]) == 2
    first = pipeline.wait_statuses(sha, {CHRONY, FIREWALLD})
    assert first[CHRONY][-1] == first[FIREWALLD][-1] == "failure"
    before = recorded_builds(pipeline, number)
    seen = {context: len(first[context]) for context in (CHRONY, FIREWALLD)}
    short = sha[:12]

    # a reader may not re-run anything
    assert comment(pipeline, number, "/retest", user="reader") == {
        "ignored": "@reader has no write access to this repository"
    }
    assert last_reply(pipeline, number) == (
        "/retest by @reader: nothing re-run: @reader has no write access to this repository."
    )
    # a malformed target gets the accepted forms, and no echo of what was written
    assert "ignored" in comment(pipeline, number, "/retest chrony <b>now</b>")
    assert last_reply(pipeline, number) == retest.reply("maint", retest.malformed())
    assert "<b>" not in last_reply(pipeline, number)
    assert "`/retest <image>@<cluster>`" in last_reply(pipeline, number)
    # a build the head does not have
    assert comment(pipeline, number, "/retest chrony@prod") == {
        "ignored": f"no such build on {short}: chrony@prod"
    }
    assert last_reply(pipeline, number) == (
        f"/retest by @maint: nothing re-run: no such build on {short}: chrony@prod."
    )
    time.sleep(1.0)
    assert pipeline.github.contexts(sha) == first, "nothing ran"
    assert flaky.hits == {f"/{number}/chrony": 1, f"/{number}/firewalld": 1}

    # one build: chrony@nonprod runs again, goes pending, then succeeds; firewalld stays failed
    answer = comment(pipeline, number, "/retest chrony@nonprod")
    assert [(b["image"], b["cluster"]) for b in answer["builds"]] == [("chrony", "nonprod")]
    assert last_reply(pipeline, number) == (
        f"/retest by @maint: re-running `chrony@nonprod` on {short}."
    )
    chrony = wait_after(pipeline, sha, CHRONY, seen[CHRONY])
    assert chrony[seen[CHRONY]] == "pending"
    assert chrony[-1] == "success"
    assert pipeline.github.contexts(sha)[FIREWALLD] == first[FIREWALLD]
    rerun = answer["builds"][0]["build_id"]
    assert (
        commit_status.log_url(webhook_pipeline.PUBLIC_URL, rerun)
        == (pipeline.github.latest(sha)[CHRONY]["target_url"])
    )

    # every failed build: only firewalld@nonprod is left to run again
    answer = comment(pipeline, number, "/retest\nthe mirror was down")
    assert [(b["image"], b["cluster"]) for b in answer["builds"]] == [("firewalld", "nonprod")]
    assert last_reply(pipeline, number) == (
        f"/retest by @maint: re-running `firewalld@nonprod` on {short}."
    )
    firewalld = wait_after(pipeline, sha, FIREWALLD, seen[FIREWALLD])
    assert firewalld[seen[FIREWALLD]] == "pending"
    assert firewalld[-1] == "success"
    assert flaky.hits == {f"/{number}/chrony": 2, f"/{number}/firewalld": 2}

    # the head's record holds the re-runs instead of the failed builds (a push cancels them)
    after = recorded_builds(pipeline, number)
    assert {b.build_id for b in after} == {rerun, answer["builds"][0]["build_id"]}
    assert not {b.build_id for b in before} & {b.build_id for b in after}

    # nothing failed any more
    assert comment(pipeline, number, "/retest") == {"ignored": f"no failed builds on {short}"}
    assert last_reply(pipeline, number) == (
        f"/retest by @maint: nothing re-run: no failed builds on {short}."
    )


def test_an_unapproved_fork_head_has_nothing_to_retest(
    pipeline: Pipeline, base_image: BaseImage
) -> None:
    number, branch = 71, "fork-71"
    sha = pipeline.push_pull_head(
        number,
        branch,
        {"images/chrony/Containerfile": pipeline.containerfile(base_image, "echo fork71")},
    )
    pipeline.github.add_pull(number, head_sha=sha, head_ref=branch, head_repo="mallory/layers")
    opened = pipeline.deliver(
        pipeline.pull_payload("opened", number, sha, branch, head_repo="mallory/layers"),
        event="pull_request",
    )
    assert opened.status_code == 202, opened.text
    assert pipeline.wait_task(opened.json()["task_id"])["builds"] == []

    reason = (
        f"{sha[:12]} is a fork's commit that no /ok-to-test approved: it has no builds to re-run"
    )
    assert comment(pipeline, number, "/retest") == {"ignored": reason}
    assert last_reply(pipeline, number) == f"/retest by @maint: nothing re-run: {reason}."
    time.sleep(1.0)
    assert set(pipeline.github.contexts(sha)) <= {LINT}
