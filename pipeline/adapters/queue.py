"""Enqueue Celery tasks from the webhook receiver without Celery: one atomic Redis script sets
the delivery's dedupe key and pushes a Celery (protocol 2) message onto the queue's list, in one
round trip over a shared, pipelined asyncio connection. Does network I/O (Redis).

Why not `app.send_task`: it is synchronous (a thread hop per request in an async server) and
does several round trips; the receiver's latency budget is a few milliseconds. The message is
the one kombu's Redis transport writes (`LPUSH <queue> <json>`), so a stock worker consumes it.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import json
import os
import socket
import urllib.parse
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.errors import TemporaryError

DEDUPE_PREFIX = "layering:delivery:"

# KEYS[1] dedupe key (or "" for none), KEYS[2] queue list; ARGV[1] ttl, ARGV[2] message.
# A Lua script runs atomically: either the key is set and the message queued, or neither,
# so a failed enqueue never leaves a key behind that would make a redelivery look duplicate.
_ENQUEUE_ONCE = """
if KEYS[1] ~= "" then
  if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[1])) then
    return 0
  end
end
redis.call('LPUSH', KEYS[2], ARGV[2])
return 1
"""


@dataclass(frozen=True)
class TaskMessage:
    task: str
    queue: str
    args: Sequence[Any]
    task_id: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)


_ORIGIN_JSON = json.dumps(f"{os.getpid()}@{socket.gethostname()}")


# The envelope kombu's Redis transport stores (Celery protocol 2 headers), as a template: the
# receiver writes one per delivery, and formatting is several times cheaper than json.dumps of
# the nested dictionaries. Every substituted value is itself JSON-encoded.
_ENVELOPE = (
    '{"body":%(body)s,"content-encoding":"utf-8","content-type":"application/json",'
    '"headers":{"lang":"py","task":%(task)s,"id":%(id)s,"shadow":null,"eta":null,'
    '"expires":null,"group":null,"group_index":null,"retries":0,"timelimit":[null,null],'
    '"root_id":%(id)s,"parent_id":null,"argsrepr":%(argsrepr)s,"kwargsrepr":%(kwargsrepr)s,'
    '"origin":%(origin)s,"ignore_result":false,"replaced_task_nesting":0,'
    '"stamped_headers":null,"stamps":{}},'
    '"properties":{"correlation_id":%(id)s,"reply_to":"","delivery_mode":2,'
    '"delivery_info":{"exchange":"","routing_key":%(queue)s},"priority":0,'
    '"body_encoding":"base64","delivery_tag":%(id)s}}'
)


def celery_message(message: TaskMessage) -> bytes:
    """A Celery protocol 2 message as kombu's Redis transport stores it."""
    body = json.dumps(
        [list(message.args), dict(message.kwargs), _NO_CALLBACKS], separators=(",", ":")
    )
    encode = json.dumps
    return (
        _ENVELOPE
        % {
            "body": encode(base64.b64encode(body.encode()).decode()),
            "task": encode(message.task),
            "id": encode(message.task_id),
            "argsrepr": encode(repr(tuple(message.args))[:256]),
            "kwargsrepr": encode(repr(dict(message.kwargs))[:256]),
            "origin": _ORIGIN_JSON,
            "queue": encode(message.queue),
        }
    ).encode()


_NO_CALLBACKS = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def new_task_id() -> str:
    return str(uuid.uuid4())


class RespError(Exception):
    """An error reply from Redis (e.g. NOSCRIPT)."""


class _Unavailable(Exception):
    pass


Reply = bytes | str | int | None | list[Any] | RespError


class PipelinedConnection:
    """One Redis connection shared by every request of the process, pipelined: commands are
    written as they come and replies matched in order, so concurrent deliveries share
    round trips and system calls instead of each taking a pooled connection. A lost or timed
    out connection fails every pending command (the callers answer 503) and is reopened on
    the next command."""

    def __init__(self, redis_url: str, *, timeout: float = 5.0) -> None:
        parts = urllib.parse.urlsplit(redis_url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r}")
        self._parts = parts
        self._timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: collections.deque[asyncio.Future[Reply]] = collections.deque()
        self._reading: asyncio.Task[None] | None = None
        self._connecting: asyncio.Lock | None = None
        self._outgoing: list[bytes] = []

    @staticmethod
    def encode(*args: bytes | str) -> bytes:
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg.encode() if isinstance(arg, str) else arg
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        return b"".join(out)

    async def _open(self) -> None:
        parts = self._parts
        if parts.scheme == "unix":
            reader, writer = await asyncio.open_unix_connection(parts.path)
        else:
            reader, writer = await asyncio.open_connection(
                parts.hostname or "127.0.0.1",
                parts.port or 6379,
                ssl=parts.scheme == "rediss" or None,
            )
        self._reader, self._writer = reader, writer
        self._reading = asyncio.get_running_loop().create_task(self._read_replies(reader))
        setup: list[tuple[str, ...]] = []
        if parts.password is not None:
            user = urllib.parse.unquote(parts.username or "")
            password = urllib.parse.unquote(parts.password)
            setup.append(("AUTH", user, password) if user else ("AUTH", password))
        query = urllib.parse.parse_qs(parts.query)
        db = parts.path.lstrip("/") if parts.scheme != "unix" else query.get("db", ["0"])[0]
        if db and db != "0":
            setup.append(("SELECT", db))
        for command in setup:
            reply = await self._send(command)
            if isinstance(reply, RespError):
                raise _Unavailable(f"{command[0]} refused")

    async def _read_reply(self, reader: asyncio.StreamReader) -> Reply:
        line = await reader.readuntil(b"\r\n")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RespError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else (await reader.readexactly(size + 2))[:-2]
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [await self._read_reply(reader) for _ in range(size)]
        raise _Unavailable(f"unexpected reply type {kind!r}")

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                reply = await self._read_reply(reader)
                waiter = self._pending.popleft()
                if not waiter.done():
                    waiter.set_result(reply)
        except (OSError, EOFError, asyncio.IncompleteReadError, _Unavailable, IndexError) as exc:
            self._drop(exc)

    def _drop(self, exc: BaseException) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
        self._outgoing = []  # never send a failed caller's command on a new connection
        pending, self._pending = self._pending, collections.deque()
        for waiter in pending:
            if not waiter.done():
                waiter.set_exception(_Unavailable(type(exc).__name__))
        if self._reading is not None and self._reading is not asyncio.current_task():
            self._reading.cancel()
        self._reading = None

    async def _send(self, command: tuple[bytes | str, ...]) -> Reply:
        if self._writer is None:
            raise _Unavailable("connection lost")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Reply] = loop.create_future()
        self._pending.append(waiter)
        # Commands of one event loop turn go out in one write (one system call) rather than
        # one each: under load the deliveries of many connections share a packet.
        if not self._outgoing:
            loop.call_soon(self._flush)
        self._outgoing.append(self.encode(*command))
        return await waiter

    def _flush(self) -> None:
        outgoing, self._outgoing = self._outgoing, []
        if self._writer is not None and outgoing:
            self._writer.write(b"".join(outgoing))

    async def call(self, *command: bytes | str) -> Reply:
        """Send one command; raises _Unavailable when Redis cannot answer in time."""
        try:
            async with asyncio.timeout(self._timeout):
                if self._writer is None:
                    if self._connecting is None:
                        self._connecting = asyncio.Lock()
                    async with self._connecting:
                        if self._writer is None:
                            await self._open()
                return await self._send(command)
        except (TimeoutError, OSError) as exc:
            # replies may now arrive out of step with their callers: start afresh
            self._drop(exc)
            raise _Unavailable(type(exc).__name__) from exc

    async def close(self) -> None:
        self._drop(ConnectionResetError("closed"))


class Enqueuer:
    """The receiver's Redis client: dedupe + enqueue in one atomic script, readiness ping."""

    def __init__(self, redis_url: str, *, timeout: float = 5.0) -> None:
        self._connection = PipelinedConnection(redis_url, timeout=timeout)
        self._sha = hashlib.sha1(_ENQUEUE_ONCE.encode(), usedforsecurity=False).hexdigest()

    async def close(self) -> None:
        await self._connection.close()

    async def ping(self) -> None:
        try:
            reply = await self._connection.call("PING")
        except _Unavailable as exc:
            raise TemporaryError(f"redis unreachable: {exc}", retry_after=5) from exc
        if reply != "PONG":
            raise TemporaryError(f"redis answered PING with {reply!r}", retry_after=5)

    async def enqueue_once(
        self, dedupe_key: str | None, ttl_seconds: int, message: TaskMessage
    ) -> bool:
        """Queue `message` unless `dedupe_key` was seen; False for a duplicate.

        Raises TemporaryError when Redis cannot be reached (nothing was queued then).
        """
        keys = (DEDUPE_PREFIX + dedupe_key if dedupe_key else "", message.queue)
        argv = (str(ttl_seconds), celery_message(message))
        try:
            reply = await self._connection.call("EVALSHA", self._sha, "2", *keys, *argv)
            if isinstance(reply, RespError) and reply.args[0].startswith("NOSCRIPT"):
                await self._connection.call("SCRIPT", "LOAD", _ENQUEUE_ONCE)
                reply = await self._connection.call("EVALSHA", self._sha, "2", *keys, *argv)
        except _Unavailable as exc:
            raise TemporaryError(
                f"could not queue {message.task}: redis unreachable ({exc})", retry_after=5
            ) from exc
        if isinstance(reply, RespError):
            raise TemporaryError(f"could not queue {message.task}: redis said {reply}")
        return reply == 1
