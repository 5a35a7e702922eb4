"""Finding 8 (credentials on the command line): a LAYERING_REPO_URL with credentials in it
(`http://user:password@host/repo.git`) against a real smart-HTTP Git server (`git
http-backend` behind a small HTTP server that requires basic auth). The mirror clone, its
fetches and the promotion writer's fetch and push all work, and the password is on no argv
(every `git` command line is logged by a wrapper on PATH, and /proc/*/cmdline is sampled while
git runs, which catches git-remote-http and the credential helper too), not in the mirror's
config or any other file under it. A wrong password is a PermanentError naming no secret."""

from __future__ import annotations

import base64
import http.server
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline.adapters import branch_writer, git_auth
from pipeline.adapters import git as gitadapter
from pipeline.core import promotion_commit, repo
from pipeline.core.errors import PermanentError
from tests.conftest import require_tools

pytestmark = pytest.mark.integration

USER = "pipeline-bot"
PASSWORD = "hunter2-" + "x9Q" * 8
IDENTITY = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}


def _git(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **IDENTITY},
    )
    return result.stdout


class _Handler(http.server.BaseHTTPRequestHandler):
    """Basic auth, then `git http-backend` as a CGI program."""

    server: _Server

    def log_message(self, *_: object) -> None:
        return

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        given = self.headers.get("Authorization")
        self.server.authorizations.append(given is not None)
        if given != expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        time.sleep(0.05)  # keep git's processes alive long enough to be sampled
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = {
            "PATH": os.environ["PATH"],
            "GIT_PROJECT_ROOT": str(self.server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": USER,
            "REMOTE_ADDR": "127.0.0.1",
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
        }
        result = subprocess.run(
            ["git", "http-backend"], input=body, capture_output=True, env=env, check=False
        )
        head, _, payload = result.stdout.partition(b"\r\n\r\n")
        status = 200
        headers: list[tuple[str, str]] = []
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _Server(http.server.ThreadingHTTPServer):
    root: Path
    authorizations: list[bool]


@dataclass
class GitServer:
    root: Path
    port: int
    server: _Server
    thread: threading.Thread

    def url(self, *, password: str = PASSWORD) -> str:
        return f"http://{USER}:{password}@127.0.0.1:{self.port}/gitops.git"


@pytest.fixture
def git_server(tmp_path: Path) -> Iterator[GitServer]:
    require_tools("git")
    root = tmp_path / "served"
    bare = root / "gitops.git"
    _git("init", "-q", "--bare", "-b", "main", str(bare))
    _git("config", "http.receivepack", "true", cwd=bare)
    work = tmp_path / "seed"
    _git("init", "-q", "-b", "main", str(work))
    (work / "README.md").write_text("seed\n")
    _git("add", "-A", cwd=work)
    _git("commit", "-q", "-m", "seed", cwd=work)
    _git("push", "-q", str(bare), "main:main", "main:env/nonprod", cwd=work)
    server = _Server(("127.0.0.1", 0), _Handler)
    server.root = root
    server.authorizations = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield GitServer(root, int(server.server_address[1]), server, thread)
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class ArgvWatch:
    """Every `git` command line (a wrapper on PATH logs it) and every /proc/*/cmdline seen
    while the block runs."""

    log: Path
    seen: set[bytes] = field(default_factory=set)
    stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        while not self.stop.is_set():
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        self.seen.add((entry / "cmdline").read_bytes())
                    except OSError:
                        continue
            time.sleep(0.001)

    def git_lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def argv_watch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ArgvWatch]:
    real = shutil.which("git")
    assert real is not None
    wrapper_dir = tmp_path / "wrapper"
    wrapper_dir.mkdir()
    log = tmp_path / "git-argv.log"
    wrapper = wrapper_dir / "git"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper_dir}{os.pathsep}{os.environ['PATH']}")
    watch = ArgvWatch(log)
    sampler = threading.Thread(target=watch.sample, daemon=True)
    sampler.start()
    yield watch
    watch.stop.set()
    sampler.join(timeout=5)


def _no_secret_in(watch: ArgvWatch) -> None:
    assert watch.git_lines(), "the wrapper logged no git command"
    for line in watch.git_lines():
        assert PASSWORD not in line, line
    leaked = [argv for argv in watch.seen if PASSWORD.encode() in argv]
    # the sampler's own test process argv (pytest) never holds it either
    assert leaked == [], leaked


def _files_holding_the_password(directory: Path) -> list[Path]:
    return [
        path
        for path in directory.rglob("*")
        if path.is_file() and PASSWORD.encode() in path.read_bytes()
    ]


def test_mirror_clone_and_fetch_keep_the_password_off_argv_and_disk(
    git_server: GitServer, argv_watch: ArgvWatch, tmp_path: Path
) -> None:
    url = git_server.url()
    mirror_path = gitadapter.mirror_path(tmp_path / "work", url)
    with gitadapter.GitRepo.ensure_mirror(mirror_path, url) as mirror:
        head = mirror.resolve("refs/heads/main")
        mirror.fetch()
        mirror.fetch("env/nonprod")
    gitadapter.ensure_commit(mirror_path, url, head)
    assert any(git_server.server.authorizations), "the server never saw credentials"
    stored = _git("config", "remote.origin.url", cwd=mirror_path).strip()
    assert stored == f"http://127.0.0.1:{git_server.port}/gitops.git"
    assert _files_holding_the_password(mirror_path) == []
    _no_secret_in(argv_watch)


def test_a_mirror_made_with_the_password_in_its_config_loses_it(
    git_server: GitServer, tmp_path: Path
) -> None:
    url = git_server.url()
    mirror_path = tmp_path / "old-mirror.git"
    _git("clone", "-q", "--mirror", url, str(mirror_path))  # as the old code made it
    assert _files_holding_the_password(mirror_path) != []
    with gitadapter.GitRepo.ensure_mirror(mirror_path, url) as mirror:
        mirror.fetch()
    assert _files_holding_the_password(mirror_path) == []


def test_the_promotion_writer_pushes_without_the_password_on_argv(
    git_server: GitServer, argv_watch: ArgvWatch, tmp_path: Path
) -> None:
    def change_for(head: str, model: repo.Repository) -> promotion_commit.Change:
        return promotion_commit.Change("promote", writes={"promoted.txt": head.encode()})

    writer = branch_writer.BranchWriter(url=git_server.url(), workdir=tmp_path / "writes")
    result = writer.write("env/nonprod", change_for)
    assert result.commit_sha is not None
    served = git_server.root / "gitops.git"
    assert _git("rev-parse", "refs/heads/env/nonprod", cwd=served).strip() == result.commit_sha
    _no_secret_in(argv_watch)
    assert any(" push " in f" {line} " for line in argv_watch.git_lines())


def test_a_wrong_password_is_a_permanent_error_without_the_secret(
    git_server: GitServer, tmp_path: Path
) -> None:
    wrong = git_server.url(password="wrong-" + PASSWORD)
    with pytest.raises(PermanentError) as refused:
        gitadapter.GitRepo.ensure_mirror(tmp_path / "m.git", wrong)
    message = str(refused.value)
    assert "wrong-" not in message
    assert PASSWORD not in message
    assert f"127.0.0.1:{git_server.port}" in message
    assert not (tmp_path / "m.git").exists()


@pytest.mark.parametrize(
    ("url", "clean", "username", "password"),
    [
        (
            "https://bot:s3%40cret@git.example.com/g.git",
            "https://git.example.com/g.git",
            "bot",
            "s3@cret",
        ),
        ("https://ghp_token@github.com/o/r.git", "https://github.com/o/r.git", "ghp_token", ""),
        ("http://u:pw-4711@127.0.0.1:8080/r.git", "http://127.0.0.1:8080/r.git", "u", "pw-4711"),
        ("https://github.com/o/r.git", "https://github.com/o/r.git", None, None),
        ("file:///srv/git/r.git", "file:///srv/git/r.git", None, None),
    ],
)
def test_credentials_leave_the_url_for_the_environment(
    url: str, clean: str, username: str | None, password: str | None
) -> None:
    remote = git_auth.remote(url)
    assert remote.url == clean
    assert remote.env.get(git_auth.USERNAME_VARIABLE) == username
    assert remote.env.get(git_auth.PASSWORD_VARIABLE) == password
    helper = remote.env.get("GIT_CONFIG_VALUE_1", "")
    assert (password or "\0") not in helper  # the helper names variables, never values
