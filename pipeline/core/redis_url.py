"""LAYERING_REDIS_URL as data: the one URL that serves the Celery broker, the Celery results and
the project's own Redis store. Parses and checks the three accepted forms; no I/O.

    redis://[[user]:password@]host[:port][/db]
    rediss://[[user]:password@]host[:port][/db][?ssl_cert_reqs=required|optional|none]
        [&ssl_ca_certs=/path/ca.pem][&ssl_certfile=/path/cert.pem&ssl_keyfile=/path/key.pem]
    sentinel://[[user]:password@]host[:port][;sentinel://host[:port]...][/db]
        ?master_name=NAME[&sentinel_password=SECRET]

The forms are those Celery and kombu take, with the options they otherwise read from separate
settings (broker_use_ssl, transport options) moved into the query, so one value configures all
three. A password is the Redis server's (for Sentinel: the master's); `sentinel_password` is the
Sentinels' own, when they require one. Error messages never repeat the URL: it holds passwords.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

NAME = "LAYERING_REDIS_URL"
FORMS = (
    "redis://[:password@]host[:port][/db], "
    "rediss://[:password@]host[:port][/db][?ssl_cert_reqs=required|optional|none"
    "&ssl_ca_certs=/path/ca.pem], or "
    "sentinel://[:password@]host[:port][;sentinel://host[:port]...][/db]?master_name=NAME"
)
DEFAULT_PORT = {"redis": 6379, "rediss": 6379, "sentinel": 26379}
CertReqs = Literal["required", "optional", "none"]
_CERT_REQS: dict[str, CertReqs] = {
    "required": "required",
    "cert_required": "required",
    "optional": "optional",
    "cert_optional": "optional",
    "none": "none",
    "cert_none": "none",
}
_TLS_KEYS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_SENTINEL_KEYS = ("master_name", "sentinel_password")
_MASTER_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ENCODE_HINT = "percent-encode / ? # ; @ and % in a password (e.g. %2F for /)"


class RedisUrlError(ValueError):
    """A LAYERING_REDIS_URL that cannot work; `problem` says why and the fix, without the URL."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"{NAME}: {problem}")
        self.problem = problem


@dataclass(frozen=True)
class Tls:
    """TLS to the Redis server: how its certificate is checked, and an optional client cert."""

    cert_reqs: CertReqs = "required"
    ca_certs: str | None = None  # None: the system's trusted CAs
    certfile: str | None = None
    keyfile: str | None = None


@dataclass(frozen=True)
class RedisTarget:
    """Where the Redis server is: one server (`master_name` None) or the Sentinels that know the
    master of `master_name`."""

    hosts: tuple[tuple[str, int], ...]  # the server, or every Sentinel
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: Tls | None = None
    master_name: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    # the URL Celery and kombu take: the query (options they read from settings) left out
    celery_url: str = field(default="", repr=False)

    @property
    def sentinel(self) -> bool:
        return self.master_name is not None

    @property
    def secrets(self) -> list[str]:
        """The passwords the URL holds, to mask wherever output is stored."""
        return [s for s in (self.password, self.sentinel_password) if s]


def parse(url: str) -> RedisTarget:
    """The target of `url`, or RedisUrlError naming what is wrong and the accepted forms."""
    url = url.strip()
    if not url:
        raise RedisUrlError(f"is empty; give one of {FORMS}")
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in DEFAULT_PORT:
        shown = f"{scheme}://" if re.fullmatch(r"[a-z0-9+.-]{1,20}", scheme) else "this scheme"
        raise RedisUrlError(f"{shown} is not supported; give one of {FORMS}")
    chunks = url.split(";")
    if scheme != "sentinel" and len(chunks) > 1:
        raise RedisUrlError(
            f"only sentinel:// URLs list several hosts (separated by ';'); {_ENCODE_HINT}"
        )
    query: dict[str, str] = {}
    hosts: list[tuple[str, int]] = []
    dbs: set[int] = set()
    username = password = None
    celery_chunks: list[str] = []
    for index, chunk in enumerate(chunks):
        where = f"sentinel #{index + 1}" if len(chunks) > 1 else "the URL"
        parts = _split(chunk, where)
        if parts.scheme.lower() != scheme:
            raise RedisUrlError(f"{where} must start with {scheme}:// like the first one")
        if parts.query and index != len(chunks) - 1:
            raise RedisUrlError("put the ?options after the last host only")
        if parts.fragment:
            raise RedisUrlError(f"has a '#' fragment; {_ENCODE_HINT}")
        if parts.query:
            query = _query(parts.query)
        if parts.username is not None or parts.password is not None:
            if index:
                raise RedisUrlError(
                    "give the password once, on the first sentinel:// (it is the master's); "
                    "the Sentinels' own password goes in ?sentinel_password="
                )
            username = unquote(parts.username) if parts.username else None
            password = unquote(parts.password) if parts.password is not None else None
        hosts.append((_host(parts.hostname, where), _port(parts, scheme, where)))
        if parts.path not in ("", "/"):
            dbs.add(_db(parts.path, where))
        celery_chunks.append(f"{scheme}://{parts.netloc}{parts.path}")
    if len(dbs) > 1:
        raise RedisUrlError("names different databases on different sentinels; give one /db")
    tls = _tls(scheme, query)
    master_name, sentinel_password = _sentinel_options(scheme, query)
    return RedisTarget(
        hosts=tuple(hosts),
        db=dbs.pop() if dbs else 0,
        username=username,
        password=password or None,
        tls=tls,
        master_name=master_name,
        sentinel_password=sentinel_password,
        celery_url=";".join(celery_chunks),
    )


def _split(chunk: str, where: str) -> _Parts:
    try:
        parts = urlsplit(chunk)
        # urlsplit checks the port lazily: read it here for a clear message
        port = parts.port
    except ValueError:
        raise RedisUrlError(
            f"{where} has no valid host[:port] (a port is 1-65535); {_ENCODE_HINT}"
        ) from None
    return _Parts(
        parts.scheme,
        parts.netloc,
        parts.path,
        parts.query,
        parts.fragment,
        parts.username,
        parts.password,
        parts.hostname,
        port,
    )


@dataclass(frozen=True)
class _Parts:
    scheme: str
    netloc: str
    path: str
    query: str
    fragment: str
    username: str | None
    password: str | None
    hostname: str | None
    port: int | None


def _host(hostname: str | None, where: str) -> str:
    if not hostname:
        raise RedisUrlError(
            f"{where} has no host, e.g. redis://redis.example:6379/0; {_ENCODE_HINT}"
        )
    return hostname


def _port(parts: _Parts, scheme: str, where: str) -> int:
    if parts.port is None:
        return DEFAULT_PORT[scheme]
    if not 1 <= parts.port <= 65535:
        raise RedisUrlError(f"{where} has port {parts.port}; a port is 1-65535")
    return parts.port


def _db(path: str, where: str) -> int:
    text = path.removeprefix("/")
    if not re.fullmatch(r"[0-9]{1,5}", text):
        raise RedisUrlError(
            f"{where} ends in a path that is not a database number; end it with /0 (or another "
            f"number), or nothing for 0; {_ENCODE_HINT}"
        )
    return int(text)


def _query(text: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise RedisUrlError("has a malformed ?query; write ?name=value&name=value") from None
    query: dict[str, str] = {}
    for key, value in pairs:
        if key not in (*_TLS_KEYS, *_SENTINEL_KEYS):
            shown = key if re.fullmatch(r"[A-Za-z0-9_]{1,40}", key) else "an option"
            raise RedisUrlError(
                f"does not take {shown} in its ?query; it takes "
                f"{', '.join((*_TLS_KEYS, *_SENTINEL_KEYS))}"
            )
        if key in query:
            raise RedisUrlError(f"gives {key} twice; give it once")
        if not value:
            raise RedisUrlError(f"gives {key} no value; give one or leave {key} out")
        query[key] = value
    return query


def _tls(scheme: str, query: dict[str, str]) -> Tls | None:
    given = [key for key in _TLS_KEYS if key in query]
    if scheme != "rediss":
        if given:
            fix = (
                "TLS to Sentinel is not supported: use sentinel:// without TLS options, or "
                "rediss:// to one server"
                if scheme == "sentinel"
                else "use rediss:// for TLS, or drop them"
            )
            raise RedisUrlError(f"gives {', '.join(given)} to a {scheme}:// URL; {fix}")
        return None
    reqs = query.get("ssl_cert_reqs", "required")
    if reqs.lower() not in _CERT_REQS:
        raise RedisUrlError("ssl_cert_reqs must be required, optional or none")
    if ("ssl_certfile" in query) != ("ssl_keyfile" in query):
        raise RedisUrlError("a client certificate needs both ssl_certfile and ssl_keyfile")
    for key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        if key in query and not query[key].startswith("/"):
            raise RedisUrlError(f"{key} must be an absolute path, e.g. {key}=/etc/redis/tls/x.pem")
    return Tls(
        cert_reqs=_CERT_REQS[reqs.lower()],
        ca_certs=query.get("ssl_ca_certs"),
        certfile=query.get("ssl_certfile"),
        keyfile=query.get("ssl_keyfile"),
    )


def _sentinel_options(scheme: str, query: dict[str, str]) -> tuple[str | None, str | None]:
    if scheme != "sentinel":
        given = [key for key in _SENTINEL_KEYS if key in query]
        if given:
            raise RedisUrlError(f"gives {', '.join(given)}, which only sentinel:// URLs take")
        return None, None
    master_name = query.get("master_name")
    if master_name is None:
        raise RedisUrlError(
            "a sentinel:// URL needs ?master_name=NAME, the name the Sentinels monitor "
            "(`sentinel monitor NAME ...`), e.g. ?master_name=mymaster"
        )
    if not _MASTER_NAME.fullmatch(master_name):
        raise RedisUrlError("master_name must be 1-64 letters, digits, '.', '_' or '-'")
    return master_name, query.get("sentinel_password")
