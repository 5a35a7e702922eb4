"""The head of each branch and pull request in Redis: the HeadStore port. Does network I/O
(Redis).

Key `layering:head:<scope>` holds the head document as JSON (core/head.py `Head`), for 14 days.
Each change is a read-decide-write under WATCH/MULTI, so two deliveries of one scope racing
each other cannot both win; the decisions are core's (`head.claim`, `head.with_builds`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import cast

import redis

from pipeline.core import head

PREFIX = "layering:head:"
TTL_SECONDS = 14 * 24 * 3600


def key(scope: str) -> str:
    return f"{PREFIX}{scope}"


class RedisHeadStore:
    def __init__(self, client: redis.Redis[bytes]) -> None:
        self._client = client

    def get(self, scope: str) -> head.Head | None:
        raw = self._client.get(key(scope))
        return head.Head.from_json(json.loads(raw)) if raw else None

    def claim(
        self, scope: str, sha: str, enqueued_at: float, *, closed: bool = False
    ) -> tuple[bool, head.Head | None]:
        """Make `sha` the head of `scope` unless a newer delivery already did; `closed` leaves
        a tombstone. Returns (claimed, the previous head)."""
        previous, written = self._update(
            scope,
            lambda current: head.claim(current, sha=sha, enqueued_at=enqueued_at, closed=closed),
        )
        return written is not None, previous

    def record_builds(
        self, scope: str, sha: str, builds: Sequence[head.HeadBuild]
    ) -> head.Head | None:
        """Add `builds` to head `sha` of `scope`; when a newer head took the scope (or the pull
        request was closed) meanwhile, return that head instead (the caller cancels them)."""
        current, written = self._update(
            scope, lambda current: head.with_builds(current, sha=sha, builds=builds)
        )
        return None if written is not None else current

    def _update(
        self, scope: str, change: Callable[[head.Head | None], head.Head | None]
    ) -> tuple[head.Head | None, head.Head | None]:
        """(the document read, the one written: None when `change` declined)."""
        name = key(scope)
        with self._client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(name)
                    raw = cast("bytes | None", pipe.get(name))
                    current = head.Head.from_json(json.loads(raw)) if raw else None
                    written = change(current)
                    if written is None:
                        pipe.unwatch()
                        return current, None
                    pipe.multi()
                    pipe.set(name, json.dumps(written.to_json()), ex=TTL_SECONDS)
                    pipe.execute()
                    return current, written
                except redis.WatchError:
                    continue
