#!/usr/bin/env python3
"""coreos-layering-pipeline post-receive hook: posts each pushed branch to the pipeline's
POST /webhook/git in the shape of a GitHub push event, signed with X-Hub-Signature-256.

Installed by `layering install-hook`; reads its settings from this repository's Git config:
  layering.url         the receiver, e.g. http://pipeline.example.com/webhook/git
  layering.secretFile  file holding the webhook secret (LAYERING_WEBHOOK_SECRET)
  layering.repoUrl     the URL the pipeline clones (LAYERING_REPO_URL): identifies the repository
  layering.fullName    optional owner/name (LAYERING_GITHUB_REPOSITORY)
  layering.attempts    optional number of tries per delivery before it is spooled (4)

Standard library only (it runs with the Git server's Python, not the pipeline's). Ref names
and shas are passed to git as argument lists and sent as JSON data, never through a shell;
stdin is read as bytes and parsed by `updates` (a malformed line is skipped, never fatal).

No event is lost: a delivery refused with 5xx or unreachable is retried a few times, then kept
in `<git dir>/layering-spool/` and sent again, with the same delivery id (so the receiver's
dedupe holds), before the next push's deliveries. Run the hook with empty input to flush the
spool by hand: `hooks/post-receive </dev/null`. The push itself has succeeded either way.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

ZERO = "0" * 40
SHA = re.compile(r"^[0-9a-f]{40}$")
ATTEMPTS = 4
TIMEOUT = 10


SPOOL = "layering-spool"


def git(*args: str) -> tuple[int, str]:
    # a commit message or config value that is not UTF-8 must not crash the hook (lost events)
    result = subprocess.run(
        ["git", *args],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        check=False,
        timeout=60,
    )
    return result.returncode, result.stdout.strip()


def config(name: str, default: str = "") -> str:
    code, value = git("config", "--get", name)
    return value if code == 0 and value else default


def head_message(sha: str) -> str:
    code, message = git("log", "-1", "--format=%B", sha, "--")
    return message if code == 0 else ""


def forced(old: str, new: str) -> bool:
    if old == ZERO or new == ZERO:
        return False
    code, _ = git("merge-base", "--is-ancestor", old, new)
    return code == 1


def payload(old: str, new: str, ref: str, repo_url: str, full_name: str) -> dict[str, object]:
    return {
        "ref": ref,
        "before": old,
        "after": new,
        "created": old == ZERO,
        "deleted": new == ZERO,
        "forced": forced(old, new),
        "repository": {"full_name": full_name, "clone_url": repo_url},
        "pusher": {"name": os.environ.get("GL_USERNAME") or os.environ.get("USER", "")},
        "head_commit": None if new == ZERO else {"id": new, "message": head_message(new)},
        "commits": [],
    }


def send(url: str, secret: bytes, body: bytes, delivery: str) -> int | None:
    signature = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(  # noqa: S310 - main() accepts only http(s) URLs
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "layering-post-receive/1",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": signature,
        },
    )
    error = ""
    configured = config("layering.attempts", str(ATTEMPTS))
    attempts = (
        min(int(configured), 20) if configured.isascii() and configured.isdigit() else ATTEMPTS
    )
    for attempt in range(1, max(1, attempts) + 1):
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310
                return int(response.status)
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return exc.code
            error = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            error = type(exc).__name__
        if attempt < attempts:
            time.sleep(2 ** (attempt - 1))
    print(
        f"layering: delivery {delivery} not accepted ({error}); kept for redelivery",
        file=sys.stderr,
    )
    return None


def spool_dir() -> str:
    code, git_dir = git("rev-parse", "--absolute-git-dir")
    return os.path.join(git_dir if code == 0 else os.getcwd(), SPOOL)


def keep(delivery: str, body: bytes) -> None:
    """Write an undelivered event where the next run of the hook finds it."""
    directory = spool_dir()
    os.makedirs(directory, mode=0o700, exist_ok=True)
    staging = os.path.join(directory, f".{delivery}.tmp")
    with open(staging, "wb") as handle:
        handle.write(body)
    os.replace(staging, os.path.join(directory, f"{time.time():020.6f}-{delivery}.json"))


def deliver(url: str, secret: bytes, body: bytes, delivery: str, label: str) -> bool:
    status = send(url, secret, body, delivery)
    if status is None:
        return False
    print(f"layering: {label} -> HTTP {status}", file=sys.stderr)
    return True


def flush_spool(url: str, secret: bytes) -> bool:
    """Resend kept deliveries oldest first; stop at the first that still fails."""
    directory = spool_dir()
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".json"))
    except FileNotFoundError:
        return True
    for name in names:
        path = os.path.join(directory, name)
        delivery = name.removesuffix(".json").split("-", 1)[1]
        with open(path, "rb") as handle:
            body = handle.read()
        if not deliver(url, secret, body, delivery, f"redelivered {delivery}"):
            return False
        os.unlink(path)
    return True


def updates(data: bytes) -> list[tuple[str, str, str]]:
    """The branch updates in the hook's stdin: lines of `<old> <new> <ref>`. Anything else
    (blank lines, bad shas, tags, extra fields) is skipped. A ref name is kept byte for byte:
    bytes that are not UTF-8 become surrogate escapes (sent as JSON escapes; the receiver
    ignores such a branch) rather than crashing the hook and losing the other updates."""
    found = []
    for raw in data.split(b"\n"):
        parts = raw.decode("utf-8", errors="surrogateescape").split(" ")
        if len(parts) != 3 or not SHA.match(parts[0]) or not SHA.match(parts[1]):
            continue
        old, new, ref = parts[0], parts[1], parts[2].removesuffix("\r")
        if ref.startswith("refs/heads/") and len(ref) > len("refs/heads/"):
            found.append((old, new, ref))
    return found


def main() -> int:
    url = config("layering.url")
    secret_file = config("layering.secretFile")
    if not url or not secret_file:
        print("layering: layering.url or layering.secretFile not configured", file=sys.stderr)
        return 0
    if not url.startswith(("http://", "https://")):
        print(f"layering: layering.url must be an http(s) URL, not {url!r}", file=sys.stderr)
        return 0
    try:
        with open(secret_file, "rb") as handle:
            secret = handle.read().strip()
    except OSError as exc:
        print(f"layering: cannot read the webhook secret file: {exc.strerror}", file=sys.stderr)
        return 0
    repo_url = config("layering.repoUrl") or "file://" + os.path.abspath(os.getcwd())
    full_name = config("layering.fullName") or os.path.basename(os.path.abspath(os.getcwd()))
    # older events first, so the receiver sees pushes in order
    reachable = flush_spool(url, secret)
    for old, new, ref in updates(sys.stdin.buffer.read()):
        body = json.dumps(payload(old, new, ref, repo_url, full_name)).encode()
        delivery = str(uuid.uuid4())
        if not reachable or not deliver(url, secret, body, delivery, f"{ref} {new[:12]}"):
            reachable = False
            keep(delivery, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
