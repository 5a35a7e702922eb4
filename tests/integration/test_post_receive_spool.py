"""The shipped post-receive hook never loses an event: deliveries the receiver cannot take are
spooled in the bare repository and resent, with their delivery ids, before the next push."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import git
import pytest

from pipeline.cli import install_hook
from tests import services

SECRET = b"spool-test-secret"


class _Receiver(http.server.ThreadingHTTPServer):
    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.status = 503
        self.deliveries: list[tuple[int, str, dict[str, object]]] = []


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(expected, self.headers["X-Hub-Signature-256"])
        self.server.deliveries.append(
            (self.server.status, self.headers["X-GitHub-Delivery"], json.loads(body))
        )
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver(services.free_port())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_undelivered_push_is_spooled_and_resent_first(receiver: _Receiver, tmp_path: Path) -> None:
    bare = tmp_path / "gitops.git"
    git.Repo.init(bare, bare=True, initial_branch="main")
    secret_file = tmp_path / "secret"
    secret_file.write_bytes(SECRET)
    install_hook.install(
        bare, url=f"http://127.0.0.1:{receiver.server_port}/webhook/git", secret_file=secret_file
    )
    subprocess.run(["git", "-C", str(bare), "config", "layering.attempts", "1"], check=True)
    work = git.Repo.init(tmp_path / "work", initial_branch="main")
    work.create_remote("origin", bare.as_uri())
    with work.config_writer() as config:
        config.set_value("user", "name", "t")
        config.set_value("user", "email", "t@example.com")

    def push(message: str) -> str:
        (tmp_path / "work" / "file").write_text(message)
        work.index.add(["file"])
        sha = work.index.commit(message).hexsha
        work.remote("origin").push("main").raise_if_error()
        return sha

    first = push("first")  # the receiver answers 503: the event is kept
    spool = bare / "layering-spool"
    assert len(list(spool.glob("*.json"))) == 1
    assert [d[0] for d in receiver.deliveries] == [503]

    receiver.status = 202
    second = push("second")
    accepted = [
        (delivery, body["after"]) for status, delivery, body in receiver.deliveries if status == 202
    ]
    assert [after for _, after in accepted] == [first, second]
    assert accepted[0][0] == receiver.deliveries[0][1], "redelivery keeps its delivery id"
    assert list(spool.glob("*.json")) == []
