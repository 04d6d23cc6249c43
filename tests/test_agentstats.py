"""fastflow.collector.agentstats: per-agent datagram/sample accounting from decoded tables."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from fastflow._schema import COUNTER_DTYPE, DATAGRAM_DTYPE, FLOW_DTYPE
from fastflow.collector.agentstats import AgentStats


@pytest.fixture(autouse=True, params=["compiled", "pure"])
def kernel(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs against the compiled accounting kernel and its pure-Python twin."""
    monkeypatch.setenv("FASTFLOW_PURE_PYTHON", "1" if request.param == "pure" else "0")
    return str(request.param)


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def now(self) -> float:
        return self.t


AGENTS = ["", "192.0.2.1", "192.0.2.2", "2001:db8::5"]


def batch(dgrams: list[tuple[int, int, int, int]], counters: list[tuple[int, int, int]] = (),  # type: ignore[assignment]
          flows: list[tuple[int, int, int]] = (), ts: float = 100.0) -> SimpleNamespace:  # type: ignore[assignment]
    """dgrams: (agent, sub_agent, seq, uptime); samples: (agent, source_index, seq)."""
    d = np.zeros(len(dgrams), DATAGRAM_DTYPE)
    for i, (a, sub, seq, up) in enumerate(dgrams):
        d[i]["agent"], d[i]["sub_agent_id"], d[i]["sequence_number"], d[i]["uptime"] = a, sub, seq, up
        d[i]["ts"] = ts + i * 0.001
    c = np.zeros(len(counters), COUNTER_DTYPE)
    for i, (a, idx, seq) in enumerate(counters):
        c[i]["agent"], c[i]["source_id_type"], c[i]["source_id_index"] = a, 0, idx
        c[i]["sequence_number"] = seq
    f = np.zeros(len(flows), FLOW_DTYPE)
    for i, (a, idx, seq) in enumerate(flows):
        f[i]["agent"], f[i]["source_id_type"], f[i]["source_id_index"] = a, 0, idx
        f[i]["sequence_number"] = seq
    return SimpleNamespace(datagrams=d, counters=c, flows=f, strings=[""], agents=AGENTS)


def seqs(agent: int, numbers: list[int], sub: int = 0, up0: int = 1000) -> list[tuple[int, int, int, int]]:
    return [(agent, sub, s, up0 + 10 * s) for s in numbers]


def snap(st: AgentStats, agent: str = "192.0.2.1") -> dict[str, Any]:
    return st.snapshot()[agent]


def test_clean_sequence() -> None:
    st = AgentStats(clock=Clock())
    st.add(batch(seqs(1, list(range(1, 11)))))
    st.add(batch(seqs(1, list(range(11, 21)))))
    s = snap(st)
    assert s["sFlowDatagramsReceived"] == 20
    assert (s["sFlowDatagramsLost"], s["sFlowDatagramsDuplicated"], s["sFlowDatagramsOutOfOrder"],
            s["sFlowAgentRestarts"]) == (0, 0, 0, 0)
    assert s["uptime"] == 1200


def test_gaps_within_and_across_batches() -> None:
    st = AgentStats(clock=Clock())
    st.add(batch(seqs(1, [1, 2, 5, 6])))         # 3, 4 lost
    st.add(batch(seqs(1, [10, 11])))             # 7, 8, 9 lost (at the boundary)
    assert snap(st)["sFlowDatagramsLost"] == 5


def test_duplicates() -> None:
    st = AgentStats(clock=Clock())
    st.add(batch(seqs(1, [1, 2, 2, 3])))
    st.add(batch(seqs(1, [3, 1, 4])))            # both seen before
    s = snap(st)
    assert s["sFlowDatagramsDuplicated"] == 3
    assert s["sFlowDatagramsLost"] == 0 and s["sFlowDatagramsOutOfOrder"] == 0
    assert s["sFlowDatagramsReceived"] == 7


def test_reordering_fills_gaps() -> None:
    st = AgentStats(clock=Clock())
    st.add(batch(seqs(1, [1, 2, 4, 3, 5])))
    s = snap(st)
    assert s["sFlowDatagramsOutOfOrder"] == 1 and s["sFlowDatagramsLost"] == 0
    st.add(batch(seqs(1, [6, 9])))               # 7, 8 missing ...
    assert snap(st)["sFlowDatagramsLost"] == 2
    st.add(batch(seqs(1, [8, 10])))              # ... 8 arrives late
    s = snap(st)
    assert s["sFlowDatagramsLost"] == 1 and s["sFlowDatagramsOutOfOrder"] == 2
    assert s["sFlowAgentRestarts"] == 0


def test_restart_by_uptime_and_by_sequence_reset() -> None:
    st = AgentStats(clock=Clock())
    st.add(batch(seqs(1, list(range(100, 200)), up0=500_000)))
    # reboot: uptime back near zero, sequence from 1
    st.add(batch([(1, 0, s, 100 * s) for s in range(1, 6)]))
    s = snap(st)
    assert s["sFlowAgentRestarts"] == 1
    assert (s["sFlowDatagramsLost"], s["sFlowDatagramsDuplicated"],
            s["sFlowDatagramsOutOfOrder"]) == (0, 0, 0)
    assert s["uptime"] == 500
    # a restart inside one batch, then counting continues from the new numbers (7 lost: 2..8)
    st.add(batch([(1, 0, 6, 60_000), (1, 0, 7, 70_000), (1, 0, 1, 50), (1, 0, 9, 900)]))
    s = snap(st)
    assert s["sFlowAgentRestarts"] == 2
    assert s["sFlowDatagramsLost"] == 7 and s["uptime"] == 900
    # soon after a restart, a low number without an uptime jump is a duplicate, not a restart
    st.add(batch([(1, 0, 1, 950)]))
    s = snap(st)
    assert s["sFlowAgentRestarts"] == 2 and s["sFlowDatagramsDuplicated"] == 1


def test_sub_agents_and_agents_are_separate() -> None:
    st = AgentStats(clock=Clock())
    rows = []
    for s in range(1, 21):          # interleaved sub-agents 0 and 7, and a second agent
        rows += [(1, 0, s, 10 * s), (1, 7, 1000 + s, 10 * s), (3, 0, s * 2, 10 * s)]
    st.add(batch(rows))
    s1, s3 = snap(st), snap(st, "2001:db8::5")
    assert s1["sFlowDatagramsReceived"] == 40 and s1["sFlowDatagramsLost"] == 0
    assert s1["sFlowSubAgents"] == 2
    assert s3["sFlowDatagramsReceived"] == 20 and s3["sFlowDatagramsLost"] == 19
    assert set(st.agents()) == {"192.0.2.1", "2001:db8::5"}


def test_sample_loss_per_source_and_kind() -> None:
    st = AgentStats(clock=Clock())
    st.add(batch(seqs(1, [1]), counters=[(1, 1, 1), (1, 2, 10), (1, 1, 2), (1, 2, 13)],
                 flows=[(1, 1, 5), (1, 1, 6), (1, 1, 9)]))
    s = snap(st)
    assert s["sFlowCounterSamples"] == 4 and s["sFlowFlowSamples"] == 3
    assert s["sFlowCounterSamplesLost"] == 2 and s["sFlowFlowSamplesLost"] == 2
    # across the batch boundary; a stale (lower) sample does not count as loss
    st.add(batch(seqs(1, [2]), counters=[(1, 1, 4), (1, 2, 12), (1, 2, 14)], flows=[(1, 1, 10)]))
    s = snap(st)
    assert s["sFlowCounterSamplesLost"] == 3 and s["sFlowFlowSamplesLost"] == 2
    # same source index on another agent is another data source
    st.add(batch(seqs(2, [1]), counters=[(2, 1, 50), (2, 1, 52)]))
    assert snap(st, "192.0.2.2")["sFlowCounterSamplesLost"] == 1
    assert snap(st)["sFlowCounterSamplesLost"] == 3


def test_times_by_clock() -> None:
    clock = Clock(100.0)
    st = AgentStats(clock=clock)
    st.add(batch(seqs(1, [1, 2]), ts=90.0))
    clock.t = 100.5
    s = snap(st)
    assert s["firstSeen"] == 10500 and s["lastUpdate"] == 10499
    st.add(batch(seqs(1, [3]), ts=0.0))          # unknown time: the clock's now
    assert snap(st)["lastUpdate"] == 0
    st.reset()
    assert st.snapshot() == {}


def test_empty_batch() -> None:
    st = AgentStats(clock=Clock())
    st.add(batch([]))
    assert st.snapshot() == {}


# --------------------------------------------------------------------------------------------------
# The real capture through the decoder
# --------------------------------------------------------------------------------------------------
def decoded(path: Path, keep: np.ndarray | None = None) -> SimpleNamespace:
    import fastflow.decode as decode
    from fastflow import pcap
    cap = pcap.read(path)
    offsets, lengths, ts = cap.offsets, cap.lengths, cap.ts
    if keep is not None:
        offsets, lengths, ts = offsets[keep], lengths[keep], ts[keep]
    dec = decode.Decoder()
    assert dec.feed(cap.buf, offsets, lengths, ts) == len(offsets)
    return SimpleNamespace(datagrams=dec.datagrams.copy(), counters=dec.counters.copy(),
                           flows=dec.flows.copy(), strings=dec.strings(), agents=dec.agents())


def test_swarm_capture_no_loss(swarm_pcap: Path) -> None:
    txt = (swarm_pcap.parent / "docker-swarm.sflowtool.txt").read_text()
    seq = [int(x) for x in re.findall(r"^packetSequenceNo (\d+)$", txt, re.M)]
    assert seq == list(range(1, 125))  # the oracle: no gap, no repeat
    b = decoded(swarm_pcap)
    assert b.datagrams["sequence_number"].tolist() == seq
    clock = Clock(float(b.datagrams["ts"].max()) + 2.0)
    st = AgentStats(clock=clock)
    st.add(b)
    s = st.snapshot()["192.0.2.2"]
    assert s["sFlowDatagramsReceived"] == 124
    assert s["sFlowFlowSamples"] == len(re.findall(r"^sampleType FLOWSAMPLE", txt, re.M)) == 25
    assert s["sFlowCounterSamples"] == \
        len(re.findall(r"^sampleType COUNTERSSAMPLE", txt, re.M)) == 261
    for k in ("sFlowDatagramsLost", "sFlowDatagramsDuplicated", "sFlowDatagramsOutOfOrder",
              "sFlowAgentRestarts", "sFlowFlowSamplesLost", "sFlowCounterSamplesLost"):
        assert s[k] == 0, k
    assert s["lastUpdate"] == 2000
    assert s["uptime"] == int(b.datagrams["uptime"][-1])


def test_swarm_capture_with_drops_and_reordering(swarm_pcap: Path) -> None:
    full = decoded(swarm_pcap)
    dropped = [10, 50, 51, 90]
    keep = np.setdiff1d(np.arange(124), dropped)
    keep[[20, 21]] = keep[[21, 20]]  # one swap: an out-of-order pair
    b = decoded(swarm_pcap, keep)
    st = AgentStats(clock=Clock())
    st.add(b)
    s = st.snapshot()["192.0.2.2"]
    assert s["sFlowDatagramsReceived"] == 120
    assert s["sFlowDatagramsLost"] == 4
    assert s["sFlowDatagramsOutOfOrder"] == 1
    # expected sample loss: samples carried by the dropped datagrams (all sources keep later ones)
    for kind, tab in (("Counter", full.counters), ("Flow", full.flows)):
        gone = int(np.isin(tab["dgram"], dropped).sum())
        kept_last = {}
        for r in tab[~np.isin(tab["dgram"], dropped)]:
            kept_last[(r["source_id_type"], r["source_id_index"])] = r["sequence_number"]
        tail = sum(1 for r in tab[np.isin(tab["dgram"], dropped)]
                   if r["sequence_number"] > kept_last.get((r["source_id_type"],
                                                            r["source_id_index"]), 0))
        assert s[f"sFlow{kind}SamplesLost"] == gone - tail, kind


def test_pipeline_sink(swarm_pcap: Path) -> None:
    """AgentStats as a real Pipeline sink."""
    import fastflow.collector.pipeline as pipeline
    from fastflow import pcap

    clock = pipeline.ReplayClock()
    st = AgentStats(clock=clock)
    p = pipeline.Pipeline([st], clock=clock)
    cap = pcap.read(swarm_pcap)
    half = len(cap) // 2
    p.feed(cap.buf, cap.offsets[:half], cap.lengths[:half], cap.ts[:half])
    p.feed(cap.buf, cap.offsets[half:], cap.lengths[half:], cap.ts[half:])
    s = st.snapshot()["192.0.2.2"]
    assert s["sFlowDatagramsReceived"] == 124 and s["sFlowDatagramsLost"] == 0
    assert s["sFlowCounterSamples"] == 261 and s["sFlowCounterSamplesLost"] == 0


_COUNTS = ("sFlowDatagramsReceived", "sFlowDatagramsLost", "sFlowDatagramsDuplicated",
           "sFlowDatagramsOutOfOrder", "sFlowAgentRestarts", "sFlowCounterSamples",
           "sFlowCounterSamplesLost")


@pytest.mark.parametrize("seed", range(20))
def test_batching_does_not_change_the_counts(seed: int) -> None:
    """Mostly in-order streams (the fast path) with gaps, duplicates and late datagrams mixed in
    (the general path): one big batch, random splits and one datagram per batch agree."""
    rng = np.random.default_rng(seed)
    numbers: list[int] = []
    seq = int(rng.integers(1, 1000))
    for _ in range(300):
        r = rng.random()
        if r < 0.05 and numbers:
            numbers.append(numbers[int(rng.integers(max(0, len(numbers) - 20), len(numbers)))])
        elif r < 0.10:
            seq += int(rng.integers(2, 6))      # a gap, sometimes filled later
            numbers.append(seq)
            if rng.random() < 0.5:
                numbers.append(seq - 1)
        else:
            seq += 1
            numbers.append(seq)
    dgrams = seqs(1, numbers)
    samples = [(1, 7, n) for n in numbers]

    def run(splits: list[int]) -> dict[str, Any]:
        st = AgentStats(clock=Clock())
        for a, b in zip([0, *splits], [*splits, len(dgrams)], strict=True):
            st.add(batch(dgrams[a:b], counters=samples[a:b]))
        return {k: snap(st)[k] for k in _COUNTS}

    whole = run([])
    assert whole == run(sorted(set(rng.integers(1, len(dgrams), 15).tolist())))
    assert whole == run(list(range(1, len(dgrams))))


# ------------------------------------------------------------------ robust inputs and bounds
def test_sequence_wrap_is_not_a_restart() -> None:
    """Issue #11 attack 11: 0xFFFFFFFF -> 0 is the next datagram."""
    st = AgentStats(clock=Clock())
    st.add(batch([(1, 0, 0xFFFFFFFD, 1000), (1, 0, 0xFFFFFFFE, 1010)]))
    st.add(batch([(1, 0, 0xFFFFFFFF, 1020), (1, 0, 0, 1030), (1, 0, 2, 1040)]))
    st.add(batch([(1, 0, 1, 1050)], counters=[(1, 1, 0xFFFFFFFF), (1, 1, 1)]))  # late; gap of 1
    s = snap(st)
    assert s["sFlowAgentRestarts"] == 0
    assert s["sFlowDatagramsLost"] == 0 and s["sFlowDatagramsOutOfOrder"] == 1
    assert s["sFlowCounterSamplesLost"] == 1


def test_implausible_jump_is_counted_apart_not_as_loss() -> None:
    st = AgentStats(clock=Clock())
    st.add(batch([(1, 0, 1, 1000), (1, 0, 2, 1010), (1, 0, 1_000_000_000, 1020),
                  (1, 0, 1_000_000_001, 1030), (1, 0, 1_000_000_003, 1040)],
                 counters=[(1, 1, 5), (1, 1, 900_000_000), (1, 1, 900_000_002)]))
    s = snap(st)
    assert s["sFlowDatagramsLost"] == 1 and s["sFlowDatagramSequenceJumps"] == 1
    assert s["sFlowAgentRestarts"] == 0
    assert s["sFlowCounterSamplesLost"] == 1 and s["sFlowSampleSequenceJumps"] == 1


def test_agent_and_stream_caps_refuse_count_and_evict_the_stalest() -> None:
    clock = Clock(1000.0)
    st = AgentStats(clock=clock, max_agents=2, max_streams=3)
    st.housekeeping(1000.0)
    st.add(batch([(1, 0, 1, 10), (1, 5, 1, 10), (2, 0, 1, 10), (3, 0, 1, 10)], ts=999.0))
    assert st.agents() == ["192.0.2.1", "192.0.2.2"]
    st.add(batch([(2, 9, 1, 10)], ts=999.5))              # a 4th stream: refused
    stats = st.stats()
    assert stats["rejected_agents"] == 1 and stats["rejected_streams"] == 1
    assert st.refusals() == {"agents_full": 2}
    assert snap(st, "192.0.2.2")["sFlowDatagramsReceived"] == 2   # still counted for its agent
    clock.t = 1002.0
    st.tick()                                            # the stalest agent goes
    assert st.agents() == ["192.0.2.2"] and st.stats()["evicted"] == 1
    st.add(batch([(3, 0, 1, 10)], ts=1002.0))
    assert st.agents() == ["192.0.2.2", "2001:db8::5"]
    assert st.stats()["streams"] == 2


def test_silent_agents_expire_and_sample_state_rotates() -> None:
    clock = Clock(1000.0)
    st = AgentStats(clock=clock, expire_after=60.0, sample_ttl=30.0)
    st.add(batch(seqs(1, [1]), counters=[(1, 1, 1)], ts=1000.0))
    st.add(batch(seqs(2, [1]), counters=[(2, 1, 1)], ts=1000.0))
    for t in (1031.0, 1050.0):
        clock.t = t
        st.add(batch([(2, 0, int(t), 10)], counters=[(2, 1, int(t))], ts=t))
    assert st.stats()["sample_sources"] == 2         # agent 1's source: in the old generation
    clock.t = 1070.0
    st.tick()                                        # rotation: it goes; agent 1 expires
    assert st.stats()["sample_sources"] == 1
    assert st.agents() == ["192.0.2.2"] and st.stats()["expired"] == 1


def test_sample_state_is_bounded_and_shrinks() -> None:
    clock = Clock(1000.0)
    st = AgentStats(clock=clock, max_sources=100, sample_ttl=10.0)
    st.add(batch(seqs(1, [1]), counters=[(1, i, 5) for i in range(250)], ts=1000.0))
    s = st.stats()
    assert s["sample_sources"] == 150 and s["sample_state_evicted"] == 100   # 2 rotations
    # a source of the older generation still counts gaps; the dropped ones start afresh
    st.add(batch(seqs(1, [2]), counters=[(1, 249, 8), (1, 10, 9)], ts=1000.0))
    assert snap(st)["sFlowCounterSamplesLost"] == 2
    big = st.stats()["bytes"]
    for t in (1011.0, 1022.0, 1033.0):                    # silence: generations rotate away
        clock.t = t
        st.tick()
    assert st.stats()["sample_sources"] == 0
    grown = AgentStats(clock=Clock(1000.0), max_sources=1_000_000, sample_ttl=10.0)
    grown.add(batch(seqs(1, [1]), counters=[(1, i, 5) for i in range(5000)], ts=1000.0))
    peak = grown.stats()["bytes"]
    for t in (1011.0, 1022.0, 1033.0):
        grown.clock.t = t
        grown.tick()
    assert grown.stats()["bytes"] < peak / 4 and big > 0
