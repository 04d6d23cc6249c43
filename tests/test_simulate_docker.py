"""``fastflow simulate --docker`` against the real engine: the simulated agents report exactly the
service's real running tasks (``svc.slot.taskid``), following a scale-up, over UDP to a socket the
test owns on 127.0.0.1 and into a pcap."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dockerenv import SwarmHelper, docker_client_fixture, swarm_fixture, unique  # noqa: F401

pytestmark = pytest.mark.docker

POLLING = 0.5


def containers(dgram: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """hostname -> (source_id, cpu_time) of every container sample (3:*) in a decoded datagram."""
    out = {}
    for s in dgram["samples"]:
        if s.get("type") != "counters" or s["source_id_type"] != 3:
            continue
        recs = {r["name"]: r for r in s["records"]}
        out[recs["host_descr"]["hostname"]] = (s["source_id"], recs["virt_cpu"]["cpu_time"])
    return out


def simulate(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "fastflow", "simulate", "--docker", "--nodes",
                             "1", "--polling", str(POLLING), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_simulate_docker_pcap_names_the_real_tasks(swarm: SwarmHelper, tmp_path: Path) -> None:
    from fastflow.decode import decode
    from fastflow.pcap import iter_datagrams

    name = unique("simp")
    svc = swarm.create_service(name, ["sleep", "600"], replicas=2)
    tasks = swarm.wait_running(svc, 2)
    out = tmp_path / "sim.pcap"
    p = simulate("--service", f"{name}=const:50", "--duration", "2", "--pcap", str(out))
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    dgrams = [decode(d) for _, _, d in iter_datagrams(out)]
    assert len(dgrams) == 4, err      # one node, one datagram per tick, 2 s / 0.5 s
    for d in dgrams:
        assert sorted(containers(d)) == tasks, (containers(d), tasks)


def test_simulate_docker_udp_follows_the_real_tasks(swarm: SwarmHelper) -> None:
    """Live over UDP: the reported containers are the running tasks, before and after a scale-up,
    each busy its share of the service's demand (50 % of a CPU over its replicas)."""
    from fastflow.decode import decode
    from fastflow.scaler.swarm import Swarm

    name = unique("simu")
    svc = swarm.create_service(name, ["sleep", "600"], replicas=2)
    two = swarm.wait_running(svc, 2)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5.0)
    p = simulate("--service", f"{name}=const:50", "--duration", "60",
                 "--to", f"127.0.0.1:{rx.getsockname()[1]}")
    got: list[dict[str, Any]] = []
    three: list[str] = []
    try:
        def receive(until: Any, timeout: float) -> None:
            deadline = time.monotonic() + timeout
            while not until():
                assert time.monotonic() < deadline, ([sorted(containers(d)) for d in got],
                                                     two, three)
                got.append(decode(rx.recv(65535)))
        receive(lambda: len(got) >= 3, 20)
        Swarm(swarm.client).set_replicas(name, 3)   # replicas only: the two tasks stay
        three = swarm.wait_running(svc, 3, timeout=30)
        # two datagrams naming the three running tasks
        receive(lambda: len(got) >= 2 and all(sorted(containers(d)) == three for d in got[-2:]),
                30)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=20)
        assert p.returncode == 0, err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
        rx.close()
    assert set(two) < set(three)
    sets = [sorted(containers(d)) for d in got]
    assert sets[0] == two, sets
    # every datagram names exactly the tasks running at the time: the two, then the three
    k = sets.index(three)
    assert all(s == two for s in sets[:k]) and all(s == three for s in sets[k:]), sets
    # CPU time advances at the container's share: 50 / 2 = 25 % (+-20 % noise), then 50 / 3
    for lo, hi, share in ((0, k, 25.0), (k, len(got), 50 / 3)):
        for a, b in zip(got[lo:hi], got[lo + 1:hi], strict=False):
            dt_ms = (b["uptime"] - a["uptime"]) & 0xFFFFFFFF
            assert dt_ms > 0 and dt_ms % (POLLING * 1000) == 0, (a["uptime"], b["uptime"])
            ca, cb = containers(a), containers(b)
            for host in ca:
                assert ca[host][0] == cb[host][0]      # a stable data source per container
                util = 100.0 * (cb[host][1] - ca[host][1]) / dt_ms
                assert 0.79 * share <= util <= 1.21 * share, (host, util, share)
    assert "errors 0" in err, err
