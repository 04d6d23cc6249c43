"""The scaler's REST control over a real HTTP server on 127.0.0.1 (fastflow.web.api.ApiServer)."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from fastflow.scaler.controller import Scaler
from fastflow.scaler.policy import PolicyError
from fastflow.web.scaler import scaler_routes

TOKEN = "s3cret"


class NoMetrics:
    def query(self, *a: Any, **k: Any) -> list[dict[str, Any]]:
        return []

    def dump(self, *a: Any, **k: Any) -> list[dict[str, Any]]:
        return []


def section(**kw: Any) -> dict[str, Any]:
    return {"enabled": False, "token": TOKEN,
            "services": [{"service": "apache", "replicas_max": 5},
                         {"service": "web", "mode": "target", "target": 50}], **kw}


def call(port: int, method: str, path: str, body: Any = None,
         token: str | None = TOKEN) -> tuple[int, Any]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def serve(scaler: Scaler, script: Any) -> Any:
    """Run ``script(port)`` (blocking HTTP calls, in a thread) against a real ApiServer."""
    import fastflow.web.api as api

    async def main() -> Any:
        server = api.ApiServer(scaler_routes(scaler), host="127.0.0.1", port=0, token=TOKEN)
        await server.start()
        try:
            return await asyncio.get_running_loop().run_in_executor(None, script, server.port)
        finally:
            await server.stop()

    return asyncio.run(main())


def test_state_switch_token_and_persistence(tmp_path: Path) -> None:
    state = tmp_path / "state" / "scaler.json"
    scaler = Scaler.from_config(section(), NoMetrics(), state)

    def script(port: int) -> None:
        code, body = call(port, "GET", "/scaler/json", token=None)
        assert code == 200 and body["enabled"] is False
        assert set(body["services"]) == {"apache", "web"}
        assert body["services"]["web"]["mode"] == "target"
        # switching is a change: the token is required even though it is a GET
        code, body = call(port, "GET", "/scaler/json?state=enabled", token=None)
        assert code == 401, body
        code, _ = call(port, "GET", "/scaler/json?state=enabled", token="wrong")
        assert code == 401
        code, body = call(port, "GET", "/scaler/json?state=maybe")
        assert code == 400
        code, body = call(port, "GET", "/scaler/json?state=enabled")
        assert code == 200 and body["enabled"] is True
        code, body = call(port, "GET", "/scaler/apache/json?state=disabled")
        assert code == 200 and body["enabled"] is False
        code, body = call(port, "GET", "/scaler/apache/json", token=None)
        assert code == 200 and body["enabled"] is False and body["service"] == "apache"
        code, _ = call(port, "GET", "/scaler/nosuch/json")
        assert code == 404
        code, body = call(port, "GET", "/scaler/events/json", token=None)
        assert code == 200 and body == []

    serve(scaler, script)
    assert json.loads(state.read_text())["enabled"] is True
    again = Scaler.from_config(section(), NoMetrics(), state)
    assert again.enabled is True
    assert again.services["apache"].policy.enabled is False
    assert again.services["web"].policy.enabled is True


@pytest.mark.parametrize("body", [
    {"replicas_max": "lots"}, {"bogus": 1}, {"mode": "hpa"}, {"replicas_min": 9, "replicas_max": 2},
    {"util_min": 90, "util_max": 80}, {"service": "other"}, [1, 2], {"pattern": "(["},
    {"interval": -1}, {"enabled": "true"},
])
def test_put_validation(tmp_path: Path, body: Any) -> None:
    scaler = Scaler.from_config(section(), NoMetrics(), tmp_path / "s.json")
    before = scaler.services["apache"].policy

    def script(port: int) -> None:
        code, answer = call(port, "PUT", "/scaler/apache/json", body)
        assert code == 400, answer
        assert answer["error"]

    serve(scaler, script)
    assert scaler.services["apache"].policy == before


def test_put_applies_persists_and_survives_restart(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    scaler = Scaler.from_config(section(), NoMetrics(), state)

    def script(port: int) -> None:
        code, _ = call(port, "PUT", "/scaler/apache/json", {"replicas_max": 8}, token=None)
        assert code == 401
        code, _ = call(port, "PUT", "/scaler/apache/json", b"{not json")
        assert code == 400
        code, body = call(port, "PUT", "/scaler/apache/json",
                          {"mode": "target", "target": 40, "replicas_max": 8, "cooldown_down": 30,
                           "stabilization_window": 60})
        assert code == 200, body
        assert body["mode"] == "target" and body["config"]["replicas_max"] == 8
        # a new service is added only explicitly ("manage": true), within the ceiling
        code, body = call(port, "PUT", "/scaler/db/json", {"replicas_max": 3})
        assert code == 404 and "manage" in body["error"], body
        code, body = call(port, "PUT", "/scaler/db/json", {"manage": True, "replicas_max": 1e9})
        assert code == 400 and "ceiling" in body["error"], body
        code, body = call(port, "PUT", "/scaler/db/json", {"manage": True, "replicas_max": 3},
                          token=None)
        assert code == 401, body
        code, body = call(port, "PUT", "/scaler/db/json", {"manage": True, "replicas_max": 3})
        assert code == 200 and body["service"] == "db" and body["source"] == "REST", body

    serve(scaler, script)
    again = Scaler.from_config(section(), NoMetrics(), state)
    p = again.services["apache"].policy
    assert (p.mode, p.target, p.replicas_max, p.cooldown_down, p.stabilization_window) == (
        "target", 40.0, 8, 30.0, 60.0)
    assert again.services["db"].policy.replicas_max == 3
    # config values not overridden at run time still come from the config
    assert again.services["web"].policy.target == 50.0


def test_from_config_validation(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="unknown"):
        Scaler.from_config({"enabeld": True}, NoMetrics(), tmp_path / "s.json")
    with pytest.raises(PolicyError, match="#1"):
        Scaler.from_config({"services": [{"service": "a", "replicas_max": 0}]}, NoMetrics(),
                           tmp_path / "s.json")
    with pytest.raises(PolicyError, match="twice"):
        Scaler.from_config({"services": [{"service": "a"}, {"service": "a"}]}, NoMetrics(),
                           tmp_path / "s.json")
    # a corrupt state file is ignored (logged), not fatal
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    assert Scaler.from_config(section(), NoMetrics(), bad).enabled is False


def test_adding_a_service_needs_a_configured_token(tmp_path: Path) -> None:
    """Without any token (loopback default) a service can still be tuned but never added."""
    import fastflow.web.api as api

    scaler = Scaler.from_config(section(token=""), NoMetrics(), tmp_path / "s.json")

    async def main() -> None:
        server = api.ApiServer(scaler_routes(scaler), host="127.0.0.1", port=0)
        await server.start()
        try:
            def script(port: int) -> None:
                code, body = call(port, "PUT", "/scaler/x/json", {"manage": True}, token=None)
                assert code == 403 and "token" in body["error"], body
                code, body = call(port, "PUT", "/scaler/apache/json", {"replicas_max": 4},
                                  token=None)
                assert code == 200, body
            await asyncio.get_running_loop().run_in_executor(None, script, server.port)
        finally:
            await server.stop()

    asyncio.run(main())
    assert "x" not in scaler.services


def test_either_token_is_accepted_for_scaler_routes(tmp_path: Path) -> None:
    scaler = Scaler.from_config(section(token="scaler-only"), NoMetrics(), tmp_path / "s.json",
                                api_token=TOKEN)

    def script(port: int) -> None:
        code, body = call(port, "PUT", "/scaler/apache/json", {"replicas_max": 4}, token=TOKEN)
        assert code == 200, body
        code, body = call(port, "PUT", "/scaler/apache/json", {"replicas_max": 4}, token="wrong")
        assert code == 401, body

    serve(scaler, script)


@pytest.mark.parametrize("content", [
    '{"services": [1, 2]}', '{"services": "x"}', "[" * 100000 + "]" * 100000, '"text"', "null",
    '{"enabled": "yes", "services": {"apache": [1]}}', '{"services": {"apache": {"replicas_max": 1e9}}}',
    '{"services": {"apache": {"mode": {"a": 1}}}}', '{"services": {"new": {"replicas_max": 1e12}}}',
    '{"services": {"apache": {"behavior": [1]}}}', "\xff\xfe garbage", "",
    '{"enabled": true, "enabled_meta": [1]}',
])
def test_any_state_file_gives_a_warning_and_safe_defaults(tmp_path: Path, content: str,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "s.json"
    f.write_bytes(content.encode("utf-8", "surrogateescape"))
    with caplog.at_level(logging.WARNING, logger="fastflow.scaler"):
        scaler = Scaler.from_config(section(), NoMetrics(), f)
    assert scaler.services["apache"].policy.replicas_max <= 100
    assert set(scaler.services) <= {"apache", "web"}
    if content.strip() and content not in ('{"enabled": true, "enabled_meta": [1]}',):
        assert any(r.levelno == logging.WARNING for r in caplog.records), content[:40]


def test_state_precedence_is_announced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """REST switch -> persisted, wins over the config at the next start and says so; once the
    configuration's own value changes, the configuration wins (and says so)."""
    f = tmp_path / "s.json"
    with caplog.at_level(logging.INFO, logger="fastflow.scaler"):
        s1 = Scaler.from_config(section(enabled=False), NoMetrics(), f)
        assert s1.enabled_source == "config"
        s1.set_enabled(True)
        caplog.clear()
        s2 = Scaler.from_config(section(enabled=False), NoMetrics(), f)
    assert s2.enabled is True and s2.enabled_source.startswith(f"state file {f}")
    start = [r.getMessage() for r in caplog.records if "scaler ENABLED" in r.getMessage()]
    assert start and "source: state file" in start[0] and "enabled = false" in start[0], start
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fastflow.scaler"):
        s3 = Scaler.from_config(section(enabled=True), NoMetrics(), f)   # operator edited config
        assert s3.enabled is True and s3.enabled_source == "config"
        s4 = Scaler.from_config(section(enabled=False, restore_state=False), NoMetrics(), f)
        assert s4.enabled is False and s4.enabled_source == "config"
    assert any("the configuration wins" in r.getMessage() for r in caplog.records)
    assert s1.state()["enabled_source"].startswith("REST")


def test_default_state_path_is_documented_xdg(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    from fastflow.scaler.controller import default_state_file

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_state_file() == tmp_path / "fastflow" / "scaler.json"


def test_behavior_changes_merge_per_direction_and_persist(tmp_path: Path) -> None:
    f = tmp_path / "s.json"
    s1 = Scaler.from_config(section(), NoMetrics(), f)
    s1.update_service("apache", {"behavior": {"scale_down": {"stabilization_window": 60}}})
    s1.update_service("apache", {"behavior": {"scale_up": {"select_policy": "min"}}})
    p = Scaler.from_config(section(), NoMetrics(), f).services["apache"].policy
    assert (p.scale_down.stabilization_window, p.scale_up.select_policy) == (60, "min")
    assert p.mode == "proportional"
