"""Promotion end to end with real Git repositories (bare origin, env branches), the real
registry (images pushed under their content-addressed tags) and a private Redis."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pipeline.adapters import branch_writer, build_records
from pipeline.adapters.promotion_store import PromotionStore
from pipeline.core import (
    commit_status,
    gate,
    machineconfig,
    promotion,
    promotion_commit,
    verification,
    yamlfile,
)
from pipeline.core.errors import TemporaryError
from pipeline.flows import gate as gate_flow
from pipeline.flows import promote as promote_flow
from pipeline.flows import promotion_inputs
from tests import crd, services
from tests.conftest import require_tools
from tests.integration.promotion_support import (
    EnvRepo,
    HttpRegistry,
    NoClusters,
    Recorder,
    push_targets,
)
from tests.plugins.builds import VERIFICATION_KEY

pytestmark = pytest.mark.integration
HOUR = 3600.0
T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def redis_client(redis_server: services.RedisServer) -> Iterator[redis.Redis[bytes]]:
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def env_repo(tmp_path: Path, registry: services.Registry) -> EnvRepo:
    require_tools("git")
    gitops = EnvRepo(tmp_path)
    gitops.add_image("firewalld", "firewalld")
    gitops.add_image("htop", "htop")
    prefix = f"{registry.host}/t{uuid.uuid4().hex[:12]}"  # the registry is shared
    gitops.registry_prefix = prefix
    gitops.add_cluster(
        "nonprod",
        environment="nonprod",
        registry=prefix,
        pools={"worker": "firewalld", "infra": "htop"},
    )
    gitops.add_cluster(
        "nonprod-b", environment="nonprod", registry=prefix, pools={"worker": "firewalld"}
    )
    gitops.add_cluster(
        "prod",
        environment="prod",
        registry=prefix,
        pools={"worker": "firewalld"},
        promotes_from="nonprod",
        soak="24h",
    )
    gitops.commit("seed")
    gitops.push("main")
    return gitops


def recorded(client: redis.Redis[bytes]) -> build_records.BuildStore:
    """Where the builds record their digests (push_targets records as a build would)."""
    return build_records.BuildStore(
        client, retention_seconds=3600, lock_timeout_seconds=60, key=VERIFICATION_KEY.encode()
    )


def sources(client: redis.Redis[bytes]) -> promotion_inputs.Sources:
    return promotion_inputs.Sources(
        registry=HttpRegistry(),
        store=PromotionStore(client, key=VERIFICATION_KEY.encode()),
        built=recorded(client),
        clusters=NoClusters(),
    )


@pytest.fixture
def built(
    env_repo: EnvRepo, registry: services.Registry, redis_client: redis.Redis[bytes]
) -> dict[str, str]:
    """Every (image, cluster) of main pushed to the registry and recorded as built: tag
    reference -> digest."""
    model = env_repo.origin_model("refs/heads/main")
    targets = promotion.targets(model, "nonprod") + promotion.targets(model, "prod")
    return push_targets(registry.host, targets, built=recorded(redis_client))


def make_writer(
    env_repo: EnvRepo, tmp_path: Path, client: redis.Redis[bytes], **kw: object
) -> branch_writer.BranchWriter:
    return branch_writer.BranchWriter(
        url=env_repo.url,
        workdir=tmp_path / "scratch",
        lock=branch_writer.RedisBranchLock(client),
        **kw,  # type: ignore[arg-type]
    )


def run_promote(
    env_repo: EnvRepo,
    tmp_path: Path,
    client: redis.Redis[bytes],
    environment: str,
    clock: Clock,
    recorder: Recorder,
) -> promote_flow.PromotionOutcome:
    head = env_repo.origin_head(f"env/{environment}")
    return promote_flow.promote(
        head,
        environment,
        writer=make_writer(env_repo, tmp_path, client),
        sources=sources(client),
        reporter=recorder,
        now=clock,
    )


def test_merge_into_nonprod_commits_a_machineconfig_per_pool(
    env_repo: EnvRepo, built: dict[str, str], tmp_path: Path, redis_client: redis.Redis[bytes]
) -> None:
    merge = env_repo.merge_into("main", "env/nonprod")
    recorder = Recorder()
    outcome = run_promote(env_repo, tmp_path, redis_client, "nonprod", Clock(), recorder)
    assert outcome.commit_sha is not None
    assert env_repo.origin_head("env/nonprod") == outcome.commit_sha
    model = env_repo.origin_model(outcome.commit_sha)
    expected = {
        (target.cluster, target.pool): built[target.tag_reference]
        for target in promotion.targets(model, "nonprod")
    }
    assert len(expected) == 3
    for (cluster, pool), digest in expected.items():
        raw = model.machineconfigs[machineconfig.path_for(cluster, pool)]
        document = yamlfile.load(raw)
        assert crd.machineconfig_errors(document) == []
        assert document["spec"]["osImageURL"].endswith(f"@{digest}")
        assert document["metadata"]["annotations"]["layering/source-commit"] == merge
    message = env_repo.origin_history("env/nonprod")[0].message
    assert promotion_commit.describes_promotion(message, "nonprod")
    trailers = promotion_commit.trailers(message)
    assert sorted(v for k, v in trailers if k == "Layering-Digest") == sorted(expected.values())
    assert ("Layering-Source-Commit", merge) in trailers
    assert {(c, s) for _, c, s, _ in recorder.statuses} == {
        ("layering/promote/nonprod", "success"),
        ("layering/promote/nonprod-b", "success"),
    }
    assert all(sha == merge for sha, *_ in recorder.statuses)
    # no kube: time-based verification from the promotion commit
    store = PromotionStore(redis_client, key=VERIFICATION_KEY.encode())
    verifications = store.verifications(["nonprod"])
    assert {key[1] for key in verifications} == {
        expected[("nonprod", "worker")],
        expected[("nonprod", "infra")],
    }
    assert all(v.method is verification.VerificationMethod.TIME for v in verifications.values())

    # the same promotion again: byte-identical, no commit
    again = run_promote(env_repo, tmp_path, redis_client, "nonprod", Clock(), Recorder())
    assert again.commit_sha is None
    assert env_repo.origin_head("env/nonprod") == outcome.commit_sha


def test_missing_image_commits_nothing_and_names_it(
    env_repo: EnvRepo, registry: services.Registry, tmp_path: Path, redis_client: redis.Redis[bytes]
) -> None:
    model = env_repo.origin_model("refs/heads/main")
    push_targets(
        registry.host,
        [t for t in promotion.targets(model, "nonprod") if t.image != "htop"],
        built=recorded(redis_client),
    )
    merge = env_repo.merge_into("main", "env/nonprod")
    recorder = Recorder()
    outcome = run_promote(env_repo, tmp_path, redis_client, "nonprod", Clock(), recorder)
    assert outcome.commit_sha is None
    assert env_repo.origin_head("env/nonprod") == merge
    sha, _, state, text = recorder.last("layering/promote/nonprod")
    assert (sha, state) == (merge, "failure")
    assert "htop" in text
    assert "not built" in text
    assert recorder.last("layering/promote/nonprod-b")[2] == "failure"


def test_prod_waits_for_verification_and_soak(
    env_repo: EnvRepo, built: dict[str, str], tmp_path: Path, redis_client: redis.Redis[bytes]
) -> None:
    clock = Clock()
    env_repo.merge_into("main", "env/nonprod")
    run_promote(env_repo, tmp_path, redis_client, "nonprod", clock, Recorder())
    prod_merge = env_repo.merge_into("env/nonprod", "env/prod")
    store = PromotionStore(redis_client, key=VERIFICATION_KEY.encode())
    redis_client.delete("layering:verifications:nonprod")  # as if nothing was verified yet
    model = env_repo.origin_model("refs/heads/env/prod")
    (target,) = promotion.targets(model, "prod")
    digest = built[target.tag_reference]

    recorder = Recorder()
    outcome = run_promote(env_repo, tmp_path, redis_client, "prod", clock, recorder)
    assert outcome.commit_sha is None
    assert env_repo.origin_head("env/prod") == prod_merge
    _, _, state, text = recorder.last("layering/promote/prod")
    assert state == "failure"
    assert commit_status.short_digest(digest) in text
    assert "not verified on nonprod" in text

    store.record_verification(
        verification.Verification(
            "nonprod", digest, clock.now, verification.VerificationMethod.ROLLOUT
        )
    )
    decision = gate_flow.judge(
        model,
        head=model,
        head_sha=prod_merge,
        environment="prod",
        sources=sources(redis_client),
        reporter=recorder,
        now=clock.now + HOUR,
    )
    assert decision.state is gate.GateState.PENDING
    assert decision.remaining_seconds == 23 * HOUR
    assert recorder.last("layering/gate/prod")[2] == "pending"
    clock.now += 2 * HOUR
    assert (
        run_promote(env_repo, tmp_path, redis_client, "prod", clock, Recorder()).commit_sha is None
    )

    clock.now += 22 * HOUR
    recorder = Recorder()
    outcome = run_promote(env_repo, tmp_path, redis_client, "prod", clock, recorder)
    assert outcome.commit_sha is not None
    assert recorder.last("layering/promote/prod")[2] == "success"
    raw = env_repo.origin_model(outcome.commit_sha).machineconfigs[
        machineconfig.path_for("prod", "worker")
    ]
    assert yamlfile.load(raw)["spec"]["osImageURL"].endswith(f"@{digest}")
    decision = gate_flow.judge(
        model,
        head=model,
        head_sha=prod_merge,
        environment="prod",
        sources=sources(redis_client),
        reporter=recorder,
        now=clock.now,
    )
    assert decision.state is gate.GateState.SUCCESS


def test_prod_on_another_base_refuses(
    env_repo: EnvRepo, registry: services.Registry, tmp_path: Path, redis_client: redis.Redis[bytes]
) -> None:
    env_repo.add_cluster(
        "prod",
        environment="prod",
        registry=env_repo.registry_prefix,
        pools={"worker": "firewalld"},
        promotes_from="nonprod",
        base="b",
    )
    env_repo.commit("prod runs a newer base")
    env_repo.push("main")
    model = env_repo.origin_model("refs/heads/main")
    push_targets(
        registry.host,
        promotion.targets(model, "nonprod") + promotion.targets(model, "prod"),
        built=recorded(redis_client),
    )
    env_repo.merge_into("main", "env/prod")
    recorder = Recorder()
    assert (
        run_promote(env_repo, tmp_path, redis_client, "prod", Clock(), recorder).commit_sha is None
    )
    _, _, state, text = recorder.last("layering/promote/prod")
    assert state == "failure"
    assert "base image differs from nonprod" in text


def test_removing_an_image_from_a_pool_deletes_its_machineconfig(
    env_repo: EnvRepo,
    built: dict[str, str],
    tmp_path: Path,
    redis_client: redis.Redis[bytes],
    registry: services.Registry,
) -> None:
    env_repo.merge_into("main", "env/nonprod")
    first = run_promote(env_repo, tmp_path, redis_client, "nonprod", Clock(), Recorder())
    assert first.commit_sha is not None
    env_repo.add_cluster(
        "nonprod",
        environment="nonprod",
        registry=env_repo.registry_prefix,
        pools={"worker": "firewalld"},
    )
    env_repo.commit("infra back to the stock image")
    env_repo.push("main")
    env_repo.merge_into("main", "env/nonprod")
    outcome = run_promote(env_repo, tmp_path, redis_client, "nonprod", Clock(), Recorder())
    assert outcome.commit_sha is not None
    model = env_repo.origin_model(outcome.commit_sha)
    assert machineconfig.path_for("nonprod", "infra") not in model.machineconfigs
    assert machineconfig.path_for("nonprod", "worker") in model.machineconfigs
    assert "Layering-Removed: nonprod/infra" in env_repo.origin_history("env/nonprod")[0].message


@pytest.mark.parametrize("locked", [True, False], ids=["redis-lock", "push-race"])
def test_twenty_racing_writers_all_land(
    env_repo: EnvRepo, tmp_path: Path, redis_client: redis.Redis[bytes], locked: bool
) -> None:
    env_repo.merge_into("main", "env/nonprod")
    before = env_repo.origin_head("env/nonprod")
    lock: branch_writer.BranchLock = (
        branch_writer.RedisBranchLock(redis_client) if locked else branch_writer.NoLock()
    )
    results: list[promotion_commit.WriteResult] = []
    errors: list[BaseException] = []
    os_image = machineconfig.OsImage(
        image="firewalld",
        repository="r.example/layering/firewalld",
        digest="sha256:" + "c" * 64,
        build_key="d" * 64,
        source_commit=before,
        base_image="b@sha256:" + "a" * 64,
    )

    def promote_one(index: int) -> None:
        writer = branch_writer.BranchWriter(
            url=env_repo.url, workdir=tmp_path / "scratch", lock=lock, max_attempts=40
        )
        path = machineconfig.path_for(f"c{index:02d}", "worker")
        content = machineconfig.render_yaml(pool="worker", os_image=os_image)

        def change_for(head: str, model: object) -> promotion_commit.Change:
            return promotion_commit.Change(
                f"promote c{index:02d}\n\nLayering-Source-Commit: {head}\n", {path: content}
            )

        try:
            results.append(writer.write("env/nonprod", change_for))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=promote_one, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert len([r for r in results if r.commit_sha]) == 20
    history = env_repo.origin_history("env/nonprod")
    new = history[: history.index(next(c for c in history if c.hexsha == before))]
    assert len(new) == 20
    assert all(len(commit.parents) == 1 for commit in new)
    model = env_repo.origin_model("refs/heads/env/nonprod")
    written = sorted(
        p for p in model.machineconfigs if p.endswith("99-layering-worker-os-image.yaml")
    )
    assert written == sorted(machineconfig.path_for(f"c{i:02d}", "worker") for i in range(20))
    if not locked:
        assert max(r.attempts for r in results) > 1  # pushes really raced


def test_secrets_in_the_remote_url_never_reach_messages(tmp_path: Path) -> None:
    require_tools("git")
    writer = branch_writer.BranchWriter(
        url="http://user:s3cret-token@127.0.0.1:9/nothing.git", workdir=tmp_path, max_attempts=1
    )
    with pytest.raises(TemporaryError) as caught:
        writer.write("env/nonprod", lambda head, model: None)
    assert "s3cret-token" not in str(caught.value)
    assert "***@127.0.0.1" in str(caught.value)
