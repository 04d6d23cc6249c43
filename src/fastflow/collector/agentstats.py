"""Per-agent accounting (sFlow-RT's ``/agents/json``): datagrams, loss, duplicates, restarts.

:class:`AgentStats` is a pipeline sink. For every agent it counts datagrams received and, from the
datagram sequence numbers of each sub-agent (a *stream*):

* **lost**: sequence numbers skipped (a jump from s to s+k counts k-1), minus gaps later filled by
  late datagrams;
* **duplicated**: a sequence number seen again (a bitmap of the last :data:`SEQ_WINDOW` numbers
  per stream);
* **out of order**: a new sequence number lower than the highest seen (it fills a gap);
* **restarts**: the sequence number went backwards together with the agent's uptime (by more than
  :data:`RESTART_UPTIME_MS`), or reset to a small number (<= :data:`RESTART_SEQ`) from far above.
  A restart starts the stream's counting afresh;
* **sequence jumps** (``sFlowDatagramSequenceJumps``): a forward jump of more than
  :data:`MAX_JUMP` is not plausible loss (a spoofed or corrupted number); it is counted here and
  counting goes on from the new number. Sequence numbers are compared modulo 2**32, so the wrap
  0xFFFFFFFF -> 0 is the next number, not a restart.

Per data source (agent + source id), sample sequence gaps give ``sFlowFlowSamplesLost`` and
``sFlowCounterSamplesLost`` (implausible jumps counted in ``sFlowSampleSequenceJumps``).

The per-row work runs in compiled code (:mod:`fastflow.collector._agentstats`, or its pure-Python
twin :mod:`fastflow.collector._pyagentstats`). Every table is bounded:

* agents (``max_agents``) and sub-agent streams (``max_streams``): a datagram of a new agent (or
  stream) when the table is full is refused and counted (``rejected_agents`` /
  ``rejected_streams``); the next housekeeping pass (once a second) logs it (rate limited) and
  evicts the stalest 1/16 of the agents. Agents silent for ``expire_after`` seconds are dropped
  with their streams, and the tables are compacted (memory given back);
* per data source sample-sequence state (:class:`SeqTable`, ~32 bytes a source): two generations
  of at most ``max_sources`` entries each; the older generation is dropped every ``sample_ttl``
  seconds (or when the newer fills up, counted ``sample_state_evicted``): a data source not seen
  for that long starts counting afresh.

State is keyed by the decoder's agent index (the pipeline's decoder lives as long as the service);
the agent's address text is kept per agent.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from fastflow._intern import renumber
from fastflow.collector import compiled_or_twin
from fastflow.collector.store import trim_heap

log = logging.getLogger(__name__)

__all__ = ["AgentStats", "SEQ_WINDOW", "RESTART_SEQ", "RESTART_UPTIME_MS", "MAX_JUMP"]

SEQ_WINDOW = 4096          # recent datagram sequence numbers remembered per sub-agent (a bitmap)
RESTART_SEQ = 16           # a sequence number this small after a much larger one: agent restarted
RESTART_UPTIME_MS = 5000   # uptime going back further than this (with the sequence): restarted
SAMPLE_RESET = 1 << 16     # a sample sequence this far below the highest: the source was reset
MAX_JUMP = 1 << 22         # a forward jump larger than this is not loss (counted apart)

DEFAULT_MAX_AGENTS = 65_536
DEFAULT_MAX_STREAMS = 131_072
DEFAULT_MAX_SOURCES = 300_000
DEFAULT_EXPIRE_AFTER = 3600.0
DEFAULT_SAMPLE_TTL = 600.0

(A_DGRAMS, A_LOST, A_DUP, A_OOO, A_RESTARTS, A_ERRORS, A_FLOWS, A_COUNTERS, A_FLOW_LOST,
 A_COUNTER_LOST, A_JUMPS, A_SAMPLE_JUMPS, A_UPTIME, A_STREAMS) = range(14)
_NF = 14
(H_AGENTS, H_AGENTS_LIVE, H_STREAMS, H_STREAMS_LIVE, H_REJ_AGENTS, H_REJ_STREAMS, H_REJ_SAMPLES,
 H_FULL) = range(8)
_WORDS = SEQ_WINDOW // 64
_MIN_CAP = 16
_LOG_EVERY = 10.0


def kernel_class(pure_python: bool | None = None) -> type:
    """Compiled accounting kernel unless ``pure_python`` (default: FASTFLOW_PURE_PYTHON=1)."""
    return compiled_or_twin(("fastflow.collector._agentstats", "AgentKernel"),
                            ("fastflow.collector._pyagentstats", "PyAgentKernel"), pure_python)


def _cap_for(n: int) -> int:
    cap = _MIN_CAP
    while cap < n:
        cap *= 2
    return cap


class SeqTable:
    """Per data source highest sample sequence number: open addressing (``keys`` 0 = empty,
    else key + 1; linear probing), two generations by ``stamp`` (an entry is live when its stamp
    is the current generation or the one before). ``meta``: generation, entries of the current
    generation, of the older one, slots used, entries dropped because the current one filled.
    16 bytes a slot, at most half the slots used: ~32 bytes a data source."""

    def __init__(self, capacity: int = 1024) -> None:
        self.keys = np.zeros(capacity, np.uint64)
        self.hi = np.zeros(capacity, np.uint32)
        self.stamp = np.zeros(capacity, np.uint32)
        self.meta = np.array([1, 0, 0, 0, 0], np.int64)

    def __len__(self) -> int:
        return int(self.meta[1] + self.meta[2])

    @property
    def evicted(self) -> int:
        return int(self.meta[4])

    def reserve(self, kernel: Any, n: int) -> None:
        """Room for ``n`` more keys at a load of at most one half (rehashing live entries)."""
        if (int(self.meta[3]) + n) * 2 > len(self.keys):
            kernel.rehash(self, _pow2(max(1024, 4 * (len(self) + n))))

    def rotate(self, kernel: Any) -> None:
        """A new generation: entries not seen during the last two are dropped; the arrays shrink
        when most of their slots hold dropped entries."""
        m = self.meta
        m[0] += 1
        m[2] = m[1]
        m[1] = 0
        if int(m[3]) > 4 * len(self) + 1024:
            kernel.rehash(self, _pow2(max(1024, 4 * len(self))))

    def nbytes(self) -> int:
        return int(self.keys.nbytes + self.hi.nbytes + self.stamp.nbytes)


def _pow2(n: int) -> int:
    cap = 1
    while cap < n:
        cap *= 2
    return cap


class AgentStats:
    """Pipeline sink keeping per-agent datagram and sample accounting (see module docstring)."""

    def __init__(self, clock: Any = None, *, max_agents: int = DEFAULT_MAX_AGENTS,
                 max_streams: int = DEFAULT_MAX_STREAMS, max_sources: int = DEFAULT_MAX_SOURCES,
                 expire_after: float = DEFAULT_EXPIRE_AFTER,
                 sample_ttl: float = DEFAULT_SAMPLE_TTL, pure_python: bool | None = None) -> None:
        for name, v in (("max_agents", max_agents), ("max_streams", max_streams),
                        ("max_sources", max_sources)):
            if int(v) < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        if not expire_after > 0 or not sample_ttl > 0:
            raise ValueError("expire_after and sample_ttl must be > 0 seconds")
        self.clock = clock
        self.max_agents = int(max_agents)
        self.max_streams = int(max_streams)
        self.max_sources = int(max_sources)
        self.expire_after = float(expire_after)
        self.sample_ttl = float(sample_ttl)
        self.max_jump = MAX_JUMP
        self.restart_seq = RESTART_SEQ
        self.restart_uptime_ms = RESTART_UPTIME_MS
        self._hw = np.zeros(8, np.int64)
        e32 = np.zeros(0, np.uint32)
        self._acnt: np.ndarray = np.zeros((0, _NF), np.int64)
        self._atime: np.ndarray = np.zeros((0, 3), np.float64)   # first, last (ts), touched
        self._aid: np.ndarray = e32
        self._smax: np.ndarray = e32
        self._sfirst: np.ndarray = e32
        self._sup: np.ndarray = e32
        self._sagent: np.ndarray = e32
        self._swin: np.ndarray = np.zeros((0, _WORDS), np.uint64)
        self.expired = self.evicted = 0
        self._names: list[str] = []
        self._aindex: dict[int, int] = {}
        self._sindex: dict[int, int] = {}
        self._state: dict[str, SeqTable] = {"flow": SeqTable(), "counter": SeqTable()}
        self._last_rotate = self._last_house = self._last_full_log = -np.inf
        self._alloc_agents(_MIN_CAP, None)
        self._alloc_streams(_MIN_CAP, None)
        self._kernel: Any = kernel_class(pure_python)(self)
        self._kernel.bind()

    # ------------------------------------------------------------------------------ tables
    def _alloc_agents(self, cap: int, keep: np.ndarray | None) -> None:
        n = int(self._hw[H_AGENTS]) if keep is None else len(keep)
        src: Any = slice(0, n) if keep is None else keep
        acnt = np.zeros((cap, _NF), np.int64)
        atime = np.zeros((cap, 3), np.float64)
        aid = np.zeros(cap, np.uint32)
        if n:
            acnt[:n], atime[:n], aid[:n] = self._acnt[src], self._atime[src], self._aid[src]
        self._acnt, self._atime, self._aid = acnt, atime, aid
        self._hw[H_AGENTS] = n

    def _alloc_streams(self, cap: int, keep: np.ndarray | None) -> None:
        n = int(self._hw[H_STREAMS]) if keep is None else len(keep)
        src: Any = slice(0, n) if keep is None else keep
        new: dict[str, np.ndarray] = {
            "_smax": np.zeros(cap, np.uint32), "_sfirst": np.zeros(cap, np.uint32),
            "_sup": np.zeros(cap, np.uint32), "_sagent": np.zeros(cap, np.uint32),
            "_swin": np.zeros((cap, _WORDS), np.uint64)}
        for name, arr in new.items():
            if n:
                arr[:n] = getattr(self, name)[src]
            setattr(self, name, arr)
        self._hw[H_STREAMS] = n

    def _named(self, slot: int, name: str) -> None:
        """Called by the kernel for a new agent slot."""
        if slot == len(self._names):
            self._names.append(name)
        else:
            self._names[slot] = name

    def _now(self) -> float:
        if self.clock is not None:
            return float(self.clock.now())
        return time.time()

    # ------------------------------------------------------------------------------------ sink
    def add(self, tables: Any) -> None:
        """Account one decoded batch (``datagrams``, ``counters``, ``flows`` tables, ``agents``)."""
        dg = tables.datagrams
        now = self._now()
        if len(dg):
            k = self._kernel
            i = k.datagrams(dg, tables.agents, now, 0)
            while i < len(dg):
                if k.need == 1:
                    self._alloc_agents(_cap_for(len(self._acnt) * 2), None)
                else:
                    self._alloc_streams(_cap_for(len(self._smax) * 2), None)
                k.bind()
                i = k.datagrams(dg, tables.agents, now, i)
        for kind, tab in (("flow", tables.flows), ("counter", tables.counters)):
            if len(tab):
                st = self._state[kind]
                st.reserve(self._kernel, len(tab))
                self._kernel.samples(tab, kind == "flow", st, self.max_sources, SAMPLE_RESET)
        if not 0.0 <= now - self._last_house < 1.0:
            self.housekeeping(now)

    # ---------------------------------------------------------------------------- housekeeping
    def tick(self) -> None:
        """Housekeeping without a batch (at most once a second)."""
        now = self._now()
        if not 0.0 <= now - self._last_house < 1.0:
            self.housekeeping(now)

    def housekeeping(self, now: float | None = None) -> None:
        """Expire silent agents, evict the stalest when the table was full, rotate the sample
        state, compact the tables (memory given back)."""
        if now is None:
            now = self._now()
        self._last_house = now
        if not 0.0 <= now - self._last_rotate < self.sample_ttl:
            if self._last_rotate > -np.inf:
                for st in self._state.values():
                    st.rotate(self._kernel)
            self._last_rotate = now
        n = int(self._hw[H_AGENTS])
        live = np.zeros(n, bool)
        if self._aindex:
            live[np.fromiter(self._aindex.values(), np.int64, len(self._aindex))] = True
        last = self._atime[:n, 2]                   # clock time of the newest datagram
        gone = live & (last < now - self.expire_after)
        self.expired += int(gone.sum())
        refused = int(self._hw[H_FULL])
        if refused:
            self._hw[H_FULL] = 0
            cand = np.nonzero(live & ~gone)[0]
            m = min(len(cand), max(1, self.max_agents // 16))
            if m:
                stalest = cand[np.argpartition(last[cand], m - 1)[:m]]
                gone[stalest] = True
                self.evicted += m
            if now - self._last_full_log >= _LOG_EVERY or now < self._last_full_log:
                self._last_full_log = now
                log.warning("agent statistics full (max_agents=%d, max_streams=%d): refused %d "
                            "datagrams of new agents/sub-agents; evicted the %d stalest agents",
                            self.max_agents, self.max_streams, refused, m)
        if gone.any():
            self._drop(np.nonzero(live & ~gone)[0])
            trim_heap()

    def _drop(self, keep: np.ndarray) -> None:
        """Keep only agents ``keep`` (slots) and their streams; compact every table."""
        ids = self._aid[keep]
        self._alloc_agents(_cap_for(2 * len(keep)), keep)
        self._names = [self._names[i] for i in keep.tolist()]
        self._aindex = dict(zip(ids.tolist(), range(len(keep)), strict=True))
        self._hw[H_AGENTS_LIVE] = len(keep)
        ns = int(self._hw[H_STREAMS])
        skeys = np.zeros(ns, np.uint64)
        sl = np.zeros(ns, np.int64)
        if self._sindex:
            skeys = np.fromiter(self._sindex.keys(), np.uint64, len(self._sindex))
            sl = np.fromiter(self._sindex.values(), np.int64, len(self._sindex))
        ok = np.isin(self._sagent[sl], ids)
        skeep = sl[ok]
        self._alloc_streams(_cap_for(2 * len(skeep)), skeep)
        self._sindex = dict(zip(skeys[ok].tolist(), range(len(skeep)), strict=True))
        self._hw[H_STREAMS_LIVE] = len(skeep)
        self._kernel.bind()

    # ------------------------------------------------------------------------ intern indices
    def interned_refs(self) -> tuple[np.ndarray, np.ndarray]:
        """(string indices, agent indices) held: the agents and sub-agent streams tracked."""
        a = np.fromiter(self._aindex.keys(), np.int64, len(self._aindex))
        st = np.fromiter(self._sindex.keys(), np.uint64, len(self._sindex)) >> np.uint64(32)
        return np.zeros(0, np.int64), np.concatenate([a, st.astype(np.int64)])

    def remap_interned(self, smap: np.ndarray, amap: np.ndarray) -> None:
        """Renumber agent indices after the decoder compacted its tables (old -> new). Sample
        sequence state of agents no longer tracked is dropped (it starts afresh)."""
        live = np.fromiter(self._aindex.values(), np.int64, len(self._aindex))
        self._aid[live] = amap[self._aid[live]]
        self._aindex = dict(zip(self._aid[live].tolist(), live.tolist(), strict=True))
        sl = np.fromiter(self._sindex.values(), np.int64, len(self._sindex))
        self._sagent[sl] = amap[self._sagent[sl]]
        sub = np.fromiter(self._sindex.keys(), np.uint64, len(self._sindex)) & np.uint64(0xFFFFFFFF)
        skeys = (self._sagent[sl].astype(np.uint64) << np.uint64(32)) | sub
        self._sindex = dict(zip(skeys.tolist(), sl.tolist(), strict=True))
        low = np.uint64((1 << 40) - 1)
        for st in self._state.values():
            used = st.keys != 0
            k = st.keys[used] - np.uint64(1)
            new, gone = renumber(amap, (k >> np.uint64(40)).astype(np.int64))
            nk = ((new.astype(np.uint64) << np.uint64(40)) | (k & low)) + np.uint64(1)
            nk[gone] = 0                        # an empty slot: rehash leaves it behind
            st.keys[used] = nk
            self._kernel.rehash(st, len(st.keys))
        self._kernel.bind()

    # --------------------------------------------------------------------------------- queries
    def _slots(self) -> list[tuple[str, int]]:
        return sorted((self._names[a], a) for a in self._aindex.values())

    def agents(self) -> list[str]:
        """Addresses of every agent tracked."""
        return [name for name, _a in self._slots()]

    def snapshot(self, agent: str | None = None) -> dict[str, dict[str, Any]]:
        """JSON-ready per-agent figures, shaped like sFlow-RT's ``/agents/json``.

        ``lastUpdate`` and ``firstSeen`` are milliseconds ago by the clock; ``uptime`` is the agent's
        own uptime (ms) from its newest datagram.
        """
        now = self._now()
        out: dict[str, dict[str, Any]] = {}
        for name, a in self._slots():
            if agent is not None and name != agent:
                continue
            c = self._acnt[a].tolist()
            first, last, _touched = self._atime[a].tolist()
            out[name] = {
                "sFlowDatagramsReceived": c[A_DGRAMS],
                "sFlowDatagramsLost": max(c[A_LOST], 0),
                "sFlowDatagramsDuplicated": c[A_DUP],
                "sFlowDatagramsOutOfOrder": c[A_OOO],
                "sFlowDatagramErrors": c[A_ERRORS],
                "sFlowAgentRestarts": c[A_RESTARTS],
                "sFlowDatagramSequenceJumps": c[A_JUMPS],
                "sFlowFlowSamples": c[A_FLOWS],
                "sFlowCounterSamples": c[A_COUNTERS],
                "sFlowFlowSamplesLost": c[A_FLOW_LOST],
                "sFlowCounterSamplesLost": c[A_COUNTER_LOST],
                "sFlowSampleSequenceJumps": c[A_SAMPLE_JUMPS],
                "sFlowSubAgents": c[A_STREAMS],
                "lastUpdate": max(int(round((now - last) * 1000)), 0),
                "firstSeen": max(int(round((now - first) * 1000)), 0),
                "uptime": c[A_UPTIME],
            }
        return out

    def refusals(self) -> dict[str, int]:
        """Datagrams / samples refused because the agent or stream table was full."""
        h = self._hw
        return {"agents_full": int(h[H_REJ_AGENTS] + h[H_REJ_STREAMS] + h[H_REJ_SAMPLES])}

    def stats(self) -> dict[str, Any]:
        """Table sizes, caps and refusals (for /healthz and /errors/json)."""
        h = self._hw
        return {
            "agents": int(h[H_AGENTS_LIVE]), "max_agents": self.max_agents,
            "streams": int(h[H_STREAMS_LIVE]), "max_streams": self.max_streams,
            "sample_sources": sum(len(t) for t in self._state.values()),
            "max_sources": self.max_sources,
            "rejected_agents": int(h[H_REJ_AGENTS]), "rejected_streams": int(h[H_REJ_STREAMS]),
            "rejected_samples": int(h[H_REJ_SAMPLES]),
            "expired": self.expired, "evicted": self.evicted,
            "sample_state_evicted": sum(t.evicted for t in self._state.values()),
            "bytes": int(self._acnt.nbytes + self._atime.nbytes + self._aid.nbytes
                         + sum(getattr(self, a).nbytes
                               for a in ("_smax", "_sfirst", "_sup", "_sagent", "_swin"))
                         + sum(t.nbytes() for t in self._state.values())),
        }

    def reset(self) -> None:
        """Forget every agent."""
        self._drop(np.zeros(0, np.int64))
        self._state = {"flow": SeqTable(), "counter": SeqTable()}
