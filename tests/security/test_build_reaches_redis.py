"""Finding 3, end to end with real buildah: a build whose RUN step knows the address and port of
the service's Redis tries to read and write it (`nc`, from the stand-in base image's busybox)
and to find the password in every process's argv and environment. The Redis is started the way
`layering up` starts it (pipeline/local/services.py: a password in a 0600 config file), the
worker is a real Celery worker on it. Under chroot isolation the step reaches Redis and gets
NOAUTH for every command; under oci (the host's probe passes where runc is installed) it cannot
even connect. Either way nothing is written and nothing is read."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from pipeline.adapters import build_records
from pipeline.local import services, supervisor, workdir
from tests.conftest import require_tools
from tests.plugins.builds import (
    BaseImage,
    WorkerEnv,
    git_commit_all,
    launch_worker,
    submit_build,
    write_repository,
)
from tests.services import Registry

pytestmark = pytest.mark.integration

ATTACK = r"""#!/bin/sh
PORT=@PORT@
echo "attack: anonymous"
COMMANDS='PING\r\nSET pwned 1\r\nRPUSH builds evil\r\nKEYS *\r\nCONFIG GET requirepass\r\n'
(printf "$COMMANDS"; sleep 1) | nc -w 3 127.0.0.1 "$PORT" 2>&1 | tr -d '\r'
echo "attack: passwords in argv and environ"
: > /tmp/found
for f in /proc/[0-9]*/cmdline /proc/[0-9]*/environ; do
  tr '\0' '\n' < "$f" | grep -e 'redis://' -e 'requirepass' >> /tmp/found
done 2>/dev/null  # environ: Permission denied (chroot) or no such process (oci)
echo "attack: candidate lines $(wc -l < /tmp/found)"
for url in $(grep -o 'redis://[^ ]*' /tmp/found); do
  pw=$(echo "$url" | sed -n 's#redis://[^:]*:\([^@]*\)@.*#\1#p')
  if [ -n "$pw" ]; then
    (printf 'AUTH %s\r\nSET pwned 1\r\n' "$pw"; sleep 1) | nc -w 3 127.0.0.1 "$PORT" | tr -d '\r'
  fi
done
echo "attack: redis.conf lines $(cat @CONF@ 2>/dev/null | wc -l)"
echo "attack: processes visible $(ls -d /proc/[0-9]* | wc -l)"
echo "attack: done"
"""

CONTAINERFILE = """\
FROM quay.io/fedora/fedora-coreos:stable
COPY attack.sh /attack.sh
RUN sh /attack.sh
RUN ostree container commit
"""


@dataclass(frozen=True)
class ProtectedRedis:
    url: str
    port: int
    layout: workdir.Layout


@pytest.fixture(scope="module")
def protected_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProtectedRedis]:
    require_tools("redis-server")
    layout = workdir.Layout(tmp_path_factory.mktemp("up-redis"))
    processes = supervisor.Supervisor(layout)
    port = supervisor.free_port()
    said: list[str] = []
    try:
        url = services.start_redis(processes, port=port, env={}, say=said.append)
        yield ProtectedRedis(url, port, layout)
    finally:
        processes.stop(said.append)


def _attack_repository(
    root: Path, *, base: BaseImage, registry: Registry, redis_: ProtectedRedis
) -> str:
    script = ATTACK.replace("@PORT@", str(redis_.port)).replace(
        "@CONF@", str(redis_.layout.redis_config)
    )
    write_repository(
        root,
        base=base,
        registry=f"{registry.host}/layering",
        images={
            "attack": {
                "Containerfile": CONTAINERFILE,
                "attack.sh": script,
                "nonce": uuid.uuid4().hex,
            }
        },
        clusters={"dev": {"pools": {"worker": "attack"}}},
    )
    return git_commit_all(root, "a build that goes after Redis")


@pytest.mark.parametrize("isolation", ["chroot", "auto"])
def test_a_run_step_can_neither_read_nor_write_redis(
    isolation: str,
    tmp_path: Path,
    worker_env: WorkerEnv,
    base_image: BaseImage,
    registry: Registry,
    protected_redis: ProtectedRedis,
) -> None:
    require_tools("buildah", "busybox")
    root = tmp_path / "gitops"
    commit = _attack_repository(root, base=base_image, registry=registry, redis_=protected_redis)
    worker = launch_worker(
        worker_env,
        f"attack-{isolation}",
        pool="solo",
        concurrency=1,
        queues="builds",
        extra_env={
            "LAYERING_REDIS_URL": protected_redis.url,
            "LAYERING_BUILDAH_ISOLATION": isolation,
        },
    )
    try:
        build_id = submit_build(
            worker.app,
            worker.settings,
            source=str(root),
            commit_sha=commit,
            image="attack",
            cluster="dev",
        )
        record = worker.wait_for_build(build_id, timeout=180)
        store = build_records.BuildStore.from_settings(worker.settings)
        log = "\n".join(store.read_log(build_id, offset=0, limit=100_000))
        store.client.close()
    finally:
        worker.stop()
    assert record["state"] == "succeeded", (record["error"], log[-3000:])
    assert "attack: done" in log, log[-3000:]
    attack = log[log.index("attack: anonymous") : log.index("attack: done")]
    print(attack)

    client: redis.Redis[bytes] = redis.Redis.from_url(protected_redis.url)
    try:
        assert client.exists("pwned") == 0
        assert b"evil" not in client.lrange("builds", 0, -1)
    finally:
        client.close()
    # no command was answered: no PONG, no OK, no key list, no configuration
    for answer in ("+PONG", "+OK", "*", "requirepass"):
        assert answer not in attack.replace("redis.conf", ""), attack
    assert "attack: redis.conf lines 0" in attack  # the 0600 file outside the build root
    if isolation == "chroot":
        # the step reached the host's loopback Redis, which refused every command
        assert attack.count("-NOAUTH Authentication required.") == 5, attack
    else:
        assert "build isolation: oci" in log, log[-3000:]
        assert "NOAUTH" not in attack  # its loopback is its own: nothing listens there
        visible = int(attack.split("attack: processes visible ")[1].split()[0])
        assert visible <= 5, attack  # its own processes only, not the host's
