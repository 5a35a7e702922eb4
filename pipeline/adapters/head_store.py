"""The head of each branch and pull request in Redis: the HeadStore port. Does network I/O
(Redis).

Key `layering:head:<scope>` holds the head document as JSON (core/head.py `Head`), for 14 days.
Each change is a read-decide-write under WATCH/MULTI, so two deliveries of one scope racing
each other cannot both win; the decisions are core's (`head.claim`, `head.with_builds`).

Key `layering:head-timeline:<scope>` lists when each head of the scope arrived (JSON
`[sha, time]`, the last `approval.TIMELINE_LENGTH`), appended in the same transaction as the
claim that made it the head: an /ok-to-test approves the head as of its comment
(core/approval.py), and a /retest re-runs builds of that head only (core/retest.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from typing import Any, cast

import redis

from pipeline.core import approval, head, retest

PREFIX = "layering:head:"
TIMELINE_PREFIX = "layering:head-timeline:"
TTL_SECONDS = 14 * 24 * 3600

Change = Callable[[head.Head | None], head.Head | None]
# queues more commands into the transaction that writes a head: (pipeline, read, written)
AlsoWrite = Callable[[Any, head.Head | None, head.Head], None]


def key(scope: str) -> str:
    return f"{PREFIX}{scope}"


def timeline_key(scope: str) -> str:
    return f"{TIMELINE_PREFIX}{scope}"


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

        def arrived(pipe: Any, current: head.Head | None, written: head.Head) -> None:
            if approval.arrives(current, sha=sha, closed=closed):
                name = timeline_key(scope)
                pipe.rpush(name, json.dumps(approval.Seen(sha, enqueued_at).to_json()))
                pipe.ltrim(name, -approval.TIMELINE_LENGTH, -1)
                pipe.expire(name, TTL_SECONDS)

        previous, written = self._update(
            scope,
            lambda current: head.claim(current, sha=sha, enqueued_at=enqueued_at, closed=closed),
            also=arrived,
        )
        return written is not None, previous

    def timeline(self, scope: str) -> list[approval.Seen]:
        """When each head of `scope` arrived, oldest first (unreadable entries left out)."""
        entries = (
            approval.Seen.from_json(_json(raw))
            for raw in self._client.lrange(timeline_key(scope), 0, -1)
        )
        return [seen for seen in entries if seen is not None]

    def record_builds(
        self, scope: str, sha: str, builds: Sequence[head.HeadBuild]
    ) -> head.Head | None:
        """Add `builds` to head `sha` of `scope`; when a newer head took the scope (or the pull
        request was closed) meanwhile, return that head instead (the caller cancels them)."""
        current, written = self._update(
            scope, lambda current: head.with_builds(current, sha=sha, builds=builds)
        )
        return None if written is not None else current

    def record_rerun(
        self, scope: str, sha: str, *, replaced: Collection[str], builds: Sequence[head.HeadBuild]
    ) -> head.Head | None:
        """Swap the builds a /retest re-ran (`replaced` ids) for their new `builds` in head
        `sha` of `scope`; as `record_builds`, the newer head when one took the scope."""
        current, written = self._update(
            scope,
            lambda current: retest.with_rerun(current, sha=sha, replaced=replaced, builds=builds),
        )
        return None if written is not None else current

    def _update(
        self, scope: str, change: Change, *, also: AlsoWrite | None = None
    ) -> tuple[head.Head | None, head.Head | None]:
        """(the document read, the one written: None when `change` declined); `also` adds
        commands to the transaction that writes."""
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
                    if also is not None:
                        also(pipe, current, written)
                    pipe.execute()
                    return current, written
                except redis.WatchError:
                    continue


def _json(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except ValueError:
        return None
