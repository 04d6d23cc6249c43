"""fastflow simulate: hsflowd-shaped datagrams from a simulated swarm; closed loop with the scaler."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastflow.decode as decode_mod
import fastflow.sources._replay  # noqa: F401  (the send path the simulator uses must be built)
from _udp_util import Receiver
from fastflow import pcap
from fastflow.sources.simulate import (
    SimulatedSwarm,
    Simulator,
    container_template,
    frame_datagrams,
    parse_demand,
    parse_service,
    run,
)


def _records(obj: dict) -> list[tuple[str, dict[str, dict]]]:
    return [(s["source_id"], {r["name"]: r for r in s["records"]}) for s in obj["samples"]]


def test_parse_demand_and_service(tmp_path: Path) -> None:
    assert parse_demand("step:10,50@5")(7) == 50 and parse_demand("step:10,50@5")(1) == 10
    assert parse_demand("ramp:0:100:10")(5) == pytest.approx(50)
    assert parse_demand("risefall:100:10")(5) == pytest.approx(100)
    assert parse_demand("sine:100:50:40")(10) == pytest.approx(150)
    f = tmp_path / "d.csv"
    f.write_text("t,demand\n0,10\n10,110\n")
    assert parse_demand(f"csv:{f}")(5) == pytest.approx(60)
    for bad in ("nope:1", "ramp:1", "step:@5", f"csv:{tmp_path}/missing.csv"):
        with pytest.raises(ValueError):
            parse_demand(bad)
    assert parse_service("apache=ramp:1:2:3/4") == ("apache", "ramp:1:2:3", 4)
    assert parse_service("web=const:50") == ("web", "const:50", 1)
    with pytest.raises(ValueError):
        parse_service("no-demand")


def test_simulated_swarm_interface() -> None:
    sw = SimulatedSwarm({"apache": 2, "db": 1})
    info = sw.read_service("apache")
    assert info.replicas == 2 and not info.global_mode
    tasks = sw.running_tasks(info)
    assert [t.split(".")[:2] for t in tasks] == [["apache", "1"], ["apache", "2"]]
    assert sw.set_replicas("apache", 4, expect_current=2) == 2
    assert len(sw.running_tasks(sw.read_service("apache"))) == 4
    assert sw.running_tasks(sw.read_service("apache"))[:2] == tasks   # existing tasks kept
    from fastflow.scaler.swarm import SwarmError
    with pytest.raises(SwarmError):
        sw.set_replicas("apache", 1, expect_current=2)
    with pytest.raises(SwarmError):
        sw.read_service("nope")


def test_container_template_decodes_like_hsflowd() -> None:
    name = "sflowpeer_burn.1.qcurxo9a8hwagrbbuikafgy6s"
    tpl = container_template(name, 133046)
    dgram = bytes.fromhex("00000005000000010a000001000186a0000000010000000100000001") + tpl.data
    o = decode_mod.decode(dgram)
    assert o["errors"] == []
    (src, recs), = _records(o)
    assert src == "3:133046"
    assert list(recs) == ["host_adapters", "virt_disk_io", "virt_memory", "virt_cpu", "virt_net_io",
                          "host_parent", "host_descr"]
    assert recs["host_descr"]["hostname"] == name
    assert recs["host_parent"]["container_type"] == 2 and recs["host_parent"]["container_index"] == 1


def test_frames_decode_cleanly_and_cpu_splits_across_replicas() -> None:
    sw = SimulatedSwarm({"apache": 2})
    sim = Simulator(3, {"apache": parse_demand("const:200")}, sw)
    for _ in range(2):
        fr = sim.step(10)
    tables = decode_mod.decode_buffers(fr.buf, fr.offsets, fr.lengths)
    assert tables.errors == {} or not any(tables.errors.values())
    assert len(tables.datagrams) == len(fr.offsets) and len(tables.counters) == 3 + 2
    cpu1 = {}
    for d in frame_datagrams(fr):
        o = decode_mod.decode(d)
        assert o["errors"] == []
        for src, recs in _records(o):
            if src.startswith("3:"):
                cpu1[recs["host_descr"]["hostname"]] = recs["virt_cpu"]["cpu_time"]
    assert all(v == pytest.approx(2 * 10 * 1000, rel=0.25) for v in cpu1.values())  # 100 %/10 s
    sw.set_replicas("apache", 4)
    fr = sim.step(10)
    cpu2 = {}
    for d in frame_datagrams(fr):
        for src, recs in _records(decode_mod.decode(d)):
            if src.startswith("3:"):
                cpu2[recs["host_descr"]["hostname"]] = recs["virt_cpu"]["cpu_time"]
    assert len(cpu2) == 4
    for name, v in cpu2.items():
        before = cpu1.get(name, 0)
        assert v - before == pytest.approx(5000, rel=0.25)   # 200 % over 4 replicas = 50 % each


def test_sequence_numbers_continue() -> None:
    sim = Simulator(2, {"a": parse_demand("const:10")}, SimulatedSwarm({"a": 3}))
    seen: dict[str, list[int]] = {}
    for _ in range(3):
        for d in frame_datagrams(sim.step(5)):
            o = decode_mod.decode(d)
            seen.setdefault(o["agent"], []).append(o["sequence_number"])
    for seqs in seen.values():
        assert seqs == list(range(1, len(seqs) + 1))


def test_cli_pcap(tmp_path: Path) -> None:
    out = tmp_path / "sim.pcap"
    r = subprocess.run([sys.executable, "-m", "fastflow", "simulate", "--nodes", "4", "--service",
                        "apache=ramp:50:400:60/2", "--polling", "10", "--duration", "60",
                        "--pcap", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    cap = pcap.read(out)
    assert len(cap) >= 6 * 4
    t = decode_mod.decode_buffers(cap.buf, cap.offsets, cap.lengths, cap.ts)
    assert not any(t.errors.values())


def test_cli_udp_loopback() -> None:
    rx = Receiver(idle=3.0)
    host, port = rx.addr
    r = subprocess.run([sys.executable, "-m", "fastflow", "simulate", "--nodes", "5", "--polling",
                        "10", "--duration", "1", "--speed", "30", "--to", f"{host}:{port}"],
                       capture_output=True, text=True, timeout=120)
    got = rx.wait(15)
    assert r.returncode == 0, r.stderr
    assert len(got) >= 15        # 5 nodes x 3 ticks, at least one datagram each


def test_closed_loop_with_scaler() -> None:
    from fastflow.collector.metrics import Metrics
    from fastflow.collector.pipeline import Pipeline, ReplayClock
    from fastflow.collector.store import Store
    from fastflow.scaler.controller import Scaler
    from fastflow.scaler.policy import Policy

    clock = ReplayClock(1_000_000.0)
    store = Store(clock=clock)
    pipe = Pipeline([store], clock=clock)
    metrics = Metrics(store)
    sw = SimulatedSwarm({"apache": 1})
    # demand rises to 700 % (7 busy cores) then falls back: replicas must follow up and down
    demand = parse_demand("step:50,700,700,700,700,700,30,30,30,30,30,30,30,30@20")
    sim = Simulator(4, {"apache": demand}, sw)
    pol = Policy.from_dict({"service": "apache", "pattern": r"apache\..*", "replicas_min": 1,
                            "replicas_max": 10, "util_min": 20, "util_max": 80, "interval": 10})
    scaler = Scaler([pol], metrics, enabled=True, swarm=sw, state_file=None)  # type: ignore[arg-type]
    history = []

    def feed(fr, t):  # type: ignore[no-untyped-def]
        clock.set(1_000_000.0 + t)
        pipe.feed(fr.buf, fr.offsets, fr.lengths, np.full(len(fr.offsets), 1_000_000.0 + t))
        asyncio.run(scaler.tick("apache"))
        history.append(sw.replicas("apache"))

    run(sim, 10.0, 280.0, send=feed, realtime=False)
    peak = max(history)
    assert peak >= 5, history
    assert history[-1] < peak and history[-1] <= 2, history
    assert [c for c in sw.changes if c[2] > c[1]] and [c for c in sw.changes if c[2] < c[1]]


def test_scale_smoke() -> None:
    # many nodes, bounded: 300 nodes x 20 containers; every datagram within the MTU budget
    sim = Simulator(300, {"a": parse_demand("const:100")}, SimulatedSwarm({"a": 30}),
                    extra_containers=20)
    fr = sim.step(10)
    assert int(fr.lengths.max()) <= 1400 and len(fr.offsets) >= 300
    assert int(fr.lengths.sum()) == len(fr.buf)
