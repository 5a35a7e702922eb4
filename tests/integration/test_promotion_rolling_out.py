"""The promotion store's "rollouts in progress upstream" (issue 11: a promotion waits for an
upstream rollout) over a real Redis: the last state recorded per pool decides, and the
environment wait that names the upstream survives its JSON round trip through Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from pipeline.adapters.promotion_store import PromotionStore
from pipeline.adapters.promotion_waits import PromotionWaits
from pipeline.core import reconcile, rollout
from tests import services
from tests.plugins.builds import VERIFICATION_KEY

pytestmark = pytest.mark.integration
DIGEST = "sha256:" + "c" * 64
URL = f"registry.example.com/layering/firewalld@{DIGEST}"


@pytest.fixture
def client(redis_server: services.RedisServer) -> Iterator[redis.Redis[bytes]]:
    found: redis.Redis[bytes] = redis.Redis.from_url(redis_server.url)
    found.flushdb()
    yield found
    found.close()


def seen(phase: rollout.Phase, *, pool: str = "worker") -> rollout.RolloutRecord:
    return rollout.record(
        rollout.RolloutState(phase, 1, 2),
        cluster="nonprod",
        pool=pool,
        commit_sha="7" * 40,
        os_image_url=URL,
        observed_at=1.0,
    )


def test_a_pool_updating_is_a_rollout_in_progress_until_its_last_state_is_not(
    client: redis.Redis[bytes],
) -> None:
    store = PromotionStore(client, key=VERIFICATION_KEY.encode())
    assert store.rolling_out(["nonprod"]) == set()
    store.record_rollout(seen(rollout.Phase.UPDATING))
    store.record_rollout(seen(rollout.Phase.UPDATED, pool="infra"))
    assert store.rolling_out(["nonprod", "other"]) == {("nonprod", DIGEST)}
    assert store.rolling_out(["other"]) == set()
    store.record_rollout(seen(rollout.Phase.UPDATED))
    assert store.rolling_out(["nonprod"]) == set()


def test_a_wait_on_an_upstream_rollout_is_found_by_its_cluster(
    client: redis.Redis[bytes],
) -> None:
    waits = PromotionWaits(client)
    waits.record_wait(reconcile.EnvironmentWait("prod", "5" * 40, upstreams=("nonprod",)))
    waits.record_wait(reconcile.EnvironmentWait("stage", "6" * 40, build_keys=("k",)))
    assert [w.environment for w in reconcile.waiting_on_rollout(waits.waits(), "nonprod")] == [
        "prod"
    ]
    assert reconcile.waiting_on_rollout(waits.waits(), "prod") == []
