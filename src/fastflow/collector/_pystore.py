"""Pure-Python twin of :mod:`fastflow.collector._store` (the same rules, row by row, on the same
numpy arrays). Used when the extension is not built or ``FASTFLOW_PURE_PYTHON=1``; the store tests
run against both."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from fastflow.collector.store import Store

__all__ = ["PyStoreKernel"]

ACCEPT, SAME, RESET, DUP, REORDER = 0, 1, 2, 3, 4
C_SAMPLES, C_ACCEPTED, C_DUP, C_REORDER, C_RESET, C_MISMATCH, C_REJECTED = range(7)
H_KEYS, H_LIVE, H_FULL, H_ROWS = 0, 1, 2, 3


class PyStoreKernel:
    """Same interface as ``_store.StoreKernel``: ``bind()``, ``write(c, start) -> int``, ``need``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.need = 0

    def bind(self) -> None:
        """Nothing to cache: the arrays are read from the store on every write."""

    def write(self, c: np.ndarray, start: int = 0) -> int:
        s = self.store
        k = s.k
        hw, cnt = s._hw, s._cnt
        rings = list(s.rings.items())
        rowmaps = [s._row[name] for name, _r in rings]
        depth = s.depth
        self.need = 0
        n = len(c)
        for i in range(start, n):
            rec = c[i]
            agent, sid = int(rec["agent"]), int(rec["source_id"])
            seq, up, t, mask = (int(rec["sequence_number"]), int(rec["uptime"]), float(rec["ts"]),
                                int(rec["mask"]))
            key = agent << 32 | sid
            slot = s._index.get(key)
            if slot is None:
                if hw[H_LIVE] >= s.max_sources:
                    cnt[C_SAMPLES] += 1
                    cnt[C_REJECTED] += 1
                    hw[H_FULL] += 1
                    continue
                if hw[H_KEYS] >= s._kcap:
                    self.need = 1
                    return i
                for g, (_name, ring) in enumerate(rings):
                    if mask & ring.bits and hw[H_ROWS + g] >= ring.capacity:
                        self.need = 2 + g
                        return i
                slot = int(hw[H_KEYS])
                hw[H_KEYS] += 1
                hw[H_LIVE] += 1
                k["key"][slot] = key
                k["agent"][slot] = agent
                k["source_id"][slot] = sid
                k["alive"][slot] = True
                for col in ("has", "run", "last_seen", "last_ts", "last_seq", "last_uptime",
                            *s._text_cols):
                    k[col][slot] = 0
                for rm in rowmaps:
                    rm[slot] = -1
                s._index[key] = slot
            else:
                for g, (_name, ring) in enumerate(rings):
                    if mask & ring.bits and rowmaps[g][slot] < 0 and hw[H_ROWS + g] >= ring.capacity:
                        self.need = 2 + g
                        return i
            cnt[C_SAMPLES] += 1
            code = ACCEPT
            if k["has"][slot]:
                lseq, lup = int(k["last_seq"][slot]), int(k["last_uptime"][slot])
                lts, run = float(k["last_ts"][slot]), int(k["run"][slot])
                dseq = ((seq - lseq + 0x80000000) & 0xFFFFFFFF) - 0x80000000
                fwd = (up - lup) & 0xFFFFFFFF
                if seq == lseq and up == lup:
                    code = DUP
                else:
                    up_back = up < lup and not (fwd <= s._wrap_ms and dseq > 0)
                    backwards = up_back or (up == lup and dseq < 0)
                    if backwards and lup - up <= s.reorder_window_ms and dseq < 0 and run < 3:
                        code = REORDER
                    elif backwards or dseq < 0:
                        code = RESET
                    elif up == lup and abs(t - lts) < 1.0:
                        code = SAME
                    elif fwd > 0 and s.dt_tolerance_ms >= 0 and \
                            fwd * 2.0 + s.dt_tolerance_ms < (t - lts) * 1000.0:
                        code = RESET
                        cnt[C_MISMATCH] += 1
            if code == DUP:
                cnt[C_DUP] += 1
                continue
            if code == REORDER:
                cnt[C_REORDER] += 1
                k["run"][slot] += 1
                continue
            if code == RESET:
                cnt[C_RESET] += 1
                for g, (_name, ring) in enumerate(rings):
                    r = rowmaps[g][slot]
                    if r >= 0:
                        ring.count[r] = 0
            cnt[C_ACCEPTED] += 1
            k["has"][slot] = True
            k["last_seq"][slot] = seq
            k["last_uptime"][slot] = up
            k["last_ts"][slot] = t
            if t > k["last_seen"][slot]:
                k["last_seen"][slot] = t
            k["run"][slot] = 0
            if mask & s._host_descr_bit:
                for col in s._text_cols:
                    k[col][slot] = rec[col]
            for g, (_name, ring) in enumerate(rings):
                if not mask & ring.bits:
                    continue
                r = int(rowmaps[g][slot])
                if r < 0:
                    r = int(hw[H_ROWS + g])
                    hw[H_ROWS + g] += 1
                    ring.key_of_row[r] = slot
                    rowmaps[g][slot] = r
                    ring.count[r] = 0
                    ring.head[r] = depth - 1
                c0 = int(ring.count[r])
                if code == SAME and c0 > 0:
                    pos = int(ring.head[r])
                else:
                    pos = (int(ring.head[r]) + 1) % depth
                    ring.head[r] = pos
                    ring.count[r] = min(c0 + 1, depth)
                    ring.prev[r] = ring.last[r]
                for col, src in ring.sources:
                    v: Any = rec[src]
                    ring.last[col][r] = v
                if ring.keeps_history:
                    ring.data[pos, r] = ring.last[r]
        return n
