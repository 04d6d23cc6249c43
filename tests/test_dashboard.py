"""The dashboard end to end in a real headless chromium (Playwright driving /usr/bin/chromium).

``fastflow run`` (a subprocess on free ports, with one managed service, an API token and a scaler
that never touches Docker: master switch off, dry run) is fed the swarm capture's real datagrams
over UDP on 127.0.0.1 while the page is open. The test checks that the page loads without console
errors, that the service chart and its containers, the top-flows table and the agents appear, and
that toggling the service's scaler (after entering the token) changes GET /scaler/json.
A screenshot is saved to test-artifacts/dashboard.png.

Skips when chromium or the playwright package is missing, unless FASTFLOW_REQUIRE_BROWSER=1.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _service_util import Proc

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("FASTFLOW_CHROMIUM", "/usr/bin/chromium")
CHROME_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SERVICE = "sflowpeer_burn"
TOKEN = "dash-test-token"


def _need(reason: str) -> None:
    if os.environ.get("FASTFLOW_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (FASTFLOW_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        _need(f"chromium not installed ({CHROMIUM}); apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("the playwright package is not installed (pip install playwright; "
              "no 'playwright install' needed, Debian's chromium is used)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists()
                              else shutil.which("chromium"), args=CHROME_ARGS)
        try:
            yield b
        finally:
            b.close()


def _config(tmp: Path) -> str:
    return f"""
[collector]
bind = "127.0.0.1"
port = 0
[api]
bind = "127.0.0.1"
port = 0
token = "{TOKEN}"
[scaler]
enabled = false
dry_run = true
state_file = "{tmp / 'scaler-state.json'}"
[[scaler.services]]
service = "{SERVICE}"
util_min = 20.0
util_max = 80.0
replicas_max = 6
"""


class Collector:
    """``fastflow run`` in a subprocess (tests/_service_util.py), with HTTP and UDP helpers."""

    def __init__(self, tmp: Path, scaler: bool = True) -> None:
        cfg = tmp / "fastflow.toml"
        cfg.write_text(_config(tmp))
        args = ["-c", str(cfg)] + ([] if scaler else ["--no-scaler"])
        self.proc = Proc(*args, env={"DOCKER_HOST": "unix:///nonexistent/docker.sock",
                                     "XDG_STATE_HOME": str(tmp)})
        self.sflow_port = self.proc.port("sFlow", 30)
        self.http_port = self.proc.port("HTTP", 30)
        self.base = f"http://127.0.0.1:{self.http_port}"

    def get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        req = urllib.request.Request(self.base + path)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, None

    def stop(self) -> None:
        self.proc.stop()

    def send(self, datagrams: list[bytes]) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for d in datagrams:
                s.sendto(d, ("127.0.0.1", self.sflow_port))


class Feeder(threading.Thread):
    """Sends the capture's datagrams to the collector once every ``period`` s, bounded."""

    def __init__(self, datagrams: list[bytes], collector: Collector, period: float = 1.0,
                 max_rounds: int = 90) -> None:
        super().__init__(daemon=True)
        self.datagrams, self.collector = datagrams, collector
        self.period, self.max_rounds = period, max_rounds
        self.stop_event = threading.Event()
        self.rounds = 0

    def run(self) -> None:
        while self.rounds < self.max_rounds and not self.stop_event.is_set():
            self.collector.send(self.datagrams)
            self.rounds += 1
            self.stop_event.wait(self.period)


@pytest.fixture
def datagrams(swarm_pcap: Path) -> list[bytes]:
    from fastflow import pcap
    return [d for _, _, d in pcap.iter_datagrams(swarm_pcap)]


def _wait(cond: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def test_dashboard_live(browser: Any, datagrams: list[bytes], tmp_path: Path) -> None:
    col = Collector(tmp_path)
    feeder = Feeder(datagrams, col)
    feeder.start()
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}")
            if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    try:
        _wait(lambda: col.get("/scaler/json")[0] == 200, 10, "the scaler API")
        # the operator entered the token earlier in this tab (the page keeps it in
        # sessionStorage): PUT /flow and the scaler switch need it from the first poll on
        page.add_init_script(f"sessionStorage.setItem('fastflow.token', {json.dumps(TOKEN)})")
        page.goto(col.base + "/", wait_until="load")
        assert page.title() == "fastflow"
        assert page.input_value("#token") == TOKEN
        card = page.locator(f'.service[data-service="{SERVICE}"]')
        card.wait_for(timeout=15000)
        # the containers of the service show up with their metrics
        page.wait_for_function(
            "() => document.querySelectorAll('.service table.containers tbody tr td.num').length >= 3",
            timeout=30000)
        rows = card.locator("table.containers tbody tr").all_inner_texts()
        assert sum(1 for r in rows if r.startswith(f"{SERVICE}.")) == 3, rows
        # thresholds are on the chart's service config; the chart canvas has been drawn
        assert page.evaluate("""() => {
            const c = document.querySelector('.service canvas.util');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let ink = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) ink++;
            return ink > 1000; }""")
        # top flows: the default key set over the swarm's flows (127.0.0.1 UDP / ICMP)
        page.wait_for_selector("#flows-table tbody tr.flow", timeout=30000)
        flows = page.locator("#flows-table tbody tr.flow").all_inner_texts()
        assert any("127.0.0.1\t127.0.0.1\t17" in f for f in flows), flows
        # agents table lists the swarm's agent (when fastflow.collector.agentstats is there to count them)
        if col.get("/agents/json")[1]:
            page.wait_for_function(
                "() => document.querySelector('#agents-table tbody').textContent"
                ".includes('192.0.2.2')", timeout=20000)
        else:
            page.wait_for_function(
                "() => document.querySelector('#agents-message').textContent !== ''", timeout=10000)
        page.wait_for_function(
            "() => document.querySelector('#flowstats').textContent.includes('flow samples')",
            timeout=10000)
        # toggle the service's scaler through the page; observe it through the API
        before = col.get("/scaler/json")[1]["services"][SERVICE]["enabled"]
        btn = card.locator("button.toggle")
        btn.click()
        _wait(lambda: col.get("/scaler/json")[1]["services"][SERVICE]["enabled"] != before,
              10, "the scaler state to change")
        page.wait_for_function(
            f"() => document.querySelector('.service button.toggle').dataset.enabled === "
            f"'{str(not before).lower()}'", timeout=10000)
        btn.click()
        _wait(lambda: col.get("/scaler/json")[1]["services"][SERVICE]["enabled"] == before,
              10, "the scaler state to change back")
        page.wait_for_timeout(2500)          # one more poll cycle with everything in place
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        assert errors == [], errors
    finally:
        feeder.stop_event.set()
        page.close()
        col.stop()
        feeder.join(5)


def test_dashboard_without_token_and_without_scaler(browser: Any, datagrams: list[bytes],
                                                    tmp_path: Path) -> None:
    """Missing endpoints read "not available"; refused changes explain the token; no JS errors."""
    col = Collector(tmp_path, scaler=False)
    feeder = Feeder(datagrams, col, max_rounds=20)
    feeder.start()
    js_errors: list[str] = []
    page = browser.new_page()
    page.on("pageerror", lambda e: js_errors.append(str(e)))
    # the only console errors allowed are the browser's own reports of 401/404 responses
    page.on("console", lambda m: js_errors.append(m.text)
            if m.type == "error" and "Failed to load resource" not in m.text else None)
    try:
        page.goto(col.base + "/", wait_until="load")
        page.wait_for_function(
            "() => document.querySelector('#scaler-message').textContent.includes('not available')",
            timeout=15000)
        page.wait_for_function(
            "() => document.querySelector('#flow-message').textContent.includes('token')",
            timeout=15000)
        assert page.locator(".service").count() == 0
        assert js_errors == [], js_errors
    finally:
        feeder.stop_event.set()
        page.close()
        col.stop()
        feeder.join(5)


def test_dashboard_shows_history_from_before_it_opened(browser: Any, datagrams: list[bytes],
                                                       tmp_path: Path) -> None:
    """The server keeps the trend: a page opened late draws the points taken before it opened,
    then follows live over server-sent events (no polling of /scaler or /dump)."""
    col = Collector(tmp_path)
    feeder = Feeder(datagrams, col)
    feeder.start()
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    try:
        def trend() -> Any:
            st, body = col.get("/dashboard/trend/json")
            pts = (body or {}).get("history", {}).get(SERVICE, []) if st == 200 else []
            with_util = [p for p in pts if p.get("util") is not None]
            return pts if len(with_util) >= 4 else None
        before = _wait(trend, 60, "four trend points with container CPU on the server")
        opened = time.time()
        page.goto(col.base + "/", wait_until="load")
        page.wait_for_function(
            f"() => {{ const s = window.fastflowDashboard.state.services[{json.dumps(SERVICE)}];"
            f" return s && s.history.length >= {len(before)}; }}", timeout=15000)
        hist = page.evaluate(
            f"() => window.fastflowDashboard.state.services[{json.dumps(SERVICE)}].history")
        old = [p for p in hist if p["t"] < opened]
        assert len(old) >= len(before) >= 4, (len(old), len(before))
        assert any(p["util"] is not None for p in old)
        assert old[0]["t"] == before[0]["t"]                 # the very first server point
        # then live points arrive over the stream
        n0 = len(hist)
        page.wait_for_function(
            f"() => window.fastflowDashboard.state.services[{json.dumps(SERVICE)}]"
            f".history.length > {n0}", timeout=15000)
        assert page.evaluate("() => window.fastflowDashboard.state.streamPoints") >= 1
        assert any(u.endswith("/dashboard/stream") for u in requests)
        assert not any("/scaler/json" in u or "/dump/" in u for u in requests), requests
        assert errors == [], errors
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-history.png"), full_page=True)
    finally:
        feeder.stop_event.set()
        page.close()
        col.stop()
        feeder.join(5)
