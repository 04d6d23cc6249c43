"""The scaler in a closed loop on the REAL swarm, with REAL container CPU (issue #13, #11 attack 3).

Each replica of the service runs a burner (busybox ash) that spends ``share`` per mille of one
CPU, counted in CPU ticks from ``/proc/self/stat`` and owed cumulatively (up to 3 s of debt), in
200 ms cycles, so the share holds on a busy machine as long as the machine can give it; ``share``
comes from a control file the test rewrites every 0.25 s as a fixed total demand split over the
containers that run (stopping ones included). Telemetry is real: ``fastflow agent`` reads the
containers' cgroup counters (this host: cgroup v1) every 3 s and sends sFlow to a real
``fastflow run`` on 127.0.0.1, whose scaler changes the real service.

Demand follows issue #13's experiment scaled by 1/8, because the 2-core machine is shared by
many (load average 7-10 while this was written: a container asking for 40 % got 25 %):
10 % -> 160 % -> 75 % becomes 1.25 % -> 22 % -> 8 % (22 = 20 x 1.1 and 8 = 9.4 x 0.85 keep
every replica count's share >= 0.5 % away from the band edges: the burner's noise per 3 s poll
is about +-0.5 %). Threshold mode uses the issue's band scaled the same way (20-50 % ->
2.5-6.25 %); proportional mode a target of 6.25 % (50 % scaled) and a 20 s scale-down
stabilization window (HPA's 300 s default would make the test last 5 more minutes).
Set FFTEST_SCALER_TRAJ=path to keep the trajectories.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from _api_util import get_json
from _service_util import Proc
from dockerenv import SwarmHelper, docker_client_fixture, swarm_fixture, unique  # noqa: F401

SCALE = 0.125
LOW, HIGH, DROP = 1.25, 22.0, 8.0    # total demand, % of one CPU (issue: 10, 160 (x 1.1), 75 (64))
POLL = 3                             # fastflow agent polling interval, s

BURNER = r"""
trap 'exit 0' TERM INT
read p1 p2 p3 p4 p5 p6 p7 p8 p9 p10 p11 p12 p13 ut st rest < /proc/self/stat
base=$((ut + st)); owed=0; cyc=0
while [ $cyc -lt 9000 ]; do
  read up idle < /proc/uptime; t0=${up%.*}${up#*.}
  read p < /ctl/share || p=0
  owed=$((owed + 2 * p))
  read p1 p2 p3 p4 p5 p6 p7 p8 p9 p10 p11 p12 p13 ut st rest < /proc/self/stat
  used=$(((ut + st - base) * 100))
  [ $((owed - used)) -gt 30000 ] && owed=$((used + p))
  while [ $used -lt $owed ]; do
    read p1 p2 p3 p4 p5 p6 p7 p8 p9 p10 p11 p12 p13 ut st rest < /proc/self/stat
    used=$(((ut + st - base) * 100))
  done
  read up idle < /proc/uptime; t1=${up%.*}${up#*.}
  left=$((20 - (t1 - t0)))
  [ $left -gt 0 ] && usleep $((left * 10000))
  cyc=$((cyc + 1))
done
"""


class Demand:
    """Writes ``share = demand / running containers`` (per mille of one CPU) every 0.25 s."""

    def __init__(self, client: Any, service_id: str, ctl: Path) -> None:
        self.client, self.service_id, self.file = client, service_id, ctl / "share"
        self.total = 0.0
        self.containers = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.file.write_text("0\n")
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def set(self, total: float) -> None:
        """A new total demand, written at once."""
        self.total = total
        self._write(self.containers)

    def _write(self, n: int) -> None:
        with self._lock:
            share = min(1000, round(self.total * 10 / n)) if n else 0
            tmp = self.file.with_suffix(".tmp")
            tmp.write_text(f"{share}\n")
            os.replace(tmp, self.file)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                tasks = self.client.api.tasks(filters={"service": self.service_id})
                n = sum(1 for t in tasks if (t.get("Status") or {}).get("State") == "running")
            except Exception:  # noqa: BLE001 - an engine hiccup: keep the last count
                n = self.containers
            self.containers = n
            self._write(n)
            self._stop.wait(0.25)

    def stop(self) -> None:
        self._stop.set()
        self._t.join(5)


def start_agent(port: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "fastflow", "agent", "--collector",
                             f"127.0.0.1:{port}", "--polling", str(POLL),
                             "--agent-address", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)


def write_config(tmp: Path, name: str, policy: str) -> Path:
    cfg = tmp / f"{name}.toml"
    cfg.write_text(f"""
[store]
polling_interval = {POLL}
expire_after = {4 * POLL}

[scaler]
enabled = true
labels = false
state_file = "{tmp / (name + '-state.json')}"

[[scaler.services]]
service = "{name}"
replicas_min = 1
replicas_max = 5
interval = 1
staleness = {3 * POLL}
{policy}
""")
    return cfg


THRESHOLD = 'mode = "threshold"\nutil_min = 2.5\nutil_max = 6.25'
PROPORTIONAL = ('mode = "proportional"\ntarget = 6.25\n'
                "[scaler.services.behavior.scale_down]\nstabilization_window = 20")


def sample_age(http: int, name: str) -> float:
    """Seconds since the service's containers' newest CPU sample reached the collector."""
    _, rows = get_json(http, "/dump/ALL/vir_cpu_utilization/json")
    ages = [r["lastUpdate"] / 1000 for r in rows if str(r.get("hostName", "")).startswith(name)]
    return min(ages) if ages else -1.0


def run_mode(swarm: SwarmHelper, tmp: Path, label: str, policy: str) -> dict[str, Any]:
    """One closed-loop run; returns the trajectory and the scaler's events."""
    ctl = tmp / f"ctl-{label}"
    ctl.mkdir()
    (ctl / "burn.sh").write_text(BURNER)
    name = unique(f"loop-{label}")
    svc = swarm.create_service(name, ["sh", "/ctl/burn.sh"], replicas=1,
                               mounts=[f"{ctl}:/ctl:ro"])
    swarm.wait_running(svc, 1)
    demand = Demand(swarm.client, svc.id, ctl)
    proc = Proc("--config", str(write_config(tmp, name, policy)), "--sflow-port", "0",
                "--http-port", "0", "--bind", "127.0.0.1")
    agent = None
    traj: list[tuple[float, int]] = []
    t0 = time.monotonic()

    def sample() -> int:
        r = swarm.replicas(svc)
        if not traj or traj[-1][1] != r:
            traj.append((round(time.monotonic() - t_high, 1), r))
        return r

    try:
        sflow, http = proc.port("sFlow"), proc.port("HTTP")
        agent = start_agent(sflow)
        demand.set(LOW)
        t_high = time.monotonic() + 12
        while time.monotonic() < t_high:
            sample()
            time.sleep(0.5)
        # step the demand just before the agent's next poll: the sample straddling the step is
        # then (almost) all old demand and the next one all new (a step in mid-window gives one
        # sample of mixed demand, and a proportional scaler an intermediate decision)
        deadline = time.monotonic() + 3 * POLL
        while time.monotonic() < deadline and not POLL - 0.45 <= sample_age(http, name) < POLL - 0.15:
            time.sleep(0.03)
        t_high = time.monotonic()
        demand.set(HIGH)
        last_change = time.monotonic()
        while time.monotonic() - t_high < 120:          # up, then 20 s without a change
            before = len(traj)
            r = sample()
            if len(traj) != before:
                last_change = time.monotonic()
            if r >= 4 and time.monotonic() - last_change > 20:
                break
            time.sleep(0.5)
        t_drop = round(time.monotonic() - t_high, 1)
        demand.set(DROP)
        end = time.monotonic() + 60
        while time.monotonic() < end:
            sample()
            time.sleep(0.5)
        _, events = get_json(http, "/scaler/events/json")
        _, state = get_json(http, f"/scaler/{name}/json")
        return {"mode": label, "trajectory": traj, "t_drop": t_drop, "seconds":
                round(time.monotonic() - t0), "events": events, "state": state,
                "log": proc.lines[-40:]}
    finally:
        demand.stop()
        if agent is not None:
            agent.terminate()
            agent.wait(10)
        proc.stop()
        try:
            svc.remove()
        except Exception:  # noqa: BLE001 - the fixture removes leftovers too
            pass


def changes(run: dict[str, Any]) -> list[tuple[float, int, int]]:
    return [(e["time"], e["from"], e["to"]) for e in run["events"]
            if e["action"] in ("up", "down") and not e["dry_run"]]


def after_drop(run: dict[str, Any]) -> list[int]:
    return [r for t, r in run["trajectory"] if t >= run["t_drop"]]


@pytest.mark.docker
@pytest.mark.slow
def test_closed_loop_settles_threshold_and_proportional(swarm: SwarmHelper, tmp_path: Path) -> None:
    runs = [run_mode(swarm, tmp_path, "threshold", THRESHOLD),
            run_mode(swarm, tmp_path, "proportional", PROPORTIONAL)]
    print(f"\nclosed loop, demand {LOW:g} % -> {HIGH:g} % (t=0) -> {DROP:g} % (t=drop) of one CPU, "
          "trajectories (s: replicas):")
    for run in runs:
        print(f"  {run['mode']:12s} drop at {run['t_drop']:5.1f}s  "
              + ", ".join(f"{t:g}:{r}" for t, r in run["trajectory"])
              + f"   ({run['seconds']} s)")
    if os.environ.get("FFTEST_SCALER_TRAJ"):
        Path(os.environ["FFTEST_SCALER_TRAJ"]).write_text(json.dumps(runs, indent=1))
    for run in runs:
        diag = json.dumps({k: run[k] for k in ("trajectory", "t_drop", "state", "log")},
                          indent=1)[:6000]
        before = [r for t, r in run["trajectory"] if t < run["t_drop"]]
        assert 4 <= max(before) <= 5, diag               # reaches 4-5
        after = after_drop(run)
        assert 2 <= after[-1] <= 3, diag                  # settles at 2-3 ...
        assert all(b <= a for a, b in zip(after, after[1:], strict=False)), diag   # no reversal
        assert min(after) >= 2, diag
        holds = [e["reason"] for e in run["events"] if e["action"] == "hold"]
        assert any(h.startswith("waiting for convergence") for h in holds), holds
    prop = runs[1]
    ups = [c for c in changes(prop) if c[2] > c[1]]
    assert ups and ups[0][1] == 1 and ups[0][2] >= 4, changes(prop)    # 1 -> 4 in one step
    thr_ups = [c for c in changes(runs[0]) if c[2] > c[1]]
    assert len(thr_ups) >= 3, changes(runs[0])            # threshold mode: one step at a time


def spoofed(host: str, agent: str, seq: int, cpu_ms: int, up_ms: int) -> bytes:
    """An hsflowd-shaped datagram from ``agent`` claiming container ``host``'s CPU time."""
    from fastflow import encode as e
    from fastflow.sources.simulate import container_index

    sample = e.counter_sample(f"3:{container_index(host)}", [
        e.host_descr(hostname=host, machine_type=3, os_name=2, os_release="6.1.0"),
        e.host_parent(2, 1),
        e.virt_cpu(state=1, cpu_time=cpu_ms & 0xFFFFFFFF, nr_virt_cpu=1),
        e.virt_memory(memory=8 << 20, max_memory=2 << 30),
    ], sequence_number=seq, expanded=True)
    return e.encode_datagram(e.datagram(agent, [sample], sequence_number=seq,
                                        uptime=up_ms & 0xFFFFFFFF, sub_agent_id=100000))


@pytest.mark.docker
@pytest.mark.slow
def test_second_agent_cannot_scale_a_real_service(swarm: SwarmHelper, tmp_path: Path) -> None:
    """Issue #11 attack 3: another agent address sends a real task's container name at 10,000 %
    (v0.1: 1 -> 4 in 4.6 s). Now the service holds at 1 and its JSON says which agent and why."""
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    (ctl / "burn.sh").write_text(BURNER)
    name = unique("spoof")
    svc = swarm.create_service(name, ["sh", "/ctl/burn.sh"], replicas=1, mounts=[f"{ctl}:/ctl:ro"])
    task = swarm.wait_running(svc, 1)[0]
    demand = Demand(swarm.client, svc.id, ctl)
    demand.set(LOW)
    proc = Proc("--config", str(write_config(tmp_path, name, 'target = 6.25')),
                "--sflow-port", "0", "--http-port", "0", "--bind", "127.0.0.1")
    agent = None
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sflow, http = proc.port("sFlow"), proc.port("HTTP")
        agent = start_agent(sflow)
        # the honest telemetry first: the service holds at 1 (5 % of a 25 % target)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            st = get_json(http, f"/scaler/{name}/json")[1]
            if (st.get("decision") or {}).get("reason", "").startswith("sum"):
                break
            time.sleep(0.5)
        assert st["decision"]["action"] == "hold", st
        t_up, cpu = 600_000, 1_000_000
        reasons = set()
        for i in range(20):                       # 10 s of spoofed samples at 10,000 %
            t_up += 500
            cpu += 50_000                         # 50 s of CPU per 0.5 s
            sock.sendto(spoofed(task, "10.9.9.9", i + 1, cpu, t_up), ("127.0.0.1", sflow))
            time.sleep(0.5)
            assert swarm.replicas(svc) == 1, get_json(http, f"/scaler/{name}/json")[1]
            reasons.add(get_json(http, f"/scaler/{name}/json")[1]["reason"])
        st = get_json(http, f"/scaler/{name}/json")[1]
        untrusted = [r for r in reasons if r.startswith("untrusted telemetry")]
        assert untrusted and "10.9.9.9" in untrusted[0] and "127.0.0.1" in untrusted[0], reasons
        seen = {(c["agent"], c["trusted"]) for c in st["seen"]["containers"]}
        assert ("10.9.9.9", False) in seen and ("127.0.0.1", True) in seen, st["seen"]
        print(f"\nspoofed 10,000 % from 10.9.9.9 for 10 s: replicas stayed 1; reason: {untrusted[0]}")
    finally:
        sock.close()
        demand.stop()
        if agent is not None:
            agent.terminate()
            agent.wait(10)
        proc.stop()
