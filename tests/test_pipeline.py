"""Pipeline: decoder flush loop, sinks, clocks, capture replay; the real swarm capture against an
independent computation from sflowtool's dump."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _sflow_build import counters_sample, datagram, fixed_counter, host_descr, record
from fastflow.collector.pipeline import Batch, LiveClock, Pipeline, ReplayClock, StringView
from fastflow.collector.store import Store


class Recorder:
    """A sink that copies what it is given."""

    def __init__(self) -> None:
        self.calls = 0
        self.counters: list[np.ndarray] = []
        self.hostnames: list[str] = []

    def add(self, tables: Batch) -> None:
        self.calls += 1
        self.counters.append(tables.counters.copy())
        self.hostnames += tables.strings.resolve(tables.counters["hostname"].astype(np.int64))


def container_dgram(index: int, seq: int, uptime: int, cpu: int, name: str = "web.1.x",
                    agent: str = "192.0.2.1", n_samples: int = 1) -> bytes:
    samples = [counters_sample([
        record(2000, host_descr(name)),
        record(2101, fixed_counter("virt_cpu", {"state": 1, "cpu_time": cpu, "nr_virt_cpu": 1})),
        record(2104, fixed_counter("virt_net_io", {"rx_bytes": 10 * cpu})),
    ], seq=seq + k, expanded=True, sid_type=3, sid_index=index + k) for k in range(n_samples)]
    return datagram(samples, agent=agent, seq=seq, uptime=uptime)


def pack(dgrams: list[bytes]) -> tuple[bytes, np.ndarray, np.ndarray]:
    lengths = np.array([len(d) for d in dgrams], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return b"".join(dgrams), offsets, lengths


def test_feed_reaches_every_sink_with_text(decoder_cls: type) -> None:
    clock = ReplayClock(1000.0)
    r1, r2 = Recorder(), Recorder()
    p = Pipeline([r1, r2], decoder=decoder_cls(), clock=clock)
    buf, off, ln = pack([container_dgram(7, 1, 1000, 5, name="svc.1.a"),
                         container_dgram(8, 1, 1000, 9, name="svc.2.b")])
    p.feed(buf, off, ln)
    assert r1.calls == r2.calls == 1
    c = r1.counters[0]
    assert c["source_id_index"].tolist() == [7, 8]
    assert c["ts"].tolist() == [1000.0, 1000.0]           # ts None: stamped with the clock
    assert r1.hostnames == ["svc.1.a", "svc.2.b"]
    assert p.agents[int(c["agent"][0])] == "192.0.2.1"
    assert p.n_datagrams == 2


def test_partial_consumption_flushes_and_loses_nothing(decoder_cls: type) -> None:
    """More counter rows than the decoder holds: several flushes, every sample delivered once."""
    rec = Recorder()
    p = Pipeline([rec], decoder=decoder_cls(counter_capacity=4096), clock=ReplayClock(1.0))
    dgrams = [container_dgram(i * 4, i + 1, 1000 + i, i, n_samples=3) for i in range(2000)]
    buf, off, ln = pack(dgrams)
    p.feed(buf, off, ln, ts=np.arange(2000, dtype=np.float64))
    assert rec.calls >= 2
    allc = np.concatenate(rec.counters)
    assert len(allc) == 6000
    assert np.array_equal(np.unique(allc["source_id_index"]), np.sort(
        np.array([i * 4 + k for i in range(2000) for k in range(3)])))
    assert allc["ts"].max() == 1999.0


def test_errors_are_reported(decoder_cls: type) -> None:
    p = Pipeline([Recorder()], decoder=decoder_cls(), clock=ReplayClock())
    bad = b"\x00\x00\x00\x04" + b"\x00" * 40
    buf, off, ln = pack([bad, container_dgram(1, 1, 1, 1)])
    p.feed(buf, off, ln, ts=5.0)
    assert p.errors().get("bad_version") == 1


def test_feed_validates_arguments() -> None:
    p = Pipeline([Recorder()], clock=ReplayClock())
    with pytest.raises(ValueError):
        p.feed(b"abcd", [0, 1], [4])
    with pytest.raises(ValueError):
        p.feed(b"abcd", [0], [4], ts=np.zeros(3))
    p.feed(b"", [], [])                                   # nothing to do is fine


def test_clocks() -> None:
    c = ReplayClock(10.0)
    c.advance(5.0)
    assert c.now() == 10.0
    c.advance(12.5)
    assert c.now() == 12.5
    c.set(3.0)
    assert c.now() == 3.0
    assert abs(LiveClock().now() - __import__("time").time()) < 5


def test_stringview_grows_lazily() -> None:
    table = ["", "a"]
    calls = []

    def fetch() -> list[str]:
        calls.append(1)
        return list(table)

    sv = StringView(fetch)
    assert sv[1] == "a"
    n = len(calls)
    assert sv[1] == "a" and len(calls) == n               # cached
    table.append("b")
    assert sv[2] == "b"
    assert sv[99] == ""
    assert sv.index_of("b") == 2 and sv.index_of("zz") is None
    assert sv.resolve(np.array([0, 2, 1])) == ["", "b", "a"]


def test_feed_capture_steps_in_capture_time(tmp_path: Path) -> None:
    from fastflow import pcap

    t0 = 1_700_000_000.25
    items = [(t0 + 2 * i, container_dgram(1, i + 1, 1000 + 2000 * i, 1000 * i)) for i in range(10)]
    items[3], items[4] = items[4], items[3]                # capture file out of time order
    path = tmp_path / "c.pcap"
    pcap.write(path, items)
    cap = pcap.read(path)
    clock = ReplayClock()
    store = Store(clock=clock)
    p = Pipeline([store], clock=clock)
    seen: list[tuple[float, float, int]] = []

    def on_step(t: float) -> None:
        seen.append((t, clock.now(), store.counts["accepted"]))

    p.feed_capture(cap, step=5.0, on_step=on_step)
    steps = [s[0] for s in seen]
    assert steps == pytest.approx([t0 + 5, t0 + 10, t0 + 15, t0 + 20])
    assert all(a == b for a, b, _ in seen)
    assert [s[2] for s in seen] == [3, 6, 8, 10]          # datagrams with ts <= boundary
    assert store.counts["reordered"] == 0                 # replay sorted them by time
    with pytest.raises(TypeError):
        Pipeline([store], clock=LiveClock()).feed_capture(cap)
    with pytest.raises(ValueError):
        p.feed_capture(cap, step=0)


# ------------------------------------------------------------------------------ real capture
def parse_sflowtool(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Container samples per sourceId from sflowtool's text dump (independent of fastflow)."""
    out: dict[str, list[dict[str, Any]]] = {}
    cur: dict[str, Any] = {}
    dg: dict[str, Any] = {}
    for line in path.read_text().splitlines():
        parts = line.split(None, 1)
        if not parts:
            continue
        k, v = parts[0], parts[1].strip() if len(parts) > 1 else ""
        if k == "pcapTimestamp":
            m = re.match(r"(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)", v)
            assert m
            import calendar
            dg["sec"] = calendar.timegm(tuple(int(x) for x in m.groups()) + (0, 0, 0))
        elif k == "pcapTimestamp_uS":
            dg["ts"] = dg["sec"] + int(v) / 1e6
        elif k == "sysUpTime":
            dg["uptime"] = int(v)
        elif k == "startSample":
            cur = {"ts": dg["ts"], "uptime": dg["uptime"]}
        elif k in ("sampleSequenceNo", "sourceId", "hostname"):
            cur[k] = v
        elif k in ("vcpu_cpu_mS", "vnio_bytes_in", "vnio_bytes_out"):
            cur[k] = int(v)
        elif k == "endSample" and cur.get("sourceId", "").startswith("3:"):
            out.setdefault(cur["sourceId"], []).append(cur)
    return out


def oracle(samples: list[dict[str, Any]], t: float) -> dict[str, float] | None:
    """Rates from the last two samples heard by time t (same-uptime polls: the later one wins)."""
    seen = [s for s in samples if s["ts"] <= t]
    dedup: list[dict[str, Any]] = []
    for s in seen:
        if dedup and dedup[-1]["uptime"] == s["uptime"]:
            dedup[-1] = s
        else:
            dedup.append(s)
    if len(dedup) < 2 or t - dedup[-1]["ts"] > 30:
        return None
    a, b = dedup[-2], dedup[-1]
    dt = b["uptime"] - a["uptime"]
    return {"vir_cpu_utilization": 100.0 * (b["vcpu_cpu_mS"] - a["vcpu_cpu_mS"]) / dt,
            "vir_bytes_in": 1000.0 * (b["vnio_bytes_in"] - a["vnio_bytes_in"]) / dt,
            "vir_bytes_out": 1000.0 * (b["vnio_bytes_out"] - a["vnio_bytes_out"]) / dt}


def test_swarm_capture_matches_sflowtool(swarm_pcap: Path) -> None:
    from fastflow import pcap
    from fastflow.collector.metrics import Metrics

    dump = swarm_pcap.with_name("docker-swarm.sflowtool.txt")
    if not dump.exists():
        pytest.skip(f"{dump} missing")
    ref = parse_sflowtool(dump)
    assert len(ref) == 3
    cap = pcap.read(swarm_pcap)
    clock = ReplayClock()
    store = Store(clock=clock)
    metrics = Metrics(store)
    p = Pipeline([store], clock=clock)
    names = "vir_cpu_utilization,vir_bytes_in,vir_bytes_out"
    compared = 0
    per_host: dict[str, list[float]] = {}

    def on_step(t: float) -> None:
        nonlocal compared
        got: dict[tuple[str, str], Any] = {}
        for e in metrics.dump("ALL", names):
            got[(e["dataSource"].replace(".", ":"), e["metricName"])] = e["metricValue"]
            if e["metricName"] == "vir_cpu_utilization":
                per_host.setdefault(e["hostName"].split(".")[1], []).append(e["metricValue"])
        for sid, samples in ref.items():
            want = oracle(samples, t)
            for m in names.split(","):
                if want is None:
                    assert (sid, m) not in got
                else:
                    assert got[(sid, m)] == pytest.approx(want[m], rel=1e-9, abs=1e-9), (t, sid, m)
                    compared += 1

    p.feed_capture(cap, step=2.0, on_step=on_step)
    assert compared > 3 * 3 * 40
    assert store.counts["duplicate"] == 0 and store.counts["reset"] == 0
    # the two burning containers (limited to 0.5 CPU) near 50 %, the idle one near 0
    assert 45 < np.mean(per_host["1"]) < 55
    assert 35 < np.mean(per_host["2"]) < 55                # this one got ~44 % in the capture
    assert np.mean(per_host["3"]) < 1.0
    r = metrics.query("ALL", "avg:vir_cpu_utilization,max:vir_cpu_utilization",
                      {"vir_host_name": ["sflowpeer_burn.1.*", "sflowpeer_burn.2.*"],
                       "vir_cpu_state": ["running"]})   # sFlow-RT globs
    assert r[0]["metricN"] == 2 and 40 < r[0]["metricValue"] < 60
    assert r[1]["dataSource"] in ("3.140100", "3.100550")
