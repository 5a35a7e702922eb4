"""`layering up`'s workdir and what `up` is given and hands back: Layout (where everything
lives), Options (from the command line and environment), Started (what it prints once
everything runs), and the small JSON state files that survive a restart. Everything lives in
the workdir and survives a restart (Redis data, registry blobs, the repository, buildah storage,
the webhook secret). File I/O only in read_json / write_json.

    workdir/
      up.json                 ports and the stand-in image, reused on restart
      pids.json               the processes running now (removed on a clean stop)
      webhook-secret          mode 0600
      redis-password          mode 0600; redis/redis.conf (0600) hands it to redis-server
      verification-key        mode 0600; LAYERING_VERIFICATION_KEY of the services
      signing/                the sigstore key pushes are signed with (cosign.key and
                              cosign.password 0600, cosign.pub), made on first start
      redis/ registry/ buildah/ service/ logs/
      gitops.git              the sandbox repository (local mode only)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.errors import InputError

Say = Callable[[str], None]  # prints one line of progress for the user


@dataclass(frozen=True)
class Options:
    workdir: Path
    ports: Mapping[str, int | None]  # receiver, registry, redis; None: saved or default
    repo_url: str | None  # LAYERING_REPO_URL: serve that repository, no sandbox
    webhook_secret: str | None  # LAYERING_WEBHOOK_SECRET
    seed: Path  # the tree whose images/ and clusters/ seed the sandbox
    concurrency: int = 2
    buildah_storage: bool = True  # False: the environment configures buildah storage
    isolation: str | None = None  # LAYERING_BUILDAH_ISOLATION when set; None: `up` probes
    storage_driver: str | None = None  # LAYERING_BUILDAH_STORAGE_DRIVER when set; None: auto
    signing: bool = True  # sign pushes with the workdir's key (unless LAYERING_SIGNING_KEY)


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def state_file(self) -> Path:
        return self.root / "up.json"

    @property
    def pids_file(self) -> Path:
        return self.root / "pids.json"

    @property
    def secret_file(self) -> Path:
        return self.root / "webhook-secret"

    @property
    def redis_password_file(self) -> Path:
        return self.root / "redis-password"

    @property
    def verification_key_file(self) -> Path:
        return self.root / "verification-key"

    @property
    def signing(self) -> Path:
        return self.root / "signing"

    @property
    def redis(self) -> Path:
        return self.root / "redis"

    @property
    def redis_config(self) -> Path:
        return self.redis / "redis.conf"

    @property
    def registry(self) -> Path:
        return self.root / "registry"

    @property
    def registries_conf(self) -> Path:
        return self.registry / "registries.conf"

    @property
    def buildah(self) -> Path:
        return self.root / "buildah"

    @property
    def service(self) -> Path:
        """LAYERING_WORKDIR of the receiver, worker and beat (mirrors, promotion clones)."""
        return self.root / "service"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def repository(self) -> Path:
        return self.root / "gitops.git"

    @property
    def entitlement(self) -> Path:
        return self.root / "entitlement"


@dataclass(frozen=True)
class Started:
    """What `up` prints once everything runs."""

    dashboard_url: str
    webhook_url: str
    clone_url: str | None  # the sandbox repository; None when serving LAYERING_REPO_URL
    registry_host: str
    redis_url: str  # without the password: it is in redis_password_file
    workdir: Path
    secret_file: Path
    redis_password_file: Path
    build_isolation: str  # oci or chroot
    storage_driver: str = "vfs"  # overlay or vfs (auto: the workers' own storage decides)
    signing: str = "pushes are not signed"  # or what they are signed with


def write_json(path: Path, document: Mapping[str, Any]) -> None:
    """Replace `path` with `document` at once (a crash leaves the old file or the new one)."""
    staging = path.with_name(f".{path.name}.new")
    staging.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    staging.replace(path)


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in `path`, or {} when there is none yet."""
    if not path.is_file():
        return {}
    try:
        document = json.loads(path.read_text())
    except ValueError:
        raise InputError(f"{path}: not JSON; remove it to start afresh") from None
    return document if isinstance(document, dict) else {}


def since(started: float) -> str:
    """How long a step took since `started` (time.monotonic()), for a progress line."""
    return f"[{time.monotonic() - started:.1f}s]"
