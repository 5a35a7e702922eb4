"""LAYERING_REDIS_URL: the accepted forms parse to their target (core/redis_url.py) and
translate to Celery's settings (adapters/redis_client.celery_options); a bad one stops start-up
with a message naming LAYERING_REDIS_URL and the fix, and never the password."""

from __future__ import annotations

import ssl

import pytest
from pydantic import ValidationError

from pipeline.adapters import credentials, redis_client
from pipeline.adapters.environment import load_settings
from pipeline.core import redis_url
from pipeline.core.errors import InputError
from pipeline.core.redis_url import RedisTarget, Tls
from pipeline.core.settings import Settings

PW = "s3cret-Passw0rd"
SPW = "sentinel-Passw0rd"

GOOD = {
    "default": ("redis://127.0.0.1:6379/0", RedisTarget(hosts=(("127.0.0.1", 6379),))),
    "password, db": (
        f"redis://:{PW}@redis.example/3",
        RedisTarget(hosts=(("redis.example", 6379),), db=3, password=PW),
    ),
    "user (ACL), encoded password": (
        "redis://layering:p%40ss%2Fw@[::1]:7000",
        RedisTarget(hosts=(("::1", 7000),), username="layering", password="p@ss/w"),
    ),
    "TLS, checked by default": (
        f"rediss://:{PW}@redis.example:6380/1",
        RedisTarget(hosts=(("redis.example", 6380),), db=1, password=PW, tls=Tls()),
    ),
    "TLS with a CA and a client certificate": (
        "rediss://redis.example/0?ssl_cert_reqs=required&ssl_ca_certs=/tls/ca.pem"
        "&ssl_certfile=/tls/c.pem&ssl_keyfile=/tls/c.key",
        RedisTarget(
            hosts=(("redis.example", 6379),),
            tls=Tls("required", "/tls/ca.pem", "/tls/c.pem", "/tls/c.key"),
        ),
    ),
    "TLS unchecked, Celery's spelling": (
        "rediss://redis.example?ssl_cert_reqs=CERT_NONE",
        RedisTarget(hosts=(("redis.example", 6379),), tls=Tls("none")),
    ),
    "Sentinels": (
        f"sentinel://:{PW}@s1:26379;sentinel://s2;sentinel://s3:26380/2"
        f"?master_name=mymaster&sentinel_password={SPW}",
        RedisTarget(
            hosts=(("s1", 26379), ("s2", 26379), ("s3", 26380)),
            db=2,
            password=PW,
            master_name="mymaster",
            sentinel_password=SPW,
        ),
    ),
}


@pytest.mark.parametrize(("url", "target"), GOOD.values(), ids=GOOD.keys())
def test_accepted_forms(url: str, target: RedisTarget) -> None:
    parsed = redis_url.parse(url)
    assert parsed == RedisTarget(**{**vars(target), "celery_url": parsed.celery_url})
    assert Settings(redis_url=url).redis_url.get_secret_value() == url


BAD = {
    "empty": ("", "give one of redis://"),
    "another scheme": (f"http://:{PW}@h", "http:// is not supported; give one of"),
    "no scheme": (f"{PW}@h:6379", "is not supported; give one of redis://"),
    "unix socket": ("unix:///run/redis.sock", "unix:// is not supported"),
    "unencoded / in the password": ("redis://:pa/ss@h/0", "percent-encode"),
    "unencoded # in the password": (f"redis://:{PW}#x@h", "percent-encode"),
    "bad port": (f"redis://:{PW}@h:99999", "a port is 1-65535"),
    "db not a number": (f"redis://:{PW}@h/zero", "end it with /0"),
    "several hosts without Sentinel": (f"redis://:{PW}@a;redis://b", "only sentinel://"),
    "unknown option": (f"redis://h?password={PW}", "it takes ssl_cert_reqs"),
    "TLS option on redis://": ("redis://h?ssl_cert_reqs=none", "use rediss:// for TLS"),
    "bad cert reqs": ("rediss://h?ssl_cert_reqs=maybe", "required, optional or none"),
    "relative CA path": ("rediss://h?ssl_ca_certs=ca.pem", "absolute path"),
    "half a client certificate": ("rediss://h?ssl_certfile=/c.pem", "both ssl_certfile"),
    "TLS to Sentinel": ("sentinel://h?master_name=m&ssl_cert_reqs=none", "not supported"),
    "Sentinel without master_name": (f"sentinel://:{PW}@h", "needs ?master_name=NAME"),
    "master_name without Sentinel": ("redis://h?master_name=m", "only sentinel:// URLs"),
    "password on a later Sentinel": (
        f"sentinel://a;sentinel://:{PW}@b?master_name=m",
        "give the password once",
    ),
    "mixed schemes": ("sentinel://a;redis://b?master_name=m", "must start with sentinel://"),
    "two databases": ("sentinel://a/1;sentinel://b/2?master_name=m", "give one /db"),
    "options before the last host": ("sentinel://a?master_name=m;sentinel://b", "last host"),
    "an option twice": ("rediss://h?ssl_cert_reqs=none&ssl_cert_reqs=none", "twice"),
}


@pytest.mark.parametrize(("url", "fix"), BAD.values(), ids=BAD.keys())
def test_bad_urls_name_the_setting_and_the_fix_never_the_password(url: str, fix: str) -> None:
    with pytest.raises(redis_url.RedisUrlError) as raised:
        redis_url.parse(url)
    assert str(raised.value).startswith("LAYERING_REDIS_URL: ")
    assert fix in str(raised.value)
    # start-up: every bad variable is named, with the same fix
    with pytest.raises(InputError) as stopped:
        load_settings(redis_url=url)
    assert "LAYERING_REDIS_URL: " in str(stopped.value)
    assert fix in str(stopped.value)
    with pytest.raises(ValidationError) as invalid:
        Settings(redis_url=url)
    for message in (str(raised.value), str(stopped.value), str(invalid.value)):
        assert PW not in message
        assert "pa/ss" not in message


def test_celery_gets_the_url_without_options_and_the_options_as_settings() -> None:
    plain = redis_client.celery_options(f"redis://:{PW}@h:6379/0", {"visibility_timeout": 9})
    assert plain == {
        "broker_url": f"redis://:{PW}@h:6379/0",
        "result_backend": f"redis://:{PW}@h:6379/0",
        "broker_transport_options": {"visibility_timeout": 9},
        "result_backend_transport_options": {"visibility_timeout": 9},
    }
    tls = redis_client.celery_options(
        f"rediss://:{PW}@h:6380/1?ssl_ca_certs=/tls/ca.pem", {"visibility_timeout": 9}
    )
    assert tls["broker_url"] == tls["result_backend"] == f"rediss://:{PW}@h:6380/1"
    checked = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": "/tls/ca.pem"}
    assert tls["broker_use_ssl"] == tls["redis_backend_use_ssl"] == checked
    sentinel = redis_client.celery_options(
        f"sentinel://:{PW}@s1:26379;sentinel://s2:26380/2?master_name=mymaster"
        f"&sentinel_password={SPW}",
        {"visibility_timeout": 9},
    )
    url = f"sentinel://:{PW}@s1:26379;sentinel://s2:26380/2"
    assert sentinel["broker_url"] == sentinel["result_backend"] == url
    options = {
        "visibility_timeout": 9,
        "master_name": "mymaster",
        "sentinel_kwargs": {"password": SPW},
    }
    assert sentinel["broker_transport_options"] == options
    assert sentinel["result_backend_transport_options"] == options
    assert "broker_use_ssl" not in sentinel


def test_both_passwords_are_masked_in_stored_output() -> None:
    url = f"sentinel://:{PW}@s1?master_name=m&sentinel_password={SPW}"
    values = credentials.secret_values(Settings(redis_url=url))
    assert PW in values
    assert SPW in values
    assert "sentinel_password" not in repr(redis_url.parse(url))
    assert PW not in repr(redis_url.parse(url))
