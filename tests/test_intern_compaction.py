"""The decoder's intern tables are compacted: entries no sink holds are dropped, the rest
renumbered everywhere (issue #11's "nothing keyed by input grows without bound ... gives memory
back", for the string and agent tables).

Before: 1M spoofed agent addresses (or container names) filled the tables for good; every new agent
after that was decoded as agent 0 and every new container name as "" (absent), until a restart.
Now the pipeline compacts the tables once either reaches half its cap: the decoder keeps only the
entries some sink (store, agent statistics, flows) still holds, every sink renumbers its indices,
and queries answer exactly as before. Both decoders (compiled and twin) run the same tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import _sflow_build as b
from fastflow import _pydecode
from fastflow.collector.agentstats import AgentStats
from fastflow.collector.flows import FlowEngine
from fastflow.collector.metrics import Metrics
from fastflow.collector.pipeline import Pipeline, ReplayClock
from fastflow.collector.store import Store

CAP = 64        # intern-table cap for the tests: compaction at 32 entries


def _decoders() -> list[Any]:
    out: list[Any] = [pytest.param("twin", id="twin")]
    try:
        from fastflow import _decode  # noqa: F401
        out.insert(0, pytest.param("cython", id="cython"))
    except ImportError:
        pass
    return out


def make_decoder(kind: str) -> Any:
    if kind == "cython":
        from fastflow import _decode
        return _decode.Decoder(max_interned=CAP)
    d = _pydecode.Decoder()
    d._max_interned = CAP
    return d


def container(agent: str, index: int, name: str, seq: int, uptime: int, cpu_ms: int,
              ifname: str | None = None) -> bytes:
    recs = [b.record(2000, b.host_descr(name, os_release="6.1.0")),
            b.record(2101, b.fixed_counter("virt_cpu", {"state": 1, "cpu_time": cpu_ms,
                                                        "nr_virt_cpu": 1}))]
    samples = [b.counters_sample(recs, seq=seq, expanded=True, sid_type=3, sid_index=index)]
    if ifname is not None:
        samples.append(b.counters_sample([b.if_name(ifname)], seq=seq, expanded=True,
                                         sid_type=0, sid_index=2))
    pkt = b.eth(b.ipv4(b.tcp(40000 + index, 80), src=f"10.1.0.{index}", dst="10.1.0.250"))
    samples.append(b.flow_sample([b.record(1, b.sampled_header(pkt))], seq=seq, expanded=True,
                                 sid_type=0, sid_index=2, rate=10))
    return b.datagram(samples, agent=agent, seq=seq, uptime=uptime)


class Rig:
    def __init__(self, kind: str) -> None:
        self.clock = ReplayClock(1_700_000_000.0)
        self.store = Store(clock=self.clock, expire_after=30.0)
        self.stats = AgentStats(self.clock, expire_after=30.0)
        # every sink forgets a silent source within 30 s here (flows: 2 x t idle, loss state 20 s)
        self.flows = FlowEngine(clock=self.clock, expire_factor=2.0, source_idle_expire=20.0,
                                source_min_age=5.0)
        self.flows.define("pairs", "agent,ipsource", t=10, persistent=True)
        self.flows.define("by_text", "null:agent:none", t=10, persistent=True)
        self.pipe = Pipeline([self.store, self.stats, self.flows], decoder=make_decoder(kind),
                             clock=self.clock)
        self.metrics = Metrics(self.store, lock=self.pipe.lock)
        self.seq = 0

    def feed(self, dgrams: list[bytes], dt: float = 1.0) -> None:
        self.clock.advance(self.clock.now() + dt)
        buf = b"".join(dgrams)
        lens = np.array([len(d) for d in dgrams], np.int64)
        offs = np.zeros(len(dgrams), np.int64)
        offs[1:] = np.cumsum(lens[:-1])
        self.pipe.feed(buf, offs, lens, self.clock.now())

    def legit(self, agent: str = "192.0.2.1", names: tuple[str, ...] = ("web.1.aaa", "web.2.bbb"),
              dt: float = 2.0) -> None:
        self.seq += 1
        t = self.seq
        self.feed([container(agent, i + 1, n, t, 1000 * 2 * t, 500 * t, ifname="eth0")
                   for i, n in enumerate(names)], dt)

    def answers(self) -> Any:
        dump = sorted((d["agent"], d["dataSource"], d.get("hostName"), d["metricValue"])
                      for d in self.metrics.dump("ALL", ["vir_cpu_utilization"]))
        top = [(f["key"], round(f["value"], 6)) for f in self.flows.active_flows("ALL", "pairs")]
        agents = {a: (s["sFlowDatagramsReceived"], s["sFlowDatagramsLost"])
                  for a, s in self.stats.snapshot().items()}
        ifnames = sorted(str(d["metricValue"])
                         for d in self.metrics.dump("ALL", ["ifname"]))
        return dump, top, agents, ifnames


@pytest.fixture(params=_decoders())
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    yield Rig(request.param)


def test_decoder_compaction_renumbers_and_reinterns(rig: Rig) -> None:
    dec = rig.pipe.decoder
    rig.legit()
    s0, a0 = dec.strings(), dec.agents()
    with pytest.raises(RuntimeError, match="clear"):
        dec.feed_list([container("192.0.2.9", 1, "x.1.a", 1, 1000, 1)])
        dec.compact_interned([], [])
    dec.clear()
    keep = [s0.index("web.2.bbb")]
    smap, amap = dec.compact_interned(keep, [a0.index("192.0.2.1")])
    assert dec.strings() == ["", "web.2.bbb"] and dec.agents() == ["", "192.0.2.1"]
    assert smap[s0.index("web.2.bbb")] == 1 and smap[s0.index("web.1.aaa")] == 0
    assert amap.tolist()[: len(a0)] == [0, 1] + [0] * (len(a0) - 2)
    dec.feed_list([container("192.0.2.1", 1, "web.1.aaa", 5, 9000, 1)])
    assert dec.agents() == ["", "192.0.2.1"]                 # found again, not added twice
    assert "web.1.aaa" in dec.strings() and dec.counters["agent"].tolist() == [1]


def test_a_flood_of_spoofed_names_is_compacted_away(rig: Rig) -> None:
    for _ in range(3):
        rig.legit()
    before = rig.answers()
    assert before[0] and before[1] and "192.0.2.1" in before[2] and before[3] == ["eth0"]
    # a spoofer: new agent addresses and container names, one datagram each
    flood = [container(f"198.51.100.{i}", 1, f"spoof.{i}.x", 1, 1000, 1) for i in range(1, 29)]
    rig.feed(flood, dt=0.1)
    dec = rig.pipe.decoder
    assert dec.n_agents >= 29 and dec.n_strings >= 30
    # the spoofed sources expire from every sink (30 s), the legit agent keeps reporting
    for _ in range(20):
        rig.legit()
    rig.pipe.tick()
    rig.pipe._last_compact = -np.inf
    stats = rig.pipe.compact_interned()
    assert stats["agents_after"] == 2                        # "" and the legit agent
    assert stats["strings_after"] <= 6                       # "", 2 names, os release, eth0 ...
    after = rig.answers()
    assert [d[:3] for d in after[0]] == [d[:3] for d in before[0]]   # same names, agents, sources
    assert [d[3] for d in after[0]] == pytest.approx([25.0, 25.0])
    assert [k for k, _v in after[1]] == [k for k, _v in before[1]]   # same flow keys
    assert set(after[2]) == {"192.0.2.1"} and after[3] == ["eth0"]
    # and the collector goes on: the legit agent's rates, a new agent under its own name
    rig.legit()
    rig.legit(agent="192.0.2.77", names=("db.1.ccc",))
    rig.legit(agent="192.0.2.77", names=("db.1.ccc",))
    dump, top, agents, _ = rig.answers()
    assert {"192.0.2.1", "192.0.2.77"} <= set(agents)
    assert ("192.0.2.77", "3.1", "db.1.ccc") in [d[:3] for d in dump]
    assert any(k.startswith("192.0.2.77,") for k, _v in top)
    assert rig.pipe.interned_stats()["compactions"] >= 1


def test_the_pipeline_compacts_by_itself_before_the_tables_fill(rig: Rig) -> None:
    """Fed a steady flood, the tables never fill: no datagram is decoded as agent 0."""
    for i in range(1, 200):
        rig.pipe._last_compact = -np.inf                       # the 10 s spacing, not under test
        rig.feed([container(f"203.0.113.{i % 250}", 1, f"churn.{i}.x", 1, 1000, 1)], dt=3.0)
        rig.legit()
    st = rig.pipe.interned_stats()
    assert st["compactions"] >= 3 and st["strings"] < CAP and st["agents"] < CAP
    assert "table_full" not in rig.pipe.decoder.error_counts()
    assert "192.0.2.1" in rig.answers()[2]


def test_what_sinks_let_go_of_is_given_back_without_new_entries(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a flood stops, the periodic compaction (COMPACT_IDLE_S) drops what expired."""
    import fastflow.collector.pipeline as pipeline_mod

    rig.legit()
    rig.feed([container(f"198.51.100.{i}", 1, f"spoof.{i}.x", 1, 1000, 1) for i in range(1, 25)],
             dt=0.1)
    grown = rig.pipe.interned_stats()
    for _ in range(20):                                   # 40 s: the spoofed sources expire
        rig.legit()
    monkeypatch.setattr(pipeline_mod, "COMPACT_MIN_S", 0.0)
    monkeypatch.setattr(pipeline_mod, "COMPACT_IDLE_S", 0.0)
    rig.pipe.tick()                                       # no batch: the service's idle call
    st = rig.pipe.interned_stats()
    assert st["agents"] == 2 and st["agents"] < grown["agents"]
    assert st["dropped"] >= 24 * 2                        # 24 agents, 24 names at least
