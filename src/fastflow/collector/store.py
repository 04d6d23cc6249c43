"""Counter-sample ring buffers, keyed by data source: the state the metrics are computed from.

A *data source* is (agent, source_id), as sFlow-RT keys it (the sub-agent id is ignored). Each data
source gets a slot in the key table (last sequence number / uptime / arrival time, its host_descr
strings) and, for each *record group* its samples carry, a row in that group's ring table:

* ``virt``: virt_cpu, virt_memory, virt_disk_io, virt_net_io (containers and VMs, source 3:index)
* ``host``: host_cpu, host_memory, host_disk_io, host_net_io, virt_node (the physical host, 2:1)
* ``if``:   if_counters, ethernet_counters (interfaces, 0:ifIndex)

A ring row holds the newest sample (``last[col][row]``) and the one before it (``prev``): the two a
rate needs, as dense columns a metric pass reads contiguously. With ``depth > 2`` it also keeps
the last ``depth`` samples in ``data[col]`` (``(depth, rows)``; ``head[row]`` is the newest position
and ``count[row]`` how many are valid) for inspection (:meth:`Store.history`). A container therefore
costs its virt columns twice (2 x 140 bytes) plus its key slot: about 0.5 KB with the default
``depth = 2`` (see :meth:`Store.bytes_per_source`).

Writing runs in compiled code (:mod:`fastflow.collector._store`; the pure-Python twin
:mod:`fastflow.collector._pystore` when it is not built or ``FASTFLOW_PURE_PYTHON=1``): one pass
over the batch, row by row in arrival order, a dict lookup per row for the data source's slot.
Per data source, against its newest kept sample:

* a sample with the newest sample's sequence number and uptime is a **duplicate**: dropped, counted;
* a sample older than the newest (uptime backwards within ``reorder_window`` and sequence number
  backwards) is **reordered**: dropped, counted (three in a row are taken as a restart instead);
* uptime further backwards, or the sequence number backwards with uptime forwards, is a **reset**
  (agent or poller restart): the data source's rings are emptied and restart from this sample;
  sequence numbers and uptime wrap at 2**32 (a small step across the wrap is forwards);
* uptime that advanced far less than arrival time (``2 * du + dt_tolerance < arrival Δt``, uptime
  Δt > 0) is a reset too, counted as ``uptime_mismatch``: the agent's clock cannot be trusted for
  rates (an agent whose uptime advances 1 ms per 10 s would otherwise give rates 10,000 x too
  high). Uptime running *faster* than arrival is accepted: that is what a replay at speed does;
* a sample with the newest sample's uptime (within a second of arrival) but a later sequence number
  replaces the newest sample (Δt would be 0; hsflowd sometimes sends two polls in one datagram).

Bounds: at most ``max_sources`` data sources. A sample of a new data source when the table is full
is refused and counted (``rejected``); the next housekeeping pass (once a second of clock time) logs
it (rate limited) and evicts the stalest 1/16 of the table (counted ``evicted``) so that new data
sources get room. Data sources not heard from for ``expire_after`` seconds are expired; when more
than half the slots or ring rows are free the tables are compacted and reallocated smaller (the
memory goes back to the system), so the store shrinks after a burst of spoofed sources.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from fastflow._schema import COUNTER_BIT, COUNTER_DTYPE, COUNTER_RECORD_BY_NAME
from fastflow.collector import compiled_or_twin

if TYPE_CHECKING:  # pragma: no cover
    from fastflow.collector.pipeline import Batch, Clock, StringView

__all__ = ["GROUPS", "Ring", "Store", "COUNT_NAMES", "DEFAULT_MAX_SOURCES", "kernel_class"]

log = logging.getLogger(__name__)

# group name -> counter records whose fixed fields it stores
GROUPS: dict[str, tuple[str, ...]] = {
    "virt": ("virt_cpu", "virt_memory", "virt_disk_io", "virt_net_io"),
    "host": ("host_cpu", "host_memory", "host_disk_io", "host_net_io", "virt_node"),
    "if": ("if_counters", "ethernet_counters", "if_name"),
}

# counters kept by the write kernel, in its order
COUNT_NAMES = ("samples", "accepted", "duplicate", "reordered", "reset", "uptime_mismatch",
               "rejected")
DEFAULT_MAX_SOURCES = 300_000     # a 10k-node swarm with 20 containers a node is 210k sources
_H_KEYS, _H_LIVE, _H_FULL, _H_ROWS = 0, 1, 2, 3

_HOST_DESCR_BIT = 1 << COUNTER_BIT["host_descr"]
_KEY_TEXT_COLS = ("hostname", "machine_type", "os_name", "os_release")
_KEY_STR_COLS = ("hostname", "os_release")      # intern-table indices (the others are enums)
_RING_STR_COLS = ("ifname",)
_MIN_CAP = 64
_LOG_EVERY = 10.0                 # seconds between two "store full" warnings


def kernel_class(pure_python: bool | None = None) -> type:
    """The store's write kernel: compiled unless ``pure_python`` (default: FASTFLOW_PURE_PYTHON)."""
    return compiled_or_twin(("fastflow.collector._store", "StoreKernel"),
                            ("fastflow.collector._pystore", "PyStoreKernel"), pure_python)


def _group_columns(records: Sequence[str]) -> list[tuple[str, np.dtype]]:
    cols: list[tuple[str, np.dtype]] = []
    for rec in records:
        for _json, col, _off, typ in COUNTER_RECORD_BY_NAME[rec][3]:
            if typ in ("u32", "u64", "i32", "f32", "str"):   # str: an intern-table index
                cols.append((col, COUNTER_DTYPE[col]))
    return cols


def _bits(records: Sequence[str]) -> int:
    b = 0
    for rec in records:
        b |= 1 << COUNTER_BIT[rec]
    return b


def trim_heap() -> None:
    """Hand free heap memory back to the system (glibc ``malloc_trim``; a no-op elsewhere).

    numpy arrays freed after a shrink may sit below glibc's (dynamic) mmap threshold, in the
    heap, where ``free`` keeps them: without this the RSS would stay at its peak."""
    global _TRIM
    if _TRIM is None:
        try:
            import ctypes

            _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM: Any = None


def _take(dst: np.ndarray, src: np.ndarray, keep: np.ndarray | slice, n: int) -> None:
    """``dst[..., :n] = src[..., keep]`` for record arrays, as raw bytes (numpy would copy a
    structured dtype field by field: ~10 x slower on a growing table)."""
    if not n:
        return
    isz = src.dtype.itemsize
    d = dst.view(np.uint8).reshape(*dst.shape, isz)
    s = src.view(np.uint8).reshape(*src.shape, isz)
    d[..., :n, :] = s[..., keep, :]


def _cap_for(n: int) -> int:
    cap = _MIN_CAP
    while cap < n:
        cap *= 2
    return cap


class Ring:
    """The ring table of one record group: newest / previous sample per row (+ history when
    ``depth > 2``), rows allocated in order and compacted by the store."""

    def __init__(self, name: str, records: Sequence[str], depth: int, capacity: int = _MIN_CAP,
                 hw: np.ndarray | None = None, hw_index: int = 0) -> None:
        self.name = name
        self.records = tuple(records)
        self.bits = _bits(records)
        self.depth = depth
        self.keeps_history = depth > 2
        meta: list[tuple[str, np.dtype]] = [
            ("ts", np.dtype("<f8")), ("uptime", np.dtype("<u4")), ("seq", np.dtype("<u4")),
            ("mask", np.dtype("<u4"))]
        self.columns: list[tuple[str, np.dtype]] = meta + _group_columns(records)
        # (ring column, counter-table column)
        self.sources: list[tuple[str, str]] = [("ts", "ts"), ("uptime", "uptime"),
                                               ("seq", "sequence_number"), ("mask", "mask")] + [
            (col, col) for col, _dt in self.columns[4:]]
        self._hw = hw if hw is not None else np.zeros(1, np.int64)
        self._hwi = hw_index
        # one record per row (newest and previous sample side by side in memory: a write touches
        # a few cache lines, not one per column); ``last[col]`` is a column view for the metrics
        self.dtype = np.dtype(self.columns)
        self.capacity = 0
        self.data = np.zeros((0, 0), self.dtype)
        self.last = np.zeros(0, self.dtype)
        self.prev = np.zeros(0, self.dtype)
        self.head = np.zeros(0, np.int64)
        self.count = np.zeros(0, np.int64)
        self.key_of_row = np.zeros(0, np.int64)
        self.resize(max(int(capacity), 1))

    @property
    def n_rows(self) -> int:
        """High-water mark of rows in use (rows past it are free)."""
        return int(self._hw[self._hwi])

    def resize(self, capacity: int, keep: np.ndarray | None = None) -> None:
        """Reallocate for ``capacity`` rows, keeping rows ``keep`` (default: every used row) as
        rows 0..len(keep)-1."""
        sel: np.ndarray | slice
        if keep is None:
            nk = min(self.n_rows, self.capacity)
            sel = slice(0, nk)
        else:
            nk, sel = len(keep), keep
        depth_h = self.depth if self.keeps_history else 0
        data = np.zeros((depth_h, capacity), self.dtype)
        if depth_h:
            _take(data, self.data, sel, nk)
        self.data = data
        for attr in ("last", "prev"):
            flat = np.zeros(capacity, self.dtype)
            _take(flat, getattr(self, attr), sel, nk)
            setattr(self, attr, flat)
        for attr, fill in (("head", 0), ("count", 0), ("key_of_row", -1)):
            new = np.full(capacity, fill, np.int64)
            if nk:
                new[:nk] = getattr(self, attr)[sel]
            setattr(self, attr, new)
        self.capacity = capacity
        self._hw[self._hwi] = nk

    def release(self, rows: np.ndarray) -> None:
        """Give rows back (their data source expired); the store compacts them away later."""
        self.count[rows] = 0
        self.key_of_row[rows] = -1

    def nbytes(self) -> int:
        return (self.data.nbytes + self.last.nbytes + self.prev.nbytes + self.head.nbytes
                + self.count.nbytes + self.key_of_row.nbytes)

    def row_bytes(self) -> int:
        """Bytes one row costs (newest + previous sample, history, head / count / key)."""
        per = sum(dt.itemsize for _c, dt in self.columns)
        return per * (2 + (self.depth if self.keeps_history else 0)) + 3 * 8

    def used_rows(self) -> np.ndarray:
        """Rows that belong to a live data source."""
        return np.nonzero(self.key_of_row[: self.n_rows] >= 0)[0]

    def history(self, row: int) -> np.ndarray:
        """The valid samples of one row, oldest first, as a structured array (for inspection)."""
        n = int(self.count[row])
        if not self.keeps_history:
            return np.array([self.prev[row], self.last[row]][2 - n:] if n else [], self.dtype)
        pos = (int(self.head[row]) - np.arange(n - 1, -1, -1)) % self.depth
        return self.data[pos, row].copy()


class Store:
    """Newest samples (and optional history) of counter samples per data source; a pipeline sink.

    ``depth``: samples kept per data source (2, the default, is what rates need). ``expire_after``:
    seconds of clock time without a sample after which a data source is dropped.
    ``reorder_window``: how far back (seconds of agent uptime) a late sample is taken as reordered
    rather than as an agent restart. ``max_sources``: most data sources tracked at once.
    ``dt_tolerance``: seconds of slack in the uptime-vs-arrival check (negative: no check).
    """

    # one aligned record per slot, largest fields first (the C struct KeyRow in _store.pyx)
    _KEY_COLUMNS: tuple[tuple[str, str], ...] = (
        ("key", "<u8"), ("last_ts", "<f8"), ("last_seen", "<f8"), ("agent", "<u4"),
        ("source_id", "<u4"), ("last_seq", "<u4"), ("last_uptime", "<u4"), ("hostname", "<u4"),
        ("machine_type", "<u4"), ("os_name", "<u4"), ("os_release", "<u4"), ("alive", "?"),
        ("has", "?"), ("run", "<u1"),
    )
    KEY_DTYPE = np.dtype(list(_KEY_COLUMNS), align=True)

    def __init__(self, depth: int = 2, expire_after: float = 30.0, clock: Clock | None = None,
                 reorder_window: float = 60.0, capacity: int = _MIN_CAP, *,
                 max_sources: int = DEFAULT_MAX_SOURCES, dt_tolerance: float = 2.0,
                 pure_python: bool | None = None) -> None:
        if depth < 2:
            raise ValueError(f"depth must be >= 2 (rates need two samples), got {depth}")
        if not expire_after > 0:
            raise ValueError(f"expire_after must be > 0 seconds, got {expire_after}")
        if int(max_sources) < 1:
            raise ValueError(f"max_sources must be >= 1, got {max_sources}")
        if clock is None:
            from fastflow.collector.pipeline import LiveClock

            clock = LiveClock()
        self.depth = int(depth)
        self.expire_after = float(expire_after)
        self.reorder_window_ms = int(reorder_window * 1000)
        self._wrap_ms = int(max(expire_after, reorder_window) * 1000)
        self.dt_tolerance_ms = int(dt_tolerance * 1000) if dt_tolerance >= 0 else -1
        self.max_sources = int(max_sources)
        self._host_descr_bit = _HOST_DESCR_BIT
        self._text_cols = _KEY_TEXT_COLS
        self.clock: Clock = clock
        self._hw = np.zeros(_H_ROWS + len(GROUPS), np.int64)
        self._cnt = np.zeros(len(COUNT_NAMES), np.int64)
        self.expired = 0
        self.evicted = 0
        self.compactions = 0
        self.rings: dict[str, Ring] = {
            g: Ring(g, recs, self.depth, capacity, self._hw, _H_ROWS + i)
            for i, (g, recs) in enumerate(GROUPS.items())}
        self.strings: StringView | None = None
        self.agents: StringView | None = None
        self.generation = 0                     # bumped on every change (metrics cache key)
        self._index: dict[int, int] = {}        # agent << 32 | source_id -> key slot
        self._kcap = 0
        self.k: np.ndarray = np.zeros(0, self.KEY_DTYPE)   # k[col]: a column view
        self._row: dict[str, np.ndarray] = {}   # group -> row of each key slot (-1: none)
        self._last_expiry = -np.inf
        self._last_full_log = -np.inf
        self._resize_keys(max(int(capacity), 1), None)
        self._kernel: Any = kernel_class(pure_python)(self)
        self._kernel.bind()

    # ------------------------------------------------------------------ sizes
    @property
    def n_keys(self) -> int:
        """High-water mark of key slots (slots past it are free)."""
        return int(self._hw[_H_KEYS])

    @property
    def counts(self) -> dict[str, int]:
        """Samples by fate, data sources refused / expired / evicted."""
        out = {name: int(v) for name, v in zip(COUNT_NAMES, self._cnt.tolist(), strict=True)}
        out["expired"] = self.expired
        out["evicted"] = self.evicted
        return out

    @property
    def compiled(self) -> bool:
        """Whether the compiled write kernel is in use."""
        return type(self._kernel).__module__.endswith("._store")

    def _resize_keys(self, capacity: int, keep: np.ndarray | None) -> None:
        nk = len(keep) if keep is not None else self.n_keys
        src = keep if keep is not None else slice(0, nk)
        k = np.zeros(capacity, self.KEY_DTYPE)
        _take(k, self.k, src, nk)
        self.k = k
        for g in self.rings:
            arr = np.full(capacity, -1, np.int64)
            if nk:
                arr[:nk] = self._row[g][src]
            self._row[g] = arr
        self._kcap = capacity
        self._hw[_H_KEYS] = nk

    # ------------------------------------------------------------------ writing
    def add(self, tables: Batch) -> None:
        """Store the batch's counter samples (the Sink interface)."""
        self.strings = tables.strings
        self.agents = tables.agents
        c = tables.counters
        if len(c):
            self.write(c)
        now = self.clock.now()
        if not 0.0 <= now - self._last_expiry < 1.0:   # at most once a second of clock time
            self.expire(now)

    def tick(self) -> None:
        """Housekeeping without a batch (at most once a second of clock time)."""
        now = self.clock.now()
        if not 0.0 <= now - self._last_expiry < 1.0:
            self.expire(now)

    def write(self, c: np.ndarray) -> None:
        """Write a COUNTER_DTYPE table (row by row in arrival order, in the kernel)."""
        if not c.flags.c_contiguous:
            c = np.ascontiguousarray(c)
        kernel = self._kernel
        n = len(c)
        i = kernel.write(c, 0)
        while i < n:
            need = kernel.need
            want = min(n - i, 1 << 16) + 1
            limit = self.max_sources + _MIN_CAP     # capacity never grows past the cap
            if need == 1:
                holes = self.n_keys - len(self)
                if holes and (holes > self.n_keys // 2 or self._kcap >= limit):
                    self._compact()
                else:
                    self._resize_keys(max(min(_cap_for(self.n_keys + want), limit),
                                          self.n_keys + 1), None)
            else:
                ring = list(self.rings.values())[need - 2]
                holes = ring.n_rows - len(ring.used_rows())
                if holes and (holes > ring.n_rows // 2 or ring.capacity >= limit):
                    self._compact()
                else:
                    ring.resize(max(min(_cap_for(ring.n_rows + want), limit), ring.n_rows + 1))
            kernel.bind()
            i = kernel.write(c, i)
        self.generation += 1

    # ------------------------------------------------------------------ housekeeping
    def expire(self, now: float | None = None) -> int:
        """Drop data sources not heard from within ``expire_after``, evict the stalest when the
        table was full, give memory back; returns how many data sources were dropped."""
        if now is None:
            now = self.clock.now()
        self._last_expiry = now
        n = self.n_keys
        k = self.k
        alive = k["alive"][:n]
        gone = np.nonzero(alive & k["has"][:n] & (k["last_seen"][:n] < now - self.expire_after))[0]
        dropped = 0
        if len(gone):
            self._release(gone)
            self.expired += len(gone)
            dropped += len(gone)
            log.debug("store: expired %d data sources", len(gone))
        refused = int(self._hw[_H_FULL])
        if refused:
            self._hw[_H_FULL] = 0
            live = np.nonzero(k["alive"][:n])[0]
            m = min(len(live), max(1, self.max_sources // 16))
            stalest = live[np.argpartition(k["last_seen"][live], m - 1)[:m]] if m else live[:0]
            self._release(stalest)
            self.evicted += len(stalest)
            dropped += len(stalest)
            if now - self._last_full_log >= _LOG_EVERY or now < self._last_full_log:
                self._last_full_log = now
                log.warning("store full (max_sources=%d): refused %d samples of new data sources "
                            "(%d in all); evicted the %d stalest data sources",
                            self.max_sources, refused, int(self._cnt[6]), len(stalest))
        if dropped:
            self._compact(force=False)
            self.generation += 1
        return dropped

    def _release(self, slots: np.ndarray) -> None:
        k = self.k
        k["alive"][slots] = False
        k["has"][slots] = False
        for g, ring in self.rings.items():
            rows = self._row[g][slots]
            rows = rows[rows >= 0]
            if len(rows):
                ring.release(rows)
            self._row[g][slots] = -1
        keys = k["key"][slots].tolist()
        index = self._index
        for key in keys:
            index.pop(key, None)
        self._hw[_H_LIVE] -= len(slots)

    def _compact(self, force: bool = True) -> bool:
        """Move live slots and rows to the front and reallocate the tables for them (memory given
        back). Unless ``force``, only when more than half of the slots (or of a ring's rows) in
        use are free. Returns whether it compacted."""
        n = self.n_keys
        live = int(self._hw[_H_LIVE])
        holes = n - live
        ring_holes = any(r.n_rows - len(r.used_rows()) > max(r.n_rows // 2, _MIN_CAP)
                         for r in self.rings.values())
        if not force and holes <= max(n // 2, _MIN_CAP) and not ring_holes:
            return False
        k = self.k
        keep = np.nonzero(k["alive"][:n])[0]
        remap = np.full(max(n, 1), -1, np.int64)
        remap[keep] = np.arange(len(keep))
        rowmaps_old = {g: self._row[g][keep].copy() for g in self.rings}
        limit = self.max_sources + _MIN_CAP
        self._resize_keys(max(min(_cap_for(2 * len(keep)), limit), len(keep) + 1), keep)
        for g, ring in self.rings.items():
            used = ring.used_rows()
            ring.resize(max(min(_cap_for(2 * len(used)), limit), len(used) + 1), used)
            ring.key_of_row[: len(used)] = remap[ring.key_of_row[: len(used)]]
            rowpos = np.full(max(used.max() + 1 if len(used) else 1, 1), -1, np.int64)
            rowpos[used] = np.arange(len(used))
            old = rowmaps_old[g]
            self._row[g][: len(keep)] = np.where(old >= 0, rowpos[np.maximum(old, 0)], -1)
        self._index = dict(zip(self.k["key"][: len(keep)].tolist(), range(len(keep)), strict=True))
        self._hw[_H_LIVE] = len(keep)
        if len(keep) < n // 2:
            trim_heap()
        self.compactions += 1
        self.generation += 1
        self._kernel.bind()
        return True

    # ------------------------------------------------------------------ intern indices
    def _ring_strings(self) -> Iterator[tuple[np.ndarray, Any]]:
        """(column, index) of every intern-string field the rings hold for live data sources."""
        for ring in self.rings.values():
            cols = [c for c in _RING_STR_COLS if c in (ring.dtype.names or ())]
            if not cols:
                continue
            used = ring.used_rows()
            for c in cols:
                yield ring.last[c], used
                yield ring.prev[c], used
                if ring.keeps_history:
                    yield ring.data[c], (slice(None), used)

    def interned_refs(self) -> tuple[np.ndarray, np.ndarray]:
        """(string indices, agent indices) the live data sources hold: their host_descr strings,
        interface names in the rings, and their agents (for the pipeline's compaction)."""
        k = self.k
        live = np.nonzero(k["alive"][: self.n_keys])[0]
        strings = [k[c][live] for c in _KEY_STR_COLS]
        strings += [col[idx].ravel() for col, idx in self._ring_strings()]
        return np.concatenate(strings), k["agent"][live].copy()

    def remap_interned(self, smap: np.ndarray, amap: np.ndarray) -> None:
        """Renumber the held indices after the decoder compacted its intern tables (old index ->
        new index); the slot index is rebuilt for the new agent numbers."""
        k = self.k
        live = np.nonzero(k["alive"][: self.n_keys])[0]
        for c in _KEY_STR_COLS:
            k[c][live] = smap[k[c][live]]
        for col, idx in self._ring_strings():
            col[idx] = smap[col[idx]]
        agent = amap[k["agent"][live]]
        k["agent"][live] = agent
        k["key"][live] = (agent.astype(np.uint64) << np.uint64(32)) | \
            k["source_id"][live].astype(np.uint64)
        self._index = dict(zip(k["key"][live].tolist(), live.tolist(), strict=True))
        self.generation += 1
        self._kernel.bind()

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
        return self._index.get(int(agent) << 32 | int(source_id))

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
        return int(self._hw[_H_LIVE])

    def nbytes(self) -> int:
        """Memory held by the key table and the rings (numpy arrays; the slot index is extra)."""
        return (self.k.nbytes + sum(a.nbytes for a in self._row.values())
                + sum(r.nbytes() for r in self.rings.values()))

    def bytes_per_source(self, group: str = "virt") -> int:
        """What one data source of ``group`` costs: key slot, ring row, slot index entry (~100 B)."""
        key = self.KEY_DTYPE.itemsize + 8 * len(self.rings)
        return key + self.rings[group].row_bytes() + 100

    def refusals(self) -> dict[str, int]:
        """Samples refused because the table was full, or whose uptime disagreed with arrival."""
        return {"store_full": int(self._cnt[6]), "uptime_mismatch": int(self._cnt[5])}

    def stats(self) -> dict[str, Any]:
        """Counts of samples by fate, live data sources, caps and memory (for the API / logs)."""
        return dict(self.counts, data_sources=len(self), max_sources=self.max_sources,
                    bytes=self.nbytes(), compiled=self.compiled)
