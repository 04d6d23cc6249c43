"""``fastflow run`` end to end: a real subprocess (and an in-process Service) fed real datagrams from
the docker-swarm capture over UDP on 127.0.0.1, read back over HTTP, flooded with junk, stopped
with SIGTERM."""

from __future__ import annotations

import asyncio
import json
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from _api_util import get_json, request
from _service_util import Proc, wait_for
from fastflow.cli.config import load_config


def swarm_datagrams(path: Path) -> list[bytes]:
    from fastflow import pcap
    cap = pcap.read(path)
    buf = bytes(cap.buf)
    return [buf[int(o):int(o) + int(n)] for o, n in zip(cap.offsets, cap.lengths, strict=True)]


def send(port: int, datagrams: list[bytes], pace_every: int = 200, pause: float = 0.005,
         deadline: float = 30.0) -> int:
    """Send to 127.0.0.1:port, pausing every ``pace_every`` datagrams; bounded in time."""
    t_end = time.monotonic() + deadline
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i, d in enumerate(datagrams):
            if time.monotonic() > t_end:
                break
            s.sendto(d, ("127.0.0.1", port))
            sent += 1
            if pace_every and i % pace_every == pace_every - 1:
                time.sleep(pause)
    return sent


def junk_datagrams(real: list[bytes], n: int, seed: int = 7) -> list[bytes]:
    """Random datagrams (bad version), version-5 headers with bad agent types, truncated reals."""
    rng = random.Random(seed)
    out: list[bytes] = []
    for i in range(n):
        kind = i % 4
        if kind in (0, 1):
            d = rng.randbytes(rng.randint(0, 300))
            if d[:4] == b"\x00\x00\x00\x05":
                d = b"\x00\x00\x00\x04" + d[4:]
        elif kind == 2:
            d = b"\x00\x00\x00\x05" + rng.choice([b"\x00\x00\x00\x07", b"\xff\xff\xff\xff"]) + \
                rng.randbytes(rng.randint(0, 100))
        else:
            # a real datagram cut short, from another agent (192.0.2.99): replayed copies of the
            # real agent's datagrams would legitimately look like an agent restart to the store
            r = rng.choice(real)
            r = r[:8] + bytes([192, 0, 2, 99]) + r[12:]
            d = r[:rng.randint(0, len(r) - 1)]
        out.append(d)
    return out


# --------------------------------------------------------------------------------------------------
# The real command in a subprocess (tests/_service_util.py: Proc, wait_for)
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def proc(tmp_path_factory: pytest.TempPathFactory) -> Any:
    state = tmp_path_factory.mktemp("svc") / "scaler.json"
    p = Proc("--sflow-port", "0", "--http-port", "0", "--bind", "127.0.0.1",
             env={"FASTFLOW_SCALER_STATE_FILE": str(state), "FASTFLOW_STORE_POLLING_INTERVAL": "10"})
    try:
        yield p
    finally:
        p.kill()


def test_run_subprocess_end_to_end(proc: Proc, swarm_pcap: Path) -> None:
    sflow_port = proc.port("sFlow")
    http_port = proc.port("HTTP")
    # the log lines look like sFlow-RT's: 2026-11-24T21:02:54+0000 INFO: Listening, sFlow port N
    assert any(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} INFO: Listening, sFlow port \d+$",
                        line) for line in proc.lines), proc.lines
    real = swarm_datagrams(swarm_pcap)
    assert send(sflow_port, real, pace_every=20) == len(real)

    def burn() -> Any:
        st, body = get_json(http_port, "/metric/ALL/avg:vir_cpu_utilization/json"
                                       "?vir_host_name=sflowpeer_burn.*")
        return body if st == 200 and body and body[0].get("metricN") == 3 else None
    body = wait_for(burn, 15)
    assert body, f"three burn containers expected; stderr:\n{chr(10).join(proc.lines[-20:])}"
    assert body[0]["metricName"] in ("avg:vir_cpu_utilization", "vir_cpu_utilization")
    assert isinstance(body[0]["metricValue"], float | int)
    st, agents = get_json(http_port, "/agents/json")
    assert st == 200 and "192.0.2.2" in agents
    st, health = get_json(http_port, "/healthz")
    assert st == 200 and health["status"] == "ok"

    # the metric answers after the first ~20 datagrams; the rest may still be in flight
    def all_decoded() -> Any:
        st, health = get_json(http_port, "/healthz")
        return health if health["ingest"]["datagrams_decoded"] >= len(real) else None
    assert wait_for(all_decoded, 15), "not every datagram of the capture was decoded"

    # malformed datagrams and a bounded junk flood: still running, junk counted
    junk = junk_datagrams(real, 20_000)
    sent = send(sflow_port, junk, pace_every=200, pause=0.004, deadline=40)
    assert sent > 10_000

    def rejected() -> int:
        st, e = get_json(http_port, "/errors/json")
        assert st == 200
        return int(e["errors"].get("bad_version", 0))
    # half the junk has a bad version; allow for kernel drops under load
    n_bad = wait_for(lambda: rejected() >= 0.5 * sent * 0.5 and rejected(), 15)
    assert n_bad, f"bad_version={rejected()} after {sent} junk datagrams"
    st, e = get_json(http_port, "/errors/json")
    assert e["errors"].get("bad_agent_address", 0) > 0
    assert e["errors"].get("truncated_header", 0) + e["errors"].get("sample_overrun", 0) > 0
    st, hdrs, text = request(http_port, "GET", "/metrics")
    assert st == 200 and hdrs["content-type"].startswith("text/plain; version=0.0.4")
    prom = text.decode()
    m = re.search(r'^fastflow_decoder_rejected_total\{reason="bad_version",kind="error"\} (\d+)$', prom, re.M)
    assert m and int(m.group(1)) >= n_bad
    st, _, text = request(http_port, "GET", "/prometheus/metrics/ALL/ALL/txt")
    assert 'sflow_vir_cpu_utilization{agent="192.0.2.2"' in text.decode()
    # the real agent's data is still there and the service still answers (cut-short datagrams
    # from 192.0.2.99 may carry whole samples of their own: ask for the real agent only)
    assert get_json(http_port, "/metric/192.0.2.2/avg:vir_cpu_utilization/json"
                               "?vir_host_name=sflowpeer_burn.*")[1][0]["metricN"] == 3

    # SIGTERM: clean exit 0
    proc.p.send_signal(signal.SIGTERM)
    rc = proc.p.wait(20)
    proc.t.join(5)
    assert rc == 0, "\n".join(proc.lines[-30:])
    assert any("SIGTERM received" in line for line in proc.lines)
    assert not any("Traceback" in line for line in proc.lines), "\n".join(proc.lines)
    # the ports are free again
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", http_port))


def test_run_config_error_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[collector]\nprot = 1\n")
    r = subprocess.run([sys.executable, "-m", "fastflow", "run", "--config", str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "did you mean 'port'" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "fastflow", "run", "--http-port", "99999"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not a port number" in r.stderr


# --------------------------------------------------------------------------------------------------
# In-process Service
# --------------------------------------------------------------------------------------------------
class ServiceThread:
    """A :class:`fastflow.cli.run.Service` running on its own event loop in a thread."""

    def __init__(self, cfg: Any, **kw: Any) -> None:
        from fastflow.cli.run import Service
        self.loop = asyncio.new_event_loop()
        self.svc = Service(cfg, **kw)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ServiceThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.svc.start(), self.loop).result(20)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.svc.stop(), self.loop).result(20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def _cfg(tmp_path: Path, **over: Any) -> Any:
    base = {"collector.port": 0, "collector.bind": "127.0.0.1", "api.port": 0,
            "scaler.state_file": str(tmp_path / "scaler.json")}
    return load_config(env={}, overrides={**base, **over})


def test_service_in_process(tmp_path: Path, swarm_pcap: Path) -> None:
    with ServiceThread(_cfg(tmp_path)) as st:
        svc = st.svc
        assert svc.sflow_port and svc.http_port
        real = swarm_datagrams(swarm_pcap)
        send(svc.sflow_port, real, pace_every=20)
        ok = wait_for(lambda: get_json(svc.http_port, "/dump/ALL/vir_cpu_utilization/json")[1], 15)
        assert ok and {d["agent"] for d in ok} == {"192.0.2.2"}
        st_, names = get_json(svc.http_port, "/metrics/json")
        assert st_ == 200 and "vir_cpu_utilization" in names
        # optional parts are mounted when available
        if svc.flows is not None:
            assert request(svc.http_port, "GET", "/flowkeys/json")[0] == 200
        if svc.scaler is not None:
            assert request(svc.http_port, "GET", "/scaler/json")[0] == 200
        ingest_thread_count = threading.active_count()
    assert threading.active_count() <= ingest_thread_count


def test_service_pipeline_failure_is_counted_not_fatal(tmp_path: Path, swarm_pcap: Path) -> None:
    """Fault injection on the real path: one batch makes the pipeline raise; ingest keeps going."""
    with ServiceThread(_cfg(tmp_path), scaler=False) as st:
        svc = st.svc
        real_feed = svc.pipeline.feed
        calls = {"n": 0}

        def flaky(*a: Any, **k: Any) -> None:
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("injected")
            real_feed(*a, **k)
        svc.pipeline.feed = flaky
        port, http_port = svc.sflow_port, svc.http_port
        assert port is not None and http_port is not None
        send(port, [b"\x00\x00\x00\x05"])
        assert wait_for(lambda: svc.feed_errors == 1, 10)
        send(port, swarm_datagrams(swarm_pcap)[:10], pace_every=5)
        health = wait_for(lambda: get_json(http_port, "/healthz")[1]["ingest"]
                          .get("datagrams_decoded", 0) >= 1 and
                          get_json(http_port, "/healthz")[1], 10)
        assert health and health["ingest"]["feed_errors"] == 1


def test_service_refuses_public_bind_without_token(tmp_path: Path) -> None:
    from fastflow.cli.run import Service
    cfg = _cfg(tmp_path, **{"api.bind": "0.0.0.0"})
    svc = Service(cfg)
    assert any(r.mutating for r in svc.routes())

    async def go() -> None:
        with pytest.raises(ValueError, match="token"):
            await svc.start()
    asyncio.run(go())
    assert svc.api is None or svc.api.sockets == []   # nothing left bound


def test_json_roundtrip_of_config() -> None:
    cfg = load_config(env={})
    assert json.loads(json.dumps(cfg.to_dict()))["collector"]["port"] == 6343


def test_run_sigint_exits_0_and_env_port(tmp_path: Path) -> None:
    """SIGINT stops it cleanly too; the example config runs; FASTFLOW_API_PORT /
    FASTFLOW_COLLECTOR_BIND override it."""
    with socket.socket() as s:        # a free TCP port for the API, given through the environment
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    example = Path(__file__).resolve().parent.parent / "docs" / "config.example.toml"
    p = Proc("--config", str(example), "--sflow-port", "0", "--no-scaler",
             env={"FASTFLOW_API_PORT": str(free), "FASTFLOW_COLLECTOR_BIND": "127.0.0.1"})
    try:
        assert p.port("HTTP") == free
        assert get_json(free, "/version/json")[0] == 200
        assert request(free, "GET", "/scaler/json")[0] == 404     # --no-scaler
        p.p.send_signal(signal.SIGINT)
        assert p.p.wait(20) == 0
        p.t.join(5)
        assert any("SIGINT received" in line for line in p.lines)
    finally:
        p.kill()


@pytest.mark.parametrize("flows, message", [
    ({"enabled": "yes"}, r"\[flows\] enabled"),
    ({"definition_ttl": "soon"}, r"\[flows\] definition_ttl"),
    ({"bogus": 1}, r"\[flows\]: unknown key"),
])
def test_service_flows_section_errors(tmp_path: Path, flows: dict[str, Any], message: str) -> None:
    from fastflow.cli.config import ConfigError
    from fastflow.cli.run import Service
    cfg = _cfg(tmp_path)
    cfg.flows = flows
    with pytest.raises(ConfigError, match=message):
        Service(cfg, scaler=False)


def test_service_flows_disabled(tmp_path: Path) -> None:
    from fastflow.cli.run import Service
    cfg = _cfg(tmp_path)
    cfg.flows = {"enabled": False, "definition_ttl": 5}
    svc = Service(cfg, scaler=False)
    assert svc.flows is None
    assert not any(r.pattern.startswith("/flow") for r in svc.routes())


def test_api_token_protects_scaler_switches(tmp_path: Path) -> None:
    from fastflow.cli.run import Service
    svc = Service(_cfg(tmp_path, **{"api.token": "t0k"}))
    assert svc.scaler is not None and svc.scaler.token == "t0k"
    svc = Service(_cfg(tmp_path, **{"api.token": "t0k", "scaler.token": "own"}))
    assert svc.scaler.token == "own"
