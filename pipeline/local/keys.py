"""The secrets `layering up` makes once and keeps in its workdir, each in a file of mode 0600
(the webhook secret, the Redis password, the verification key), and the Redis configuration
file that hands redis-server its password. Build steps under chroot isolation read every
process's command line (/proc/N/cmdline) but not its environment or a 0600 file outside the
build root: so the password goes to redis-server in a file and to the services in their
environment, never on an argv. Does file I/O."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path


def write_private(path: Path, text: str) -> None:
    """Write `path` readable by its owner only (also when it existed with wider modes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


def secret(path: Path) -> str:
    """The secret in `path`, made (64 hex digits, mode 0600) on first use."""
    if path.is_file():
        text = path.read_text().strip()
        if text:
            path.chmod(0o600)
            return text
    value = secrets.token_hex(32)
    write_private(path, value + "\n")
    return value


def _quoted(value: str) -> str:
    # redis.conf strings take the escapes JSON writes (\" \\ \n \t \xHH is not needed)
    return json.dumps(value)


def redis_config(*, port: int, data: Path, password: str) -> str:
    """redis-server's configuration: loopback only, append-only persistence in `data`, and a
    password every client must give (requirepass)."""
    return (
        f"port {port}\n"
        "bind 127.0.0.1\n"
        "protected-mode yes\n"
        "appendonly yes\n"
        'save ""\n'
        f"dir {_quoted(str(data))}\n"
        f"requirepass {_quoted(password)}\n"
    )


def redis_url(*, port: int, password: str) -> str:
    """The URL the services connect with (in their environment only, never on an argv)."""
    return f"redis://:{password}@127.0.0.1:{port}/0"
