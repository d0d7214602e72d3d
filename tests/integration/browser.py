"""Headless Chromium driven over the Chrome DevTools Protocol (CDP), for checking the MLflow UI
in a real browser. Debian's ``chromium`` package, no WebDriver and no downloaded browser: the
browser is started with ``--remote-debugging-port=0`` and a throwaway profile, the port is read
from the profile's ``DevToolsActivePort`` file, and one page target is driven over its
websocket (``websockets``' sync client).

    with Chromium(profile_dir, tracker=tracker) as page:
        page.navigate("http://127.0.0.1:5000/#/experiments/1/runs")
        page.wait_for("document.querySelectorAll('a').length > 3", what="links")
        page.screenshot(out / "runs.png")

The network flags are those a closed network needs: no background requests, no component or
sync updates.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio")
BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    for name in BINARIES:
        path = shutil.which(name)
        if path:
            return path
    return None


class CDPError(RuntimeError):
    pass


class Chromium:
    """One headless Chromium with one page; ``close()`` (or leaving the ``with``) stops it."""

    def __init__(self, profile_dir: Path, *, tracker=None, size: tuple[int, int] = (1600, 1000),
                 binary: str | None = None, timeout: float = 60.0):
        self.profile_dir = Path(profile_dir)
        self.tracker = tracker
        self.size = size
        self.binary = binary or find_chromium()
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.ws = None
        self._id = 0
        self.console: list[str] = []

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> "Chromium":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> "Chromium":
        if self.binary is None:
            raise FileNotFoundError(f"no Chromium on PATH (looked for {', '.join(BINARIES)}): "
                                    "apt-get install -y chromium")
        from websockets.sync.client import connect

        self.profile_dir.mkdir(parents=True, exist_ok=True)
        port_file = self.profile_dir / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)
        log = open(self.profile_dir.parent / f"{self.profile_dir.name}.log", "ab")
        self.proc = subprocess.Popen(
            [self.binary, *FLAGS, "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
             f"--user-data-dir={self.profile_dir}", f"--window-size={self.size[0]},{self.size[1]}", "about:blank"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        if self.tracker is not None:
            self.tracker.add(self.proc.pid)
        deadline = time.monotonic() + self.timeout
        port = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CDPError(f"chromium exited with {self.proc.returncode}; see {log.name}")
            try:
                port = int(port_file.read_text().split()[0])
                break
            except (OSError, ValueError, IndexError):
                time.sleep(0.1)
        if port is None:
            raise CDPError(f"chromium did not open its DevTools port within {self.timeout}s")
        pages = []
        while time.monotonic() < deadline and not pages:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                pages = [t for t in json.load(r) if t.get("type") == "page"]
            if not pages:
                time.sleep(0.1)
        if not pages:
            raise CDPError("chromium opened no page target")
        self.ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=self.timeout).__enter__()
        if self.tracker is not None:
            self.tracker.add(self.proc.pid)  # the renderer, GPU and utility children
        self.call("Page.enable")
        self.call("Runtime.enable")
        return self

    def close(self) -> None:
        if self.ws is not None:
            try:
                self.call("Browser.close", timeout=10)
            except Exception:  # noqa: BLE001 -- the socket closes under us
                pass
            try:
                self.ws.close()
            except Exception:  # noqa: BLE001
                pass
            self.ws = None
        if self.proc is not None:
            if self.tracker is not None:
                self.tracker.add(self.proc.pid)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # renderers that outlive the browser
            except OSError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
            self.proc = None

    # ------------------------------------------------------------------ protocol

    def call(self, method: str, timeout: float | None = None, **params) -> dict:
        """Send one CDP command and return its ``result`` (events in between are kept as console
        lines when they are console messages or uncaught exceptions, else dropped)."""
        self._id += 1
        msg_id = self._id
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CDPError(f"{method}: no answer within {timeout or self.timeout}s")
            msg = json.loads(self.ws.recv(timeout=left))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise CDPError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)

    def _event(self, msg: dict) -> None:
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.console.append(f"console.{params['type']}: {text[:300]}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.console.append(f"exception: {details.get('exception', {}).get('description', details.get('text'))}"[:400])

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (promises are awaited)."""
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            d = res["exceptionDetails"]
            raise CDPError(f"{expression[:120]}: {d.get('exception', {}).get('description', d.get('text'))}")
        return res.get("result", {}).get("value")

    def navigate(self, url: str) -> None:
        res = self.call("Page.navigate", url=url)
        if res.get("errorText"):
            raise CDPError(f"navigate {url}: {res['errorText']}")

    def wait_for(self, expression: str, *, what: str, timeout: float | None = None, poll: float = 0.25):
        """Poll ``expression`` until it is truthy and return its value; on timeout raise
        AssertionError naming ``what`` and the last value."""
        deadline = time.monotonic() + (timeout or self.timeout)
        last = None
        while time.monotonic() < deadline:
            try:
                last = self.evaluate(expression)
            except CDPError as e:  # the page is between documents
                last = str(e)
            else:
                if last:
                    return last
            time.sleep(poll)
        raise AssertionError(f"the page never showed {what} within {timeout or self.timeout}s "
                             f"(last value {last!r}; console: {self.console[-5:]})")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path
