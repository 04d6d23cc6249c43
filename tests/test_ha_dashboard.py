"""The dashboard shows who scales: two ``fastflow run`` instances with ``[ha]`` on the real engine,
each page opened in headless chromium; one says it scales, the other names the holder.

Skips when chromium or playwright is missing, unless FASTFLOW_REQUIRE_BROWSER=1.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _api_util import get_json
from _service_util import Proc, wait_for
from dockerenv import docker_client_fixture, unique  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.docker]
CHROMIUM = os.environ.get("FASTFLOW_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    path = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        path = None
    if path is None:
        if os.environ.get("FASTFLOW_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium or playwright missing (FASTFLOW_REQUIRE_BROWSER=1)")
        pytest.skip("chromium or playwright missing")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=["--headless", "--no-sandbox",
                                                          "--disable-gpu", "--no-first-run"])
        try:
            yield b
        finally:
            b.close()


def test_lease_badge(chromium: Any, docker_client: Any, tmp_path: Path) -> None:
    lock = unique("halock")
    procs = []
    try:
        for i in range(2):
            cfg = tmp_path / f"ff{i}.toml"
            cfg.write_text(f"""
[ha]
enabled = true
lock_service = "{lock}"
duration = 4
renew = 1
poll = 0.5
[scaler]
enabled = true
dry_run = true
state_file = "{tmp_path / f's{i}.json'}"
""")
            procs.append(Proc("--config", str(cfg), "--sflow-port", "0", "--http-port", "0",
                              "--bind", "127.0.0.1"))
        def held() -> list[bool]:
            return [get_json(p.port("HTTP"), "/scaler/json")[1]["lease"]["held"] for p in procs]
        assert sorted(wait_for(lambda: sum(held()) == 1 and held(), 20)) == [False, True]
        texts = []
        for p in procs:
            page = chromium.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
            page.goto(f"http://127.0.0.1:{p.port('HTTP')}/", wait_until="domcontentloaded")
            badge = page.locator("#scaler-lease")
            page.wait_for_function(
                "() => { const b = document.getElementById('scaler-lease');"
                " return b && !b.hidden && / scales/.test(b.textContent); }", timeout=20000)
            texts.append(badge.text_content() or "")
            assert not errors, errors
            page.close()
        assert sorted(t.startswith("standby: ") for t in texts) == [False, True], texts
        assert "this instance scales (lease holder)" in texts, texts
    finally:
        for p in procs:
            p.stop()
        try:
            docker_client.api.remove_service(lock)
        except Exception:
            pass
