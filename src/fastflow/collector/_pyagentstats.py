"""Pure-Python twin of :mod:`fastflow.collector._agentstats` (same rules, same arrays, row by row).
Used when the extension is not built or ``FASTFLOW_PURE_PYTHON=1``; the agentstats tests run
against both."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from fastflow.collector.agentstats import AgentStats

__all__ = ["PyAgentKernel"]

(A_DGRAMS, A_LOST, A_DUP, A_OOO, A_RESTARTS, A_ERRORS, A_FLOWS, A_COUNTERS, A_FLOW_LOST,
 A_COUNTER_LOST, A_JUMPS, A_SAMPLE_JUMPS, A_UPTIME, A_STREAMS) = range(14)
(H_AGENTS, H_AGENTS_LIVE, H_STREAMS, H_STREAMS_LIVE, H_REJ_AGENTS, H_REJ_STREAMS, H_REJ_SAMPLES,
 H_FULL) = range(8)
WINDOW = 4096
_WMASK = (1 << WINDOW) - 1


def _i32(x: int) -> int:
    return ((x + 0x80000000) & 0xFFFFFFFF) - 0x80000000


class PyAgentKernel:
    """Same interface as ``_agentstats.AgentKernel``."""

    def __init__(self, owner: AgentStats) -> None:
        self.owner = owner
        self.need = 0

    def bind(self) -> None:
        """Nothing cached: arrays are read from the owner on every call."""

    @staticmethod
    def _win(o: AgentStats, s: int) -> int:
        return int.from_bytes(o._swin[s].tobytes(), "little")

    @staticmethod
    def _set_win(o: AgentStats, s: int, v: int) -> None:
        o._swin[s] = np.frombuffer((v & _WMASK).to_bytes(WINDOW // 8, "little"), np.uint64)

    def datagrams(self, dg: np.ndarray, names: Any, now: float, start: int = 0) -> int:
        o = self.owner
        hw = o._hw
        self.need = 0
        for i in range(start, len(dg)):
            r = dg[i]
            agent, sub = int(r["agent"]), int(r["sub_agent_id"])
            seq, up, ts, status = (int(r["sequence_number"]), int(r["uptime"]), float(r["ts"]),
                                   int(r["status"]))
            a = o._aindex.get(agent)
            s = o._sindex.get(agent << 32 | sub)
            if a is None:
                if hw[H_AGENTS_LIVE] >= o.max_agents:
                    hw[H_REJ_AGENTS] += 1
                    hw[H_FULL] += 1
                    continue
                if hw[H_AGENTS] >= len(o._acnt):
                    self.need = 1
                    return i
            if s is None and hw[H_STREAMS_LIVE] < o.max_streams and hw[H_STREAMS] >= len(o._smax):
                self.need = 2
                return i
            t = ts if ts > 0 else now
            if a is None:
                a = int(hw[H_AGENTS])
                hw[H_AGENTS] += 1
                hw[H_AGENTS_LIVE] += 1
                o._acnt[a] = 0
                o._atime[a] = (t, 0.0, 0.0)
                o._aid[a] = agent
                o._named(a, names[agent] or "unknown")
                o._aindex[agent] = a
            ac = o._acnt[a]
            if t > o._atime[a, 1]:
                o._atime[a, 1] = t
            o._atime[a, 2] = now
            ac[A_DGRAMS] += 1
            if status:
                ac[A_ERRORS] += 1
            ac[A_UPTIME] = up
            if s is None:
                if hw[H_STREAMS_LIVE] >= o.max_streams:
                    hw[H_REJ_STREAMS] += 1
                    hw[H_FULL] += 1
                    continue
                s = int(hw[H_STREAMS])
                hw[H_STREAMS] += 1
                hw[H_STREAMS_LIVE] += 1
                ac[A_STREAMS] += 1
                o._smax[s] = o._sfirst[s] = seq
                o._sup[s] = up
                o._sagent[s] = agent
                self._set_win(o, s, 1)
                o._sindex[agent << 32 | sub] = s
                continue
            w = self._win(o, s)
            d = _i32(seq - int(o._smax[s]))
            if d > 0:
                if d > o.max_jump:
                    ac[A_JUMPS] += 1
                    w = 1
                    o._sfirst[s] = seq
                else:
                    ac[A_LOST] += d - 1
                    w = ((w << d) | 1) if d < WINDOW else 1
                o._smax[s] = seq
            elif d == 0:
                ac[A_DUP] += 1
            else:
                back = -d
                if up + o.restart_uptime_ms < int(o._sup[s]) or (
                        seq <= o.restart_seq and back > WINDOW // 4):
                    ac[A_RESTARTS] += 1
                    o._smax[s] = o._sfirst[s] = seq
                    o._sup[s] = up
                    self._set_win(o, s, 1)
                    continue
                if back < WINDOW and (w >> back) & 1:
                    ac[A_DUP] += 1
                else:
                    if back < WINDOW:
                        w |= 1 << back
                    ac[A_OOO] += 1
                    if _i32(seq - int(o._sfirst[s])) > 0:
                        ac[A_LOST] -= 1
            self._set_win(o, s, w)
            if up > o._sup[s]:
                o._sup[s] = up
        return len(dg)

    def samples(self, tab: np.ndarray, flow: bool, table: Any, cap: int, sample_reset: int) -> int:
        o = self.owner
        col_n = A_FLOWS if flow else A_COUNTERS
        col_l = A_FLOW_LOST if flow else A_COUNTER_LOST
        keys, his, stamps, meta = table.keys, table.hi, table.stamp, table.meta
        mask = len(keys) - 1
        for r in tab:
            agent, seq = int(r["agent"]), int(r["sequence_number"])
            a = o._aindex.get(agent)
            if a is None:
                o._hw[H_REJ_SAMPLES] += 1
                continue
            ac = o._acnt[a]
            ac[col_n] += 1
            key = (agent << 40 | (int(r["source_id_type"]) & 0xFF) << 32
                   | int(r["source_id_index"])) + 1
            h = mix(key) & mask
            while keys[h] != 0 and keys[h] != key:
                h = (h + 1) & mask
            if not (keys[h] == key and int(stamps[h]) >= meta[0] - 1):
                if keys[h] == 0:
                    keys[h] = key
                    meta[3] += 1
                his[h] = seq
                stamps[h] = meta[0]
                meta[1] += 1
                if meta[1] >= cap:
                    meta[4] += meta[2]
                    meta[2] = meta[1]
                    meta[1] = 0
                    meta[0] += 1
                continue
            if int(stamps[h]) != meta[0]:
                stamps[h] = meta[0]
                meta[2] -= 1
                meta[1] += 1
            d = _i32(seq - int(his[h]))
            if d > 0:
                if d > o.max_jump:
                    ac[A_SAMPLE_JUMPS] += 1
                else:
                    ac[col_l] += d - 1
                his[h] = seq
            elif -d > sample_reset:
                his[h] = seq
        return len(tab)

    def rehash(self, table: Any, capacity: int) -> None:
        keys = np.zeros(capacity, np.uint64)
        his = np.zeros(capacity, np.uint32)
        stamps = np.zeros(capacity, np.uint32)
        mask = capacity - 1
        min_stamp = int(table.meta[0]) - 1
        used = 0
        for k, hi, st in zip(table.keys.tolist(), table.hi.tolist(), table.stamp.tolist(),
                             strict=True):
            if k == 0 or st < min_stamp:
                continue
            h = mix(k) & mask
            while keys[h] != 0:
                h = (h + 1) & mask
            keys[h], his[h], stamps[h] = k, hi, st
            used += 1
        table.keys, table.hi, table.stamp = keys, his, stamps
        table.meta[3] = used


_M64 = (1 << 64) - 1


def mix(x: int) -> int:
    """splitmix64's finaliser (the compiled kernel's slot hash)."""
    x = int(x)
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _M64
    x ^= x >> 31
    return x
