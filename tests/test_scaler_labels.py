"""Swarm-native configuration (labels) and operators' own scale changes, on the REAL engine."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from dockerenv import SwarmHelper, docker_client_fixture, swarm_fixture, unique  # noqa: F401
from fastflow.scaler.controller import Scaler
from fastflow.scaler.policy import CPU, Policy
from fastflow.scaler.swarm import Swarm


class Canned:
    """Every running task of the service busy at ``util`` % (trusted: node address 127.0.0.1)."""

    def __init__(self, swarm: SwarmHelper, svc: Any) -> None:
        self.swarm, self.svc, self.util = swarm, svc, 30.0

    def dump(self, *a: Any, **k: Any) -> list[dict[str, Any]]:
        return [{"agent": "127.0.0.1", "dataSource": f"3:{i}", "metricName": CPU,
                 "metricValue": self.util, "lastUpdate": 100, "hostName": t}
                for i, t in enumerate(self.swarm.running_tasks(self.svc))]


def node_addr(swarm: SwarmHelper) -> str:
    return str(swarm.client.api.nodes()[0]["Status"]["Addr"])


@pytest.mark.docker
def test_labelled_service_is_managed_until_unlabelled(swarm: SwarmHelper,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    name = unique("lbl")
    svc = swarm.create_service(name, ["sleep", "600"], replicas=1, labels={
        "fastflow.scale": "true", "fastflow.replicas.min": "1", "fastflow.replicas.max": "3",
        "fastflow.target": "40"})
    bad = swarm.create_service(unique("lblbad"), ["sleep", "600"], replicas=1, labels={
        "fastflow.scale": "true", "fastflow.replicas.max": "100000"})
    scaler = Scaler([], Canned(swarm, svc), enabled=True, state_file=None,  # type: ignore[arg-type]
                    swarm=Swarm(swarm.client), replicas_ceiling=50)
    with caplog.at_level(logging.INFO, logger="fastflow.scaler"):
        asyncio.run(scaler.discover_labels())
    assert name in scaler.services and bad.name not in scaler.services
    st = scaler.services[name]
    assert (st.source, st.policy.mode, st.policy.replicas_max, st.policy.target) == (
        "labels", "proportional", 3, 40.0)
    msgs = "\n".join(r.getMessage() for r in caplog.records)
    assert f"managing {name} from its labels" in msgs and "ceiling" in msgs
    assert scaler.state()["services"][name]["source"] == "labels"
    # the label goes: no longer managed
    spec = swarm.client.api.inspect_service(svc.id)
    labels = dict(spec["Spec"]["Labels"])
    labels.pop("fastflow.scale")
    swarm.client.api.update_service(svc.id, version=spec["Version"]["Index"], labels=labels,
                                    task_template=spec["Spec"]["TaskTemplate"],
                                    mode=spec["Spec"]["Mode"], name=name)
    asyncio.run(scaler.discover_labels())
    assert name not in scaler.services


@pytest.mark.docker
def test_operator_scale_is_respected_then_the_scaler_resumes(swarm: SwarmHelper,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    if node_addr(swarm) != "127.0.0.1":
        pytest.skip("canned samples come from 127.0.0.1; this node's address differs")
    name = unique("man")
    svc = swarm.create_service(name, ["sleep", "600"], replicas=2)
    swarm.wait_running(svc, 2)
    metrics = Canned(swarm, svc)
    metrics.util = 50.0        # 2 x 50 % at target 50: hold
    p = Policy.from_dict({"service": name, "target": 50, "replicas_max": 6, "manual_pause": 4,
                          "behavior": {"scale_down": {"stabilization_window": 0}}})
    scaler = Scaler([p], metrics, enabled=True, state_file=None,  # type: ignore[arg-type]
                    swarm=Swarm(swarm.client), polling_interval=0.2)

    def tick() -> Any:
        return asyncio.run(scaler.tick(name))

    time.sleep(0.5)
    assert tick().action == "hold"
    # the operator: docker service scale name=4
    spec = swarm.client.api.inspect_service(svc.id)
    mode = spec["Spec"]["Mode"]
    mode["Replicated"]["Replicas"] = 4
    swarm.client.api.update_service(svc.id, version=spec["Version"]["Index"], mode=mode,
                                    task_template=spec["Spec"]["TaskTemplate"], name=name)
    swarm.wait_running(svc, 4)
    time.sleep(0.5)
    with caplog.at_level(logging.INFO, logger="fastflow.scaler"):
        d = tick()             # 4 x 50 % is still "right" but 4 x 10 % would say 1: held anyway
        metrics.util = 10.0
        d = tick()
    assert d.action == "hold" and d.reason.startswith("respecting an operator's change"), d.reason
    assert swarm.replicas(svc) == 4
    assert any(e["action"] == "manual" and (e["from"], e["to"]) == (2, 4) for e in scaler.events)
    assert any("outside the scaler" in r.getMessage() for r in caplog.records)
    time.sleep(4.2)            # manual_pause over: the scaler decides again (40 / 50 -> 1)
    d = tick()
    assert (d.action, d.desired) == ("down", 1), d.reason
    assert swarm.replicas(svc) == 1
