"""The public key promotion and the gate trust (LAYERING_SIGNING_PUBLIC_KEY), read from the
service's own file system, never from the branch being promoted. Reads one file.

Read on each use: a key rotated on disk is trusted by the next promotion, no restart needed.
Whether it is a PEM public key a ClusterImagePolicy can carry is core/image_policy.py's
to say (the plan refuses naming the setting)."""

from __future__ import annotations

from pipeline.core.errors import PermanentError
from pipeline.core.settings import Settings

# a PEM public key is a few hundred bytes; the CRD takes at most 8192 characters of base64
MAX_BYTES = 8 * 1024


def public_key(settings: Settings) -> bytes | None:
    """The trusted public key; None when LAYERING_SIGNING_PUBLIC_KEY is not set."""
    path = settings.signing_public_key
    if path is None:
        return None
    try:
        with path.open("rb") as file:
            found = file.read(MAX_BYTES + 1)
    except OSError as exc:
        raise PermanentError(
            f"LAYERING_SIGNING_PUBLIC_KEY: cannot read {path}: {exc.strerror or exc}; point it "
            "at the .pub file of `layering signing-key create`"
        ) from exc
    if len(found) > MAX_BYTES:
        raise PermanentError(
            f"LAYERING_SIGNING_PUBLIC_KEY: {path} is over {MAX_BYTES} bytes, not a public key"
        )
    return found
