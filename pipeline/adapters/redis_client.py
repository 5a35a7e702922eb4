"""The one way the project reaches Redis from LAYERING_REDIS_URL (core/redis_url.py): redis-py
clients, synchronous and asyncio, for `redis://`, `rediss://` (TLS) and `sentinel://` URLs, and
the same URL translated for Celery's broker and result backend. Makes clients (redis-py
connects lazily, so making one does no I/O); `celery_options` is data only.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel

from pipeline.core import redis_url
from pipeline.core.redis_url import RedisTarget

_CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}


def sync_client(url: str, **options: Any) -> redis.Redis[bytes]:
    """A client for `url`; `options` are redis-py connection options (socket_timeout, ...).
    On a sentinel:// URL, the client asks the Sentinels for the master on each new connection,
    so it follows a failover."""
    target = redis_url.parse(url)
    kwargs = {**_connection_kwargs(target), **options}
    if not target.sentinel:
        host, port = target.hosts[0]
        return redis.Redis(host=host, port=port, **kwargs)
    sentinels = redis.sentinel.Sentinel(
        list(target.hosts), sentinel_kwargs=_sentinel_kwargs(target, options)
    )
    return sentinels.master_for(str(target.master_name), redis_class=redis.Redis, **kwargs)


def async_client(url: str, **options: Any) -> redis.asyncio.Redis[bytes]:
    """The asyncio client for `url`, as `sync_client`."""
    target = redis_url.parse(url)
    kwargs = {**_connection_kwargs(target), **options}
    if not target.sentinel:
        host, port = target.hosts[0]
        return redis.asyncio.Redis(host=host, port=port, **kwargs)
    sentinels = redis.asyncio.sentinel.Sentinel(
        list(target.hosts), sentinel_kwargs=_sentinel_kwargs(target, options)
    )
    return sentinels.master_for(str(target.master_name), redis_class=redis.asyncio.Redis, **kwargs)


def celery_options(url: str, transport_options: Mapping[str, Any]) -> dict[str, Any]:
    """Celery settings for a broker and result backend at `url`: the URL as kombu and Celery
    take it (without our ?query), their TLS settings, and `transport_options` with the Sentinel
    master's name and the Sentinels' password added."""
    target = redis_url.parse(url)
    options = dict(transport_options)
    if target.sentinel:
        options["master_name"] = target.master_name
        if target.sentinel_password:
            options["sentinel_kwargs"] = {"password": target.sentinel_password}
    config: dict[str, Any] = {
        "broker_url": target.celery_url,
        "result_backend": target.celery_url,
        "broker_transport_options": options,
        "result_backend_transport_options": dict(options),
    }
    if target.tls is not None:
        # explicit, so kombu does not fall back to an unchecked certificate on rediss://
        config["broker_use_ssl"] = _ssl_kwargs(target, constants=True)
        config["redis_backend_use_ssl"] = _ssl_kwargs(target, constants=True)
    return config


def secrets(url: str) -> list[str]:
    """The passwords in `url` (the server's and the Sentinels'), to mask in stored output."""
    return redis_url.parse(url).secrets


def _connection_kwargs(target: RedisTarget) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"db": target.db}
    if target.username:
        kwargs["username"] = target.username
    if target.password:
        kwargs["password"] = target.password
    if target.tls is not None:
        kwargs.update(ssl=True, **_ssl_kwargs(target, constants=False))
    return kwargs


def _ssl_kwargs(target: RedisTarget, *, constants: bool) -> dict[str, Any]:
    tls = target.tls
    assert tls is not None
    kwargs: dict[str, Any] = {
        # redis-py takes the names; Celery's result backend checks for the ssl constants
        "ssl_cert_reqs": _CERT_REQS[tls.cert_reqs] if constants else tls.cert_reqs,
    }
    if tls.ca_certs:
        kwargs["ssl_ca_certs"] = tls.ca_certs
    if tls.certfile:
        kwargs["ssl_certfile"] = tls.certfile
        kwargs["ssl_keyfile"] = tls.keyfile
    return kwargs


def _sentinel_kwargs(target: RedisTarget, options: Mapping[str, Any]) -> dict[str, Any]:
    """How to talk to the Sentinels themselves: the socket timeouts of the client, and their
    own password (the URL's password is the master's)."""
    kwargs = {key: value for key, value in options.items() if key.startswith("socket_")}
    if target.sentinel_password:
        kwargs["password"] = target.sentinel_password
    return kwargs
