"""The scaler against the REAL Docker engine in swarm mode (services of fastflow-busybox, host net).

Telemetry is real sFlow: counter datagrams describing the service's running tasks (hostname =
``svc.slot.taskid``) are built with fastflow.encode, sent over UDP to 127.0.0.1 and fed into a real
Pipeline -> Store -> Metrics (tests/_sflow_util.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from dockerenv import SwarmHelper, docker_client_fixture, swarm_fixture, unique  # noqa: F401
from fastflow.scaler.controller import Scaler
from fastflow.scaler.policy import Policy
from fastflow.scaler.swarm import ServiceInfo, Swarm, SwarmError

pytestmark = pytest.mark.docker


class NoMetrics:
    """Metrics source with no data (tests where telemetry must not matter)."""

    def query(self, *a: Any, **k: Any) -> list[dict[str, Any]]:
        return []

    def dump(self, *a: Any, **k: Any) -> list[dict[str, Any]]:
        return []


def spec_without_replicas(spec: dict[str, Any]) -> dict[str, Any]:
    import copy

    s = copy.deepcopy(spec)
    s["Mode"]["Replicated"].pop("Replicas", None)
    return s


def make_scaler(metrics: Any, client: Any, **policy: Any) -> Scaler:
    p = Policy.from_dict({"interval": 0.5, "staleness": 3, **policy})
    # the rigs send every 0.25 s: one polling interval after a change is 0.5 s here
    return Scaler([p], metrics, enabled=True, state_file=None, swarm=Swarm(client),
                  polling_interval=0.5)


async def until(cond: Callable[[], bool], timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(step)
    return cond()


@pytest.mark.slow
def test_scales_up_and_down_keeping_spec(swarm: SwarmHelper, caplog: pytest.LogCaptureFixture) -> None:
    from _sflow_util import TelemetryRig

    rig = TelemetryRig()
    name = unique("web")
    svc = swarm.create_service(name, ["sleep", "600"], replicas=1,
                               env=["A=1"], labels={"keep": "me"})
    swarm.wait_running(svc, 1)
    before = swarm.client.api.inspect_service(svc.id)["Spec"]
    scaler = make_scaler(rig.metrics, swarm.client, service=name, replicas_min=1, replicas_max=3,
                         util_min=20, util_max=70)
    demand = {"total": 240.0}  # percent of one CPU, spread over the running tasks
    seen: list[int] = []

    async def feeder(stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        tasks: list[str] = []
        t_tasks = 0.0
        while not stop.is_set():
            if time.monotonic() - t_tasks > 0.8:
                tasks = await loop.run_in_executor(None, swarm.running_tasks, svc)
                t_tasks = time.monotonic()
            if tasks:
                rig.send(tasks, min(100.0, demand["total"] / len(tasks)))
            await asyncio.sleep(0.25)

    async def main() -> None:
        stop = asyncio.Event()
        jobs = [asyncio.create_task(feeder(stop)), asyncio.create_task(scaler.run(stop))]
        try:
            def reps() -> int:
                r = swarm.replicas(svc)
                if not seen or seen[-1] != r:
                    seen.append(r)
                return r
            assert await until(lambda: reps() == 3, 45), (seen, scaler.state())
            swarm.wait_running(svc, 3)
            demand["total"] = 10.0
            assert await until(lambda: reps() == 1, 45), (seen, scaler.state())
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*jobs), 10)

    with caplog.at_level(logging.INFO, logger="fastflow.scaler"):
        try:
            asyncio.run(main())
        finally:
            rig.close()
    assert seen[0] == 1 and max(seen) == 3 and seen[-1] == 1, seen  # never beyond max
    after = swarm.client.api.inspect_service(svc.id)["Spec"]
    assert spec_without_replicas(after) == spec_without_replicas(before)
    msgs = [r.getMessage() for r in caplog.records]
    assert f"{name} set replicas=2" in msgs and f"{name} set replicas=1" in msgs
    ev = [(e["from"], e["to"]) for e in scaler.events if e["action"] != "hold"]
    assert ev == [(1, 2), (2, 3), (3, 2), (2, 1)]
    holds = [e["reason"] for e in scaler.events if e["action"] == "hold"]
    assert any(r.startswith("waiting for convergence") for r in holds), holds


def test_telemetry_stopping_holds(swarm: SwarmHelper) -> None:
    from _sflow_util import TelemetryRig

    rig = TelemetryRig()
    name = unique("hold")
    svc = swarm.create_service(name, ["sleep", "600"], replicas=2)
    tasks = swarm.wait_running(svc, 2)
    scaler = make_scaler(rig.metrics, swarm.client, service=name, replicas_min=1, replicas_max=4,
                         util_min=20, util_max=70, staleness=1.5)

    async def main() -> None:
        # idle containers report (would scale down once), then go silent
        for _ in range(3):
            rig.send(tasks, 50.0)  # inside the band: hold
            await asyncio.sleep(0.3)
        d = await scaler.tick(name)
        assert d is not None and d.action == "hold", scaler.state()
        await asyncio.sleep(2.0)  # now stale
        for _ in range(4):
            d = await scaler.tick(name)
            assert d is not None and d.action == "hold"
            await asyncio.sleep(0.3)
        assert "stale" in d.reason or "incomplete" in d.reason or "no " in d.reason, d.reason

    try:
        asyncio.run(main())
    finally:
        rig.close()
    assert swarm.replicas(svc) == 2


def test_out_of_sequence_recovers(swarm: SwarmHelper) -> None:
    """Another client bumps the spec between our read and our update: re-read, retry, keep theirs."""
    name = unique("seq")
    svc = swarm.create_service(name, ["sleep", "600"], replicas=1)
    sw = Swarm(swarm.client)
    calls: list[int] = []

    def interfere(info: ServiceInfo) -> None:
        calls.append(info.version)
        if len(calls) == 1:
            # the other client reads the version it writes against itself: the engine may have
            # bumped it since our read (on a loaded machine it sometimes does)
            cur = swarm.client.api.inspect_service(info.id)
            spec = cur["Spec"]
            labels = dict(spec.get("Labels") or {}, other="client")
            swarm.client.api.update_service(
                info.id, version=cur["Version"]["Index"], name=spec["Name"], labels=labels,
                mode=spec["Mode"], task_template=spec["TaskTemplate"],
                endpoint_spec=spec.get("EndpointSpec"), update_config=spec.get("UpdateConfig"),
                rollback_config=spec.get("RollbackConfig"))

    sw.before_update = interfere
    assert sw.set_replicas(name, 2) == 1
    assert len(calls) == 2 and calls[1] > calls[0]
    spec = swarm.client.api.inspect_service(svc.id)["Spec"]
    assert spec["Mode"]["Replicated"]["Replicas"] == 2
    assert spec["Labels"]["other"] == "client"  # the other client's change survived

    # a persistent conflict gives up after a bounded number of attempts, with a clear error
    def always(info: ServiceInfo) -> None:
        s = swarm.client.api.inspect_service(info.id)
        swarm.client.api.update_service(
            info.id, version=s["Version"]["Index"], name=s["Spec"]["Name"],
            labels=dict(s["Spec"].get("Labels") or {}, n=str(time.time())),
            mode=s["Spec"]["Mode"], task_template=s["Spec"]["TaskTemplate"])

    sw.before_update = always
    with pytest.raises(SwarmError, match="out of sequence"):
        sw.set_replicas(name, 3)


def test_global_mode_refused(swarm: SwarmHelper) -> None:
    name = unique("glob")
    svc = swarm.create_service(name, ["sleep", "600"], mode="global")
    scaler = make_scaler(NoMetrics(), swarm.client, service=name)
    assert asyncio.run(scaler.tick(name)) is None
    assert "global" in scaler.services[name].status
    with pytest.raises(SwarmError, match="global"):
        Swarm(swarm.client).set_replicas(name, 3)
    assert "Global" in swarm.client.api.inspect_service(svc.id)["Spec"]["Mode"]


def test_missing_service_and_dead_engine_do_not_crash(swarm: SwarmHelper) -> None:
    name = unique("gone")
    scaler = make_scaler(NoMetrics(), swarm.client, service=name)
    assert asyncio.run(scaler.tick(name)) is None
    assert "not found" in scaler.services[name].status
    # an engine that does not answer (nothing listens on port 1): reported, retried, no exception
    dead = Scaler([Policy.from_dict({"service": name, "interval": 0.2})], NoMetrics(),
                  enabled=True, docker_host="tcp://127.0.0.1:1")

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(dead.run(stop))
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.wait_for(task, 15)

    asyncio.run(main())
    assert dead.services[name].status.startswith(("docker", "waiting")), dead.services[name].status


def test_rolling_update_skipped(swarm: SwarmHelper) -> None:
    name = unique("roll")
    svc = swarm.create_service(name, ["sleep", "600"], replicas=1)
    swarm.wait_running(svc, 1)
    sw = Swarm(swarm.client)
    info = sw.read_service(name)
    info.update_state = "updating"
    # simulate the state as Docker reports it during a rolling update (fault injection on top of
    # the real read): the update is refused and nothing changes
    orig = sw.read_service
    sw.read_service = lambda n: info if n == name else orig(n)  # type: ignore[method-assign,assignment]
    with pytest.raises(SwarmError, match="rolling update"):
        sw.set_replicas(name, 2)
    assert swarm.replicas(svc) == 1


def test_dry_run_decides_without_changing_the_service(swarm: SwarmHelper) -> None:
    """dry_run against the real engine: the decision is logged and recorded, the service untouched.

    Metrics are canned (busy containers named after the real running tasks) so this runs even
    without the metrics engine."""
    from fastflow.scaler.policy import CPU

    name = unique("dry")
    svc = swarm.create_service(name, ["sleep", "600"], replicas=1)
    tasks = swarm.wait_running(svc, 1)

    class Busy:
        def query(self, *a: Any, **k: Any) -> list[dict[str, Any]]:
            return [{"metricName": CPU, "metricValue": 95.0, "metricN": 1}]

        def dump(self, *a: Any, **k: Any) -> list[dict[str, Any]]:
            return [{"agent": "127.0.0.1", "dataSource": "3:1", "metricName": CPU,
                     "metricValue": 95.0, "lastUpdate": 100, "hostName": tasks[0]}]

    scaler = make_scaler(Busy(), swarm.client, service=name)
    scaler.dry_run = True
    time.sleep(1.0)   # the convergence gate: a sample one polling interval after the task started
    d = asyncio.run(scaler.tick(name))
    assert d is not None and (d.action, d.desired) == ("up", 2), scaler.state()
    assert scaler.events[-1]["dry_run"] is True and scaler.events[-1]["metrics"][CPU] == 95.0
    assert swarm.replicas(svc) == 1
