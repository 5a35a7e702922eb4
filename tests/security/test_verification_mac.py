"""Finding 3 (a build step that reaches Redis forges what the prod gate trusts): verifications
carry an HMAC-SHA256 under LAYERING_VERIFICATION_KEY. A record written straight into Redis
(unsigned as before, signed with another key, altered, or filed under another digest) is
ignored and logged by the one path the gate and the promotion read verifications through
(ports.PromotionStore.verifications), and does not shorten a soak when a real verification is
recorded. Against a real Redis."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest
import redis

from pipeline.adapters import promotion_store
from pipeline.core import verification
from pipeline.core.errors import InputError
from pipeline.core.settings import Settings
from tests import services
from tests.plugins.builds import REPO_ROOT

pytestmark = pytest.mark.integration

KEY = b"k" * 32
DIGEST = "sha256:" + "d" * 64
OTHER = "sha256:" + "e" * 64
HASH = "layering:verifications:nonprod"


@pytest.fixture
def client(redis_server: services.RedisServer) -> Iterator[redis.Redis[bytes]]:
    connection: redis.Redis[bytes] = redis.Redis.from_url(redis_server.url)
    connection.delete(HASH)
    yield connection
    connection.delete(HASH)
    connection.close()


def proven(digest: str = DIGEST, at: float = 1000.0) -> verification.Verification:
    return verification.Verification(
        "nonprod", digest, at, verification.VerificationMethod.ROLLOUT, commit_sha="c" * 40
    )


def forge(client: redis.Redis[bytes], field: str, document: dict[str, object]) -> None:
    """What a RUN step with Redis access writes (the pre-MAC format, or anything else)."""
    client.hset(HASH, field, json.dumps(document))


def test_forged_verifications_are_ignored_and_logged(
    client: redis.Redis[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    store = promotion_store.PromotionStore(client, key=KEY)
    unsigned = {**asdict(proven()), "method": "rollout"}
    forge(client, DIGEST, unsigned)
    other_key = verification.signed(b"x" * 32, proven(OTHER))
    forge(client, OTHER, other_key)
    altered = verification.signed(KEY, proven("sha256:" + "f" * 64, at=5000.0))
    altered["verified_at"] = 1.0  # an older time: a soak already over
    forge(client, "sha256:" + "f" * 64, altered)
    moved = verification.signed(KEY, proven("sha256:" + "a" * 64))
    forge(client, "sha256:" + "b" * 64, moved)  # a real record filed under another digest
    client.hset(HASH, "sha256:" + "c" * 64, b"{not json")
    with caplog.at_level(logging.WARNING, logger=promotion_store.__name__):
        assert store.verifications(["nonprod"]) == {}
    ignored = [r.getMessage() for r in caplog.records if "ignoring verification" in r.getMessage()]
    assert len(ignored) == 5, ignored
    assert all("LAYERING_VERIFICATION_KEY" in line for line in ignored)


def test_signed_verifications_are_trusted_and_a_forged_one_does_not_shorten_a_soak(
    client: redis.Redis[bytes],
) -> None:
    store = promotion_store.PromotionStore(client, key=KEY)
    # forged first: healthy "since" long ago, so the soak would be over at once
    forge(client, DIGEST, {**asdict(proven(at=1.0)), "method": "rollout"})
    assert store.record_verification(proven(at=1000.0)) is True  # the forgery counts as none
    assert store.verifications(["nonprod"]) == {("nonprod", DIGEST): proven(at=1000.0)}
    assert store.record_verification(proven(at=2000.0)) is False  # the first healthy time stands
    stored = json.loads(client.hget(HASH, DIGEST) or b"{}")
    assert set(stored) == {*asdict(proven()), verification.MAC_FIELD}
    # a reader with another key trusts nothing of ours either
    assert promotion_store.PromotionStore(client, key=b"y" * 32).verifications(["nonprod"]) == {}
    # a read-only store without a key trusts nothing, and cannot sign
    keyless = promotion_store.PromotionStore(client, key=None)
    assert keyless.verifications(["nonprod"]) == {}
    with pytest.raises(InputError, match="LAYERING_VERIFICATION_KEY"):
        keyless.record_verification(proven())


def test_writers_refuse_to_start_without_a_key(redis_server: services.RedisServer) -> None:
    for key in (None, "short"):
        settings = Settings(redis_url=redis_server.url, verification_key=key)  # type: ignore[arg-type]
        with pytest.raises(InputError, match="LAYERING_VERIFICATION_KEY") as refused:
            promotion_store.PromotionStore.from_settings(settings)
        assert "secrets.token_hex(32)" in str(refused.value)
    reader = promotion_store.PromotionStore.from_settings(
        Settings(redis_url=redis_server.url), signing=False
    )
    assert reader.verifications(["nonprod"]) == {}
    reader.client.close()


def test_the_promotion_cli_refuses_without_a_key(
    redis_server: services.RedisServer, tmp_path: Path
) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAYERING_")}
    env.update(LAYERING_REDIS_URL=redis_server.url, PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "promote", "--env", "prod", "--repo", "."],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "LAYERING_VERIFICATION_KEY is not set" in result.stderr
    assert "Traceback" not in result.stderr
