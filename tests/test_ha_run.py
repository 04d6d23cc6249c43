"""Several ``fastflow run`` instances manage one real swarm service with the same telemetry: every
instance collects and answers, exactly one (the lease holder) decides and writes; ``kill -9`` of
the actor hands over within about one lease duration, the new actor continues from the service's
current replicas, and no step is ever applied twice.

Telemetry describes the service's REAL running tasks (hostnames ``svc.slot.taskid``) and goes as
real sFlow datagrams over UDP on 127.0.0.1 to every instance (as a Host sFlow agent with several
``collector {}`` blocks would send it). Failover times are printed (``pytest -s``) and written to
``$FASTFLOW_TEST_HA_REPORT`` when set.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from _api_util import get_json, request
from _service_util import Proc
from _telemetry_util import TaskTelemetry
from _telemetry_util import bounded as _bounded
from dockerenv import SwarmHelper, docker_client_fixture, swarm_fixture, unique  # noqa: F401
from fastflow import __version__

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# lease timing in these tests; FASTFLOW_TEST_HA_DEFAULTS=1 runs them with the defaults (12 s, 3 s, 1 s)
_DEFAULTS = os.environ.get("FASTFLOW_TEST_HA_DEFAULTS") == "1"
DURATION = 12.0 if _DEFAULTS else 4.0
RENEW = 3.0 if _DEFAULTS else 1.0
POLL = 1.0 if _DEFAULTS else 0.5
INTERVAL = 1.0        # the scaler's interval
PHASE = 60.0          # bound on every phase


def write_config(path: Path, service: str, lock: str, state_file: Path,
                 replicas_max: int) -> Path:
    path.write_text(f"""
[store]
polling_interval = 1
expire_after = 6

[ha]
enabled = true
lock_service = "{lock}"
duration = {DURATION}
renew = {RENEW}
poll = {POLL}

[scaler]
enabled = true
state_file = "{state_file}"

[[scaler.services]]
service = "{service}"
replicas_min = 1
replicas_max = {replicas_max}
interval = {INTERVAL}
util_min = 20
util_max = 80
staleness = 3
""")
    return path


class Instance:
    def __init__(self, tmp: Path, idx: int, service: str, lock: str, replicas_max: int) -> None:
        cfg = write_config(tmp / f"ff{idx}.toml", service, lock, tmp / f"scaler{idx}.json",
                           replicas_max)
        self.idx = idx
        self.proc = Proc("--config", str(cfg), "--sflow-port", "0", "--http-port", "0",
                         "--bind", "127.0.0.1")
        self.sflow = self.proc.port("sFlow")
        self.http = self.proc.port("HTTP")
        self.events: list[dict[str, Any]] = []   # kept across its death

    @property
    def alive(self) -> bool:
        return self.proc.p.poll() is None

    def state(self) -> dict[str, Any]:
        st, body = get_json(self.http, "/scaler/json")
        assert st == 200, body
        return body  # type: ignore[no-any-return]

    def lease(self) -> dict[str, Any]:
        return self.state()["lease"]  # type: ignore[no-any-return]

    def poll_events(self) -> None:
        if self.alive:
            st, ev = get_json(self.http, "/scaler/events/json")
            if st == 200:   # scaling steps only: the events log also records holds and manual changes
                self.events = [e for e in ev if e.get("action") in ("up", "down")]


def bounded(cond: Callable[[], Any], timeout: float, what: str, diag: Callable[[], Any],
            step: float = 0.1) -> Any:
    """:func:`_telemetry_util.bounded`, polled every 0.1 s (failover times are measured with it)."""
    return _bounded(cond, timeout, what, diag, step)


class Cluster:
    """N instances + the telemetry + a watcher of the service's replicas and the lease holders."""

    def __init__(self, swarm: SwarmHelper, tmp: Path, n: int, replicas_max: int) -> None:
        self.swarm = swarm
        self.name = unique("ha")
        self.lock = unique("halock")
        self.svc = swarm.create_service(self.name, ["sleep", "600"], replicas=1)
        swarm.wait_running(self.svc, 1)
        self.inst: list[Instance] = []
        self.tel: TaskTelemetry | None = None
        try:
            for i in range(n):
                self.inst.append(Instance(tmp, i, self.name, self.lock, replicas_max))
            self.tel = TaskTelemetry(swarm.client, self.svc.id, [i.sflow for i in self.inst],
                                     util=50.0).start()
        except BaseException:
            self.close()
            raise
        self.seen: list[int] = []
        self.holders_seen: list[tuple[float, list[int]]] = []
        self.failovers: list[float] = []

    def replicas(self) -> int:
        r = self.swarm.replicas(self.svc)
        if not self.seen or self.seen[-1] != r:
            self.seen.append(r)
        return r

    def holders(self) -> list[int]:
        """Indexes of the live instances that say they hold the lease (at most one, always)."""
        h = [i.idx for i in self.inst if i.alive and i.lease()["held"]]
        self.holders_seen.append((time.monotonic(), h))
        assert len(h) <= 1, f"two instances hold the lease: {h}"
        return h

    def events(self) -> list[tuple[int, dict[str, Any]]]:
        for i in self.inst:
            i.poll_events()
        out = [(i.idx, e) for i in self.inst for e in i.events]
        return sorted(out, key=lambda p: p[1]["time"])

    def diag(self) -> str:
        tail = "\n".join(f"--- instance {i.idx} (alive {i.alive})\n" + "\n".join(i.proc.lines[-8:])
                         for i in self.inst)
        return (f"replicas seen {self.seen}, tasks {self.tel.tasks if self.tel else None}, "
                f"events {[(k, e['from'], e['to']) for k, e in self.events()]}\n{tail}")

    def actor(self) -> Instance:
        idx = bounded(self.holders, PHASE, "a lease holder", self.diag)
        return self.inst[idx[0]]

    def reach(self, n: int, util: float) -> None:
        assert self.tel is not None
        self.tel.util = util
        bounded(lambda: (self.holders() or True) and self.replicas() == n
                and len(self.tel.tasks) == n, PHASE,  # type: ignore[union-attr]
                f"{n} replicas at {util}%", self.diag)

    def kill_actor(self) -> tuple[Instance, Instance]:
        """SIGKILL the holder; wait for another to hold; the measured failover time is kept."""
        old = self.actor()
        old.poll_events()
        t_kill = time.monotonic()
        os.kill(old.proc.p.pid, signal.SIGKILL)
        old.proc.p.wait(10)
        new_idx = bounded(self.holders, 3 * DURATION + 10, "a takeover", self.diag)
        self.failovers.append(time.monotonic() - t_kill)
        new = self.inst[new_idx[0]]
        assert new is not old
        return old, new

    def check_steps(self) -> None:
        """No step applied twice: Docker's replica history moved one step per event, every event
        started from the count the previous one left, and never two actors within an interval."""
        ev = self.events()
        steps = [(e["from"], e["to"]) for _, e in ev]
        assert [s for s in steps] == list(zip(self.seen, self.seen[1:], strict=False)), self.diag()
        for (k1, e1), (k2, e2) in zip(ev, ev[1:], strict=False):
            if k1 != k2:
                assert e2["time"] - e1["time"] > INTERVAL, (k1, e1, k2, e2)
        assert all(not e["dry_run"] for _, e in ev)

    def close(self) -> None:
        if self.tel is not None:
            self.tel.stop()
        for i in self.inst:
            i.proc.kill()
        try:
            self.swarm.client.api.remove_service(self.lock)
        except Exception:
            pass


def report(name: str, values: list[float], how: str = "SIGKILL",
           timing: tuple[float, float, float] = (DURATION, RENEW, POLL)) -> None:
    duration, renew, poll = timing
    line = f"{name}: failover after {how} {', '.join(f'{v:.2f}' for v in values)} s " \
           f"(lease duration {duration:g} s, renew {renew:g} s, poll {poll:g} s)"
    print(line)
    path = os.environ.get("FASTFLOW_TEST_HA_REPORT")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"test": name, "how": how, "failover_s": values,
                                 "duration": duration, "renew": renew, "poll": poll}) + "\n")


def test_two_instances_one_acts_kill9_hands_over(swarm: SwarmHelper, tmp_path: Path) -> None:
    c = Cluster(swarm, tmp_path, 2, replicas_max=3)
    try:
        actor = c.actor()
        standby = next(i for i in c.inst if i is not actor)
        # both collect and answer; the standby reads the service but neither decides nor writes
        bounded(lambda: standby.state()["services"][c.name]["status"].startswith("standby"),
                PHASE, "the standby's status", c.diag)
        s = standby.state()
        assert s["lease"]["holder"] == actor.lease()["id"] and s["lease"]["held"] is False
        assert s["services"][c.name]["current"] == 1
        for inst in c.inst:
            st, _, ver = request(inst.http, "GET", "/version")
            assert st == 200 and ver.decode().strip() == __version__, ver
            port = inst.http

            def has_telemetry(port: int = port) -> Any:
                return get_json(port, "/metric/ALL/vir_cpu_utilization/json")[1]
            bounded(has_telemetry, PHASE, "telemetry at every instance", c.diag)
        c.reach(2, 95.0)
        old, new = c.kill_actor()
        # the survivor continues from the service's current count (2), not from anything stale
        c.reach(3, 95.0)
        c.reach(1, 5.0)
        c.check_steps()
        assert [(e["from"], e["to"]) for e in new.events] == [(2, 3), (3, 2), (2, 1)], c.diag()
        assert [(e["from"], e["to"]) for e in old.events] == [(1, 2)], c.diag()
        assert f"INFO: {c.name}: standby: lease held by" in "\n".join(new.proc.lines)
        assert not c.tel.errors  # type: ignore[union-attr]
        report("2 instances", c.failovers)
        # a clean stop (SIGTERM) releases the lease: nobody is left to take it, the lock says so
        new.proc.p.send_signal(signal.SIGTERM)
        assert new.proc.p.wait(20) == 0, "\n".join(new.proc.lines[-20:])
        labels = swarm.client.api.inspect_service(c.lock)["Spec"]["Labels"]
        assert labels["fastflow.lease.state"] == "released", labels
        assert not any("Traceback" in ln for i in c.inst for ln in i.proc.lines), c.diag()
    finally:
        c.close()


def test_three_instances_two_successive_kills(swarm: SwarmHelper, tmp_path: Path) -> None:
    c = Cluster(swarm, tmp_path, 3, replicas_max=4)
    try:
        c.actor()
        c.tel.util = 95.0  # type: ignore[union-attr]
        c.reach(2, 95.0)
        c.kill_actor()                  # mid-way up: the next actor goes on from 2
        c.reach(3, 95.0)
        c.kill_actor()                  # and the last one from 3
        c.reach(4, 95.0)
        c.reach(1, 5.0)
        c.check_steps()
        assert c.seen == [1, 2, 3, 4, 3, 2, 1], c.diag()
        assert sum(1 for i in c.inst if i.alive) == 1
        report("3 instances", c.failovers)
        # a survivor's graceful stop hands over at once: start a fresh instance, stop the actor
        late = Instance(tmp_path, 9, c.name, c.lock, 4)
        c.inst.append(late)
        actor = c.actor()
        assert actor is not late
        t0 = time.monotonic()
        actor.proc.p.send_signal(signal.SIGTERM)
        assert actor.proc.p.wait(20) == 0
        bounded(lambda: late.lease()["held"], PHASE, "takeover after a release", c.diag)
        report("3 instances", [time.monotonic() - t0], "SIGTERM (lease released)")
    finally:
        c.close()
