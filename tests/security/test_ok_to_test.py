"""Finding 6 end to end: `/ok-to-test` approves one commit of a fork's pull request, the head as
of the comment or the commit it names, never a commit pushed after it (which is linted and
waits), and nothing on a closed pull request. Real receiver, worker, Redis, bare Git repository
and GitHub stand-in (tests/webhook_pipeline.py)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from pipeline.core import approval, commit_status
from tests import services, webhook_pipeline
from tests.plugins.builds import BaseImage, StartWorker
from tests.webhook_pipeline import Pipeline

pytestmark = pytest.mark.integration

FORK = "mallory/layers"
LINT = "layering/lint"
BUILD = "layering/build/chrony@nonprod"
FORK_LINT = ["success"]


@pytest.fixture(scope="module")
def pipeline(
    tmp_path_factory: pytest.TempPathFactory,
    registry: services.Registry,
    base_image: BaseImage,
    start_worker: StartWorker,
) -> Iterator[Pipeline]:
    with webhook_pipeline.launch(
        tmp_path_factory.mktemp("ok-to-test"),
        registry=registry,
        base_image=base_image,
        start_worker=start_worker,
        name=f"ok-{uuid.uuid4().hex[:6]}",
    ) as running:
        running.github.permissions.update({"maint": "write"})
        yield running


def fork_head(
    pipeline: Pipeline, base: BaseImage, number: int, step: str, action: str = "opened"
) -> str:
    """Push a head to the fork's pull request `number`, tell GitHub and the receiver, wait until
    the worker linted it (a fork's head is linted only)."""
    branch = f"fork-{number}"
    sha = pipeline.push_pull_head(
        number, branch, {"images/chrony/Containerfile": pipeline.containerfile(base, step)}
    )
    pipeline.github.add_pull(number, head_sha=sha, head_ref=branch, head_repo=FORK)
    delivered = pipeline.deliver(
        pipeline.pull_payload(action, number, sha, branch, head_repo=FORK), event="pull_request"
    )
    assert delivered.status_code == 202, delivered.text
    assert pipeline.wait_task(delivered.json()["task_id"])["builds"] == []
    lint = pipeline.github.latest(sha).get(LINT) or {}
    deadline = time.monotonic() + 30
    while commit_status.FORK_NOTE not in str(lint.get("description")):
        assert time.monotonic() < deadline, pipeline.github.contexts(sha)
        time.sleep(0.05)
        lint = pipeline.github.latest(sha).get(LINT) or {}
    return sha


def comment(pipeline: Pipeline, number: int, body: str, **options: object) -> dict[str, object]:
    """Deliver a comment by a maintainer; the worker's answer (or the receiver's, when it
    ignored the comment)."""
    payload = pipeline.comment_payload(number, body, user="maint", **options)
    delivered = pipeline.deliver(payload, event="issue_comment")
    assert delivered.status_code == 202, delivered.text
    answer: dict[str, object] = delivered.json()
    if "task_id" in answer:
        answer = pipeline.wait_task(str(answer["task_id"]))
    return answer


def test_a_push_after_the_comment_is_linted_not_built(
    pipeline: Pipeline, base_image: BaseImage
) -> None:
    reviewed = fork_head(pipeline, base_image, 60, "echo reviewed > /etc/chrony")
    time.sleep(approval.CLOCK_MARGIN_SECONDS)  # the maintainer reads the change
    commented_at = time.time()
    time.sleep(0.05)
    pushed = fork_head(pipeline, base_image, 60, "echo unreviewed > /etc/chrony", "synchronize")

    # the comment arrives after the push (or the push raced the maintainer's click)
    answer = comment(pipeline, 60, "/ok-to-test", created_at=commented_at)

    assert answer == {
        "ignored": f"the comment approved {reviewed[:12]}, but #60 moved to {pushed[:12]} "
        f"at about that time or after it; review it and comment /ok-to-test {pushed}"
    }
    time.sleep(1.0)
    assert set(pipeline.github.contexts(pushed)) == {LINT}, "linted, not built"
    assert set(pipeline.github.contexts(reviewed)) == {LINT}

    # naming the commit approves exactly that commit
    named = comment(pipeline, 60, f"/ok-to-test {pushed}")
    assert [build["image"] for build in named["builds"]] == ["chrony"]
    found = pipeline.wait_statuses(pushed, {LINT, BUILD})
    assert found[BUILD] == ["pending", "success"]
    assert set(pipeline.github.contexts(reviewed)) == {LINT}


def test_the_head_as_of_the_comment_is_built(pipeline: Pipeline, base_image: BaseImage) -> None:
    reviewed = fork_head(pipeline, base_image, 61, "echo as-of > /etc/chrony")
    time.sleep(approval.CLOCK_MARGIN_SECONDS)  # the maintainer reads the change

    answer = comment(pipeline, 61, "/ok-to-test\nthanks, looks good")

    assert [build["image"] for build in answer["builds"]] == ["chrony"]
    assert pipeline.wait_statuses(reviewed, {BUILD})[BUILD] == ["pending", "success"]


def test_a_closed_pull_request_is_not_built(pipeline: Pipeline, base_image: BaseImage) -> None:
    sha = fork_head(pipeline, base_image, 62, "echo closed > /etc/chrony")

    # the payload says the pull request is closed: the receiver queues nothing
    assert comment(pipeline, 62, "/ok-to-test", state="closed") == {
        "ignored": "pull request #62 is closed: not built"
    }
    # closed after the comment was made: the worker asks GitHub before building
    pipeline.github.pulls[62]["state"] = "closed"
    assert comment(pipeline, 62, "/ok-to-test") == {"ignored": "pull request #62 is closed"}
    time.sleep(1.0)
    assert set(pipeline.github.contexts(sha)) == {LINT}


def test_anything_but_a_full_sha_is_ignored_with_a_reason(
    pipeline: Pipeline, base_image: BaseImage
) -> None:
    sha = fork_head(pipeline, base_image, 63, "echo short > /etc/chrony")

    for argument in (sha[:12], "main", f"{sha} {sha}"):
        answer = comment(pipeline, 63, f"/ok-to-test {argument}")
        assert answer == {
            "ignored": f"/ok-to-test takes nothing or one full 40-hex commit sha, not {argument!r}"
        }
    assert comment(pipeline, 63, f"/ok-to-test {'e' * 40}") == {
        "ignored": f"/ok-to-test names eeeeeeeeeeee, but the head of #63 is {sha[:12]}; "
        f"review it and comment /ok-to-test {sha}"
    }
    time.sleep(1.0)
    assert set(pipeline.github.contexts(sha)) == {LINT}
