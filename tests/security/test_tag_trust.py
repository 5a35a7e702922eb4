"""Issue 10, finding 5: promotion trusted tags. Build keys are predictable, and anyone who can
push to the registry could plant a tag before the build (which was then skipped) or move it
after (and promotion took whatever it named). Now a build is skipped only when the tag's image
carries the build's `layering.build-key` and base digest labels, promotion takes the digest the
build recorded, checks the registry still serves it, and refuses a moved tag naming both
digests. Real buildah, registry and worker."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
import redis

from pipeline.core import builds, commit_status, content_address
from tests import services
from tests.conftest import require_tools
from tests.integration.promotion_support import push_image
from tests.plugins.builds import BaseImage, StartWorker
from tests.security import policy_support
from tests.security.policy_support import Stage

pytestmark = pytest.mark.integration

CLUSTER = "tt"


@pytest.fixture(scope="module")
def policy(
    tmp_path_factory: pytest.TempPathFactory,
    registry: services.Registry,
    base_image: BaseImage,
    start_worker: StartWorker,
) -> Iterator[Stage]:
    """Its own registry path: every tag here is new, nothing is reused by accident."""
    require_tools("git", "redis-server", "skopeo", "buildah")
    with policy_support.stage(
        tmp_path_factory.mktemp("tag-trust"),
        registry=registry,
        base=base_image,
        start_worker=start_worker,
        worker_name="tag-trust",
        prefix=f"tags{uuid.uuid4().hex[:10]}",
    ) as stage:
        yield stage


def tag_of(stage: Stage, image: str) -> tuple[str, str, str]:
    """(registry path, tag, build key) of `image` for cluster tt at main's head."""
    model = stage.gitops.origin_model("refs/heads/main")
    key = content_address.build_key(
        tree_id=str(model.images[image].tree_id),
        base_digest=stage.base.digest,
        build_args={},
    )
    path = f"{stage.prefix}/{image}".split("/", 1)[1]
    return path, content_address.tag(key), key


def builds_run(stage: Stage) -> int:
    """How many `buildah build` the worker ran."""
    return sum(" build " in f" {call} " for call in stage.worker.env.buildah_calls())


def add_image(stage: Stage, image: str) -> None:
    def change(s: Stage) -> None:
        s.gitops.write(
            f"images/{image}/Containerfile", policy_support.containerfile(uuid.uuid4().hex)
        )
        s.cluster(CLUSTER, environment=CLUSTER, pools={"worker": image})

    stage.on_main(change, f"{image} on {CLUSTER}")


def test_a_tag_moved_after_the_build_is_refused_naming_both_digests(policy: Stage) -> None:
    add_image(policy, "moved")
    record = policy.build("moved", CLUSTER)
    assert record["state"] == "succeeded"
    built = str(record["digest"])
    path, tag, _ = tag_of(policy, "moved")
    host = policy.prefix.split("/", 1)[0]
    moved = push_image(host, path, tag, content=b"something else entirely")
    assert moved != built

    head = policy.branch_from_main(f"env/{CLUSTER}")
    outcome = policy.promote(head, CLUSTER)
    assert outcome["commit_sha"] is None
    assert policy.gitops.origin_head(f"env/{CLUSTER}") == head
    description = policy.wait_status(head, f"layering/promote/{CLUSTER}", "failure")
    assert f"sha256:{commit_status.short_digest(moved)}" in description
    assert f"sha256:{commit_status.short_digest(built)}" in description
    assert "tag moved" in description


@pytest.mark.parametrize(
    ("image", "labels"),
    [
        ("planted", None),
        (
            "planted-base",
            {builds.LABEL_BUILD_KEY: "KEY", builds.LABEL_BASE_DIGEST: "sha256:" + "0" * 64},
        ),
        ("planted-key", {builds.LABEL_BUILD_KEY: "0" * 64, builds.LABEL_BASE_DIGEST: "BASE"}),
    ],
    ids=["no-labels", "wrong-base", "wrong-key"],
)
def test_a_planted_tag_is_built_over_not_reused(
    policy: Stage, image: str, labels: dict[str, str] | None
) -> None:
    add_image(policy, image)
    path, tag, key = tag_of(policy, image)
    if labels is not None:
        labels = {
            name: value.replace("KEY", key).replace("BASE", policy.base.digest)
            for name, value in labels.items()
        }
    host = policy.prefix.split("/", 1)[0]
    planted = push_image(host, path, tag, content=f"planted {image}".encode(), labels=labels)
    calls = builds_run(policy)

    record = policy.build(image, CLUSTER)
    assert record["state"] == "succeeded", record
    assert record["digest"] != planted
    assert builds_run(policy) == calls + 1  # buildah built it

    # the tag now holds the build, with its labels: the next build of the key reuses it
    again = policy.build(image, CLUSTER)
    assert (again["state"], again["digest"]) == ("skipped", record["digest"])
    assert builds_run(policy) == calls + 1


def test_a_digest_record_forged_in_redis_is_not_taken(policy: Stage) -> None:
    """What a build step that reached Redis could write: the record of another digest (one it
    pushed) for a build key. Unsigned, it reads as not built."""
    add_image(policy, "forged")
    record = policy.build("forged", CLUSTER)
    path, tag, key = tag_of(policy, "forged")
    host = policy.prefix.split("/", 1)[0]
    planted = push_image(host, path, f"{tag}-x", content=b"the attacker's image")
    repository = f"{policy.prefix}/forged"
    client: redis.Redis[bytes] = redis.Redis.from_url(policy.redis.url)
    try:
        field = f"{repository}@{key}"
        forged = {"build_key": key, "repository": repository, "digest": planted}
        client.hset("layering:built", field, json.dumps(forged))
        push_image(host, path, tag, content=b"the attacker's image")  # the tag agrees
    finally:
        client.close()
    head = policy.branch_from_main(f"env/{CLUSTER}")
    outcome = policy.promote(head, CLUSTER)
    assert outcome["commit_sha"] is None, outcome
    assert "not built: no build recorded this build key" in outcome["refusals"][0]
    assert record["digest"] != planted
