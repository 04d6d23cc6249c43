"""Per-agent accounting (sFlow-RT's ``/agents/json``): datagrams, loss, duplicates, restarts.

:class:`AgentStats` is a pipeline sink. For every agent it counts datagrams received and, from the
datagram sequence numbers of each sub-agent:

* **lost**: sequence numbers skipped (a jump from s to s+k counts k-1), minus gaps later filled by
  late datagrams;
* **duplicated**: a sequence number seen again (kept in a window of the last
  :data:`SEQ_WINDOW` numbers);
* **out of order**: a new sequence number lower than the highest seen (it fills a gap);
* **restarts**: the sequence number went backwards together with the agent's uptime (by more than
  :data:`RESTART_UPTIME_MS`), or reset to a small number (<= :data:`RESTART_SEQ`) from far above.
  A restart starts the sub-agent's counting afresh.

Per data source (agent + source id), sample sequence gaps give ``sFlowFlowSamplesLost`` and
``sFlowCounterSamplesLost``, separately. Batches are processed with numpy (grouping by stable sorts,
running maxima, set membership); Python loops run over agents / sub-agents only, never datagrams.
State is keyed by the agent's address text, so it survives decoder restarts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["AgentStats", "SEQ_WINDOW", "RESTART_SEQ", "RESTART_UPTIME_MS"]

SEQ_WINDOW = 4096          # recent datagram sequence numbers remembered per sub-agent
RESTART_SEQ = 16           # a sequence number this small after a much larger one: agent restarted
RESTART_UPTIME_MS = 5000   # uptime going back further than this (with the sequence): restarted
SAMPLE_RESET = 1 << 16     # a sample sequence this far below the highest: the source was reset
_GROUP_SHIFT = 33          # key = group << 33 | seq keeps running maxima inside their group


@dataclass
class _Stream:
    """One sub-agent's datagram sequence state."""

    max_seq: int = -1
    first_seq: int = -1
    max_uptime: int = 0
    recent: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


@dataclass
class _Agent:
    first_seen: float
    last_seen: float = 0.0
    uptime: int = 0
    datagrams: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    restarts: int = 0
    errors: int = 0
    flow_samples: int = 0
    counter_samples: int = 0
    flow_lost: int = 0
    counter_lost: int = 0
    streams: dict[int, _Stream] = field(default_factory=dict)


class AgentStats:
    """Pipeline sink keeping per-agent datagram and sample accounting (see module docstring)."""

    def __init__(self, clock: Any = None) -> None:
        self.clock = clock
        self._agents: dict[str, _Agent] = {}
        # sample sequence state: (agent text, source_id_type, source_id_index) -> highest seq
        self._sample_max: dict[str, dict[tuple[str, int, int], int]] = {"flow": {},
                                                                         "counter": {}}

    def _now(self) -> float:
        if self.clock is not None:
            return float(self.clock.now())
        import time  # noqa: PLC0415

        return time.time()

    # ------------------------------------------------------------------------------------ sink
    def add(self, tables: Any) -> None:
        """Account one decoded batch (``datagrams``, ``counters``, ``flows`` tables, ``agents``)."""
        dg = tables.datagrams
        if len(dg) == 0 and len(tables.counters) == 0 and len(tables.flows) == 0:
            return
        names = tables.agents
        now = self._now()
        if len(dg):
            self._datagrams(dg, names, now)
        if len(tables.flows):
            self._samples(tables.flows, names, "flow")
        if len(tables.counters):
            self._samples(tables.counters, names, "counter")

    def _agent(self, name: str, t: float) -> _Agent:
        a = self._agents.get(name)
        if a is None:
            a = self._agents[name] = _Agent(first_seen=t)
        return a

    def _datagrams(self, dg: np.ndarray, names: Any, now: float) -> None:
        agent = dg["agent"].astype(np.uint64)
        sub = dg["sub_agent_id"].astype(np.uint64)
        key = (agent << np.uint64(32)) | sub
        order = np.argsort(key, kind="stable")  # arrival order kept inside each stream
        skey = key[order]
        starts = np.flatnonzero(np.r_[True, skey[1:] != skey[:-1]])
        ends = np.r_[starts[1:], len(skey)]
        seq_all = dg["sequence_number"].astype(np.int64)[order]
        up_all = dg["uptime"].astype(np.int64)[order]
        ts_all = dg["ts"][order]
        bad_all = dg["status"][order] != 0
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            k = int(skey[s])
            name = names[k >> 32] or "unknown"
            ts = ts_all[s:e]
            tmax = float(ts.max())
            t = tmax if tmax > 0 else now
            tmin = float(ts.min())
            a = self._agent(name, tmin if tmin > 0 else now)
            a.last_seen = max(a.last_seen, t)
            a.datagrams += e - s
            a.errors += int(np.count_nonzero(bad_all[s:e]))
            a.uptime = int(up_all[e - 1])
            st = a.streams.get(k & 0xFFFFFFFF)
            if st is None:
                st = a.streams[k & 0xFFFFFFFF] = _Stream()
            self._sequence(a, st, seq_all[s:e], up_all[s:e])

    def _sequence(self, a: _Agent, st: _Stream, seq: np.ndarray, up: np.ndarray) -> None:
        """Loss / duplicate / reorder / restart accounting for one sub-agent's datagrams."""
        while len(seq):
            # restart candidates: the sequence goes back, and the uptime goes back a lot or the
            # sequence restarts from (almost) the beginning
            prev_max = np.maximum.accumulate(np.r_[st.max_seq, seq])[:-1]
            prev_up = np.maximum.accumulate(np.r_[st.max_uptime, up])[:-1]
            has_prev = prev_max >= 0
            restart = has_prev & (seq < prev_max) & (
                (up + RESTART_UPTIME_MS < prev_up)
                | ((seq <= RESTART_SEQ) & (prev_max - seq > SEQ_WINDOW // 4)))
            cut = int(np.argmax(restart)) if restart.any() else len(seq)
            self._segment(a, st, seq[:cut], up[:cut], prev_max[:cut])
            if cut == len(seq):
                return
            a.restarts += 1
            st.max_seq, st.first_seq, st.max_uptime = -1, -1, 0
            st.recent = np.zeros(0, np.int64)
            seq, up = seq[cut:], up[cut:]

    def _segment(self, a: _Agent, st: _Stream, seq: np.ndarray, up: np.ndarray,
                 prev_max: np.ndarray) -> None:
        if len(seq) == 0:
            return
        if st.first_seq < 0:
            st.first_seq = int(seq[0])
        if int(seq[0]) > st.max_seq and (len(seq) == 1 or bool((seq[1:] > seq[:-1]).all())):
            # the common case, in order: no duplicate, nothing late; only gaps to count
            if st.max_seq >= 0:
                a.lost += int(seq[0]) - st.max_seq - 1
            a.lost += int(seq[-1] - seq[0]) - (len(seq) - 1)
            st.max_seq = int(seq[-1])
            st.max_uptime = max(st.max_uptime, int(up.max()))
            recent = np.concatenate((st.recent, seq))  # still sorted: every number is new
            st.recent = recent[recent > st.max_seq - SEQ_WINDOW]
            return
        # duplicates: seen in the remembered window, or earlier in this batch
        _u, first_idx = np.unique(seq, return_index=True)
        first_in_batch = np.zeros(len(seq), bool)
        first_in_batch[first_idx] = True
        dup = ~first_in_batch | np.isin(seq, st.recent)
        new_max = (seq > prev_max) & ~dup
        gaps = np.where(new_max & (prev_max >= 0), seq - prev_max - 1, 0)
        late = ~dup & ~new_max          # a new number below the highest: out of order
        fills = late & (seq > st.first_seq)
        a.duplicated += int(np.count_nonzero(dup))
        a.out_of_order += int(np.count_nonzero(late))
        a.lost += int(gaps.sum()) - int(np.count_nonzero(fills))
        st.max_seq = max(st.max_seq, int(seq.max()))
        st.max_uptime = max(st.max_uptime, int(up.max()))
        recent = np.union1d(st.recent, seq)
        st.recent = recent[recent > st.max_seq - SEQ_WINDOW]

    def _samples(self, tab: np.ndarray, names: Any, kind: str) -> None:
        """Per data source sample-sequence gaps (vectorised over all sources of the batch)."""
        agent = tab["agent"].astype(np.int64)
        seq = tab["sequence_number"].astype(np.int64)
        stype = tab["source_id_type"].astype(np.int64)
        sindex = tab["source_id_index"].astype(np.int64)
        if len(tab) and int(stype.max()) < 256 and int(agent.max()) < (1 << 23):
            # one integer per data source: hashing integers is far cheaper than sorting records
            packed = (agent << 40) | (stype << 32) | sindex
            uniq_p, group = np.unique(packed, return_inverse=True)
            keys = [(names[p >> 40] or "unknown", (p >> 32) & 0xFF, p & 0xFFFFFFFF)
                    for p in uniq_p.tolist()]
        else:
            rec = np.empty(len(tab), dtype=[("a", "<i8"), ("t", "<i8"), ("i", "<i8")])
            rec["a"], rec["t"], rec["i"] = agent, stype, sindex
            uniq, group = np.unique(rec, return_inverse=True)
            keys = [(names[a] or "unknown", t, i) for a, t, i in uniq.tolist()]
        group = group.reshape(-1).astype(np.int64)
        state = self._sample_max[kind]
        # the stored highest sequence of each known source goes in front of its group
        known = [(gi, state[k]) for gi, k in enumerate(keys) if k in state]
        g0 = np.array([gi for gi, _ in known], np.int64)
        s0 = np.array([v for _, v in known], np.int64)
        g_ext = np.r_[g0, group]
        s_ext = np.r_[s0, seq]
        real_ext = np.r_[np.zeros(len(g0), bool), np.ones(len(group), bool)]
        order = np.argsort(g_ext, kind="stable")  # stored value first, then arrival order
        g, s, real = g_ext[order], s_ext[order], real_ext[order]
        acc = np.maximum.accumulate((g << _GROUP_SHIFT) | s) - (g << _GROUP_SHIFT)
        first = np.r_[True, g[1:] != g[:-1]]
        prev = np.where(first, -1, np.r_[np.int64(-1), acc[:-1]])
        gap = np.where(real & (prev >= 0) & (s > prev), s - prev - 1, 0)
        lost = np.bincount(g, weights=gap, minlength=len(keys)).astype(np.int64)
        last_pos = np.r_[np.flatnonzero(first)[1:], len(g)] - 1
        for p_last in last_pos.tolist():
            gi = int(g[p_last])
            hi, last = int(acc[p_last]), int(s[p_last])
            # far below the highest: the source was reset; count from its new numbers
            state[keys[gi]] = last if last < hi - SAMPLE_RESET else hi
            if lost[gi]:
                a = self._agent(keys[gi][0], self._now())
                if kind == "flow":
                    a.flow_lost += int(lost[gi])
                else:
                    a.counter_lost += int(lost[gi])
        counts = np.bincount(agent)
        for ai in np.flatnonzero(counts).tolist():
            a = self._agent(names[ai] or "unknown", self._now())
            if kind == "flow":
                a.flow_samples += int(counts[ai])
            else:
                a.counter_samples += int(counts[ai])

    # --------------------------------------------------------------------------------- queries
    def agents(self) -> list[str]:
        """Addresses of every agent seen."""
        return sorted(self._agents)

    def snapshot(self, agent: str | None = None) -> dict[str, dict[str, Any]]:
        """JSON-ready per-agent figures, shaped like sFlow-RT's ``/agents/json``.

        ``lastUpdate`` and ``firstSeen`` are milliseconds ago by the clock; ``uptime`` is the agent's
        own uptime (ms) from its newest datagram.
        """
        now = self._now()
        out: dict[str, dict[str, Any]] = {}
        for name, a in sorted(self._agents.items()):
            if agent is not None and name != agent:
                continue
            out[name] = {
                "sFlowDatagramsReceived": a.datagrams,
                "sFlowDatagramsLost": max(a.lost, 0),
                "sFlowDatagramsDuplicated": a.duplicated,
                "sFlowDatagramsOutOfOrder": a.out_of_order,
                "sFlowDatagramErrors": a.errors,
                "sFlowAgentRestarts": a.restarts,
                "sFlowFlowSamples": a.flow_samples,
                "sFlowCounterSamples": a.counter_samples,
                "sFlowFlowSamplesLost": a.flow_lost,
                "sFlowCounterSamplesLost": a.counter_lost,
                "sFlowSubAgents": len(a.streams),
                "lastUpdate": max(int(round((now - a.last_seen) * 1000)), 0),
                "firstSeen": max(int(round((now - a.first_seen) * 1000)), 0),
                "uptime": a.uptime,
            }
        return out

    def reset(self) -> None:
        """Forget every agent."""
        self._agents.clear()
        for d in self._sample_max.values():
            d.clear()
