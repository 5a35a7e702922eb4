"""Real headless Chromium (Debian `chromium`) driven over the Chrome DevTools Protocol with
websocket-client: no browser download, no Playwright. Started on a free loopback port with a
fresh profile, stopped by PID.

    with Chromium.start(tmp_path) as browser:
        page = browser.page()
        page.navigate("http://127.0.0.1:8080/")
        page.wait_for("document.querySelectorAll('tr.build').length > 0")
        page.screenshot(path)
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import websocket

from tests import services

CHROMIUM = "/usr/bin/chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1280,900",
)


class Page:
    def __init__(self, ws_url: str) -> None:
        # suppress_origin: Chromium refuses DevTools connections that send an Origin header
        self._ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self._next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message_id = self._next_id
        self._ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv())
            if message.get("id") != message_id:
                continue  # an event
            if "error" in message:
                raise RuntimeError(f"{method}: {message['error']}")
            return dict(message.get("result", {}))

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'")

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, *, timeout: float = 30, interval: float = 0.1) -> Any:
        deadline = time.monotonic() + timeout
        value: Any = None
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(interval)
        raise TimeoutError(f"{expression!r} still {value!r} after {timeout}s")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        self._ws.close()


@dataclass
class Chromium:
    process: subprocess.Popen[bytes]
    port: int
    profile: Path

    @classmethod
    def start(cls, directory: Path) -> Chromium:
        from tests.conftest import require_tools

        require_tools(CHROMIUM)
        profile = directory / "chromium-profile"
        profile.mkdir(parents=True, exist_ok=True)
        port = services.free_port()
        argv = [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            f"--remote-debugging-port={port}",
            "about:blank",
        ]
        process = services.start(argv, log=directory / "chromium.log")
        browser = cls(process, port, profile)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError((directory / "chromium.log").read_text()[-3000:])
            try:
                browser._targets()
                return browser
            except OSError:
                time.sleep(0.1)
        browser.stop()
        raise TimeoutError("chromium's DevTools endpoint did not answer")

    def _targets(self) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/json/list"
        with urllib.request.urlopen(url, timeout=2) as response:
            return list(json.load(response))

    def page(self) -> Page:
        pages = [target for target in self._targets() if target.get("type") == "page"]
        return Page(pages[0]["webSocketDebuggerUrl"])

    def stop(self) -> None:
        services.stop_process(self.process)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
