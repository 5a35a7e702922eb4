"""Issue 10, finding 7 (read access): the dashboard, the builds API and /metrics can be served on
a listener of their own (LAYERING_READ_LISTEN) and guarded by a token (LAYERING_READ_TOKEN),
while the webhook keeps its HMAC and nothing else. Every check talks to a real `layering serve`
process on loopback ports, backed by a real redis-server; the login form is driven in real
headless Chromium."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from pipeline.adapters import build_records
from pipeline.adapters.environment import load_settings
from pipeline.core import builds
from pipeline.core.errors import InputError
from tests import manifests, receiver, services
from tests.browser import Chromium
from tests.conftest import require_tools

pytestmark = pytest.mark.integration

SECRET = b"read-access-webhook-secret"
REPO = "acme/layers"
TOKEN = "read-token-0123456789abcdef-XYZ"
# what only the read side may answer: the dashboard, its fragments and pages, the API, metrics
READ_PATHS = (
    "/",
    "/dashboard/fragments/builds",
    "/dashboard/fragments/promotions",
    "/builds/b-1",
    "/api/builds",
    "/api/builds/b-1",
    "/api/builds/b-1/log",
    "/api/builds/b-1/log/tail",
    "/metrics",
)


@dataclass
class Served:
    webhook: str  # base URL of the webhook listener
    read: str  # base URL of the read listener (the same as webhook when not split)
    log: Path
    store: build_records.BuildStore


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[services.RedisServer]:
    require_tools("redis-server")
    server = services.RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@contextmanager
def serve(
    tmp_path: Path, redis: services.RedisServer, *, split: bool, **variables: str
) -> Iterator[Served]:
    """`layering serve --access-log` with the given LAYERING_* variables (and a read listener
    on a free port when `split`); one build with a log line is in its store."""
    port = services.free_port()
    read_port = services.free_port() if split else port
    env = {
        **os.environ,
        "LAYERING_WEBHOOK_SECRET": SECRET.decode(),
        "LAYERING_REDIS_URL": redis.url,
        "LAYERING_GITHUB_REPOSITORY": REPO,
        "LAYERING_WORKDIR": str(tmp_path / "work"),
        "LAYERING_VERIFICATION_KEY": "0123456789abcdef" * 4,  # issue 10, finding 3
        **({"LAYERING_READ_LISTEN": f"127.0.0.1:{read_port}"} if split else {}),
        **variables,
    }
    settings = load_settings(redis_url=redis.url)
    store = build_records.BuildStore.from_settings(settings)
    store.save(builds.queued("b-1", image="htop", cluster="nonprod", now=1.0))
    store.append_log("b-1", "STEP 1/2: FROM base")
    layering = str(Path(sys.executable).with_name("layering"))
    log = tmp_path / f"serve-{port}.log"
    process = services.start(
        [layering, "serve", "--port", str(port), "--access-log"], log=log, env=env
    )
    try:
        services.wait_for_port(port, process=process)
        services.wait_for_port(read_port, process=process)
        yield Served(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{read_port}", log, store)
    finally:
        services.stop_process(process)
        store.client.close()


def ping(url: str) -> httpx.Response:
    body, headers = receiver.delivery(SECRET, "ping", {"zen": "hi", "hook_id": 1})
    return httpx.post(f"{url}/webhook/github", content=body, headers=headers)


def one_line_error(response: httpx.Response) -> bool:
    return len(response.content) <= 400 and "\n" not in response.text.strip()


def test_webhook_listener_serves_no_dashboard_api_or_metrics(
    tmp_path: Path, private_redis: services.RedisServer
) -> None:
    with serve(tmp_path, private_redis, split=True) as served:
        problems = []
        for path in (*READ_PATHS, "/login"):
            response = httpx.get(served.webhook + path)
            if response.status_code != 404 or not one_line_error(response):
                problems.append(f"webhook listener {path}: {response.status_code}")
        # what the webhook listener is for still works
        assert ping(served.webhook).status_code == 200
        assert httpx.get(f"{served.webhook}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{served.webhook}/readyz").status_code == 200
        # and the read listener serves the reads, nothing else
        for path in READ_PATHS:
            response = httpx.get(served.read + path)
            if response.status_code != 200:
                problems.append(f"read listener {path}: {response.status_code}")
        assert httpx.get(f"{served.read}/api/builds/b-1/log").text == "STEP 1/2: FROM base\n"
        # one process, one registry: the ping on the webhook port is counted on the read port
        metrics = httpx.get(f"{served.read}/metrics").text
        assert 'layering_webhook_deliveries_total{event="ping",outcome="pong"} 1.0' in metrics
        for path in ("/webhook/github", "/webhook/git"):
            response = httpx.post(served.read + path, content=b"{}")
            if response.status_code != 404:
                problems.append(f"read listener POST {path}: {response.status_code}")
        for path in ("/healthz", "/readyz"):
            if httpx.get(served.read + path).status_code != 404:
                problems.append(f"read listener {path} answered")
        assert problems == []
    assert "read listener" in served.log.read_text()  # the start-up line names both listeners


@pytest.mark.parametrize("split", [True, False], ids=["read-listener", "one-listener"])
def test_read_token_is_required_and_the_webhook_is_unaffected(
    tmp_path: Path, private_redis: services.RedisServer, split: bool
) -> None:
    with serve(tmp_path, private_redis, split=split, LAYERING_READ_TOKEN=TOKEN) as served:
        problems = []
        wrong = ("", "Bearer", "Bearer ", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", TOKEN,
                 f"Basic {TOKEN}", f"Bearer  {TOKEN}", f"bearer {TOKEN}\x00")  # fmt: skip
        for path in READ_PATHS:
            for authorization in wrong:
                headers = {"Authorization": authorization} if authorization else {}
                try:
                    response = httpx.get(served.read + path, headers=headers)
                except httpx.LocalProtocolError:
                    continue  # the client refuses to send it: nothing reached the server
                if response.status_code != 401 or not one_line_error(response):
                    problems.append(f"{path} {authorization!r}: {response.status_code}")
                elif response.headers.get("www-authenticate") != 'Bearer realm="layering"':
                    problems.append(f"{path}: no WWW-Authenticate")
            good = httpx.get(served.read + path, headers={"Authorization": f"Bearer {TOKEN}"})
            if good.status_code != 200:
                problems.append(f"{path} with the token: {good.status_code}")
        assert problems == []
        refused = httpx.get(f"{served.read}/api/builds")
        assert refused.headers["content-type"].startswith("application/json")
        assert "LAYERING_READ_TOKEN" in refused.json()["error"]
        # the ?token= form is not accepted: a token in a URL ends up in logs and history
        assert httpx.get(f"{served.read}/api/builds", params={"token": TOKEN}).status_code == 401
        # the webhook has its HMAC and needs no read token; health checks stay open
        assert ping(served.webhook).status_code == 200
        assert httpx.get(f"{served.webhook}/healthz").status_code == 200
        assert httpx.get(f"{served.webhook}/readyz").status_code == 200
    # the service never logs the token; only the access line of the URL this test sent has it
    [line] = [line for line in served.log.read_text().splitlines() if TOKEN in line]
    assert f'"GET /api/builds?token={TOKEN} HTTP/1.1" 401' in line


def test_login_form_sets_a_strict_http_only_cookie(
    tmp_path: Path, private_redis: services.RedisServer
) -> None:
    with serve(tmp_path, private_redis, split=True, LAYERING_READ_TOKEN=TOKEN) as served:
        page = httpx.get(f"{served.read}/builds/b-1", headers={"Accept": "text/html"})
        assert page.status_code == 401
        assert page.headers["content-type"].startswith("text/html")
        assert '<form method="post" action="/login">' in page.text
        assert 'name="next" value="/builds/b-1"' in page.text
        assert "form-action 'self'" in page.headers["content-security-policy"]
        assert "<script" not in page.text
        assert httpx.get(f"{served.read}/login").status_code == 200

        def login(token: str, next_path: str = "/") -> httpx.Response:
            return httpx.post(f"{served.read}/login", data={"token": token, "next": next_path})

        bad = login("not-the-token")
        assert bad.status_code == 401
        assert "set-cookie" not in bad.headers
        assert "wrong token" in bad.text
        good = login(TOKEN, "/builds/b-1")
        assert good.status_code == 303
        assert good.headers["location"] == "/builds/b-1"
        cookie = good.headers["set-cookie"]
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "samesite", "path", "max-age"} <= attributes
        assert "SameSite=Strict" in cookie
        assert "Path=/" in cookie
        assert "secure" not in attributes  # plain http here; https public URLs get Secure
        name, value = cookie.split(";")[0].split("=", 1)
        assert TOKEN not in cookie
        assert value
        # the cookie opens the pages, the API and the tail the page polls
        jar = {name: value}
        for path in READ_PATHS:
            assert httpx.get(served.read + path, cookies=jar).status_code == 200, path
        tampered = value[:-1] + ("1" if value.endswith("0") else "0")
        assert httpx.get(f"{served.read}/", cookies={name: tampered}).status_code == 401
        assert httpx.get(f"{served.read}/", cookies={name: TOKEN}).status_code == 401
        # only local paths are followed after the login
        hostiles = ("//evil.example", "https://evil.example/", "/\\evil.example",
                    "javascript:alert(1)", "/\r\nSet-Cookie: x=1", "/builds/<x>", "")  # fmt: skip
        for hostile in hostiles:
            response = login(TOKEN, hostile)
            assert response.headers["location"] == "/", hostile
            assert response.headers["set-cookie"].count("Set-Cookie") == 0
        oversized = httpx.post(f"{served.read}/login", content=b"token=" + b"x" * 100_000)
        assert oversized.status_code == 413
        assert not oversized.headers.get("set-cookie")
    assert TOKEN not in served.log.read_text()


def test_cookie_is_secure_when_the_public_url_is_https(
    tmp_path: Path, private_redis: services.RedisServer
) -> None:
    variables = {"LAYERING_READ_TOKEN": TOKEN, "LAYERING_PUBLIC_URL": "https://layering.example"}
    with serve(tmp_path, private_redis, split=True, **variables) as served:
        response = httpx.post(f"{served.read}/login", data={"token": TOKEN, "next": "/"})
        assert response.status_code == 303
        assert "; Secure" in response.headers["set-cookie"]


def test_browser_logs_in_and_follows_a_build_log(
    tmp_path: Path, private_redis: services.RedisServer
) -> None:
    with (
        serve(tmp_path, private_redis, split=True, LAYERING_READ_TOKEN=TOKEN) as served,
        Chromium.start(tmp_path) as browser,
    ):
        page = browser.page()
        page.navigate(f"{served.read}/builds/b-1")
        page.wait_for("!!document.querySelector('form input[name=token]')")
        page.evaluate(
            f"document.querySelector('input[name=token]').value = {TOKEN!r};"
            "document.querySelector('form').submit(); true"
        )
        log = "document.getElementById('log') && document.getElementById('log').textContent"
        assert "STEP 1/2: FROM base" in page.wait_for(log)
        # the page's own polling carries the cookie: a new line shows up without a reload
        served.store.append_log("b-1", "STEP 2/2: RUN echo tailed-after-login")
        assert "tailed-after-login" in page.wait_for(f"{log}.includes('tailed-after') && {log}")
        assert page.evaluate("document.cookie") == ""  # HttpOnly: no script can read it
        page.close()


def test_weak_or_malformed_read_settings_stop_start_up(
    tmp_path: Path, private_redis: services.RedisServer
) -> None:
    for variables, named in (
        ({"read_token": "short"}, "LAYERING_READ_TOKEN"),
        ({"read_listen": "8081"}, "LAYERING_READ_LISTEN"),
        ({"read_listen": "127.0.0.1:http"}, "LAYERING_READ_LISTEN"),
        ({"read_listen": "127.0.0.1:70000"}, "LAYERING_READ_LISTEN"),
    ):
        with pytest.raises(InputError, match=named):
            load_settings(**variables)
    port = services.free_port()
    env = {
        **os.environ,
        "LAYERING_REDIS_URL": private_redis.url,
        "LAYERING_WORKDIR": str(tmp_path / "work"),
        "LAYERING_READ_LISTEN": f"127.0.0.1:{port}",
    }
    layering = str(Path(sys.executable).with_name("layering"))
    same_port = subprocess.run(
        [layering, "serve", "--port", str(port)], env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert same_port.returncode == 2
    assert "LAYERING_READ_LISTEN" in same_port.stderr
    assert "Traceback" not in same_port.stderr


def test_the_openshift_overlay_reads_only_through_the_proxy() -> None:
    """deploy/overlays/openshift (docs/private-dashboard.md describes it): the dashboard is
    reached only through oauth-proxy, and each Route reaches only its own port."""
    documents = {
        (d["kind"], d["metadata"]["name"]): d
        for d in manifests.render(manifests.DEPLOY / "overlays" / "openshift")
    }
    deployment = documents[("Deployment", "layering-web")]["spec"]["template"]["spec"]
    containers = {container["name"]: container for container in deployment["containers"]}
    web, proxy = containers["web"], containers["oauth-proxy"]
    environment = {variable["name"]: variable.get("value") for variable in web["env"]}
    settings = load_settings(read_listen=environment["LAYERING_READ_LISTEN"])
    assert settings.read_address == ("127.0.0.1", 8081)  # the pod's loopback only
    arguments = dict(argument.split("=", 1) for argument in proxy["args"])
    assert arguments["--upstream"] == "http://127.0.0.1:8081"
    assert arguments["--http-address"] == ""  # no plain-http side door
    for flag in ("--openshift-sar", "--openshift-delegate-urls"):
        assert "layering-web" in json.dumps(json.loads(arguments[flag]))
    assert web["command"][-1] == str(web["ports"][0]["containerPort"])  # --port
    service_ports = {
        port["name"]: port["targetPort"]
        for port in documents[("Service", "layering-web")]["spec"]["ports"]
    }
    assert service_ports == {"webhook": "webhook", "dashboard": "dashboard"}
    assert [port["name"] for port in proxy["ports"]] == ["dashboard"]
    webhook_route = documents[("Route", "layering-webhook")]["spec"]
    assert (webhook_route["port"]["targetPort"], webhook_route["path"]) == ("webhook", "/webhook")
    dashboard_route = documents[("Route", "layering-dashboard")]["spec"]
    assert dashboard_route["port"]["targetPort"] == "dashboard"
    assert dashboard_route["tls"]["termination"] == "reencrypt"
    account = documents[("ServiceAccount", "layering-web")]["metadata"]["annotations"]
    [reference] = account.values()
    assert json.loads(reference)["reference"] == {"kind": "Route", "name": "layering-dashboard"}
