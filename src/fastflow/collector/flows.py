"""Top flows: sFlow-RT-style flow definitions accounted over decoded flow samples.

:class:`FlowEngine` is a pipeline sink (``add(batch)``; docs/internals.md section 6, docs/flows.md).
Operators (or the dashboard) *define* flows by name, with sFlow-RT's attributes
(https://sflow-rt.com/define_flow.php)::

    PUT /flow/tcp/json  {"keys": "ipsource,ipdestination,tcpdestinationport", "value": "bps",
                         "filter": "ipprotocol=6", "t": 2, "n": 100, "fs": ","}

and read the largest ones with ``GET /activeflows/ALL/tcp/json``. Accounting, per definition:

* each flow sample counts ``frame_length x sampling_rate`` bytes or ``sampling_rate`` frames, per
  (agent, data source, key values). Values are rates, as in sFlow-RT: ``bytes``/``Bps`` read bytes
  per second, ``bps`` bits per second (8 x bytes), ``frames``/``fps``/``packets`` frames per second;
* values decay exponentially with time constant ``t`` seconds, so they read as rates (per second):
  a sample of size ``x`` at time ``ts`` adds ``x/t * exp(-(now - ts)/t)``; a steady stream of ``r``
  bytes/s reads ``r``. The undecayed total is kept too (``FlowEngine.flows``);
* a sample whose keys are not all defined (``tcpsourceport`` of a UDP packet) is not counted;
  ``keys`` may be empty (one flow per data source, key ``""``), key values are joined with ``fs``;
* ``dropped: true`` definitions count only rows decoded from 0:5 discarded-packet events (column
  ``discard`` of FLOW_DTYPE); every other definition leaves those rows out;
* ``log: true`` definitions record completed flows (end of flow: idle, evicted, or active for
  ``activeTimeout`` seconds; or start of flow with ``flowStart: true``) into a bounded ring read by
  :meth:`FlowEngine.logged_flows` (``GET /flows/json``);
* the work per batch is vectorised: key columns and the filter mask are numpy arrays, samples are
  grouped with ``np.unique`` on a void view, sums with ``np.bincount``; Python runs only once per
  *distinct* flow of the batch;
* a definition keeps at most ``n`` flows: when its table reaches ``2n`` the smallest are evicted,
  and flows idle for ``expire_factor x t`` seconds are dropped; the sum of ``2n`` over definitions is
  capped by ``max_flow_rows``;
* definitions made over REST expire after ``definition_ttl`` seconds (default 300) without a
  ``PUT``/``GET`` of them, so a dashboard defining one flow per query cannot leak;
  :meth:`FlowEngine.define` with ``persistent=True`` makes one that never expires.

Sequence-number gaps of flow samples per (agent, sub-agent, data source, sample kind) are counted
as lost samples (``FlowEngine.stats()``, ``GET /flowstats/json``). That state lives in a
:class:`SourceTable`: sorted numpy columns, at most ``max_sources`` entries (stalest evicted first,
never one seen in the last ``source_min_age`` seconds; refusals counted), entries idle for
``source_idle_expire`` seconds dropped. Time is the pipeline clock (live wall clock, or capture time
in a replay) and never runs backwards for the engine.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fastflow._intern import renumber
from fastflow.collector.flowfilter import (
    Filter,
    FilterError,
    KeyColumns,
    KeySpec,
    data_source_text,
    is_discard,
    parse_filter,
    parse_keys,
)
from fastflow.collector.metrics import AGGREGATIONS, METRICS, reduce_values

__all__ = ["FlowEngine", "FlowDefinition", "FilterError", "SourceTable", "VALUES", "AGG_MODES",
           "query_metrics"]

log = logging.getLogger(__name__)

#: the fields of sFlow-RT's flow definition object (https://sflow-rt.com/define_flow.php)
DEFINITION_FIELDS = frozenset({"keys", "value", "filter", "t", "n", "fs", "dropped", "log",
                               "flowStart", "activeTimeout", "aggMode"})

# value name -> (what is counted per sample, scale to the reported unit, description)
VALUES: dict[str, tuple[str, float, str]] = {
    "bytes": ("bytes", 1.0, "bytes per second (frame_length x sampling_rate per sample)"),
    "Bps": ("bytes", 1.0, "bytes per second (same as bytes)"),
    "bps": ("bytes", 8.0, "bits per second (8 x bytes per second)"),
    "frames": ("frames", 1.0, "frames per second (sampling_rate per sample)"),
    "fps": ("frames", 1.0, "frames per second (same as frames)"),
    "packets": ("frames", 1.0, "frames per second (alias of frames)"),
}
AGG_MODES = ("max", "sum", "edge", "core")
MAX_T = 86400.0
MAX_N = 100_000
MAX_FS = 64
_GAP_LIMIT = 1 << 20        # a sequence jump beyond this is a restart/reorder/spoof, not loss


def value_name(value: Any) -> str:
    """The canonical value name (``bps`` and ``Bps`` differ by case; others are case-insensitive)."""
    if isinstance(value, str):
        if value in VALUES:
            return value
        low = value.lower()
        if low in VALUES and low not in ("bps",):
            return low
    raise FilterError(f"value must be one of {', '.join(VALUES)}, not {value!r}")


class _ClockLike(Protocol):
    def now(self) -> float: ...


class _WallClock:
    def now(self) -> float:
        return time.time()


def _agent_lookup(agents: Any) -> Callable[[int], str]:
    """``batch.agents`` (a StringView: indexable or callable) as a function index -> text."""
    if agents is None:
        return lambda i: str(i)
    if hasattr(agents, "__getitem__"):
        def get(i: int) -> str:
            try:
                return str(agents[i])
            except (IndexError, KeyError):
                return str(i)
        return get
    if callable(agents):
        return lambda i: str(agents(i))
    return lambda i: str(i)


def _void(rows: np.ndarray) -> np.ndarray:
    rows = np.ascontiguousarray(rows)
    return rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).reshape(-1)


@dataclass
class FlowDefinition:
    """One named flow definition and its flow table.

    The table is columnar: ``keys`` holds one row of uint64 words per flow (agent index, data
    source class and index, then the key words), with ``val`` (decayed value at ``last``),
    ``last``, ``total``, and for flow logging ``start`` and ``period`` (value since the flow's
    start or last flush) beside it. A sorted void view of the key rows finds a batch's flows with
    ``np.searchsorted``; key text is formatted only when a flow is reported."""

    name: str
    keys: list[KeySpec]
    value: str
    filter: Filter | None
    t: float
    n: int
    persistent: bool = False
    fs: str = ","
    dropped: bool = False
    log: bool = False
    flow_start: bool = False
    active_timeout: float = 60.0
    agg_mode: str | None = None
    last_used: float = 0.0                  # monotonic time of the last PUT/GET
    size: int = 0
    width: int = 3
    rows: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.uint64))
    val: np.ndarray = field(default_factory=lambda: np.zeros(0))
    last: np.ndarray = field(default_factory=lambda: np.zeros(0))
    total: np.ndarray = field(default_factory=lambda: np.zeros(0))
    start: np.ndarray = field(default_factory=lambda: np.zeros(0))
    period: np.ndarray = field(default_factory=lambda: np.zeros(0))
    order: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    sorted_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, "V24"))
    samples: int = 0                        # flow samples counted into this definition
    evicted: int = 0                        # flows evicted to keep the table at n
    base: str = field(init=False, default="bytes")      # what a sample counts: bytes or frames
    scale: float = field(init=False, default=1.0)       # to the value's unit (8 for bps)

    _ARRAYS = ("val", "last", "total", "start", "period")

    def __post_init__(self) -> None:
        self.width = 3 + sum(k.nwords for k in self.keys)
        self.rows = np.zeros((0, self.width), np.uint64)
        self.sorted_keys = np.zeros(0, np.dtype((np.void, 8 * self.width)))
        self.base, self.scale, _ = VALUES[self.value]

    def spec(self) -> dict[str, Any]:
        """The definition as sFlow-RT shows it (GET /flow/{name}/json)."""
        out: dict[str, Any] = {
            "keys": ",".join(k.name for k in self.keys), "value": self.value,
            "filter": self.filter.text if self.filter else None, "t": self.t, "n": self.n,
            "fs": self.fs, "dropped": self.dropped, "log": self.log, "flowStart": self.flow_start,
            "activeTimeout": self.active_timeout}
        if self.agg_mode is not None:
            out["aggMode"] = self.agg_mode
        return out

    def same_as(self, other: FlowDefinition) -> bool:
        return self.spec() == other.spec()

    def _reindex(self) -> None:
        v = _void(self.rows[:self.size])
        self.order = np.argsort(v, kind="stable")
        self.sorted_keys = v[self.order]

    def slots_for(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slot of each (distinct) key row, appending new flows (value 0) for unseen rows; and a
        mask of the rows that were new."""
        m = len(rows)
        slots = np.full(m, -1, np.int64)
        rv = _void(rows)
        if self.size:
            pos = np.minimum(np.searchsorted(self.sorted_keys, rv), self.size - 1)
            found = self.sorted_keys[pos] == rv
            slots[found] = self.order[pos[found]]
        is_new = slots < 0
        new = np.flatnonzero(is_new)
        if len(new):
            s0, s1 = self.size, self.size + len(new)
            self._grow(s1)
            self.rows[s0:s1] = rows[new]
            for name in self._ARRAYS:
                getattr(self, name)[s0:s1] = 0.0
            self.size = s1
            slots[new] = np.arange(s0, s1)
            self._reindex()
        return slots, is_new

    def _grow(self, need: int) -> None:
        cap = len(self.val)
        if need <= cap:
            return
        new = max(need, cap * 2, 64)
        rows = np.zeros((new, self.width), np.uint64)
        rows[:cap] = self.rows
        self.rows = rows
        for name in self._ARRAYS:
            grown = np.zeros(new)
            grown[:cap] = getattr(self, name)
            setattr(self, name, grown)

    def decayed(self, now: float) -> np.ndarray:
        """Every flow's value decayed to ``now`` (rate per second, in the definition's unit)."""
        k = self.size
        dt = np.maximum(now - self.last[:k], 0.0)
        return self.val[:k] * np.exp(-dt / self.t) * self.scale

    def keep(self, mask: np.ndarray) -> None:
        """Compact the table to the slots where ``mask`` is true (memory given back)."""
        idx = np.flatnonzero(mask)
        self.rows = self.rows[idx].copy()
        for name in self._ARRAYS:
            setattr(self, name, getattr(self, name)[idx].copy())
        self.size = len(idx)
        self._reindex()

    def key_text(self, slot: int, agents: Callable[[int], str]) -> str:
        """The sFlow-RT key text of one flow: the key values as text, joined by ``fs``."""
        row = self.rows[slot].tolist()
        parts = []
        pos = 3
        for spec in self.keys:
            parts.append(spec.fmt(row[pos:pos + spec.nwords], agents))
            pos += spec.nwords
        return self.fs.join(parts)

    def agent_ds(self, slot: int, agents: Callable[[int], str]) -> tuple[str, str]:
        a, cls, idx = self.rows[slot, :3].tolist()
        return agents(int(a)), data_source_text(int(cls), int(idx))


def _group_max(v: np.ndarray, inv: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per group (``inv``: group of each value): the largest value and the slot (``idx``) of it."""
    g = int(inv.max()) + 1
    o = np.lexsort((-v, inv))                 # by group, largest first
    first = o[np.r_[True, inv[o][1:] != inv[o][:-1]]]
    maxes = np.empty(g)
    maxes[inv[first]] = v[first]
    best_slot = np.empty(g, np.int64)
    best_slot[inv[first]] = idx[first]
    return maxes, best_slot


def _agent_words(d: FlowDefinition) -> list[int]:
    """Row positions of the words of ``d``'s plain ``agent`` keys (agent indices)."""
    out, pos = [], 3
    for spec in d.keys:
        if spec.name == "agent":
            out.append(pos)
        pos += spec.nwords
    return out


def _group(cols: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of uint64 columns: (rows (m, k) uint64, inverse (n,) int)."""
    arr = np.ascontiguousarray(np.stack(cols, axis=1).astype(np.uint64, copy=False))
    if arr.shape[0] == 0:
        return arr, np.zeros(0, np.int64)
    _, first, inv = np.unique(_void(arr), return_index=True, return_inverse=True)
    return arr[first], inv.reshape(-1)


class SourceTable:
    """Per-source sequence state for loss counting, bounded (issue #11 item 5).

    Key: (agent << 32 | sub_agent_id, discard << 32 | source_id) as two uint64 words; columns
    ``last_seq``, ``samples``, ``lost``, ``jumps`` (sequence jumps too large to be loss),
    ``last_seen``. Kept sorted by key (``np.searchsorted`` finds a batch's sources, ``np.insert``
    adds new ones): 56 bytes per source, no per-source Python objects."""

    COLS = ("last_seq", "samples", "lost", "jumps", "last_seen")

    def __init__(self, max_sources: int, min_age: float, idle_expire: float) -> None:
        self.max_sources = int(max_sources)
        self.min_age = float(min_age)
        self.idle_expire = float(idle_expire)
        self.keys = np.zeros((0, 2), np.uint64)
        self.sorted = np.zeros(0, "V16")
        self.last_seq = np.zeros(0, np.int64)
        self.samples = np.zeros(0, np.int64)
        self.lost = np.zeros(0, np.int64)
        self.jumps = np.zeros(0, np.int64)
        self.last_seen = np.zeros(0)
        self.evicted = 0
        self.refused = 0
        self.expired = 0
        self._warned = -math.inf

    def __len__(self) -> int:
        return len(self.keys)

    def nbytes(self) -> int:
        return int(self.keys.nbytes + self.sorted.nbytes
                   + sum(getattr(self, c).nbytes for c in self.COLS))

    def _drop(self, mask: np.ndarray) -> None:
        keep = ~mask
        self.keys = self.keys[keep]
        self.sorted = self.sorted[keep]
        for c in self.COLS:
            setattr(self, c, getattr(self, c)[keep])

    def expire(self, now: float) -> None:
        """Forget sources idle for ``idle_expire`` seconds."""
        old = (now - self.last_seen) > self.idle_expire
        n = int(old.sum())
        if n:
            self.expired += n
            self._drop(old)
            log.info("flow loss state: %d data source(s) idle for %.0f s forgotten", n,
                     self.idle_expire)

    def update(self, flows: np.ndarray, now: float) -> tuple[int, int]:
        """Account one batch; returns (lost samples, implausible jumps) found in it."""
        disc = is_discard(flows).astype(np.uint64)
        k0 = (flows["agent"].astype(np.uint64) << np.uint64(32)) | \
            flows["sub_agent_id"].astype(np.uint64)
        k1 = (disc << np.uint64(32)) | flows["source_id"].astype(np.uint64)
        rows, inv = _group([k0, k1])
        order = np.argsort(inv, kind="stable")
        g = inv[order]
        seq = flows["sequence_number"][order].astype(np.int64)
        starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
        ends = np.r_[starts[1:], len(g)]
        d = (seq[1:] - seq[:-1]) & 0xFFFFFFFF
        same = g[1:] == g[:-1]
        inner = np.where((d > 1) & (d <= _GAP_LIMIT) & same, d - 1, 0)
        jump = ((d > _GAP_LIMIT) & same).astype(np.int64)
        lost = np.add.reduceat(np.r_[inner, 0], starts)
        jumps = np.add.reduceat(np.r_[jump, 0], starts)
        first_seq, last_seq = seq[starts], seq[ends - 1]
        count = ends - starts
        rv = _void(rows)
        m = len(rows)
        slot = np.full(m, -1, np.int64)
        if len(self.keys):
            pos = np.minimum(np.searchsorted(self.sorted, rv), len(self.keys) - 1)
            found = self.sorted[pos] == rv
            slot[found] = pos[found]
        old = slot >= 0
        s = slot[old]
        gap = (first_seq[old] - self.last_seq[s]) & 0xFFFFFFFF
        lost[old] += np.where((gap > 1) & (gap <= _GAP_LIMIT), gap - 1, 0)
        jumps[old] += (gap > _GAP_LIMIT)
        self.last_seq[s] = last_seq[old]
        self.samples[s] += count[old]
        self.lost[s] += lost[old]
        self.jumps[s] += jumps[old]
        self.last_seen[s] = now
        new = np.flatnonzero(~old)
        if len(new):
            self._insert(rows[new], rv[new], last_seq[new], count[new], lost[new], jumps[new], now)
        return int(lost.sum()), int(jumps.sum())

    def _insert(self, rows: np.ndarray, rv: np.ndarray, last_seq: np.ndarray, count: np.ndarray,
                lost: np.ndarray, jumps: np.ndarray, now: float) -> None:
        room = self.max_sources - len(self.keys)
        if room < len(rows):
            self.expire(now)
            room = self.max_sources - len(self.keys)
        if room < len(rows):
            # evict the stalest, but never a source seen in the last min_age seconds
            age = now - self.last_seen
            cand = np.flatnonzero(age >= self.min_age)
            need = len(rows) - room
            if len(cand):
                take = cand[np.argsort(self.last_seen[cand], kind="stable")[:need]]
                mask = np.zeros(len(self.keys), bool)
                mask[take] = True
                self.evicted += len(take)
                self._drop(mask)
                room += len(take)
        if room < len(rows):
            refused = len(rows) - max(room, 0)
            self.refused += refused
            mono = time.monotonic()
            if mono - self._warned >= 60.0:          # one line a minute at most
                self._warned = mono
                log.warning("flow loss state full (%d data sources, none idle for %.0f s): "
                            "%d new source(s) refused so far", self.max_sources, self.min_age,
                            self.refused)
            keep = slice(0, max(room, 0))
            rows, rv, last_seq, count, lost, jumps = (a[keep] for a in
                                                      (rows, rv, last_seq, count, lost, jumps))
            if not len(rows):
                return
        pos = np.searchsorted(self.sorted, rv)
        self.sorted = np.insert(self.sorted, pos, rv)
        self.keys = np.insert(self.keys, pos, rows, axis=0)
        self.last_seq = np.insert(self.last_seq, pos, last_seq)
        self.samples = np.insert(self.samples, pos, count)
        self.lost = np.insert(self.lost, pos, lost)
        self.jumps = np.insert(self.jumps, pos, jumps)
        self.last_seen = np.insert(self.last_seen, pos, np.full(len(rows), now))

    def remap_agents(self, amap: np.ndarray) -> None:
        """Renumber agent indices (old -> new, 0: no longer known: the entry is dropped)."""
        if not len(self.keys):
            return
        new, gone = renumber(amap, (self.keys[:, 0] >> np.uint64(32)).astype(np.int64))
        self.keys[:, 0] = (new.astype(np.uint64) << np.uint64(32)) | \
            (self.keys[:, 0] & np.uint64(0xFFFFFFFF))
        self._drop(gone)
        rv = _void(self.keys)
        order = np.argsort(rv, kind="stable")
        self.keys = self.keys[order]
        self.sorted = rv[order]
        for c in self.COLS:
            setattr(self, c, getattr(self, c)[order])

    def top(self, n: int, agents: Callable[[int], str]) -> list[dict[str, Any]]:
        """The ``n`` sources with the most lost samples (then most samples)."""
        if n <= 0 or not len(self.keys):
            return []
        score = self.lost.astype(np.float64) * 1e12 + np.minimum(self.samples, 10**12 - 1)
        cand = np.argpartition(-score, n - 1)[:n] if n < len(score) else np.arange(len(score))
        o = cand[np.argsort(-score[cand], kind="stable")]
        out = []
        for i in o.tolist():
            k0, k1 = (int(x) for x in self.keys[i])
            sid = k1 & 0xFFFFFFFF
            out.append({"agent": agents(k0 >> 32), "subAgentId": k0 & 0xFFFFFFFF,
                        "dataSource": data_source_text(sid >> 24, sid & 0xFFFFFF),
                        "discards": bool(k1 >> 32), "samples": int(self.samples[i]),
                        "lostSamples": int(self.lost[i]), "sequenceJumps": int(self.jumps[i]),
                        "lastSequence": int(self.last_seq[i])})
        return out


class FlowEngine:
    """Pipeline sink computing sFlow-RT-style top flows; see the module docstring.

    Bounds (every one configurable from ``[flows]``): ``max_definitions`` definitions,
    ``max_flow_rows`` flow rows over all definitions (2n each), ``max_sources`` loss-state entries,
    ``max_logged_flows`` records in the flow log."""

    def __init__(self, clock: _ClockLike | None = None, definition_ttl: float | None = 300.0,
                 expire_factor: float = 10.0, max_definitions: int = 1000,
                 idle_clock: Callable[[], float] = time.monotonic,
                 max_flow_rows: int = 1_000_000, max_sources: int = 100_000,
                 source_min_age: float = 60.0, source_idle_expire: float = 1800.0,
                 max_logged_flows: int = 10_000) -> None:
        self.clock: _ClockLike = clock if clock is not None else _WallClock()
        self.definition_ttl = definition_ttl
        self.expire_factor = float(expire_factor)
        self.max_definitions = int(max_definitions)
        self.max_flow_rows = int(max_flow_rows)
        self._idle_clock = idle_clock
        self.lock = threading.RLock()
        self._defs: dict[str, FlowDefinition] = {}
        self._now = 0.0                      # newest time seen (never goes back)
        self._last_sweep = 0.0
        self.sources = SourceTable(max_sources, source_min_age, source_idle_expire)
        self.samples = 0
        self.discard_samples = 0
        self.lost_samples = 0
        self.sequence_jumps = 0
        self._agents: Callable[[int], str] = str     # newest batch's agent index -> text
        # flow log: its own lock, so /flows/json readers never wait for a batch being accounted
        self._log_lock = threading.Lock()
        self._log: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=max(1, int(max_logged_flows)))
        self._flow_id = 0

    # -- definitions ----------------------------------------------------------------------------
    def define_spec(self, name: str, spec: Any, persistent: bool = False) -> FlowDefinition:
        """:meth:`define` from sFlow-RT's definition object (``PUT /flow/{name}/json``, a script's
        ``setFlow(name, spec)``): ``keys``, ``value``, ``filter``, ``t``, ``n``, ``fs``,
        ``dropped``, ``log``, ``flowStart``, ``activeTimeout``, ``aggMode``. Numbers may come as
        numeric text (scripts pass query-string values); an unknown field is a FilterError."""
        if not isinstance(spec, dict):
            raise FilterError("flow definition must be an object "
                              '{"keys", "value", "filter", "t", "n", ...}')
        unknown = set(spec) - DEFINITION_FIELDS
        if unknown:
            raise FilterError(f"unknown flow definition field(s): {', '.join(sorted(unknown))}")

        def num(key: str, default: float) -> Any:
            v = spec.get(key)
            if v is None:
                return default
            if isinstance(v, str):
                try:
                    return float(v)
                except ValueError:
                    raise FilterError(f"{key} must be a number, not {v!r}") from None
            return v

        def flag(key: str) -> Any:
            v = spec.get(key, False)
            if isinstance(v, str) and v.lower() in ("true", "false"):
                return v.lower() == "true"
            return v

        flt = spec.get("filter")
        return self.define(name, spec.get("keys"), spec.get("value") or "bytes",
                           flt if flt != "" else None, num("t", 2.0), num("n", 100), persistent,
                           fs="," if spec.get("fs") is None else spec["fs"], dropped=flag("dropped"),
                           log_flows=flag("log"), flow_start=flag("flowStart"),
                           active_timeout=num("activeTimeout", 60.0),
                           agg_mode=spec.get("aggMode"))

    def define(self, name: str, keys: str | Sequence[str] | None = None, value: str = "bytes",
               filter: str | None = None, t: float = 2.0, n: int = 100,
               persistent: bool = False, *, fs: str = ",", dropped: bool = False,
               log_flows: bool = False, flow_start: bool = False, active_timeout: float = 60.0,
               agg_mode: str | None = None) -> FlowDefinition:
        """Create or replace flow definition ``name``; :class:`FilterError` on a bad definition.

        Redefining with identical parameters keeps the accumulated flows."""
        if not isinstance(name, str) or not name or "/" in name or len(name) > 200:
            raise FilterError("flow name must be 1-200 characters without '/'")
        specs = parse_keys(keys)
        vname = value_name(value)
        if filter is not None and not isinstance(filter, str):
            raise FilterError("filter must be a string")
        flt = parse_filter(filter)
        tf = _seconds("t", t, MAX_T)
        if isinstance(n, bool) or not isinstance(n, (int, float)) or int(n) != n \
                or not 1 <= int(n) <= MAX_N:
            raise FilterError(f"n must be an integer from 1 to {MAX_N}")
        if not isinstance(fs, str) or not 0 < len(fs) <= MAX_FS:
            raise FilterError(f"fs must be a string of 1 to {MAX_FS} characters")
        for label, flag in (("dropped", dropped), ("log", log_flows), ("flowStart", flow_start)):
            if not isinstance(flag, bool):
                raise FilterError(f"{label} must be true or false")
        at = _seconds("activeTimeout", active_timeout, MAX_T)
        if agg_mode is not None:
            agg_mode = _agg_mode(agg_mode)
        d = FlowDefinition(name, specs, vname, flt, tf, int(n), persistent, fs, dropped, log_flows,
                           flow_start, at, agg_mode, self._idle_clock())
        with self.lock:
            old = self._defs.get(name)
            if old is not None and old.same_as(d):
                old.last_used = d.last_used
                old.persistent = old.persistent or persistent
                return old
            if old is None:
                self._expire_definitions()
                if len(self._defs) >= self.max_definitions:
                    raise FilterError(f"too many flow definitions ({self.max_definitions}); "
                                      "delete some or wait for idle ones to expire")
            rows = sum(2 * x.n for k, x in self._defs.items() if k != name) + 2 * d.n
            if rows > self.max_flow_rows:
                raise FilterError(f"flow tables would exceed max_flow_rows ({self.max_flow_rows}:"
                                  " 2 x n per definition); use a smaller n or delete definitions")
            if old is not None:
                self._flush_log(old, np.ones(old.size, bool))
            self._defs[name] = d
        log.debug("flow %s defined: %s", name, d.spec())
        return d

    def delete(self, name: str) -> bool:
        """Remove definition ``name``; False when there was none."""
        with self.lock:
            d = self._defs.pop(name, None)
            if d is not None:
                self._flush_log(d, np.ones(d.size, bool))
            return d is not None

    def definition(self, name: str, touch: bool = True) -> FlowDefinition | None:
        with self.lock:
            self._expire_definitions()
            d = self._defs.get(name)
            if d is not None and touch:
                d.last_used = self._idle_clock()
            return d

    def definitions(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            self._expire_definitions()
            return {name: d.spec() for name, d in self._defs.items()}

    def _expire_definitions(self) -> None:
        if self.definition_ttl is None:
            return
        cutoff = self._idle_clock() - self.definition_ttl
        for name in [n for n, d in self._defs.items() if not d.persistent and d.last_used < cutoff]:
            log.info("flow definition %s expired (not queried for %.0f s)", name,
                     self.definition_ttl)
            d = self._defs.pop(name)
            self._flush_log(d, np.ones(d.size, bool))

    # -- accounting -----------------------------------------------------------------------------
    def add(self, tables: Any) -> None:
        """Account the flow samples of one pipeline batch (``tables.flows``, ``tables.agents``)."""
        flows = getattr(tables, "flows", None)
        if flows is None or len(flows) == 0:
            return
        agents = _agent_lookup(getattr(tables, "agents", None))
        self.add_flows(flows, agents)

    def add_flows(self, flows: np.ndarray, agents: Callable[[int], str]) -> None:
        """Account a FLOW_DTYPE table; ``agents(i)`` gives the text of agent index ``i``."""
        n = len(flows)
        if n == 0:
            return
        with self.lock:
            ts = flows["ts"]
            now = max(self.clock.now(), float(ts.max()), self._now)
            self._now = now
            disc = is_discard(flows)
            nd = int(disc.sum())
            self.samples += n - nd
            self.discard_samples += nd
            self._agents = agents
            lost, jumps = self.sources.update(flows, now)
            self.lost_samples += lost
            self.sequence_jumps += jumps
            if self._defs:
                rate = np.maximum(flows["sampling_rate"], 1).astype(np.float64)
                frame_bytes = flows["frame_length"].astype(np.float64) * rate
                age = np.where(ts > 0, np.maximum(now - ts, 0.0), 0.0)
                cache: dict[str, KeyColumns] = {}
                base = [flows["agent"].astype(np.uint64),
                        flows["source_id_type"].astype(np.uint64),
                        flows["source_id_index"].astype(np.uint64)]
                for d in list(self._defs.values()):
                    self._account(d, flows, agents, cache, base, disc,
                                  frame_bytes if d.base == "bytes" else rate, age, now)
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        if now - self._last_sweep >= 1.0:
            self._last_sweep = now
            for d in self._defs.values():
                self._prune(d, now)
            self.sources.expire(now)

    def tick(self) -> None:
        """Age the tables to the clock even when no samples arrive (at most one sweep a second):
        idle flows end (and are logged), idle sources are forgotten. Called by ``/flows/json``;
        the service may call it periodically too."""
        with self.lock:
            self._sweep(self.now())

    def _account(self, d: FlowDefinition, flows: np.ndarray, agents: Callable[[int], str],
                 cache: dict[str, KeyColumns], base: list[np.ndarray], disc: np.ndarray,
                 xs: np.ndarray, age: np.ndarray, now: float) -> None:
        sel = disc.copy() if d.dropped else ~disc
        if not sel.any():
            return
        if d.filter is not None:
            sel &= d.filter.mask(flows, agents, cache)
        cols = list(base)
        for spec in d.keys:
            kc = cache.get(spec.name)
            if kc is None:
                kc = cache[spec.name] = spec.columns(flows, agents)
            sel &= kc.defined
            cols.extend(kc.words)
        idx = np.flatnonzero(sel)
        if len(idx) == 0:
            return
        x = xs[idx]
        rows, inv = _group([c[idx] for c in cols])
        m = len(rows)
        raw = np.bincount(inv, weights=x, minlength=m)
        w = np.bincount(inv, weights=x * np.exp(-age[idx] / d.t), minlength=m)
        d.samples += len(idx)
        slots, is_new = d.slots_for(rows)
        dt = np.maximum(now - d.last[slots], 0.0)
        d.val[slots] = d.val[slots] * np.exp(-dt / d.t) + w / d.t
        d.last[slots] = now
        d.total[slots] += raw
        if d.log:
            self._log_batch(d, slots, is_new, raw, now)
        if d.size >= 2 * d.n:
            self._prune(d, now)

    def _log_batch(self, d: FlowDefinition, slots: np.ndarray, is_new: np.ndarray,
                   raw: np.ndarray, now: float) -> None:
        d.start[slots[is_new]] = now
        if d.flow_start:
            new = slots[is_new]
            if len(new):
                self._emit(d, new, raw[is_new], np.full(len(new), now), np.full(len(new), now))
            return
        d.period[slots] += raw
        k = d.size
        due = np.flatnonzero(((now - d.start[:k]) >= d.active_timeout) & (d.period[:k] > 0))
        if len(due):
            self._emit(d, due, d.period[due], d.start[due], d.last[due])
            d.start[due] = now
            d.period[due] = 0.0

    def _flush_log(self, d: FlowDefinition, mask: np.ndarray) -> None:
        """Log the flows of ``mask`` as ended (they are about to leave the table)."""
        if not d.log or d.flow_start or not d.size:
            return
        idx = np.flatnonzero(mask[:d.size] & (d.period[:d.size] > 0))
        if len(idx):
            self._emit(d, idx, d.period[idx], d.start[idx], d.last[idx])

    def _emit(self, d: FlowDefinition, slots: np.ndarray, values: np.ndarray, start: np.ndarray,
              end: np.ndarray) -> None:
        """Append sFlow-RT flow records (``/flows/json``) for ``slots`` to the bounded ring."""
        recs = []
        for s, v, t0, t1 in zip(slots.tolist(), values.tolist(), start.tolist(), end.tolist(),
                                strict=True):
            agent, ds = d.agent_ds(s, self._agents)
            recs.append({"name": d.name, "agent": agent, "dataSource": ds,
                         "flowKeys": d.key_text(s, self._agents), "value": v * d.scale,
                         "start": int(t0 * 1000), "end": int(t1 * 1000)})
        with self._log_lock:
            for r in recs:
                self._flow_id += 1
                r["flowID"] = self._flow_id
                self._log.append(r)

    def _prune(self, d: FlowDefinition, now: float) -> None:
        """Drop idle flows; when more than ``n`` remain, keep the ``n`` largest."""
        k = d.size
        if k == 0:
            return
        alive = (now - d.last[:k]) <= self.expire_factor * d.t
        if k >= 2 * d.n and alive.sum() > d.n:
            vals = np.where(alive, d.decayed(now), -1.0)
            top = np.argpartition(-vals, d.n - 1)[:d.n]
            keep = np.zeros(k, bool)
            keep[top] = True
            keep &= alive
            d.evicted += int(alive.sum() - keep.sum())
            alive = keep
        if not alive.all():
            self._flush_log(d, ~alive)
            d.keep(alive)

    # -- intern indices -------------------------------------------------------------------------
    def interned_refs(self) -> tuple[np.ndarray, np.ndarray]:
        """(string indices, agent indices) held: the agents of every flow (and of ``agent``
        keys) and of the loss state."""
        with self.lock:
            agents = [(self.sources.keys[:, 0] >> np.uint64(32)).astype(np.int64)]
            for d in self._defs.values():
                agents.append(d.rows[:d.size, 0].astype(np.int64))
                for pos in _agent_words(d):
                    agents.append(d.rows[:d.size, pos].astype(np.int64))
        return np.zeros(0, np.int64), np.concatenate(agents)

    def remap_interned(self, smap: np.ndarray, amap: np.ndarray) -> None:
        """Renumber agent indices after the decoder compacted its tables (old -> new). A
        definition whose key functions compute on agent text starts its flows afresh."""
        with self.lock:
            self.sources.remap_agents(amap)
            for d in self._defs.values():
                k = d.size
                if any("agent" in spec.name and spec.name != "agent" for spec in d.keys):
                    d.keep(np.zeros(k, bool))
                    continue
                for pos in [0, *_agent_words(d)]:
                    d.rows[:k, pos] = renumber(amap, d.rows[:k, pos].astype(np.int64))[0]
                d._reindex()

    # -- queries --------------------------------------------------------------------------------
    def now(self) -> float:
        """The engine's time: the clock, never earlier than the newest sample seen."""
        return max(self.clock.now(), self._now)

    def flows(self, name: str, now: float | None = None) -> list[dict[str, Any]]:
        """Every flow of ``name`` (per agent and data source) with its rate and undecayed total
        (``total`` in the definition's unit: bytes, bits or frames)."""
        with self.lock:
            d = self._defs.get(name)
            if d is None:
                raise KeyError(name)
            t = self.now() if now is None else now
            vals = d.decayed(t)
            out = []
            for i in range(d.size):
                agent, ds = d.agent_ds(i, self._agents)
                out.append({"key": d.key_text(i, self._agents), "agent": agent, "dataSource": ds,
                            "value": float(vals[i]), "total": float(d.total[i] * d.scale)})
            return out

    def active_flows(self, agents: str, name: str, max_flows: int | None = None,
                     min_value: float = 0.0, agg_mode: str | None = None) -> list[dict[str, Any]]:
        """sFlow-RT ``/activeflows``: flows aggregated over data sources, largest first.

        ``agents`` is "ALL" or a ``;``-separated list of agent addresses. ``agg_mode`` (default:
        the definition's ``aggMode``, else "max"): "max" reports the largest data source's value,
        "sum" the sum over data sources (agent/dataSource are those of the largest contributor).
        Without a network topology every data source is an edge port: "edge" sums like "sum",
        "core" has no links to report (empty). Vectorised; only the reported flows are formatted."""
        mode = _agg_mode(agg_mode) if agg_mode is not None else None
        d = self.definition(name)
        if d is None:
            raise KeyError(name)
        mode = mode or d.agg_mode or "max"
        if mode == "core":
            return []
        limit = d.n if max_flows is None else max(0, int(max_flows))
        with self.lock:
            now = self.now()
            self._prune(d, now)
            if d.size == 0 or limit == 0:
                return []
            vals, idx = self._active(d, agents, now)
            if len(idx) == 0:
                return []
            v = vals[idx]
            _, inv = _group([d.rows[idx, j] for j in range(3, d.width)]) if d.width > 3 else \
                (None, np.zeros(len(idx), np.int64))
            maxes, best_slot = _group_max(v, inv, idx)
            sums = np.bincount(inv, weights=v, minlength=len(maxes))
            score = maxes if mode == "max" else sums
            keep = np.flatnonzero((score >= min_value) & np.isfinite(score))
            keep = keep[np.argsort(-score[keep], kind="stable")][:limit]
            out: list[dict[str, Any]] = []
            for gi in keep.tolist():
                slot = int(best_slot[gi])
                agent, ds = d.agent_ds(slot, self._agents)
                out.append({"key": d.key_text(slot, self._agents), "value": float(score[gi]),
                            "agent": agent, "dataSource": ds})
        out.sort(key=lambda o: (-o["value"], o["key"]))
        return out

    def _active(self, d: FlowDefinition, agents: str, now: float) -> tuple[np.ndarray, np.ndarray]:
        """(every flow's value at ``now``, 0 for an expired one; slots of the flows with a value
        at the selected agents)."""
        k = d.size
        alive = (now - d.last[:k]) <= self.expire_factor * d.t
        vals = np.where(alive, d.decayed(now), 0.0)
        return vals, np.flatnonzero(self._agent_mask(d, vals > 0, agents))

    def _agent_mask(self, d: FlowDefinition, sel: np.ndarray, agents: str) -> np.ndarray:
        if agents.strip().upper() in ("ALL", ""):
            return sel
        want = {a.strip() for a in agents.replace(",", ";").split(";") if a.strip()}
        aidx = d.rows[:d.size, 0]
        codes = np.unique(aidx[sel])
        ok = [c for c in codes.tolist() if self._agents(int(c)) in want]
        return sel & np.isin(aidx, np.array(ok, np.uint64))

    def flow_value(self, agent: str, name: str, key: str) -> float:
        """sFlow-RT ``/flowvalue/{agent}/{dataSource}.{name}/json?key=``: the value of one flow at
        one data source (0.0 when the flow is not active there); KeyError when no definition
        matches ``{dataSource}.{name}``."""
        with self.lock:
            d, ds = None, ""
            for i, ch in enumerate(name):
                if ch == "." and name[i + 1:] in self._defs:
                    d, ds = self._defs[name[i + 1:]], name[:i]
                    break
            if d is None:
                raise KeyError(name)
            d.last_used = self._idle_clock()
            try:
                parts = [int(x) for x in ds.split(".")]
            except ValueError:
                return 0.0
            if len(parts) not in (1, 2) or any(not 0 <= x < 1 << 32 for x in parts):
                return 0.0
            cls, index = (0, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
            now = self.now()
            k = d.size
            sel = ((now - d.last[:k]) <= self.expire_factor * d.t) & \
                (d.rows[:k, 1] == cls) & (d.rows[:k, 2] == index)
            sel = self._agent_mask(d, sel, agent)
            vals = d.decayed(now)
            for slot in np.flatnonzero(sel).tolist():       # the flows of one data source
                if d.key_text(slot, self._agents) == key:
                    return float(vals[slot])
            return 0.0

    def metric(self, agents: str, spec: str, prefix: str, name: str,
               top_keys: int = 10) -> dict[str, Any]:
        """A flow definition read as a metric, as sFlow-RT's ``metric()`` does with a flow's name:
        each data source's value is its largest active flow, aggregated over data sources with
        ``prefix`` (max by default); ``max``/``min``/``any`` also name the agent and data source
        picked and list its ``topKeys``. KeyError when no definition is called ``name``."""
        d = self.definition(name)
        if d is None:
            raise KeyError(name)
        res: dict[str, Any] = {"metricName": spec, "metricN": 0}
        with self.lock:
            now = self.now()
            if d.size == 0:
                return res
            vals, idx = self._active(d, agents, now)
            if len(idx) == 0:
                return res
            _, inv = _group([d.rows[idx, j] for j in range(3)])      # (agent, class, index)
            best, slot_of = _group_max(vals[idx], inv, idx)
            g = len(best)
            ages = np.maximum(0.0, now - d.last[slot_of]) * 1000.0
            res["metricN"] = g
            res["lastUpdate"] = int(ages.min())
            res["lastUpdateMax"] = int(ages.max())
            res["lastUpdateMin"] = int(ages.min())
            if prefix in ("max", "min", "any"):
                j = int(np.argmax(best) if prefix == "max" else np.argmin(best)
                        if prefix == "min" else np.argmin(ages))
                res["metricValue"] = float(best[j])
                slot = int(slot_of[j])
                agent, ds = d.agent_ds(slot, self._agents)
                res["agent"], res["dataSource"] = agent, ds
                res["lastUpdate"] = int(ages[j])
                mine = idx[inv == j]
                mine = mine[np.argsort(-vals[mine], kind="stable")][:top_keys]
                res["topKeys"] = [{"key": d.key_text(int(s), self._agents),
                                   "value": float(vals[s]),
                                   "lastUpdate": int(max(0.0, now - d.last[s]) * 1000.0)}
                                  for s in mine.tolist()]
            else:
                res["metricValue"] = reduce_values(prefix, best)
        return res

    def logged_flows(self, name: str | None = None, after: int = -1,
                     max_flows: int = 100) -> list[dict[str, Any]]:
        """sFlow-RT ``/flows/json``: the most recent logged flows (``log: true`` definitions),
        newest first, with ``flowID`` greater than ``after``, at most ``max_flows``."""
        out: list[dict[str, Any]] = []
        if max_flows <= 0:
            return out
        with self._log_lock:
            for r in reversed(self._log):
                if r["flowID"] <= after:
                    break
                if name is None or r["name"] == name:
                    out.append(dict(r))
                    if len(out) >= max_flows:
                        break
        return out

    def last_flow_id(self) -> int:
        """The newest logged flow's ``flowID`` (0 before any)."""
        with self._log_lock:
            return self._flow_id

    def counters(self) -> dict[str, int]:
        """The engine's bounds and refusals as flat counters (for /healthz and Prometheus)."""
        with self.lock:
            st = self.sources
            return {"flow_samples": self.samples, "flow_discard_samples": self.discard_samples,
                    "flow_samples_lost": self.lost_samples,
                    "flow_sequence_jumps": self.sequence_jumps,
                    "flow_definitions": len(self._defs),
                    "flow_rows": sum(d.size for d in self._defs.values()),
                    "flow_sources_tracked": len(st), "flow_sources_max": st.max_sources,
                    "flow_sources_evicted": st.evicted, "flow_sources_refused": st.refused,
                    "flow_sources_expired": st.expired, "flows_logged": self.last_flow_id()}

    def stats(self, max_sources: int = 100) -> dict[str, Any]:
        """Flow samples seen and lost (sequence gaps), in total and for the ``max_sources`` data
        sources with the most loss; the bounds and how often they bit."""
        with self.lock:
            st = self.sources
            return {"samples": self.samples, "discardSamples": self.discard_samples,
                    "lostSamples": self.lost_samples, "sequenceJumps": self.sequence_jumps,
                    "definitions": len(self._defs), "maxDefinitions": self.max_definitions,
                    "flowRows": sum(d.size for d in self._defs.values()),
                    "maxFlowRows": self.max_flow_rows,
                    "flowsEvicted": sum(d.evicted for d in self._defs.values()),
                    "dataSourcesTracked": len(st), "maxDataSources": st.max_sources,
                    "dataSourcesEvicted": st.evicted, "dataSourcesRefused": st.refused,
                    "dataSourcesExpired": st.expired, "lossStateBytes": st.nbytes(),
                    "flowsLogged": self.last_flow_id(),
                    "dataSources": st.top(max_sources, self._agents)}


def _seconds(label: str, value: Any, limit: float) -> float:
    if isinstance(value, bool):
        raise FilterError(f"{label} must be a number of seconds, not {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise FilterError(f"{label} must be a number of seconds, not {value!r}") from None
    if not math.isfinite(v) or not 0 < v <= limit:
        raise FilterError(f"{label} must be > 0 and <= {limit:g} seconds")
    return v


def _agg_mode(mode: Any) -> str:
    m = mode.lower() if isinstance(mode, str) else None
    if m not in AGG_MODES:
        raise FilterError(f"aggMode must be one of {', '.join(AGG_MODES)}, not {mode!r}")
    return m


def query_metrics(metrics: Any, flows: FlowEngine | None, agents: str,
                  spec: str | Sequence[str],
                  filters: Any = None) -> list[dict[str, Any]]:
    """sFlow-RT's ``metric(agents, metrics, filter)``, one answer per item, in order: counter
    metrics from ``metrics.query``; the name of a flow definition read from ``flows``
    (:meth:`FlowEngine.metric`; filters do not apply to it); and, as in sFlow-RT, where metric
    names are open, a name that is neither answers ``{"metricName", "metricN": 0}``. An unknown
    aggregation prefix, or a numeric one on a text metric, is still a ValueError."""
    items = [i.strip() for i in (spec.split(",") if isinstance(spec, str) else spec)]
    items = [i for i in items if i]
    if not items:
        raise ValueError("no metric named")
    out: list[dict[str, Any] | None] = [None] * len(items)
    counters: list[int] = []
    for i, item in enumerate(items):
        prefix, _, name = item.rpartition(":")
        prefix = prefix or "max"
        if prefix not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {prefix!r} in {item!r} (use one of "
                             f"{', '.join(AGGREGATIONS)})")
        if name in METRICS:
            counters.append(i)
        elif flows is not None and flows.definition(name) is not None:
            try:
                out[i] = flows.metric(agents, item, prefix, name)
            except KeyError:                 # cleared meanwhile
                out[i] = {"metricName": item, "metricN": 0}
        else:
            out[i] = {"metricName": item, "metricN": 0}
    if counters:
        for i, r in zip(counters, metrics.query(agents, [items[i] for i in counters], filters),
                        strict=True):
            out[i] = r
    return [r for r in out if r is not None]
