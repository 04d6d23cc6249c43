"""Counter-sample ring buffers, keyed by data source: the state the metrics are computed from.

A *data source* is (agent, source_id), as sFlow-RT keys it (the sub-agent id is ignored). Each data
source gets a slot in the key table (last sequence number / uptime / arrival time, its host_descr
strings) and, for each *record group* its samples carry, a row in that group's ring table:

* ``virt``: virt_cpu, virt_memory, virt_disk_io, virt_net_io (containers and VMs, source 3:index)
* ``host``: host_cpu, host_memory, host_disk_io, host_net_io, virt_node (the physical host, 2:1)
* ``if``:   if_counters, ethernet_counters (interfaces, 0:ifIndex)

A ring row holds the last ``depth`` samples: ``ts``, ``uptime``, ``seq``, ``mask`` and every field of
the group's records, as 2-D arrays ``(depth, rows)`` (rows written in one polling round sit side by
side); ``head[row]`` is the newest position and ``count[row]`` how many are valid. Dense ``last`` /
``prev`` copies of the two newest samples let a metric pass read contiguous columns. A container
therefore costs only its virt columns.

Writing a batch is one vectorised pass, O(rows) numpy work however often a data source repeats: keys
map to slots with a sorted key array + ``searchsorted``; the rows are grouped by slot (stable sort, so
arrival order within a data source); the fate of every sample (below) is decided against the newest
kept sample before it, predicted by running maxima per data source and then checked exactly (rows
past a wrong prediction get another pass; after a few passes the rest goes one row at a time); then
only the last ``depth`` kept samples of each data source scatter into the rings with fancy indexing,
and the dense newest / previous copies come from each data source's last two writes. The result is
exactly that of writing the samples one at a time, in arrival order. Per data source:

* a sample with the newest sample's sequence number and uptime is a **duplicate**: dropped, counted;
* a sample older than the newest (uptime backwards within ``reorder_window`` and sequence number
  backwards) is **reordered**: dropped, counted (three in a row are taken as a restart instead);
* uptime further backwards, or the sequence number backwards with uptime forwards, is a **reset**
  (agent or poller restart): the data source's rings are emptied and restart from this sample;
* a sample with the newest sample's uptime (within a second of arrival) but a later sequence number
  replaces the newest sample (Δt would be 0; hsflowd sometimes sends two polls in one datagram).

Data sources not heard from for ``expire_after`` seconds of the clock are expired and their slots
reused; the metrics only ever look at data sources heard from within ``expire_after``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from fastflow._schema import COUNTER_BIT, COUNTER_DTYPE, COUNTER_RECORD_BY_NAME

if TYPE_CHECKING:  # pragma: no cover
    from fastflow.collector.pipeline import Batch, Clock, StringView

__all__ = ["GROUPS", "Ring", "Store"]

log = logging.getLogger(__name__)

# group name -> counter records whose fixed fields it stores
GROUPS: dict[str, tuple[str, ...]] = {
    "virt": ("virt_cpu", "virt_memory", "virt_disk_io", "virt_net_io"),
    "host": ("host_cpu", "host_memory", "host_disk_io", "host_net_io", "virt_node"),
    "if": ("if_counters", "ethernet_counters"),
}

_HOST_DESCR_BIT = 1 << COUNTER_BIT["host_descr"]
_KEY_TEXT_COLS = ("hostname", "machine_type", "os_name", "os_release")
_U32_MAX = 0xFFFFFFFF


# fate of a sample (codes ordered so that ``fate <= _RESET`` means "kept")
_ACCEPT, _SAME, _RESET, _DUP, _REORDER = 0, 1, 2, 3, 4
_MAX_PASSES = 4       # vectorised passes over a batch before the rest goes one row at a time


def _codes(dup: np.ndarray, reorder: np.ndarray, reset: np.ndarray, same: np.ndarray) -> np.ndarray:
    code = np.zeros(len(dup), np.int8)            # _ACCEPT
    code[same] = _SAME
    code[reset] = _RESET
    code[dup] = _DUP
    code[reorder] = _REORDER
    return code


def _seg_cumsum(x: np.ndarray, starts: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at every segment start (``seg``: segment number of each row)."""
    cs = np.cumsum(x)
    return cs - (cs[starts] - x[starts])[seg]


def _seg_cummax(x: np.ndarray, starts: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Running maximum restarting at every segment start (int64 values)."""
    if not len(x):
        return x
    lo = int(x.min())
    span = int(x.max()) - lo + 1
    if span * len(starts) < 1 << 62:
        off = seg.astype(np.int64) * span
        return np.maximum.accumulate(x - lo + off) - off + lo
    out = np.empty_like(x)                       # huge jumps: one segment at a time
    ends = np.append(starts[1:], len(x))
    for s0, s1 in zip(starts.tolist(), ends.tolist(), strict=True):
        out[s0:s1] = np.maximum.accumulate(x[s0:s1])
    return out


def _group_columns(records: Sequence[str]) -> list[tuple[str, np.dtype]]:
    cols: list[tuple[str, np.dtype]] = []
    for rec in records:
        for _json, col, _off, typ in COUNTER_RECORD_BY_NAME[rec][3]:
            if typ in ("u32", "u64", "i32", "f32"):
                cols.append((col, COUNTER_DTYPE[col]))
    return cols


def _bits(records: Sequence[str]) -> int:
    b = 0
    for rec in records:
        b |= 1 << COUNTER_BIT[rec]
    return b


class Ring:
    """The ring table of one record group: ``depth`` samples per row, rows grown by doubling."""

    def __init__(self, name: str, records: Sequence[str], depth: int, capacity: int = 64) -> None:
        self.name = name
        self.records = tuple(records)
        self.bits = _bits(records)
        self.depth = depth
        meta: list[tuple[str, np.dtype]] = [
            ("ts", np.dtype("<f8")), ("uptime", np.dtype("<u4")), ("seq", np.dtype("<u4")),
            ("mask", np.dtype("<u4"))]
        self.columns: list[tuple[str, np.dtype]] = meta + _group_columns(records)
        # (ring column, counter-table column)
        self.sources: list[tuple[str, str]] = [("ts", "ts"), ("uptime", "uptime"),
                                               ("seq", "sequence_number"), ("mask", "mask")] + [
            (col, col) for col, _dt in self.columns[4:]]
        self.capacity = 0
        self.data: dict[str, np.ndarray] = {}
        # dense copies of the newest and the previous sample of every row (what rates need), so a
        # metric pass reads contiguous columns instead of gathering from the rings
        self.last: dict[str, np.ndarray] = {}
        self.prev: dict[str, np.ndarray] = {}
        self.head = np.zeros(0, np.int64)
        self.count = np.zeros(0, np.int64)
        self.key_of_row = np.zeros(0, np.int64)
        self.n_rows = 0                      # high-water mark of rows ever used
        self._free: list[int] = []
        self._grow(capacity)

    def _grow(self, capacity: int) -> None:
        old = self.capacity
        for col, dt in self.columns:
            arr = np.zeros((self.depth, capacity), dt)
            if old:
                arr[:, :old] = self.data[col]
            self.data[col] = arr
            for d in (self.last, self.prev):
                flat = np.zeros(capacity, dt)
                if old:
                    flat[:old] = d[col]
                d[col] = flat
        self.head = np.concatenate([self.head, np.zeros(capacity - old, np.int64)])
        self.count = np.concatenate([self.count, np.zeros(capacity - old, np.int64)])
        self.key_of_row = np.concatenate([self.key_of_row, np.full(capacity - old, -1, np.int64)])
        self.capacity = capacity

    def allocate(self, n: int) -> np.ndarray:
        """``n`` fresh rows (reused ones first), growing the table by doubling when needed."""
        take = min(n, len(self._free))
        rows = [self._free.pop() for _ in range(take)]
        rest = n - take
        if self.n_rows + rest > self.capacity:
            cap = max(self.capacity, 1)
            while cap < self.n_rows + rest:
                cap *= 2
            self._grow(cap)
        out = np.array(rows + list(range(self.n_rows, self.n_rows + rest)), np.int64)
        self.n_rows += rest
        self.count[out] = 0
        self.head[out] = self.depth - 1
        return out

    def release(self, rows: np.ndarray) -> None:
        """Give rows back (their data source expired)."""
        self.count[rows] = 0
        self.key_of_row[rows] = -1
        self._free.extend(int(r) for r in rows)

    def nbytes(self) -> int:
        return (sum(a.nbytes for a in self.data.values()) + self.head.nbytes + self.count.nbytes
                + self.key_of_row.nbytes + sum(a.nbytes for a in self.last.values())
                + sum(a.nbytes for a in self.prev.values()))

    def used_rows(self) -> np.ndarray:
        """Rows that belong to a live data source."""
        return np.nonzero(self.key_of_row[: self.n_rows] >= 0)[0]

    def newest(self, rows: np.ndarray, back: int = 0) -> np.ndarray:
        """Flat indices (into ``data[col].ravel()``) of the sample ``back`` steps before the newest."""
        pos = (self.head[rows] - back) % self.depth
        return pos * self.capacity + rows

    def history(self, row: int) -> np.ndarray:
        """The valid samples of one row, oldest first, as a structured array (for inspection)."""
        n = int(self.count[row])
        pos = (int(self.head[row]) - np.arange(n - 1, -1, -1)) % self.depth
        out = np.zeros(n, [(c, dt) for c, dt in self.columns])
        for col, _dt in self.columns:
            out[col] = self.data[col][pos, row]
        return out


class Store:
    """Ring buffers of counter samples per data source; a pipeline sink.

    ``depth``: samples kept per data source. ``expire_after``: seconds of clock time without a sample
    after which a data source is dropped. ``reorder_window``: how far back (seconds of agent uptime)
    a late sample is taken as reordered rather than as an agent restart.
    """

    def __init__(self, depth: int = 32, expire_after: float = 30.0, clock: Clock | None = None,
                 reorder_window: float = 60.0, capacity: int = 64) -> None:
        if depth < 2:
            raise ValueError(f"depth must be >= 2 (rates need two samples), got {depth}")
        if not expire_after > 0:
            raise ValueError(f"expire_after must be > 0 seconds, got {expire_after}")
        if clock is None:
            from fastflow.collector.pipeline import LiveClock

            clock = LiveClock()
        self.depth = int(depth)
        self.expire_after = float(expire_after)
        self.reorder_window_ms = int(reorder_window * 1000)
        self._wrap_ms = int(max(expire_after, reorder_window) * 1000)
        self.clock: Clock = clock
        self.rings: dict[str, Ring] = {g: Ring(g, recs, self.depth, capacity)
                                       for g, recs in GROUPS.items()}
        self.strings: StringView | None = None
        self.agents: StringView | None = None
        self.generation = 0                     # bumped on every change (metrics cache key)
        self.counts: dict[str, int] = {"samples": 0, "accepted": 0, "duplicate": 0,
                                       "reordered": 0, "reset": 0, "expired": 0}
        self._kcap = 0
        self.n_keys = 0                          # high-water mark of key slots
        self._kfree: list[int] = []
        self._sorted_keys = np.zeros(0, np.uint64)
        self._sorted_slots = np.zeros(0, np.int64)
        self.k: dict[str, np.ndarray] = {}
        self._row: dict[str, np.ndarray] = {}   # group -> row of each key slot (-1: none)
        self._last_expiry = -np.inf
        self._grow_keys(capacity)

    # ------------------------------------------------------------------ key table
    _KEY_COLUMNS: tuple[tuple[str, str], ...] = (
        ("key", "<u8"), ("agent", "<u4"), ("source_id", "<u4"), ("alive", "?"), ("has", "?"),
        ("last_ts", "<f8"), ("last_seen", "<f8"), ("last_seq", "<u4"), ("last_uptime", "<u4"),
        ("run", "<u1"), ("hostname", "<u4"), ("machine_type", "<u4"), ("os_name", "<u4"),
        ("os_release", "<u4"),
    )

    def _grow_keys(self, capacity: int) -> None:
        old = self._kcap
        for col, dt in self._KEY_COLUMNS:
            arr = np.zeros(capacity, dt)
            if old:
                arr[:old] = self.k[col]
            self.k[col] = arr
        for g in self.rings:
            arr = np.full(capacity, -1, np.int64)
            if old:
                arr[:old] = self._row[g]
            self._row[g] = arr
        self._kcap = capacity

    def _new_slots(self, n: int) -> np.ndarray:
        take = min(n, len(self._kfree))
        slots = [self._kfree.pop() for _ in range(take)]
        rest = n - take
        if self.n_keys + rest > self._kcap:
            cap = max(self._kcap, 1)
            while cap < self.n_keys + rest:
                cap *= 2
            self._grow_keys(cap)
        out = np.array(slots + list(range(self.n_keys, self.n_keys + rest)), np.int64)
        self.n_keys += rest
        return out

    def _slots_for(self, keys: np.ndarray) -> np.ndarray:
        """Slot of every key, creating slots for keys never seen (or expired)."""
        sk = self._sorted_keys
        pos = np.searchsorted(sk, keys)
        pos_c = np.minimum(pos, max(len(sk) - 1, 0))
        found = (pos < len(sk)) & (sk[pos_c] == keys) if len(sk) else np.zeros(len(keys), bool)
        if not found.all():
            new = np.unique(keys[~found])
            slots = self._new_slots(len(new))
            k = self.k
            k["key"][slots] = new
            k["agent"][slots] = (new >> np.uint64(32)).astype(np.uint32)
            k["source_id"][slots] = (new & np.uint64(_U32_MAX)).astype(np.uint32)
            k["alive"][slots] = True
            k["has"][slots] = False
            k["run"][slots] = 0
            k["last_seen"][slots] = 0.0
            for col in _KEY_TEXT_COLS:
                k[col][slots] = 0
            for g in self.rings:
                self._row[g][slots] = -1
            allk = np.concatenate([sk, new])
            alls = np.concatenate([self._sorted_slots, slots])
            order = np.argsort(allk, kind="stable")
            self._sorted_keys = allk[order]
            self._sorted_slots = alls[order]
            sk = self._sorted_keys
            pos = np.searchsorted(sk, keys)
        return self._sorted_slots[pos]

    # ------------------------------------------------------------------ writing
    def add(self, tables: Batch) -> None:
        """Store the batch's counter samples (the Sink interface)."""
        self.strings = tables.strings
        self.agents = tables.agents
        c = tables.counters
        n = len(c)
        if n:
            self._write(c)
        now = self.clock.now()
        if not 0.0 <= now - self._last_expiry < 1.0:   # at most once a second of clock time
            self.expire(now)

    def _write(self, c: np.ndarray) -> None:
        """One vectorised pass: fate of every sample, then the key table and every ring at once."""
        n = len(c)
        keys = (c["agent"].astype(np.uint64) << np.uint64(32)) | c["source_id"].astype(np.uint64)
        slots = self._slots_for(keys)
        self.counts["samples"] += n
        # rows grouped by data source (one group per slot), arrival order within a group
        order = np.argsort(slots, kind="stable")
        ss = slots[order]
        first = np.ones(n, bool)
        first[1:] = ss[1:] != ss[:-1]
        if first.all():                           # no data source repeats (the usual live batch)
            self._write_distinct(c, slots)
        else:
            self._write_repeated(c, order, ss, first)
        self.generation += 1

    def _write_repeated(self, c: np.ndarray, order: np.ndarray, ss: np.ndarray,
                        first: np.ndarray) -> None:
        """Write counter table ``c`` whose rows ``order`` (slots ``ss``) are grouped by slot, in
        arrival order within a group (``first``: a group's first row)."""
        n = len(order)
        gstart = np.nonzero(first)[0]
        gend = np.append(gstart[1:], n) - 1
        gid = np.cumsum(first) - 1
        gslot = ss[gstart]
        seq = c["sequence_number"][order]
        up = c["uptime"][order]
        ts = c["ts"][order]
        mask = c["mask"][order]
        k = self.k
        fate = self._fates(seq, up, ts, gid, gstart,
                           [k["has"][gslot], k["last_seq"][gslot], k["last_uptime"][gslot],
                            k["last_ts"][gslot], k["run"][gslot].astype(np.int64)])

        nd = int((fate == _DUP).sum())
        nr = int((fate == _REORDER).sum())
        nreset = int((fate == _RESET).sum())
        if nd or nr or nreset:
            self.counts["duplicate"] += nd
            self.counts["reordered"] += nr
            self.counts["reset"] += nreset
            log.debug("store: %d duplicate, %d reordered, %d reset samples", nd, nr, nreset)
        acc = fate <= _RESET
        self.counts["accepted"] += int(acc.sum())
        idx = np.arange(n)

        # key table: the newest accepted sample of each data source, and the reorders after it
        la = np.maximum.accumulate(np.where(acc, idx, -1))[gend]
        got = la >= gstart
        is_re = (fate == _REORDER).astype(np.int64)
        cre = np.cumsum(is_re)
        re_after = cre[gend] - cre[np.maximum(la, 0)]
        re_all = cre[gend] - cre[gstart] + is_re[gstart]
        k["run"][gslot] = np.where(got, re_after, k["run"][gslot] + re_all).astype(np.uint8)
        if got.any():
            gs, lrow = gslot[got], order[la[got]]
            k["has"][gs] = True
            k["last_seq"][gs] = c["sequence_number"][lrow]
            k["last_uptime"][gs] = c["uptime"][lrow]
            k["last_ts"][gs] = c["ts"][lrow]
            newest = np.maximum.reduceat(np.where(acc, ts, -np.inf), gstart)[got]
            k["last_seen"][gs] = np.maximum(k["last_seen"][gs], newest)
            hd = acc & ((mask & _HOST_DESCR_BIT) != 0)
            if hd.any():
                lh = np.maximum.accumulate(np.where(hd, idx, -1))[gend]
                okh = lh >= gstart
                hs, hrow = gslot[okh], order[lh[okh]]
                for col in _KEY_TEXT_COLS:
                    k[col][hs] = c[col][hrow]

        # last reset at or before each row, within its data source (-1 / before gstart: none)
        lr = np.maximum.accumulate(np.where(fate == _RESET, idx, -1)) if nreset else None
        for g, ring in self.rings.items():
            self._write_ring(g, ring, c, order, fate, acc & ((mask & ring.bits) != 0), gid,
                             gstart, gend, gslot, lr)

    def _fates(self, seq: np.ndarray, up: np.ndarray, ts: np.ndarray, gid: np.ndarray,
               gstart: np.ndarray, base: list[np.ndarray]) -> np.ndarray:
        """Fate code of every row (rows grouped by data source ``gid``, arrival order within).

        ``base``: per group has / seq / uptime / ts / run of the newest stored sample; updated in
        place when a pass leaves rows of a group for the next one.
        """
        n = len(seq)
        fate = np.empty(n, np.int8)
        todo = np.arange(n)
        for _ in range(_MAX_PASSES):
            done, code, cut_state = self._fate_pass(seq[todo], up[todo], ts[todo], gid[todo], base)
            fate[todo[done]] = code[done]
            todo = todo[~done]
            if not len(todo):
                return fate
            g_cut, cut_vals = cut_state
            for b, v in zip(base, cut_vals, strict=True):
                b[g_cut] = v
        # rare: many restarts / prediction misses in one data source within one batch
        self._fates_sequential(seq, up, ts, gid, todo, base, fate)
        return fate

    def _fate_pass(self, seq: np.ndarray, up: np.ndarray, ts: np.ndarray, g: np.ndarray,
                   base: list[np.ndarray]
                   ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, list[np.ndarray]]]:
        """Predict which sample each row is compared with, then check the prediction exactly.

        Within a data source, kept samples move forwards in sequence number and uptime and dropped
        ones (duplicates, reordered) do not pass the newest kept one: the newest kept sample before
        a row has the running maximum of (unwrapped) sequence number and uptime since the last
        restart. Restarts are predicted by comparing a row with the row before it. Every row is then
        classified exactly against the predicted previous kept sample; rows up to the first row
        where prediction and result differ are final (the first such row's reference is exact: it
        starts the group in the next pass).
        """
        m = len(seq)
        idx = np.arange(m)
        first = np.ones(m, bool)
        first[1:] = g[1:] != g[:-1]
        starts = np.nonzero(first)[0]
        gl = np.cumsum(first) - 1
        gs = starts[gl]
        gg = g[starts]
        h0, s0, u0, t0, r0 = (b[gg] for b in base)
        # the first row of each group against the stored newest sample: exact
        _d0, _o0, x0, _s0 = self._classify(seq[starts], up[starts], ts[starts], h0, s0, u0, t0, r0)
        # previous row's values (the base for a group's first row)
        pseq = np.empty_like(seq)
        pup = np.empty_like(up)
        pts = np.empty_like(ts)
        pseq[1:], pup[1:], pts[1:] = seq[:-1], up[:-1], ts[:-1]
        pseq[starts], pup[starts], pts[starts] = s0, u0, t0
        # predicted restarts: a restart against the row before (first rows: exact)
        ones = np.ones(m, bool)
        _d, _o, pres, _s = self._classify(seq, up, ts, ones, pseq, pup, pts,
                                          np.zeros(m, np.int64))
        pres[starts] = x0
        # segments: from a group start (with its base unless restarting) or a predicted restart
        seg = pres | first
        anchor = pres | (first & ~h0[gl])            # no base in the running maximum
        st_seq = (seq - pseq).astype(np.int32).astype(np.int64)
        st_up = (up - pup).astype(np.int32).astype(np.int64)
        st_seq[anchor] = 0
        st_up[anchor] = 0
        sl = np.cumsum(seg) - 1
        sstart = np.nonzero(seg)[0]
        useq = _seg_cumsum(st_seq, sstart, sl)
        uup = _seg_cumsum(st_up, sstart, sl)
        # the base (where it takes part) sits at 0; an anchor row is 0 itself
        mseq = np.maximum(_seg_cummax(useq, sstart, sl), 0)
        mup = np.maximum(_seg_cummax(uup, sstart, sl), 0)
        xs = np.empty(m, np.int64)
        xu = np.empty(m, np.int64)
        xs[1:], xu[1:] = mseq[:-1], mup[:-1]
        xs[seg], xu[seg] = 0, 0
        pdup = ~seg & (useq == xs) & (uup == xu)
        prea = ~seg & ~pdup & (useq < xs) & (uup <= xu) & (xu - uup <= self.reorder_window_ms)
        pdup[starts] = _d0
        prea[starts] = _o0
        pacc = ~pdup & ~prea
        # reference: the newest predicted kept row before, else the base
        la = np.maximum.accumulate(np.where(pacc, idx, -1))
        ref = np.empty(m, np.int64)
        ref[0] = -1
        ref[1:] = la[:-1]
        ing = ref >= gs
        refc = np.maximum(ref, 0)
        rhas = ing | h0[gl]
        rseq = np.where(ing, seq[refc], s0[gl])
        rup = np.where(ing, up[refc], u0[gl])
        rts = np.where(ing, ts[refc], t0[gl])
        cr = np.cumsum(prea)
        crx = cr - prea
        run = np.where(ing, crx - cr[refc], r0[gl] + crx - crx[gs])
        dup, reo, res, same = self._classify(seq, up, ts, rhas, rseq, rup, rts, run)
        bad = (dup != pdup) | (reo != prea) | (res != pres)
        cb = np.cumsum(bad)
        after = (cb - cb[gs] + bad[gs]) > 0
        code = _codes(dup, reo, res, same)
        cut = after.copy()
        cut[1:] &= ~after[:-1] | first[1:]
        cut_vals = [rhas[cut], rseq[cut], rup[cut], rts[cut], run[cut]]
        return ~after, code, (g[cut], cut_vals)

    def _classify(self, seq: np.ndarray, up: np.ndarray, ts: np.ndarray, has: np.ndarray,
                  lseq: np.ndarray, lup: np.ndarray, lts: np.ndarray, run: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Duplicate / reordered / reset / same-uptime samples against the newest kept sample."""
        dseq = (seq - lseq).astype(np.int32)          # wrap-around sequence difference
        # uptime is u32 ms and wraps after 49.7 days: a small forward step across 2**32 is not
        # "backwards"
        fwd_ms = (up.astype(np.int64) - lup.astype(np.int64)) & 0xFFFFFFFF
        up_back = (up < lup) & ~((fwd_ms <= self._wrap_ms) & (dseq > 0))
        dup = has & (seq == lseq) & (up == lup)
        backwards = has & ~dup & (up_back | ((up == lup) & (dseq < 0)))
        back_ms = lup.astype(np.int64) - up.astype(np.int64)
        reorder = backwards & (back_ms <= self.reorder_window_ms) & (dseq < 0) & (run < 3)
        reset = has & ~dup & ~reorder & (backwards | (dseq < 0))
        same = has & ~dup & ~backwards & ~reset & (up == lup) & (np.abs(ts - lts) < 1.0)
        return dup, reorder, reset, same

    def _fates_sequential(self, seq: np.ndarray, up: np.ndarray, ts: np.ndarray, gid: np.ndarray,
                          todo: np.ndarray, base: list[np.ndarray], fate: np.ndarray) -> None:
        """The rows ``todo`` one by one (the same rules as :meth:`_classify`, on Python ints)."""
        wrap, window = self._wrap_ms, self.reorder_window_ms
        bh, bs, bu, bt, br = base
        cur = -1
        has, lseq, lup, lts, run = False, 0, 0, 0.0, 0
        for i, g, sq, u, t in zip(todo.tolist(), gid[todo].tolist(), seq[todo].tolist(),
                                  up[todo].tolist(), ts[todo].tolist(), strict=True):
            if g != cur:
                cur = g
                has, lseq, lup = bool(bh[g]), int(bs[g]), int(bu[g])
                lts, run = float(bt[g]), int(br[g])
            code = _ACCEPT
            if has:
                dseq = ((sq - lseq + 0x80000000) & 0xFFFFFFFF) - 0x80000000
                up_back = u < lup and not (((u - lup) & 0xFFFFFFFF) <= wrap and dseq > 0)
                if sq == lseq and u == lup:
                    code = _DUP
                else:
                    backwards = up_back or (u == lup and dseq < 0)
                    if backwards and lup - u <= window and dseq < 0 and run < 3:
                        code = _REORDER
                    elif backwards or dseq < 0:
                        code = _RESET
                    elif u == lup and abs(t - lts) < 1.0:
                        code = _SAME
            fate[i] = code
            if code == _REORDER:
                run += 1
            elif code != _DUP:
                has, lseq, lup, lts, run = True, sq, u, t, 0

    def _write_distinct(self, c: np.ndarray, s: np.ndarray) -> None:
        """Write counter table ``c`` whose slots ``s`` are distinct (the usual live batch): fewer
        steps than :meth:`_write_repeated` for the same result."""
        k = self.k
        idx = np.arange(len(c))
        seq = c["sequence_number"]
        up = c["uptime"]
        ts = c["ts"]
        mask = c["mask"]
        dup, reorder, reset, same = self._classify(seq, up, ts, k["has"][s], k["last_seq"][s],
                                                   k["last_uptime"][s], k["last_ts"][s],
                                                   k["run"][s])
        accept = ~dup & ~reorder
        nd, nr, nreset = int(dup.sum()), int(reorder.sum()), int(reset.sum())
        if nd or nr or nreset:
            self.counts["duplicate"] += nd
            self.counts["reordered"] += nr
            self.counts["reset"] += nreset
            log.debug("store: %d duplicate, %d reordered, %d reset samples", nd, nr, nreset)
            if nr:
                k["run"][s[reorder]] += 1
        if nreset:
            rs = s[reset]
            for g, ring in self.rings.items():
                rows = self._row[g][rs]
                ring.count[rows[rows >= 0]] = 0
        if not accept.any():
            return
        a_idx = idx[accept]
        a_s = s[accept]
        a_same = same[accept]
        self.counts["accepted"] += len(a_idx)
        k["has"][a_s] = True
        k["last_seq"][a_s] = seq[accept]
        k["last_uptime"][a_s] = up[accept]
        k["last_ts"][a_s] = ts[accept]
        k["last_seen"][a_s] = np.maximum(k["last_seen"][a_s], ts[accept])
        k["run"][a_s] = 0
        a_mask = mask[accept]
        hd = (a_mask & _HOST_DESCR_BIT) != 0
        if hd.any():
            for col in _KEY_TEXT_COLS:
                k[col][a_s[hd]] = c[col][a_idx[hd]]
        for g, ring in self.rings.items():
            sel = (a_mask & ring.bits) != 0
            if not sel.any():
                continue
            gs = a_s[sel]
            gi = a_idx[sel]
            rows = self._row[g][gs]
            missing = rows < 0
            if missing.any():
                new_rows = ring.allocate(int(missing.sum()))
                ring.key_of_row[new_rows] = gs[missing]
                self._row[g][gs[missing]] = new_rows
                rows[missing] = new_rows
            cnt = ring.count[rows]
            overwrite = a_same[sel] & (cnt > 0)
            pos = np.where(overwrite, ring.head[rows], (ring.head[rows] + 1) % ring.depth)
            ring.head[rows] = pos
            ring.count[rows] = np.where(overwrite, cnt, np.minimum(cnt + 1, ring.depth))
            d, last, prev = ring.data, ring.last, ring.prev
            shift = rows[~overwrite]
            for col, src in ring.sources:
                v = c[src][gi]
                d[col][pos, rows] = v
                lc = last[col]
                prev[col][shift] = lc[shift]
                lc[rows] = v

    def _write_ring(self, g: str, ring: Ring, c: np.ndarray, order: np.ndarray, fate: np.ndarray,
                    w: np.ndarray, gid: np.ndarray, gstart: np.ndarray, gend: np.ndarray,
                    gslot: np.ndarray, lr: np.ndarray | None) -> None:
        """Scatter the accepted rows ``w`` carrying this ring's records into it, all at once."""
        depth = ring.depth
        rowmap = self._row[g]
        if lr is not None:                        # restarts empty every ring of the data source
            rrows = rowmap[gslot[lr[gend] >= gstart]]
            rrows = rrows[rrows >= 0]
        e = np.nonzero(w)[0]                      # write events, grouped by data source
        me = len(e)
        if not me:
            if lr is not None:
                ring.count[rrows] = 0
            return
        eg = gid[e]
        efirst = np.ones(me, bool)
        efirst[1:] = eg[1:] != eg[:-1]
        es = np.nonzero(efirst)[0]
        ee = np.append(es[1:], me) - 1
        el = np.cumsum(efirst) - 1
        egrp = eg[es]
        eslot = gslot[egrp]
        rows = rowmap[eslot]
        missing = rows < 0
        if missing.any():
            new_rows = ring.allocate(int(missing.sum()))
            ring.key_of_row[new_rows] = eslot[missing]
            rowmap[eslot[missing]] = new_rows
            rows[missing] = new_rows
        head0 = ring.head[rows]
        cnt0 = ring.count[rows]                   # before the restarts (they may come later)
        if lr is not None:
            ring.count[rrows] = 0
        # a same-uptime sample replaces the newest one when the ring holds one at that point
        cnt_pos = ~efirst
        if lr is not None:
            lre = lr[e]
            prev_e = np.empty(me, np.int64)
            prev_e[0] = -1
            prev_e[1:] = e[:-1]
            cnt_pos = cnt_pos & (prev_e >= lre)
            cnt_pos |= (lre < gstart[eg]) & (cnt0[el] > 0)
        else:
            cnt_pos = cnt_pos | (cnt0[el] > 0)
        adv = ~((fate[e] == _SAME) & cnt_pos)
        a = _seg_cumsum(adv.astype(np.int64), es, el)   # advances up to and including each event
        total = a[ee]
        if lr is not None:
            lrg = lr[gend[egrp]]
            restarted = lrg >= gstart[egrp]
            n_after = np.bincount(el, weights=adv & (e >= lrg[el]), minlength=len(es))
            cnt = np.where(restarted, n_after.astype(np.int64), cnt0 + total)
        else:
            cnt = cnt0 + total
        ring.count[rows] = np.minimum(cnt, depth)
        ring.head[rows] = (head0 + total) % depth
        # ring positions: only the last write to each position (the last `depth` advances)
        nxt = np.ones(me, bool)
        nxt[:-1] = adv[1:] | efirst[1:]
        keep = nxt & (a > (total - depth)[el])
        pos = ((head0[el] + a) % depth)[keep]
        krows = rows[el[keep]]
        # dense newest / previous: previous = what was newest before the last advancing write
        ja = np.maximum.accumulate(np.where(adv, np.arange(me), -1))[ee]
        has_adv = ja >= es
        from_ev = has_adv & (ja > es)
        from_old = has_adv & (ja == es)
        need = keep.copy()
        need[ee] = True
        need[ja[from_ev] - 1] = True
        nidx = np.nonzero(need)[0]
        at = np.cumsum(need) - 1
        crow = order[e[nidx]]
        i_keep = at[keep]
        i_last = at[ee]
        i_prev = at[ja[from_ev] - 1]
        r_prev = rows[from_ev]
        r_old = rows[from_old]
        d, last, prev = ring.data, ring.last, ring.prev
        all_kept = len(i_keep) == len(nidx)       # then v[i_keep] is v (no source repeats, ...)
        last_all = len(i_last) == len(nidx)
        any_prev = len(r_prev) > 0
        for col, src in ring.sources:
            v = c[src][crow]
            d[col][pos, krows] = v if all_kept else v[i_keep]
            lc = last[col]
            pc = prev[col]
            if len(r_old):
                pc[r_old] = lc[r_old]
            if any_prev:
                pc[r_prev] = v[i_prev]
            lc[rows] = v if last_all else v[i_last]

    # ------------------------------------------------------------------ expiry
    def expire(self, now: float | None = None) -> int:
        """Drop data sources not heard from within ``expire_after``; returns how many."""
        if now is None:
            now = self.clock.now()
        self._last_expiry = now
        cutoff = now - self.expire_after
        k = self.k
        n = self.n_keys
        gone = np.nonzero(k["alive"][:n] & (k["last_seen"][:n] < cutoff) & k["has"][:n])[0]
        if len(gone) == 0:
            return 0
        k["alive"][gone] = False
        k["has"][gone] = False
        for g, ring in self.rings.items():
            rows = self._row[g][gone]
            rows = rows[rows >= 0]
            if len(rows):
                ring.release(rows)
            self._row[g][gone] = -1
        keep = np.isin(self._sorted_slots, gone, invert=True)
        self._sorted_keys = self._sorted_keys[keep]
        self._sorted_slots = self._sorted_slots[keep]
        self._kfree.extend(int(x) for x in gone)
        self.counts["expired"] += len(gone)
        self.generation += 1
        log.debug("store: expired %d data sources", len(gone))
        return len(gone)

    # ------------------------------------------------------------------ reading
    def fresh(self, now: float | None = None) -> np.ndarray:
        """Bool per key slot (length ``n_keys``): alive and heard from within ``expire_after``."""
        if now is None:
            now = self.clock.now()
        n = self.n_keys
        k = self.k
        return k["alive"][:n] & k["has"][:n] & (k["last_seen"][:n] >= now - self.expire_after)

    def slot_of(self, agent: int, source_id: int) -> int | None:
        """Key slot of a data source, or None."""
        key = np.uint64(agent) << np.uint64(32) | np.uint64(source_id)
        pos = int(np.searchsorted(self._sorted_keys, key))
        if pos < len(self._sorted_keys) and self._sorted_keys[pos] == key:
            return int(self._sorted_slots[pos])
        return None

    def row_of(self, group: str, slot: int) -> int:
        """Row of a key slot in a group's ring (-1 when it has none)."""
        return int(self._row[group][slot])

    def history(self, agent: int, source_id: int, group: str) -> np.ndarray:
        """Stored samples of one data source in one group, oldest first (empty when unknown)."""
        slot = self.slot_of(agent, source_id)
        ring = self.rings[group]
        if slot is None or self._row[group][slot] < 0:
            return np.zeros(0, [(c, dt) for c, dt in ring.columns])
        return ring.history(int(self._row[group][slot]))

    def __len__(self) -> int:
        """Number of live data sources."""
        return int(self.k["alive"][: self.n_keys].sum())

    def nbytes(self) -> int:
        """Memory held by the key table and the rings."""
        return (sum(a.nbytes for a in self.k.values()) + sum(a.nbytes for a in self._row.values())
                + sum(r.nbytes() for r in self.rings.values()) + self._sorted_keys.nbytes
                + self._sorted_slots.nbytes)

    def stats(self) -> dict[str, Any]:
        """Counts of samples by fate, live data sources and memory (for the API / logs)."""
        return dict(self.counts, data_sources=len(self), bytes=self.nbytes())
