"""The scaler end to end: a real ``fastflow run`` subprocess scales a real swarm service.

Telemetry describes the service's REAL running tasks (read from Docker every ~0.5 s, hostnames
``svc.slot.taskid``) and arrives as real sFlow datagrams (hsflowd-shaped, built with
:mod:`fastflow.encode`) over UDP on 127.0.0.1. The test only drives the simulated utilisation and
watches Docker, the scaler's REST answers and its log lines.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from _api_util import get_json
from _service_util import Proc
from _telemetry_util import SEND_EVERY, TaskTelemetry, bounded
from dockerenv import SwarmHelper, docker_client_fixture, swarm_fixture, unique  # noqa: F401

STALENESS = 2.0       # the policy's staleness: 4 polling intervals
EXPIRE = 6.0          # [store] expire_after: silent containers are stale first, then gone
PHASE = 45.0          # bound on every phase


def spec_without_replicas(spec: dict[str, Any]) -> dict[str, Any]:
    s = copy.deepcopy(spec)
    s["Mode"]["Replicated"].pop("Replicas")
    return s


def write_config(tmp_path: Path, name: str) -> Path:
    cfg = tmp_path / "fastflow.toml"
    cfg.write_text(f"""
[store]
polling_interval = 1
expire_after = {EXPIRE}

[scaler]
enabled = true
state_file = "{tmp_path / 'scaler.json'}"

[[scaler.services]]
service = "{name}"
replicas_min = 1
replicas_max = 3
interval = 1
util_min = 20
util_max = 80
staleness = {STALENESS}
""")
    return cfg


@pytest.mark.docker
@pytest.mark.slow
def test_run_scales_real_service_from_udp_telemetry(swarm: SwarmHelper, tmp_path: Path) -> None:
    from docker.types import UpdateConfig

    t_start = time.monotonic()
    name = unique("run")
    svc = swarm.create_service(name, ["sleep", "600"], replicas=1, env=["A=1"],
                               labels={"keep": "me"},
                               update_config=UpdateConfig(parallelism=1, delay=1_000_000_000))
    swarm.wait_running(svc, 1)
    created = swarm.client.api.inspect_service(svc.id)
    proc = Proc("--config", str(write_config(tmp_path, name)), "--sflow-port", "0",
                "--http-port", "0", "--bind", "127.0.0.1")
    tel: TaskTelemetry | None = None
    try:
        sflow_port, http = proc.port("sFlow"), proc.port("HTTP")
        tel = TaskTelemetry(swarm.client, svc.id, [sflow_port])
        seen: list[int] = []

        def replicas() -> int:
            r = swarm.replicas(svc)
            if not seen or seen[-1] != r:
                seen.append(r)
            return r

        def events() -> list[tuple[int, int]]:
            st, ev = get_json(http, "/scaler/events/json")
            assert st == 200, ev
            return [(e["from"], e["to"]) for e in ev if e["action"] not in ("hold", "manual")]

        def state() -> dict[str, Any]:
            st, body = get_json(http, f"/scaler/{name}/json")
            assert st == 200, body
            return body  # type: ignore[no-any-return]

        def stopping() -> list[Any]:
            return [t for t in swarm.client.api.tasks(filters={"service": svc.id})
                    if t["DesiredState"] != "running" and t["Status"]["State"] == "running"]

        def diag() -> str:
            return (f"replicas seen {seen}, tasks {tel.tasks if tel else None}, state {state()}, "
                    f"events {events()}, log tail:\n" + "\n".join(proc.lines[-15:]))

        def reach(n: int, util: float) -> None:
            assert tel is not None
            tel.util = util
            bounded(lambda: replicas() == n and len(tel.tasks) == n, PHASE,
                    f"{n} replicas at {util}% utilisation", diag)

        # 1. busy containers: up one by one to replicas_max, never beyond
        tel.util = 95.0
        tel.start()
        reach(3, 95.0)
        assert events() == [(1, 2), (2, 3)], diag()
        # 2. idle containers: back down to replicas_min
        reach(1, 5.0)
        assert events() == [(1, 2), (2, 3), (3, 2), (2, 1)], diag()
        # `sleep` ignores SIGTERM: Docker stops the removed containers after its 10 s grace
        # period; until then the convergence gate rightly waits for them
        bounded(lambda: not stopping(), 30, "removed containers stopped", diag)
        for n in (2, 3, 2, 1):
            assert f"INFO: {name} set replicas={n}" in "\n".join(proc.lines), diag()

        # 3. the REST switch: disabled, busy and fresh telemetry from every task changes nothing
        st, body = get_json(http, "/scaler/json?state=disabled")
        assert st == 200 and body["enabled"] is False, body
        tel.util = 95.0
        t_end = time.monotonic() + 4 * 1.0 + 2 * SEND_EVERY     # four scaler intervals
        while time.monotonic() < t_end:
            assert replicas() == 1, diag()
            time.sleep(0.25)
        assert len(events()) == 4 and state()["status"] == "disabled", diag()

        # 4. telemetry stops while it says "up": enabled again, the scaler holds and says why
        tel.sending = False
        time.sleep(STALENESS + 2 * SEND_EVERY)
        st, body = get_json(http, "/scaler/json?state=enabled")
        assert st == 200 and body["enabled"] is True, body
        t_end = time.monotonic() + 3 * STALENESS
        reasons = set()
        while time.monotonic() < t_end:
            s = state()
            if s["status"].startswith("hold:"):   # a tick since the switch
                reasons.add(s["reason"])
            assert replicas() == 1, diag()
            time.sleep(0.25)
        s = state()
        assert s["decision"]["action"] == "hold" and s["status"].startswith("hold:"), s
        # stale (older than 2 s) first; after expire_after (6 s) the containers are gone
        assert any(r.startswith(f"stale telemetry (> {STALENESS:g}s)") for r in reasons), reasons
        assert all(r.startswith(("stale telemetry", "no telemetry")) for r in reasons), reasons
        for kind in ("stale telemetry", "no telemetry"):   # every kind of hold seen is logged
            if any(r.startswith(kind) for r in reasons):
                assert f"INFO: {name}: hold: {kind}" in "\n".join(proc.lines), diag()
        assert len(events()) == 4, diag()

        # 5. telemetry back (still busy): the enabled scaler acts again
        tel.sending = True
        reach(3, 95.0)
        # 6. telemetry stops while it says "down" (disabled meanwhile, so nothing acts on it)
        assert get_json(http, "/scaler/json?state=disabled")[1]["enabled"] is False
        tel.util = 5.0
        time.sleep(3 * SEND_EVERY + 1.0)
        tel.sending = False
        time.sleep(STALENESS + 2 * SEND_EVERY)
        assert get_json(http, "/scaler/json?state=enabled")[1]["enabled"] is True
        t_end = time.monotonic() + 3 * STALENESS
        while time.monotonic() < t_end:
            assert replicas() == 3, diag()
            time.sleep(0.25)
        s = state()
        assert s["decision"]["action"] == "hold", s
        assert s["reason"].startswith(("stale telemetry", "no telemetry")), s
        assert events() == [(1, 2), (2, 3), (3, 2), (2, 1), (1, 2), (2, 3)], diag()
        assert seen == [1, 2, 3, 2, 1, 2, 3], seen
        assert not tel.errors, tel.errors

        # only Mode.Replicated.Replicas (and the version) changed
        now = swarm.client.api.inspect_service(svc.id)
        assert now["Version"]["Index"] > created["Version"]["Index"]
        assert spec_without_replicas(now["Spec"]) == spec_without_replicas(created["Spec"])
        for key in ("Name", "Labels", "TaskTemplate", "EndpointSpec", "UpdateConfig"):
            assert now["Spec"].get(key) == created["Spec"].get(key), key
        assert now["Spec"]["Labels"]["keep"] == "me"
        assert now["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"] == ["A=1"]

        # SIGTERM: a clean stop
        tel.stop()
        proc.p.send_signal(signal.SIGTERM)
        assert proc.p.wait(20) == 0, "\n".join(proc.lines[-20:])
        proc.t.join(5)
        assert not any("Traceback" in line or "ERROR" in line for line in proc.lines), \
            "\n".join(proc.lines)
    finally:
        if tel is not None:
            tel.stop()
        proc.kill()
    svc.remove()
    swarm.services.remove(svc)
    assert not swarm.client.services.list(filters={"name": name})
    assert time.monotonic() - t_start < 150


class CannedMetrics:
    """One container of ``host`` with utilisation ``util``, its newest sample ``age`` s old."""

    def __init__(self, host: str) -> None:
        self.host, self.util, self.age = host, 50.0, 0.5

    def query(self, *a: Any, **k: Any) -> list[dict[str, Any]]:
        return [{"metricName": "avg:vir_cpu_utilization", "metricValue": self.util, "metricN": 1}]

    def dump(self, *a: Any, **k: Any) -> list[dict[str, Any]]:
        return [{"agent": "127.0.0.1", "dataSource": "3:1", "metricName": "vir_cpu_utilization",
                 "metricValue": self.util, "lastUpdate": self.age * 1000, "hostName": self.host}]


def test_hold_reason_changes_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A service holding within its thresholds whose telemetry then goes stale logs the stale hold
    (README: "missing, stale or incomplete telemetry holds the service where it is (logged)"), and
    so does the next different problem; a repeated reason is logged once."""
    from fastflow.scaler.controller import Scaler
    from fastflow.scaler.policy import Policy
    from fastflow.sources.simulate import SimulatedSwarm

    sim = SimulatedSwarm({"web": 1})
    metrics = CannedMetrics(sim.task_names()[0])
    scaler = Scaler([Policy.from_dict({"service": "web", "mode": "threshold",
                                      "staleness": STALENESS})], metrics,
                    enabled=True, swarm=sim)  # type: ignore[arg-type]

    def tick() -> str:
        d = asyncio.run(scaler.tick("web"))
        assert d is not None and d.action == "hold", scaler.state()
        return d.reason

    with caplog.at_level(logging.INFO, logger="fastflow.scaler"):
        assert "within thresholds" in tick()
        tick()
        metrics.age = STALENESS + 1
        assert tick().startswith("stale telemetry")
        tick()
        metrics.host = "web.1.gone"     # the running task no longer reports
        assert tick().startswith("no telemetry")
        tick()
    msgs = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert len(msgs) == 2, msgs
    assert msgs[0].startswith(f"web: hold: stale telemetry (> {STALENESS:g}s) from 1 container"), msgs
    assert msgs[1] == "web: hold: no telemetry from the service's containers", msgs
