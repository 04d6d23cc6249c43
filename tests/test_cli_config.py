"""``fastflow config check|show|example``, ``--log-format json`` and SIGHUP, through the real
command in a subprocess (own HOME / XDG_STATE_HOME: nothing read from the user's home)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from _service_util import Proc, wait_for
from fastflow.cli.config import load_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "config.example.toml"


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("FASTFLOW_")}
    e.update({"HOME": str(tmp_path / "home"), "XDG_STATE_HOME": str(tmp_path / "state")})
    return e


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastflow", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def test_example_is_package_data_and_prints(env: dict[str, str]) -> None:
    from fastflow.cli.configcmd import example_text

    assert example_text() == EXAMPLE.read_text()
    r = cli("config", "example", env=env)
    assert r.returncode == 0 and r.stdout == EXAMPLE.read_text()
    tomllib.loads(r.stdout)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "config.example.toml" in \
        pyproject["tool"]["setuptools"]["package-data"]["fastflow.cli"]


def test_check_ok_and_errors(env: dict[str, str], tmp_path: Path) -> None:
    r = cli("config", "check", "-c", str(EXAMPLE), env=env)
    assert r.returncode == 0, r.stderr
    assert "configuration OK" in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[api]\nprot = 8009\n")
    r = cli("config", "check", "-c", str(bad), env=env)
    assert r.returncode == 2 and "did you mean 'port'" in r.stderr and "Traceback" not in r.stderr
    bad.write_text('[[scaler.services]]\nservice = "web"\nreplicas_min = 5\nreplicas_max = 2\n')
    r = cli("config", "check", "-c", str(bad), env=env)     # the scaler's own validation runs
    assert r.returncode == 2 and "replicas" in r.stderr
    r = cli("config", "check", "-c", str(tmp_path / "none.toml"), env=env)
    assert r.returncode == 2 and "not found" in r.stderr


def test_show_names_each_source_and_loads_back(env: dict[str, str], tmp_path: Path) -> None:
    f = tmp_path / "f.toml"
    f.write_text('[collector]\nport = 6400\n[api]\ntoken = "s3cret"\n'
                 '[[scaler.services]]\nservice = "web"\nreplicas_max = 4\n')
    r = cli("config", "show", "-c", str(f), "--http-port", "8010",
            env={**env, "FASTFLOW_STORE_DEPTH": "64"})
    assert r.returncode == 0, r.stderr
    assert any(ln.startswith("port = 6400") and ln.endswith(f"# file {f}")
               for ln in r.stdout.splitlines())
    assert any(ln.startswith("port = 8010") and ln.endswith("# flag")
               for ln in r.stdout.splitlines())
    assert any(ln.startswith("depth = 64") and ln.endswith("# env FASTFLOW_STORE_DEPTH")
               for ln in r.stdout.splitlines())
    assert any(ln.startswith("batch = 1024") and ln.endswith("# default")
               for ln in r.stdout.splitlines())
    assert "s3cret" not in r.stdout
    back = tmp_path / "back.toml"
    back.write_text(r.stdout.replace('"***"', '"x"'))
    cfg = load_config(back, env={})
    assert (cfg.collector.port, cfg.api.port, cfg.store.depth) == (6400, 8010, 64)
    assert cfg.scaler["services"] == [{"service": "web", "replicas_max": 4}]
    r = cli("config", "show", "--json", env=env)
    data = json.loads(r.stdout)
    assert data["api"]["port"] == {"value": 8008, "source": "default"}


def test_log_format_json(env: dict[str, str], tmp_path: Path) -> None:
    p = Proc("--sflow-port", "0", "--http-port", "0", "--no-scaler", "--log-format", "json",
             env={**env, "FASTFLOW_API_BIND": "127.0.0.1"})
    try:
        wait_for(lambda: any("Listening, HTTP port" in ln for ln in p.lines), 20)
    finally:
        assert p.stop() == 0
    objs = [json.loads(ln) for ln in p.lines if ln.strip()]
    assert objs and all({"time", "level", "logger", "message"} <= set(o) for o in objs)
    assert any(o["message"].startswith("Listening, sFlow port") for o in objs)
    # the same through the config file's [log] format
    f = tmp_path / "f.toml"
    f.write_text('[log]\nformat = "json"\n')
    r = subprocess.run([sys.executable, "-m", "fastflow", "run", "-c", str(f), "--sflow-port",
                        "0", "--http-port", "99999"], capture_output=True, text=True, timeout=60,
                       env=env)
    assert r.returncode == 2           # 99999 is no port: a configuration error, before logging
    f.write_text('[log]\nformat = "xml"\n')
    r = cli("config", "check", "-c", str(f), env=env)
    assert r.returncode == 2 and "[log] format" in r.stderr


def test_sighup_reloads_log_and_keeps_running(env: dict[str, str], tmp_path: Path) -> None:
    f = tmp_path / "f.toml"
    f.write_text('[collector]\nport = 0\nbind = "127.0.0.1"\n[api]\nport = 0\n')
    p = Proc("-c", str(f), "--no-scaler", env=env)
    try:
        p.port("HTTP")
        f.write_text('[collector]\nport = 0\nbind = "127.0.0.1"\n[api]\nport = 0\n'
                     '[store]\ndepth = 8\n[log]\nlevel = "debug"\nformat = "json"\n')
        p.p.send_signal(signal.SIGHUP)
        assert wait_for(lambda: any("SIGHUP: configuration reloaded" in ln for ln in p.lines), 10)
        line = next(ln for ln in p.lines if "SIGHUP" in ln)
        assert "needs a restart to apply: [store] depth" in line
        # a broken file is refused, the service keeps running
        f.write_text("[api\n")
        p.p.send_signal(signal.SIGHUP)
        assert wait_for(lambda: any("not reloaded" in ln for ln in p.lines), 10)
        time.sleep(0.2)
        assert p.p.poll() is None
        # the json format was applied: later lines are JSON objects
        refused = next(ln for ln in p.lines if "not reloaded" in ln)
        assert json.loads(refused)["message"].startswith("SIGHUP: configuration not reloaded")
    finally:
        assert p.stop() == 0
