"""`layering up` end to end, as a user runs it: the command in the background on free loopback
ports with a temporary workdir, a clone of the sandbox repository it creates, `git push` of a
Containerfile change (build in the registry), a merge into env/nonprod (MachineConfig committed
on that branch), the dashboard in real headless Chromium, and Ctrl-C (SIGINT) stopping every
process it started. The tests run in file order against one `layering up`; the last one stops it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pipeline.local import supervisor
from tests import services
from tests.browser import Chromium

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts"
READY_TIMEOUT = 120
BUILD_TIMEOUT = 180
GIT_ENV = {
    "GIT_AUTHOR_NAME": "e2e",
    "GIT_AUTHOR_EMAIL": "e2e@example.com",
    "GIT_COMMITTER_NAME": "e2e",
    "GIT_COMMITTER_EMAIL": "e2e@example.com",
}


@dataclass
class Up:
    process: subprocess.Popen[bytes]
    output: Path
    workdir: Path
    clone: Path
    receiver: str
    registry: str

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def git(self, *args: str) -> str:
        result = subprocess.run(
            ["git", "-C", str(self.clone), *args],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, **GIT_ENV},
        )
        assert result.returncode == 0, f"git {args}: {result.stderr}"
        return result.stdout + result.stderr

    def builds(self) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.receiver}/api/builds", timeout=10)
        response.raise_for_status()
        return list(response.json()["builds"])

    def wait_builds(self, commit_sha: str, count: int) -> list[dict[str, Any]]:
        """Until `count` builds of `commit_sha` exist and all are finished."""
        deadline = time.monotonic() + BUILD_TIMEOUT
        found: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.text()[-3000:]
            found = [b for b in self.builds() if b["commit_sha"] == commit_sha]
            terminal = {"succeeded", "failed", "skipped", "cancelled"}
            if len(found) >= count and all(b["state"] in terminal for b in found):
                return found
            time.sleep(0.3)
        raise TimeoutError(f"builds of {commit_sha[:12]}: {found}\n{self.worker_log()}")

    def worker_log(self) -> str:
        path = self.workdir / "logs" / "worker.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def change_htop(self, run: str, message: str) -> str:
        """Put `run` before htop's install step, commit and push main; the new sha."""
        path = self.clone / "images" / "htop" / "Containerfile"
        text = path.read_text()
        marker = "RUN rpm-ostree install htop"
        path.write_text(text.replace(marker, f"{run}\n{marker}", 1))
        self.git("commit", "-q", "-am", message)
        pushed = self.git("push", "origin", "main")
        assert "HTTP 202" in pushed, pushed  # the post-receive hook reached the receiver
        return self.git("rev-parse", "HEAD").strip()


def _environment() -> dict[str, str]:
    """This process's environment without pipeline settings (the sandbox is the default)."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("LAYERING_") and name != "CONTAINERS_REGISTRIES_CONF"
    }


def launch(directory: Path, workdir: Path, ports: dict[str, int] | None = None) -> Up:
    """`layering up` in the background on `workdir`; returns once it says it is ready. Without
    `ports` it runs on what the workdir remembers."""
    output = directory / f"up-{len(list(directory.glob('up-*.out')))}.out"
    argv = [sys.executable, "-m", "pipeline.cli", "up", "--workdir", str(workdir)]
    for name, port in (ports or {}).items():
        argv += [f"--{name}-port", str(port)]
    with output.open("wb") as handle:
        process = subprocess.Popen(
            argv,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**_environment(), "COLUMNS": "200"},
            cwd=directory,
            start_new_session=True,
        )
    started = time.monotonic()
    deadline = started + READY_TIMEOUT
    while "layering up: ready" not in output.read_text(errors="replace"):
        assert process.poll() is None, output.read_text()
        assert time.monotonic() < deadline, output.read_text()
        time.sleep(0.1)
    print(f"layering up ready in {time.monotonic() - started:.1f}s")
    used = json.loads((workdir / "up.json").read_text())["ports"]
    return Up(
        process,
        output,
        workdir,
        directory / "clone",
        f"http://127.0.0.1:{used['receiver']}",
        f"127.0.0.1:{used['registry']}",
    )


def stop(up: Up) -> dict[str, int]:
    """SIGINT, as Ctrl-C; the pids `up` had recorded, all gone."""
    pids = json.loads((up.workdir / "pids.json").read_text())
    started = time.monotonic()
    os.kill(up.process.pid, signal.SIGINT)
    assert up.process.wait(timeout=60) == 0, up.text()[-3000:]
    print(f"stopped in {time.monotonic() - started:.1f}s")
    for name, pid in pids.items():
        assert not supervisor.pid_alive(pid), f"{name} (pid {pid}) still runs"
        if name != "up":
            with pytest.raises(ProcessLookupError):
                os.killpg(pid, 0)  # nothing left in its process group either (worker forks)
    assert not (up.workdir / "pids.json").exists()
    return {name: int(pid) for name, pid in pids.items()}


def _clean_up(up: Up) -> None:
    """A safety net for a test that failed before stopping `up`."""
    if up.process.poll() is None:
        os.kill(up.process.pid, signal.SIGINT)
        try:
            up.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.process.kill()
    pids_file = up.workdir / "pids.json"
    for pid in json.loads(pids_file.read_text()).values() if pids_file.exists() else []:
        if pid != up.process.pid and supervisor.pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    from tests.conftest import require_tools

    require_tools("redis-server", "docker-registry", "buildah", "busybox", "git")
    directory = tmp_path_factory.mktemp("up")
    workdir = directory / "workdir"
    ports = {name: services.free_port() for name in ("receiver", "registry", "redis")}
    handle_up = launch(directory, workdir, ports)
    assert handle_up.receiver == f"http://127.0.0.1:{ports['receiver']}"
    clone_url = (workdir / "gitops.git").as_uri()
    assert f"Clone URL   {clone_url}" in handle_up.text()
    subprocess.run(["git", "clone", "-q", clone_url, str(handle_up.clone)], check=True)
    yield handle_up
    # a safety net: the SIGINT tests stop `up` and assert; this only cleans up
    _clean_up(handle_up)
    services.unmount_under(directory)  # overlay storage leaves buildah/root/overlay mounted


def _manifest_digest(registry: str, repository: str, tag: str) -> str:
    response = httpx.head(
        f"http://{registry}/v2/{repository}/manifests/{tag}",
        headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json, "
            "application/vnd.docker.distribution.manifest.v2+json"
        },
    )
    assert response.status_code == 200, (repository, tag, response.status_code)
    return response.headers["Docker-Content-Digest"]


def test_push_builds_the_image_into_the_local_registry(up: Up) -> None:
    seed = up.git("rev-parse", "origin/main").strip()
    # `up` pushed main once the worker ran: every image in a pool built on the stand-in
    first = up.wait_builds(seed, count=4)
    assert {(b["image"], b["cluster"]) for b in first} == {
        ("htop", "nonprod"),
        ("htop", "prod"),
        ("fish", "nonprod"),
        ("fish", "prod"),
    }
    assert {b["state"] for b in first} <= {"succeeded", "skipped"}, first

    sha = up.change_htop("RUN echo 'layered by e2e' > /etc/motd", "htop: motd")
    built = {b["cluster"]: b for b in up.wait_builds(sha, count=2)}
    # prod runs the same base: same build key, so one of the two builds and the other reuses it
    assert sorted(b["state"] for b in built.values()) == ["skipped", "succeeded"], built
    assert built["prod"]["digest"] == built["nonprod"]["digest"]
    repository, tag = built["nonprod"]["target"].split("/", 1)[1].rsplit(":", 1)
    assert built["nonprod"]["target"].startswith(f"{up.registry}/layering/htop:")
    assert _manifest_digest(up.registry, repository, tag) == built["nonprod"]["digest"]
    builder = next(b for b in built.values() if b["state"] == "succeeded")
    log = httpx.get(f"{up.receiver}/api/builds/{builder['id']}/log").text
    assert "layered by e2e" in log


def test_redis_refuses_a_client_without_the_password_and_no_argv_holds_a_secret(up: Up) -> None:
    """What a build step (or anything else on this machine) sees: Redis answers NOAUTH, and
    no command line of `up`'s processes carries the Redis password or the verification key."""
    port = json.loads((up.workdir / "up.json").read_text())["ports"]["redis"]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"PING\r\nSET pwned 1\r\n")
        replies = b""
        while replies.count(b"\r\n") < 2:
            chunk = sock.recv(4096)
            assert chunk, replies
            replies += chunk
    assert replies.split(b"\r\n")[:2] == [b"-NOAUTH Authentication required."] * 2
    password = (up.workdir / "redis-password").read_text().strip()
    key = (up.workdir / "verification-key").read_text().strip()
    for name in ("redis-password", "verification-key", "redis/redis.conf"):
        assert (up.workdir / name).stat().st_mode & 0o777 == 0o600, name
    # every process on this machine, as a RUN step under chroot sees them
    for process in Path("/proc").iterdir():
        try:
            cmdline = (process / "cmdline").read_bytes() if process.name.isdigit() else b""
        except OSError:
            continue
        assert password.encode() not in cmdline, process
        assert key.encode() not in cmdline, process
    assert password not in up.text()  # nor in what `up` prints
    ready = httpx.get(f"{up.receiver}/readyz", timeout=10).json()
    isolation = ready["build_isolation"]
    assert f"builds run with {isolation} isolation" in up.text()
    assert isolation in {"oci", "chroot"}
    if isolation == "chroot":
        assert "host's network and PID namespaces" in ready["build_isolation_warning"]


def test_a_fresh_up_builds_on_overlay_and_says_so(up: Up) -> None:
    """overlay works on this machine (ext4): `up` probes the workdir's storage root, says so,
    and the worker reports the same driver in /readyz."""
    text = up.text()
    assert "buildah storage driver overlay: auto, the probe showed" in text
    assert "Storage     buildah storage driver overlay" in text
    ready = httpx.get(f"{up.receiver}/readyz", timeout=10).json()
    [worker] = ready["build_workers"]
    assert worker["worker"].startswith("up@")
    assert worker["storage_driver"] == "overlay"
    assert worker["isolation"] in {"oci", "chroot"}
    log = (up.workdir / "logs" / "worker.log").read_text(errors="replace")
    assert "buildah storage driver overlay: " in log


def test_merge_into_nonprod_commits_the_machineconfig(up: Up) -> None:
    main = up.git("rev-parse", "HEAD").strip()
    htop = next(b for b in up.builds() if b["commit_sha"] == main and b["cluster"] == "nonprod")
    up.git("checkout", "-q", "env/nonprod")
    up.git("merge", "-q", "--no-edit", "main")
    pushed = up.git("push", "origin", "env/nonprod")
    assert "HTTP 202" in pushed, pushed
    path = "clusters/nonprod/machineconfigs/99-layering-debug-os-image.yaml"
    deadline = time.monotonic() + BUILD_TIMEOUT
    while True:
        up.git("fetch", "-q", "origin")
        head = up.git("rev-parse", "origin/env/nonprod").strip()
        if head != up.git("rev-parse", "HEAD").strip():
            break
        assert time.monotonic() < deadline, up.worker_log()
        time.sleep(0.3)
    message = up.git("log", "-1", "--format=%B", head)
    assert message.startswith("layering: promote nonprod"), message
    assert f"Layering-Digest: {htop['digest']}" in message
    assert f"Layering-Source-Commit: {main}" in message
    document = yaml.safe_load(up.git("show", f"{head}:{path}"))
    assert document["kind"] == "MachineConfig"
    assert document["metadata"]["labels"]["machineconfiguration.openshift.io/role"] == "debug"
    assert document["spec"]["osImageURL"] == f"{up.registry}/layering/htop@{htop['digest']}"
    assert document["metadata"]["annotations"]["layering/source-commit"] == main


def test_dashboard_shows_a_build_and_tails_its_log_in_chromium(up: Up, tmp_path: Path) -> None:
    with Chromium.start(tmp_path) as browser:
        page = browser.page()
        page.navigate(f"{up.receiver}/builds")
        page.wait_for("document.querySelectorAll('#builds tr.build').length >= 6")
        page.wait_for("!!document.querySelector('section[data-environment=nonprod] tr.pool')")
        up.git("checkout", "-q", "main")
        hostile = "<img src=x onerror=document.title='pwned'>"
        sha = up.change_htop(
            f'RUN for i in 1 2 3 4 5 6; do echo "tick-$i {hostile}"; sleep 1; done',
            "htop: slow build",
        )
        # the open page picks the new build up by itself (no reload): the row of the (image,
        # cluster) pair that holds the build key's lock turns running; the other one waits
        row = (
            f"[...document.querySelectorAll('tr.build')].find(tr => "
            f"tr.querySelector('code[title=\"{sha}\"]') && tr.querySelector('.state-running'))"
        )
        page.wait_for(f"!!{row}", timeout=60)
        link = page.evaluate(f"{row}.querySelector('a').getAttribute('href')")
        page.navigate(f"{up.receiver}{link}")
        log = "document.getElementById('log').textContent"
        first = page.wait_for(f"{log}.includes('tick-') && {log}", timeout=60)
        assert "tick-6" not in first, "the build finished before the page could tail it"
        final = page.wait_for(
            f"document.getElementById('state').textContent === 'succeeded' && {log}",
            timeout=BUILD_TIMEOUT,
        )
        assert "tick-6" in final
        assert len(final) > len(first)  # appended in place
        assert "<img src=x" in final  # shown as text ...
        assert page.evaluate("document.querySelectorAll('#log img').length") == 0  # ... only
        assert page.evaluate("document.title") != "pwned"
        page.screenshot(ARTIFACTS / "build-log.png")
        page.navigate(f"{up.receiver}/builds")
        page.wait_for("document.querySelectorAll('#builds tr.build').length >= 8")
        page.screenshot(ARTIFACTS / "dashboard.png")
        page.close()


def test_sigint_stops_every_process_and_keeps_the_data(up: Up) -> None:
    pids = stop(up)
    assert set(pids) == {"up", "redis", "registry", "receiver", "worker", "beat"}
    assert pids["up"] == up.process.pid
    assert "stopped redis" in up.text()
    # data stays for the next `layering up`
    assert (up.workdir / "redis" / "appendonlydir").is_dir() or any(
        (up.workdir / "redis").glob("appendonly*")
    )
    assert (up.workdir / "gitops.git" / "hooks" / "post-receive").is_file()
    assert (up.workdir / "webhook-secret").stat().st_mode & 0o777 == 0o600
    assert (up.workdir / "redis-password").stat().st_mode & 0o777 == 0o600
    assert (up.workdir / "verification-key").stat().st_mode & 0o777 == 0o600
    assert (up.workdir / "registry" / "data" / "docker").is_dir()


def test_restart_on_the_same_workdir_keeps_everything(up: Up) -> None:
    assert up.process.poll() is not None  # stopped by the test before
    before = json.loads((up.workdir / "up.json").read_text())["ports"]
    main = up.git("rev-parse", "origin/main").strip()
    # something else took the remembered Redis port meanwhile: `up` moves Redis elsewhere
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
        squatter.bind(("127.0.0.1", before["redis"]))
        squatter.listen()
        again = launch(up.clone.parent, up.workdir)
    try:
        text = again.text()
        after = json.loads((up.workdir / "up.json").read_text())["ports"]
        assert (after["receiver"], after["registry"]) == (before["receiver"], before["registry"])
        assert after["redis"] != before["redis"]
        assert f"127.0.0.1:{before['redis']} is in use: redis listens on {after['redis']}" in text
        assert "(reused)" in text  # the stand-in base image was not rebuilt
        assert "built and pushed" not in text
        assert "created the sandbox repository" not in text
        assert "pushed main" not in text
        # the repository as it was; the build history still in (persistent) Redis
        assert again.git("ls-remote", "origin", "refs/heads/main").split()[0] == main
        assert {b["commit_sha"] for b in again.builds()} >= {main}
        # a push still builds
        again.git("checkout", "-q", "main")
        again.git("pull", "-q", "--ff-only", "origin", "main")
        sha = again.change_htop("RUN echo 'after restart' > /etc/issue", "htop: issue")
        built = again.wait_builds(sha, count=2)
        assert sorted(b["state"] for b in built) == ["skipped", "succeeded"], built
        stop(again)
    finally:
        _clean_up(again)
