"""Finding 3 (Redis without a password): `layering up`'s Redis, started by the same code `up`
runs (pipeline/local/services.py), answers NOAUTH to a client without the password; the
password is in a 0600 file and a 0600 redis.conf, never on redis-server's argv (which every
build step under chroot can read in /proc), and reaches the services only in their
environment."""

from __future__ import annotations

import shutil
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pipeline.local import keys, services, supervisor, workdir
from tests.conftest import require_tools


@pytest.fixture
def up_redis(tmp_path: Path) -> Iterator[tuple[workdir.Layout, int, str, supervisor.Child]]:
    require_tools("redis-server")
    layout = workdir.Layout(tmp_path / "workdir")
    processes = supervisor.Supervisor(layout)
    port = supervisor.free_port()
    said: list[str] = []
    try:
        url = services.start_redis(processes, port=port, env={}, say=said.append)
        yield layout, port, url, processes.children[0]
    finally:
        processes.stop(said.append)


def test_a_client_without_the_password_gets_noauth(
    up_redis: tuple[workdir.Layout, int, str, supervisor.Child],
) -> None:
    layout, port, url, _ = up_redis
    # what a RUN step with `nc` would send: plain RESP commands, no password
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"PING\r\nSET pwned 1\r\nKEYS *\r\n")
        replies = _read_replies(sock, 3)
    assert replies == [b"-NOAUTH Authentication required."] * 3, replies
    password = layout.redis_password_file.read_text().strip()
    assert len(password) == 64
    wrong = redis.Redis(host="127.0.0.1", port=port, password="not-" + password)
    with pytest.raises(redis.AuthenticationError):
        wrong.ping()
    wrong.close()
    client: redis.Redis[bytes] = redis.Redis.from_url(url)
    assert client.ping() is True
    assert client.exists("pwned") == 0
    client.close()


def test_the_password_is_in_private_files_and_never_on_an_argv(
    up_redis: tuple[workdir.Layout, int, str, supervisor.Child],
) -> None:
    layout, _, _, child = up_redis
    password = layout.redis_password_file.read_text().strip()
    for path in (layout.redis_password_file, layout.redis_config):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert f'requirepass "{password}"' in layout.redis_config.read_text()
    # what a RUN step under chroot can read: every process's command line
    assert password.encode() not in Path(f"/proc/{child.process.pid}/cmdline").read_bytes()
    assert child.process.args == [shutil.which("redis-server"), str(layout.redis_config)]
    log = (layout.logs / "redis.log").read_text(errors="replace")
    assert password not in log


def _read_replies(sock: socket.socket, count: int) -> list[bytes]:
    data = b""
    while data.count(b"\r\n") < count:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n")[:count]


def test_the_services_get_the_password_in_their_environment_only(tmp_path: Path) -> None:
    layout = workdir.Layout(tmp_path)
    options = workdir.Options(tmp_path, {}, None, None, tmp_path)
    url = keys.redis_url(port=6390, password="p" * 64)
    env = services.service_environment(
        {},
        layout=layout,
        ports={"redis": 6390, "receiver": 8080, "registry": 5000},
        options=options,
        secret="s",
        redis_url=url,
        verification_key="k" * 64,
        build_isolation="chroot",
    )
    assert env["LAYERING_REDIS_URL"] == f"redis://:{'p' * 64}@127.0.0.1:6390/0"
    assert env["LAYERING_VERIFICATION_KEY"] == "k" * 64
    assert env["LAYERING_BUILDAH_ISOLATION"] == "chroot"


def test_the_secret_files_are_made_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "redis-password"
    first = keys.secret(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)  # widened by hand: tightened again on the next start
    assert keys.secret(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
