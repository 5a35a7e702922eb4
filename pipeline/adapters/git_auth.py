"""Credentials for Git over HTTPS without putting them on an argv or on disk. A repository URL
from settings may carry them (`https://user:token@host/repo.git`); git is given the URL without
them, and a credential helper defined in the environment of that git process only
(GIT_CONFIG_COUNT/KEY/VALUE, git >= 2.31) answers with the values, which it reads from two
more variables of that environment and prints with the shell's builtin printf. So the
credentials are in no process's command line (every build step under chroot isolation can read
/proc/N/cmdline, not /proc/N/environ), not in the mirror's `remote.origin.url`, and not in
FETCH_HEAD. No I/O: it only computes URLs and environments.

    remote = git_auth.remote("https://bot:s3cret@git.example.com/gitops.git")
    remote.url   # https://git.example.com/gitops.git
    remote.env   # for the git processes that talk to it
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field

USERNAME_VARIABLE = "PIPELINE_GIT_USERNAME"
PASSWORD_VARIABLE = "PIPELINE_GIT_PASSWORD"  # noqa: S105 - a variable name, not a secret
# `!` runs it with the shell: `get` is the only operation answered (store/erase do nothing);
# printf is a builtin, so the values never reach an argv
_HELPER = (
    '!f() { test "$1" = get || exit 0; '
    f'printf "username=%s\\npassword=%s\\n" "${USERNAME_VARIABLE}" "${PASSWORD_VARIABLE}"; }}; f'
)


@dataclass(frozen=True)
class Remote:
    url: str  # without credentials: what git's argv and the repository's config hold
    env: Mapping[str, str] = field(default_factory=dict)  # for git processes using `url`

    @property
    def has_credentials(self) -> bool:
        return bool(self.env)


def remote(url: str) -> Remote:
    """Split the credentials out of an http(s) URL; other URLs (file://, ssh) pass as they are."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or (parts.username is None and not parts.password):
        return Remote(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    clean = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return Remote(
        clean,
        {
            # an empty value first: no helper configured elsewhere (a store on disk) is asked
            "GIT_CONFIG_COUNT": "2",
            "GIT_CONFIG_KEY_0": "credential.helper",
            "GIT_CONFIG_VALUE_0": "",
            "GIT_CONFIG_KEY_1": "credential.helper",
            "GIT_CONFIG_VALUE_1": _HELPER,
            USERNAME_VARIABLE: urllib.parse.unquote(parts.username or ""),
            PASSWORD_VARIABLE: urllib.parse.unquote(parts.password or ""),
        },
    )
