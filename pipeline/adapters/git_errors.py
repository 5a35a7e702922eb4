"""Git's failures as the pipeline's errors: a `git.GitCommandError` becomes a TemporaryError
(network, server 5xx: retry) or a PermanentError (no such ref, repository not found,
authentication refused) by what its stderr says, with credentials stripped from every URL and
only a tail of stderr kept. No I/O of its own; used by the Git adapter modules."""

from __future__ import annotations

import re

import git

from pipeline.core.errors import PermanentError, TemporaryError

STDERR_TAIL = 600
_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
# stderr phrases that mean retrying cannot help; anything else (DNS, refused, reset, 5xx,
# early EOF, timeouts) is treated as passing
_PERMANENT_FETCH = (
    "couldn't find remote ref",
    "not our ref",
    "invalid refspec",
    "is not a valid",
    "repository not found",
    "does not appear to be a git repository",
    "authentication failed",
    "could not read username",
    "permission denied",
    "access denied",
    "http/2 403",
    "error: 403",
    "error: 401",
    "error: 404",
)


def strip_credentials(text: str) -> str:
    """Hide user info in every URL of a message: `https://user:token@host` -> `https://***@host`."""
    return _CREDENTIALS.sub(r"\g<scheme>***@", text)


def stderr_tail(exc: git.GitCommandError) -> str:
    """The last STDERR_TAIL characters of a failed command's stderr, on one line, without
    credentials (or its exit status when it printed nothing)."""
    stderr = exc.stderr if isinstance(exc.stderr, str) else str(exc.stderr or "")
    stderr = stderr.strip().removeprefix("stderr:").strip().strip("'").strip()
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    tail = " | ".join(lines)[-STDERR_TAIL:]
    return strip_credentials(tail) or f"exit status {exc.status}"


def translate(action: str, exc: git.GitCommandError) -> PermanentError | TemporaryError:
    """The error to raise for a failed clone or fetch: permanent when retrying cannot help."""
    tail = stderr_tail(exc)
    message = f"{strip_credentials(action)} failed: {tail}"
    if any(phrase in tail.lower() for phrase in _PERMANENT_FETCH):
        return PermanentError(message)
    return TemporaryError(message)
