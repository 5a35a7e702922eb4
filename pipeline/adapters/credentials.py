"""The secret values a deployment is configured with, to mask wherever output is stored: every
secret setting (and the password of a URL one holds) and the credentials in the registry
authfile. Reads the authfile."""

from __future__ import annotations

from pydantic import SecretStr

from pipeline.adapters import redis_client, registry
from pipeline.core import redaction
from pipeline.core.settings import Settings


def secret_values(settings: Settings) -> list[str]:
    values: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            values.append(secret)
            values.extend(redaction.url_passwords(secret))
    # a sentinel:// URL's ?sentinel_password= is in no userinfo
    values.extend(redis_client.secrets(settings.redis_url.get_secret_value()))
    values.extend(registry.authfile_secrets(settings.registry_authfile))
    return values
