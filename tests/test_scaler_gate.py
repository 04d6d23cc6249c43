"""The convergence gate, proportional mode with HPA behavior, and trusted telemetry (C4).

The control loop is driven against a small model of Docker (tasks take time to start and stop,
the agent samples every polling interval, a sample is the CPU of the interval before it) with a
fixed total demand split over the containers that run: the issue #13 trajectory (10 % -> 160 % ->
75 %). The trust tests feed :func:`gather_telemetry` the ``dump`` rows a real Metrics returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from fastflow.scaler.controller import Trust, gather_telemetry, policy_from_labels
from fastflow.scaler.policy import (
    CPU,
    HPA_BEHAVIOR,
    History,
    Policy,
    PolicyError,
    Telemetry,
    decide,
    record_change,
)
from fastflow.scaler.swarm import Node, Task, parse_time

POLL = 10.0       # the agent polling interval: hsflowd-like, as in issue #13


@dataclass
class Box:
    name: str
    up_at: float          # container running from
    stop_at: float = math.inf   # container gone at
    desired: str = "running"
    cpu_ms: float = 0.0
    last_ms: float | None = None
    rates: list[tuple[float, float]] = field(default_factory=list)   # (time, util over POLL)


class Plant:
    """Docker + the containers + the agent, in simulated time (dt = 0.1 s)."""

    def __init__(self, demand: Any, start_delay: float = 3.0, stop_delay: float = 2.0) -> None:
        self.demand, self.start_delay, self.stop_delay = demand, start_delay, stop_delay
        self.boxes = [Box("web.1.a0", up_at=-10.0)]
        self.n = 0

    def scale(self, replicas: int, now: float) -> None:
        live = [b for b in self.boxes if b.desired == "running"]
        for b in live[replicas:]:
            b.desired, b.stop_at = "shutdown", now + self.stop_delay
        for _ in range(replicas - len(live)):
            self.n += 1
            self.boxes.append(Box(f"web.{len(live) + self.n}.t{self.n}", up_at=now + self.start_delay))

    def advance(self, now: float, dt: float = 0.1) -> None:
        alive = [b for b in self.boxes if b.up_at <= now < b.stop_at]
        for b in alive:   # the demand is shared by the containers that run (4 vCPUs each)
            b.cpu_ms += min(400.0, self.demand(now) / len(alive)) * dt * 10
        if round(now / POLL, 6).is_integer():
            for b in alive:   # counters polled: a rate needs two samples
                if b.last_ms is not None:
                    b.rates.append((now, (b.cpu_ms - b.last_ms) / (POLL * 10)))
                b.last_ms = b.cpu_ms

    def telemetry(self, now: float, gate: bool) -> Telemetry:
        tasks = []
        for b in self.boxes:
            if b.desired == "running":
                state = "running" if now >= b.up_at else "starting"
                ts = b.up_at if now >= b.up_at else now
            else:
                state = "running" if now < b.stop_at else "shutdown"
                ts = b.up_at if now < b.stop_at else b.stop_at
            tasks.append(Task(b.name, b.name, "n1", state, b.desired, ts))
        running = [t.name for t in tasks if t.running]
        t = Telemetry(running=len(running), task_names=set(running))
        rates = {b.name: b.rates for b in self.boxes}
        for name in running:
            got = [r for r in rates[name] if r[0] <= now]
            if got:
                ts, util = got[-1]
                t.containers[name] = now - ts
                t.sample_times[name] = ts
                t.sums[CPU] = t.sums.get(CPU, 0.0) + util
        if t.containers:
            t.values = {CPU: t.sums[CPU] / len(t.containers)}
        if gate:
            t.starting = [x.describe() for x in tasks if x.starting]
            t.stopping = [x.describe() for x in tasks if x.stopping]
            t.effective_at = max((x.timestamp for x in tasks if x.timestamp is not None
                                  and x.timestamp <= now), default=None)
            t.polling_interval = POLL
        return t


def demand_1375(t: float) -> float:
    return 10.0 if t < 10 else 160.0 if t < 90 else 75.0


def run_loop(policy: Policy, gate: bool, until: float = 240.0) -> list[tuple[float, int]]:
    """(time, replicas) at each change; decisions every policy.interval."""
    plant = Plant(demand_1375)
    h = History()
    cur, out = 1, [(0.0, 1)]
    step = 0
    while step * 0.1 <= until:
        now = round(step * 0.1, 6)
        plant.advance(now)
        if round(now / policy.interval, 6).is_integer() and now > 0:
            tel = plant.telemetry(now, gate)
            d = decide(policy, cur, tel, now, h)
            if d.desired != cur:
                record_change(h, now, d.desired - cur)
                plant.scale(d.desired, now)
                cur = d.desired
                out.append((now, cur))
        step += 1
    return out


def threshold() -> Policy:
    return Policy.from_dict({"service": "web", "mode": "threshold", "util_min": 20,
                             "util_max": 50, "interval": 2, "replicas_max": 5,
                             "staleness": 10})


def proportional(**kw: Any) -> Policy:
    return Policy.from_dict({"service": "web", "target": 50, "interval": 2, "replicas_max": 5,
                             "staleness": 10, **kw})


def reversals(traj: list[tuple[float, int]], after: float) -> int:
    """Direction changes among the changes after ``after`` (a drop then a climb = 1)."""
    steps = [b[1] - a[1] for a, b in zip(traj, traj[1:], strict=False) if b[0] >= after]
    return sum(1 for x, y in zip(steps, steps[1:], strict=False) if (x > 0) != (y > 0))


def test_ungated_threshold_mode_overshoots_like_issue_13() -> None:
    """Without the gate (v0.1's checks only) threshold mode acts on telemetry from before its
    own changes: it falls below the settled count after the drop and has to climb back."""
    traj = run_loop(threshold(), gate=False)
    low = min(r for t, r in traj if t >= 90)
    assert reversals(traj, 90) >= 1 or low < 2, traj


def test_gated_threshold_mode_settles_without_reversal() -> None:
    traj = run_loop(threshold(), gate=True)
    peak = max(r for t, r in traj if t < 90)
    assert 4 <= peak <= 5, traj
    final = traj[-1][1]
    assert 2 <= final <= 3, traj
    assert reversals(traj, 90) == 0, traj
    assert all(r >= 2 for t, r in traj if t >= 90), traj


def test_proportional_reaches_its_count_in_one_step() -> None:
    pol = proportional(behavior={"scale_down": {"stabilization_window": 20}})
    traj = run_loop(pol, gate=True)
    ups = [(t, r) for t, r in traj if 0 < t < 90]
    assert len(ups) == 1 and ups[0][1] == 4, traj          # ceil(160 / 50) = 4, at once
    downs = [(t, r) for t, r in traj if t >= 90]
    assert downs and downs[-1][1] == 2 and len(downs) == 1, traj   # ceil(75 / 50) = 2
    assert reversals(traj, 90) == 0


def test_gate_holds_while_tasks_start_or_stop_and_on_old_samples() -> None:
    p = proportional()
    base: dict[str, Any] = dict(containers={"web.1.a": 1.0}, values={CPU: 90.0},
                                sums={CPU: 90.0}, running=1, task_names={"web.1.a"})
    d = decide(p, 1, Telemetry(**base, starting=["web.2.b starting->running"]), 0, History())
    assert d.action == "hold" and d.reason.startswith("waiting for convergence") and "starting" in d.reason
    d = decide(p, 1, Telemetry(**base, stopping=["web.2.b running->shutdown"]), 0, History())
    assert d.action == "hold" and "stopping" in d.reason
    # the sample was taken 1 s after the change took effect: less than one polling interval
    t = Telemetry(**base, sample_times={"web.1.a": 101.0}, effective_at=100.0, polling_interval=2.0)
    d = decide(p, 1, t, 0, History())
    assert d.action == "hold" and "before the last change" in d.reason, d
    t.sample_times["web.1.a"] = 102.5
    assert decide(p, 1, t, 0, History()).action == "up"


def test_hpa_defaults_and_behavior_policies() -> None:
    p = proportional(replicas_max=100)
    assert HPA_BEHAVIOR["scale_up"]["stabilization_window"] == 0
    assert p.scale_down.stabilization_window == 300 and p.scale_up.select_policy == "max"
    def big_at(n: int) -> Telemetry:
        names = {f"web.{i}.x" for i in range(n)}
        return Telemetry(containers=dict.fromkeys(names, 1.0), values={CPU: 2000.0 / n},
                         sums={CPU: 2000.0}, running=n, task_names=names)
    big = big_at(1)
    # 1 -> 40 wanted; HPA's default allows max(100 %, 4 pods) per 15 s: 1 -> 5
    d = decide(p, 1, big, 0.0, History())
    assert (d.action, d.desired) == ("up", 5) and "limited" in d.reason
    h = History()
    record_change(h, 0.0, 4)
    # within the same 15 s period no more (period start 1: limit 5)
    big = big_at(5)
    assert decide(p, 5, big, 10.0, h).desired == 5
    # next period: 5 -> max(10, 9) = 10
    assert decide(p, 5, big, 16.0, h).desired == 10
    # select_policy min: the smaller of the two (pods 4 -> 9 vs percent 100 % -> 10)
    pm = proportional(replicas_max=100, behavior={"scale_up": {"select_policy": "min"}})
    assert decide(pm, 5, big, 0.0, History()).desired == 9
    # disabled: no scale-up at all
    pd = proportional(behavior={"scale_up": {"select_policy": "disabled"}})
    assert decide(pd, 1, big, 0.0, History()).action == "hold"


def test_scale_down_stabilization_and_tolerance() -> None:
    p = proportional(behavior={"scale_down": {"stabilization_window": 30}})
    h = History()
    hi = Telemetry(containers={"a": 1.0}, values={CPU: 50.0}, sums={CPU: 200.0}, running=4,
                   task_names={"a"})
    lo = Telemetry(containers={"a": 1.0}, values={CPU: 10.0}, sums={CPU: 40.0}, running=4,
                   task_names={"a"})
    assert decide(p, 4, hi, 0.0, h).action == "hold"
    d = decide(p, 4, lo, 10.0, h)
    assert d.action == "hold" and "stabilized" in d.reason
    d = decide(p, 4, lo, 31.0, h)
    assert (d.action, d.desired) == ("down", 1)
    # tolerance: 210 / (50 * 4) = 1.05 -> no change
    tol = Telemetry(containers={"a": 1.0}, values={CPU: 52.5}, sums={CPU: 210.0}, running=4,
                    task_names={"a"})
    d = decide(p, 4, tol, 0.0, History())
    assert d.action == "hold" and "tolerance" in d.reason


@pytest.mark.parametrize("bad", [
    {"behavior": {"scale_up": {"policies": []}}}, {"behavior": {"sideways": {}}},
    {"behavior": {"scale_down": {"select_policy": "avg"}}},
    {"behavior": {"scale_up": {"policies": [{"type": "pods", "value": 0, "period": 15}]}}},
    {"behavior": {"scale_up": {"stabilization_window": 1e9}}}, {"bytes_target": 0},
    {"behavior": [1]},
])
def test_bad_behavior_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(PolicyError):
        proportional(**bad)


# ----------------------------------------------------------------------------- trust (C4)
class Dump:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.filters: list[Any] = []

    def query(self, *a: Any, **k: Any) -> list[dict[str, Any]]:
        return []

    def dump(self, agents: str, metrics: Any, filters: Any = None) -> list[dict[str, Any]]:
        self.filters.append(filters)
        want = set(metrics.split(","))
        return [r for r in self.rows if r["metricName"] in want]


def row(host: str, agent: str, util: float, ds: str = "3:1", age_ms: int = 500,
        metric: str = CPU) -> dict[str, Any]:
    return {"agent": agent, "dataSource": ds, "metricName": metric, "metricValue": util,
            "lastUpdate": age_ms, "hostName": host}


TASKS = [Task("a", "web.1.a", "n1", "running", "running", 0.0),
         Task("b", "web.2.b", "n2", "running", "running", 0.0)]
NODES = {"n1": Node("n1", "host1", "10.0.0.1"), "n2": Node("n2", "host2", "10.0.0.2")}


def gather(rows: list[dict[str, Any]], trust: Trust | None = None) -> Telemetry:
    return gather_telemetry(Dump(rows), proportional(), None, tasks=TASKS, nodes=NODES,
                            trust=trust or Trust(), now=1000.0)


def test_samples_count_only_from_the_tasks_node() -> None:
    t = gather([row("web.1.a", "10.0.0.1", 40), row("web.2.b", "10.0.0.2", 60)])
    assert not t.problems and t.sums[CPU] == 100 and set(t.containers) == {"web.1.a", "web.2.b"}
    assert t.sample_times["web.1.a"] == pytest.approx(999.5)
    assert decide(proportional(), 2, t, 0, History()).action == "hold"


def test_second_agent_for_a_task_name_holds_and_says_why() -> None:
    """Issue #11 attack 3: another agent reports a task's container at 10,000 %."""
    t = gather([row("web.1.a", "10.0.0.1", 40), row("web.2.b", "10.0.0.2", 60),
                row("web.1.a", "10.9.9.9", 10000.0)])
    assert t.sums[CPU] == 60          # the spoofed value is never used
    d = decide(proportional(), 2, t, 0, History())
    assert d.action == "hold" and d.reason.startswith("untrusted telemetry"), d
    assert "10.9.9.9" in d.reason and "host1" in d.reason and "10.0.0.1" in d.reason
    entry = [c for c in t.seen if c["agent"] == "10.9.9.9"][0]
    assert entry["trusted"] is False


def test_a_task_reported_from_the_wrong_node_agent_holds() -> None:
    t = gather([row("web.1.a", "10.0.0.2", 40), row("web.2.b", "10.0.0.2", 60)])
    d = decide(proportional(), 2, t, 0, History())
    assert d.action == "hold" and "untrusted" in d.reason


def test_duplicate_trusted_sources_hold() -> None:
    t = gather([row("web.1.a", "10.0.0.1", 40), row("web.1.a", "10.0.0.1", 45, ds="3:7"),
                row("web.2.b", "10.0.0.2", 60)])
    d = decide(proportional(), 2, t, 0, History())
    assert d.action == "hold" and "2 data sources" in d.reason


def test_implausible_utilisation_holds() -> None:
    t = gather([row("web.1.a", "10.0.0.1", 250.0), row("web.2.b", "10.0.0.2", 60),
                row("web.1.a", "10.0.0.1", 4.0, metric="vir_cpu_count")])
    assert not t.problems          # 250 % on 4 vCPUs is plausible
    t = gather([row("web.1.a", "10.0.0.1", 250.0), row("web.2.b", "10.0.0.2", 60)])
    d = decide(proportional(), 2, t, 0, History())
    assert d.action == "hold" and "implausible" in d.reason


def test_agent_address_map_and_cidr_allow_list() -> None:
    rows = [row("web.1.a", "192.168.5.7", 40), row("web.2.b", "10.0.0.2", 60)]
    assert gather(rows).problems
    assert not gather(rows, Trust.from_config({"host1": ["192.168.5.0/24"]}, None)).problems
    assert not gather(rows, Trust.from_config({"n1": "192.168.5.7"}, None)).problems
    assert not gather(rows, Trust.from_config(None, ["192.168.0.0/16"])).problems
    with pytest.raises(PolicyError):
        Trust.from_config({"host1": ["not-an-address"]}, None)


def test_filters_are_exact_names_in_both_syntaxes() -> None:
    """gather_telemetry never relies on a regex: names are escaped char by char (valid as a
    regex and as an sFlow-RT glob) and matched again exactly in Python."""
    import re

    m = Dump([row("web.1.a", "10.0.0.1", 40), row("webX1Xa", "10.0.0.1", 4000)])
    gather_telemetry(m, proportional(), None, tasks=TASKS, nodes=NODES, trust=Trust(), now=0)
    pats = m.filters[0]["vir_host_name"]
    assert pats == ["web\\.1\\.a", "web\\.2\\.b"]
    assert re.fullmatch(pats[0], "web.1.a") and not re.fullmatch(pats[0], "webX1Xa")


def test_labels_make_a_policy() -> None:
    p = policy_from_labels("web", {"fastflow.scale": "true", "fastflow.replicas.min": "2",
                                   "fastflow.replicas.max": "6", "fastflow.target": "40",
                                   "fastflow.scale.down.stabilization": "60"})
    assert (p.mode, p.replicas_min, p.replicas_max, p.target) == ("proportional", 2, 6, 40.0)
    assert p.scale_down.stabilization_window == 60
    with pytest.raises(PolicyError, match="unknown"):
        policy_from_labels("web", {"fastflow.replicas.maxx": "3"})
    with pytest.raises(PolicyError, match="number"):
        policy_from_labels("web", {"fastflow.target": "lots"})


def test_docker_timestamps() -> None:
    assert parse_time("2026-11-30T23:40:01.123456789Z") == pytest.approx(1796082001.123456)
    assert parse_time("0001-01-01T00:00:00Z") is not None
    assert parse_time("garbage") is None and parse_time(None) is None


# ------------------------------------------------------------------ the controller's gate inputs
class FakeSwarm:
    """Docker's answers scripted per tick (fault injection over the real controller)."""

    def __init__(self, tasks: list[Task]) -> None:
        self.tasks_now = tasks
        self.replicas = 2
        self.sets: list[int] = []

    def read_service(self, name: str) -> Any:
        from fastflow.scaler.swarm import ServiceInfo

        return ServiceInfo("id", name, 1, {"Mode": {"Replicated": {"Replicas": self.replicas}}},
                           None)

    def tasks(self, info: Any) -> list[Task]:
        return list(self.tasks_now)

    def nodes(self) -> dict[str, Node]:
        return {"n1": Node("n1", "host1", "10.0.0.1")}

    def set_replicas(self, name: str, n: int, expect_current: int | None = None) -> int:
        self.sets.append(n)
        self.replicas = n
        return n


def test_a_deleted_stopping_task_still_delays_the_gate() -> None:
    """Docker deletes a removed task once its container stopped; the controller remembers the
    last interval that saw it stopping, and samples must be one polling interval younger."""
    import asyncio
    import time as _time

    from fastflow.scaler.controller import Scaler

    now = _time.time()
    a = Task("a", "web.1.a", "n1", "running", "running", now - 100)
    b = Task("b", "web.2.b", "n1", "running", "running", now - 100)
    gone = Task("c", "web.3.c", "n1", "running", "remove", now - 5)
    sw = FakeSwarm([a, b, gone])
    metrics = Dump([row("web.1.a", "10.0.0.1", 5.0, age_ms=500),
                    row("web.2.b", "10.0.0.1", 5.0, age_ms=500)])
    pol = proportional(behavior={"scale_down": {"stabilization_window": 0}})
    sc = Scaler([pol], metrics, enabled=True, state_file=None, swarm=sw,  # type: ignore[arg-type]
                polling_interval=2.0)
    d = asyncio.run(sc.tick("web"))
    assert d is not None and d.action == "hold" and "stopping" in d.reason, d
    sw.tasks_now = [a, b]            # the stopped task is gone from Docker's list
    d = asyncio.run(sc.tick("web"))
    assert d is not None and d.action == "hold" and "before the last change" in d.reason, d
    assert sc.services["web"].seen["change_took_effect"] is not None
    sc.services["web"].unsettled_wall = now - 10   # as if that was 10 s ago
    d = asyncio.run(sc.tick("web"))
    assert d is not None and (d.action, d.desired) == ("down", 1), d
    assert sw.sets == [1]
    ev = [e for e in sc.events if e["action"] == "down"][0]
    assert ev["seen"] and ev["seen"][0]["trusted"] is True
