"""The head of each branch and pull request in Redis: the HeadStore port. Does network I/O
(Redis).

Key `layering:head:<scope>` holds the head document as JSON (core/head.py `Head`), for 14 days.
Each change is a read-decide-write under WATCH/MULTI, so two deliveries of one scope racing
each other cannot both win; the decisions are core's (`head.claim`, `head.with_builds`).

Key `layering:head-timeline:<scope>` lists when each head of the scope arrived (JSON
`[sha, time]`, the last `approval.TIMELINE_LENGTH`), appended in the same transaction as the
claim that made it the head: an /ok-to-test approves the head as of its comment
(core/approval.py), and a /retest re-runs builds of that head only (core/retest.py).

Key `layering:head-lint:<sha>` is a hash: image -> that image's lint findings at commit `sha`
(core/head_lint.py `stored`: bounded), for 14 days; the build page of a build of that commit
shows them. By commit, not scope: a newer head leaves an older commit's builds their findings.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from typing import Any, cast

import redis

from pipeline.core import approval, head, head_lint, retest
from pipeline.core.errors import TemporaryError

PREFIX = "layering:head:"
TIMELINE_PREFIX = "layering:head-timeline:"
LINT_PREFIX = "layering:head-lint:"
TTL_SECONDS = 14 * 24 * 3600

Change = Callable[[head.Head | None], head.Head | None]
# queues more commands into the transaction that writes a head: (pipeline, read, written)
AlsoWrite = Callable[[Any, head.Head | None, head.Head], None]


def key(scope: str) -> str:
    return f"{PREFIX}{scope}"


def timeline_key(scope: str) -> str:
    return f"{TIMELINE_PREFIX}{scope}"


def lint_key(sha: str) -> str:
    return f"{LINT_PREFIX}{sha}"


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

    def heads(self, *, limit: int) -> dict[str, head.Head]:
        """Up to `limit` heads by scope (the dashboard's pipeline view), read in one MGET
        after a bounded SCAN; unreadable documents left out."""
        scopes: list[bytes] = []
        try:
            # few heads among many keys: large steps make the walk a few round trips
            for name in self._client.scan_iter(match=f"{PREFIX}*", count=5000):
                scopes.append(name)
                if len(scopes) >= limit:
                    break
            raws = self._client.mget(scopes) if scopes else []
        except redis.RedisError as exc:
            raise TemporaryError(f"head store (Redis) unavailable: {exc}") from exc
        found: dict[str, head.Head] = {}
        for name, raw in zip(scopes, raws, strict=True):
            document = _json(raw) if raw is not None else None
            if isinstance(document, dict):
                found[name.decode(errors="replace").removeprefix(PREFIX)] = head.Head.from_json(
                    document
                )
        return found

    def timeline(self, scope: str) -> list[approval.Seen]:
        """When each head of `scope` arrived, oldest first (unreadable entries left out)."""
        entries = (
            approval.Seen.from_json(_json(raw))
            for raw in self._client.lrange(timeline_key(scope), 0, -1)
        )
        return [seen for seen in entries if seen is not None]

    def record_lint(self, sha: str, findings: head_lint.ByImage) -> None:
        """Keep each linted image's findings at commit `sha` (bounded: head_lint.stored)."""
        kept = head_lint.stored(findings)
        if not kept:
            return
        name = lint_key(sha)
        with self._client.pipeline() as pipe:
            pipe.hset(name, mapping=kept)  # type: ignore[arg-type]
            pipe.expire(name, TTL_SECONDS)
            pipe.execute()

    def lint_findings(self, sha: str, image: str) -> head_lint.Stored | None:
        """`image`'s lint findings at commit `sha`; None when no head of it linted the image."""
        try:
            raw = self._client.hget(lint_key(sha), image)
        except redis.RedisError as exc:
            raise TemporaryError(f"head store (Redis) unavailable: {exc}") from exc
        return head_lint.from_stored(raw)

    def held(self, sha: str) -> list[str]:
        """The images whose lint errors held their builds back at commit `sha`."""
        try:
            raw = self._client.hget(lint_key(sha), head_lint.HELD_FIELD)
        except redis.RedisError as exc:
            raise TemporaryError(f"head store (Redis) unavailable: {exc}") from exc
        return head_lint.held_from_stored(raw)

    def lint_of(self, sha: str, images: Collection[str]) -> dict[str, head_lint.Stored]:
        """The kept lint findings of `images` at commit `sha` (those recorded), in one HMGET:
        the dashboard's pipeline view reads only the images it shows."""
        names = sorted(set(images))
        if not names:
            return {}
        try:
            raws = self._client.hmget(lint_key(sha), names)
        except redis.RedisError as exc:
            raise TemporaryError(f"head store (Redis) unavailable: {exc}") from exc
        found: dict[str, head_lint.Stored] = {}
        for image, raw in zip(names, raws, strict=True):
            kept = head_lint.from_stored(raw)
            if kept is not None:
                found[image] = kept
        return found

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
