"""What promotions wait for and what they still have to do after a push, in Redis; and which
build keys have a build underway, read from the build records. Does network I/O (Redis).

Keys (nothing expires: a restart of Redis with AOF loses none of it):
`layering:promotion-waits` (a hash: environment -> core/reconcile.EnvironmentWait as JSON),
`layering:promotion-waits:since` (a hash: the same slots -> when the slot began waiting, kept
while it waits again and again, for /metrics' pending promotions) and
`layering:post-push:<environment>` (a hash: the branch head the promotion was made on ->
core/post_push.PostPush as JSON, written before the push, removed once its statuses are queued
and its rollout watches sent).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection
from typing import Any

import redis

from pipeline.adapters import build_records
from pipeline.core import builds, post_push, reconcile
from pipeline.core.errors import TemporaryError

WAITS = "layering:promotion-waits"
WAITS_SINCE = "layering:promotion-waits:since"
POST_PUSH = "layering:post-push:"
# build records read to find the builds underway (the newest first)
RECENT_BUILDS = 500


class PromotionWaits:
    """ports.PromotionWaits on the process's Redis client."""

    def __init__(self, client: redis.Redis[bytes]) -> None:
        self._client = client

    def _call(self, action: str, *args: Any) -> Any:
        try:
            return getattr(self._client, action)(*args)
        except redis.RedisError as exc:
            raise TemporaryError(
                f"promotion waits (Redis) unavailable during {action}: {exc}; retried"
            ) from exc

    # -- waits ------------------------------------------------------------------------------

    def record_wait(self, wait: reconcile.EnvironmentWait) -> None:
        document = json.dumps(wait.to_json(), sort_keys=True)
        try:
            with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(WAITS, wait.slot, document)
                # recorded again (the sweep, a re-run still waiting): it keeps when it began
                pipe.hsetnx(WAITS_SINCE, wait.slot, wait.recorded_at)
                pipe.execute()
        except redis.RedisError as exc:
            raise TemporaryError(
                f"promotion waits (Redis) unavailable during record_wait: {exc}; retried"
            ) from exc

    def clear_wait(self, environment: str) -> None:
        """Forget the wait kept under `environment` (a `reconcile.downstream_slot` for a
        downstream promotion)."""
        try:
            with self._client.pipeline(transaction=True) as pipe:
                pipe.hdel(WAITS, environment)
                pipe.hdel(WAITS_SINCE, environment)
                pipe.execute()
        except redis.RedisError as exc:
            raise TemporaryError(
                f"promotion waits (Redis) unavailable during clear_wait: {exc}; retried"
            ) from exc

    def pending_since(self) -> dict[str, float]:
        """slot -> when it began waiting (a wait recorded before this was kept has none)."""
        raw: dict[bytes, bytes] = self._call("hgetall", WAITS_SINCE)
        return {slot.decode(): float(since) for slot, since in raw.items()}

    def waits(self) -> list[reconcile.EnvironmentWait]:
        raw: dict[bytes, bytes] = self._call("hgetall", WAITS)
        return [
            reconcile.EnvironmentWait.from_json(json.loads(value))
            for _, value in sorted(raw.items())
        ]

    # -- post-push records ------------------------------------------------------------------

    def save_post_push(self, record: post_push.PostPush) -> None:
        value = json.dumps(record.to_json(), sort_keys=True)
        self._call("hset", f"{POST_PUSH}{record.environment}", record.base_head, value)

    def remove_post_push(self, environment: str, base_head: str) -> None:
        self._call("hdel", f"{POST_PUSH}{environment}", base_head)

    def post_pushes(self, environment: str | None = None) -> list[post_push.PostPush]:
        if environment is not None:
            keys = [f"{POST_PUSH}{environment}".encode()]
        else:
            try:
                keys = sorted(self._client.scan_iter(match=f"{POST_PUSH}*", count=500))
            except redis.RedisError as exc:
                raise TemporaryError(f"promotion waits (Redis) unavailable: {exc}") from exc
        found: list[post_push.PostPush] = []
        for key in keys:
            raw: dict[bytes, bytes] = self._call("hgetall", key)
            found += [post_push.PostPush.from_json(json.loads(v)) for _, v in sorted(raw.items())]
        return sorted(found, key=lambda record: record.created_at)


class BuildsUnderway:
    """ports.BuildActivity over the build records: a build key is underway while a record of
    it younger than `window_seconds` (the longest a build can hold its key) is queued or
    running."""

    def __init__(
        self,
        store: build_records.BuildStore,
        *,
        window_seconds: float,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._window = window_seconds
        self._now = now

    def underway(self, build_keys: Collection[str]) -> dict[str, reconcile.BuildUnderway]:
        wanted = set(build_keys)
        if not wanted:
            return {}
        oldest = self._now() - self._window
        found: dict[str, reconcile.BuildUnderway] = {}
        for record in self._store.recent(RECENT_BUILDS):
            if (
                record.build_key in wanted
                and record.created_at >= oldest
                and record.state in (builds.BuildState.QUEUED, builds.BuildState.RUNNING)
            ):
                # newest first: the last one seen is the oldest build underway
                found[record.build_key] = reconcile.BuildUnderway(
                    record.build_key, record.state.value, record.created_at
                )
        return found
