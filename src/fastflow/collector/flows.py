"""Top flows: sFlow-RT-style flow definitions accounted over decoded flow samples.

:class:`FlowEngine` is a pipeline sink (``add(batch)``; docs/internals.md section 6). Operators (or
the dashboard) *define* flows by name::

    PUT /flow/tcp/json  {"keys": "ipsource,ipdestination,tcpdestinationport", "value": "bytes",
                         "filter": "ipprotocol=6", "t": 2, "n": 100}

and read the largest ones with ``GET /activeflows/ALL/tcp/json``. Accounting, per definition:

* each flow sample counts ``frame_length x sampling_rate`` bytes (``value: bytes``) or
  ``sampling_rate`` frames (``frames``/``packets``), per (agent, data source, key values);
* values decay exponentially with time constant ``t`` seconds, so they read as rates (per second):
  a sample of size ``x`` at time ``ts`` adds ``x/t * exp(-(now - ts)/t)``; a steady stream of ``r``
  bytes/s reads ``r``. The undecayed total is kept too (``FlowEngine.flows``);
* a sample whose keys are not all defined (``tcpsourceport`` of a UDP packet) is not counted;
* the work per batch is vectorised: key columns and the filter mask are numpy arrays, samples are
  grouped with ``np.unique`` on a void view, sums with ``np.bincount``; Python runs only once per
  *distinct* flow of the batch;
* a definition keeps at most ``n`` flows: when its table reaches ``2n`` the smallest are evicted,
  and flows idle for ``expire_factor x t`` seconds are dropped;
* definitions made over REST expire after ``definition_ttl`` seconds (default 300) without a
  ``PUT``/``GET`` of them, so a dashboard defining one flow per query cannot leak;
  :meth:`FlowEngine.define` with ``persistent=True`` makes one that never expires.

Sequence-number gaps of flow samples per (agent, sub-agent, data source) are counted as lost
samples (``FlowEngine.stats()``, ``GET /flowstats/json``). Time is the pipeline clock (live wall
clock, or capture time in a replay) and never runs backwards for the engine.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fastflow.collector.flowfilter import (
    Filter,
    FilterError,
    KeyColumns,
    KeySpec,
    data_source_text,
    parse_filter,
    parse_keys,
)

__all__ = ["FlowEngine", "FlowDefinition", "FilterError", "VALUES"]

log = logging.getLogger(__name__)

VALUES: dict[str, str] = {
    "bytes": "frame_length x sampling_rate (bytes per second)",
    "frames": "sampling_rate (frames per second)",
    "packets": "alias of frames",
}
AGG_MODES = ("max", "sum")
MAX_T = 86400.0
MAX_N = 100_000
_GAP_LIMIT = 1 << 20        # a sequence jump beyond this is a restart/reorder, not loss


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


@dataclass
class FlowDefinition:
    """One named flow definition and its flow table.

    The table is columnar: ``keys`` holds one row of uint64 words per flow (agent index, data
    source class and index, then the key words), with ``val`` (decayed value at ``last``),
    ``last`` and ``total`` beside it. A sorted void view of the key rows finds a batch's flows with
    ``np.searchsorted``; key text is formatted only when a flow is reported."""

    name: str
    keys: list[KeySpec]
    value: str
    filter: Filter | None
    t: float
    n: int
    persistent: bool = False
    last_used: float = 0.0                  # monotonic time of the last PUT/GET
    size: int = 0
    width: int = 3
    rows: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.uint64))
    val: np.ndarray = field(default_factory=lambda: np.zeros(0))
    last: np.ndarray = field(default_factory=lambda: np.zeros(0))
    total: np.ndarray = field(default_factory=lambda: np.zeros(0))
    order: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    sorted_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, "V24"))
    samples: int = 0                        # flow samples counted into this definition
    evicted: int = 0                        # flows evicted to keep the table at n

    def __post_init__(self) -> None:
        self.width = 3 + sum(k.nwords for k in self.keys)
        self.rows = np.zeros((0, self.width), np.uint64)
        self.sorted_keys = np.zeros(0, np.dtype((np.void, 8 * self.width)))

    def spec(self) -> dict[str, Any]:
        """The definition as sFlow-RT shows it (GET /flow/{name}/json)."""
        return {"keys": ",".join(k.name for k in self.keys), "value": self.value,
                "filter": self.filter.text if self.filter else None, "t": self.t, "n": self.n}

    def same_as(self, other: FlowDefinition) -> bool:
        return self.spec() == other.spec()

    def _void(self, rows: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(rows).view(np.dtype((np.void, 8 * self.width))).reshape(-1)

    def _reindex(self) -> None:
        v = self._void(self.rows[:self.size])
        self.order = np.argsort(v, kind="stable")
        self.sorted_keys = v[self.order]

    def slots_for(self, rows: np.ndarray) -> np.ndarray:
        """Slot of each (distinct) key row, appending new flows (value 0) for unseen rows."""
        m = len(rows)
        slots = np.full(m, -1, np.int64)
        rv = self._void(rows)
        if self.size:
            pos = np.minimum(np.searchsorted(self.sorted_keys, rv), self.size - 1)
            found = self.sorted_keys[pos] == rv
            slots[found] = self.order[pos[found]]
        new = np.flatnonzero(slots < 0)
        if len(new):
            s0, s1 = self.size, self.size + len(new)
            self._grow(s1)
            self.rows[s0:s1] = rows[new]
            self.val[s0:s1] = 0.0
            self.last[s0:s1] = 0.0
            self.total[s0:s1] = 0.0
            self.size = s1
            slots[new] = np.arange(s0, s1)
            self._reindex()
        return slots

    def _grow(self, need: int) -> None:
        cap = len(self.val)
        if need <= cap:
            return
        new = max(need, cap * 2, 64)
        rows = np.zeros((new, self.width), np.uint64)
        rows[:cap] = self.rows
        self.rows = rows
        for name in ("val", "last", "total"):
            grown = np.zeros(new)
            grown[:cap] = getattr(self, name)
            setattr(self, name, grown)

    def decayed(self, now: float) -> np.ndarray:
        """Every flow's value decayed to ``now`` (rate per second)."""
        k = self.size
        dt = np.maximum(now - self.last[:k], 0.0)
        return self.val[:k] * np.exp(-dt / self.t)

    def keep(self, mask: np.ndarray) -> None:
        """Compact the table to the slots where ``mask`` is true."""
        idx = np.flatnonzero(mask)
        k = len(idx)
        self.rows = self.rows[idx].copy()
        for name in ("val", "last", "total"):
            setattr(self, name, getattr(self, name)[idx].copy())
        self.size = k
        self._reindex()

    def key_text(self, slot: int, agents: Callable[[int], str]) -> str:
        """The sFlow-RT key text of one flow: the key values as text, joined by commas."""
        row = self.rows[slot].tolist()
        parts = []
        pos = 3
        for spec in self.keys:
            parts.append(spec.fmt(row[pos:pos + spec.nwords], agents))
            pos += spec.nwords
        return ",".join(parts)

    def agent_ds(self, slot: int, agents: Callable[[int], str]) -> tuple[str, str]:
        a, cls, idx = self.rows[slot, :3].tolist()
        return agents(int(a)), data_source_text(int(cls), int(idx))


def _group(cols: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of uint64 columns: (rows (m, k) uint64, inverse (n,) int)."""
    arr = np.ascontiguousarray(np.stack(cols, axis=1).astype(np.uint64, copy=False))
    if arr.shape[0] == 0:
        return arr, np.zeros(0, np.int64)
    v = arr.view(np.dtype((np.void, arr.shape[1] * 8))).reshape(-1)
    _, first, inv = np.unique(v, return_index=True, return_inverse=True)
    return arr[first], inv.reshape(-1)


class FlowEngine:
    """Pipeline sink computing sFlow-RT-style top flows; see the module docstring."""

    def __init__(self, clock: _ClockLike | None = None, definition_ttl: float | None = 300.0,
                 expire_factor: float = 10.0, max_definitions: int = 1000,
                 idle_clock: Callable[[], float] = time.monotonic) -> None:
        self.clock: _ClockLike = clock if clock is not None else _WallClock()
        self.definition_ttl = definition_ttl
        self.expire_factor = float(expire_factor)
        self.max_definitions = int(max_definitions)
        self._idle_clock = idle_clock
        self.lock = threading.RLock()
        self._defs: dict[str, FlowDefinition] = {}
        self._now = 0.0                      # newest time seen (never goes back)
        self._last_sweep = 0.0
        # per (agent, sub_agent_id, source_id): [last_seq, samples, lost, agent text, ds text]
        self._seq: dict[tuple[int, ...], list[Any]] = {}
        self.samples = 0
        self.lost_samples = 0
        self._agents: Callable[[int], str] = str     # newest batch's agent index -> text

    # -- definitions ----------------------------------------------------------------------------
    def define(self, name: str, keys: str | Sequence[str], value: str = "bytes",
               filter: str | None = None, t: float = 2.0, n: int = 100,
               persistent: bool = False) -> FlowDefinition:
        """Create or replace flow definition ``name``; :class:`FilterError` on a bad definition.

        Redefining with identical parameters keeps the accumulated flows."""
        if not isinstance(name, str) or not name or "/" in name or len(name) > 200:
            raise FilterError("flow name must be 1-200 characters without '/'")
        specs = parse_keys(keys)
        if not isinstance(value, str) or value.lower() not in VALUES:
            raise FilterError(f"value must be one of {', '.join(VALUES)}, not {value!r}")
        if filter is not None and not isinstance(filter, str):
            raise FilterError("filter must be a string")
        flt = parse_filter(filter)
        try:
            tf = float(t)
        except (TypeError, ValueError):
            raise FilterError(f"t must be a number of seconds, not {t!r}") from None
        if not (0 < tf <= MAX_T) or not math.isfinite(tf):
            raise FilterError(f"t must be > 0 and <= {MAX_T:g} seconds")
        if isinstance(n, bool) or not isinstance(n, (int, float)) or int(n) != n \
                or not 1 <= int(n) <= MAX_N:
            raise FilterError(f"n must be an integer from 1 to {MAX_N}")
        d = FlowDefinition(name, specs, value.lower(), flt, tf, int(n), persistent,
                           self._idle_clock())
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
            self._defs[name] = d
        log.debug("flow %s defined: %s", name, d.spec())
        return d

    def delete(self, name: str) -> bool:
        """Remove definition ``name``; False when there was none."""
        with self.lock:
            return self._defs.pop(name, None) is not None

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
            del self._defs[name]

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
            self.samples += n
            self._agents = agents
            self._count_loss(flows, agents)
            if not self._defs:
                return
            rate = np.maximum(flows["sampling_rate"], 1).astype(np.float64)
            frame_bytes = flows["frame_length"].astype(np.float64) * rate
            age = np.where(ts > 0, np.maximum(now - ts, 0.0), 0.0)
            cache: dict[str, KeyColumns] = {}
            base = [flows["agent"].astype(np.uint64), flows["source_id_type"].astype(np.uint64),
                    flows["source_id_index"].astype(np.uint64)]
            for d in list(self._defs.values()):
                self._account(d, flows, agents, cache, base, rate, frame_bytes, age, now)
            if now - self._last_sweep >= 1.0:
                self._last_sweep = now
                for d in self._defs.values():
                    self._prune(d, now)

    def _account(self, d: FlowDefinition, flows: np.ndarray, agents: Callable[[int], str],
                 cache: dict[str, KeyColumns], base: list[np.ndarray], rate: np.ndarray,
                 frame_bytes: np.ndarray, age: np.ndarray, now: float) -> None:
        sel = np.ones(len(flows), bool)
        if d.filter is not None:
            sel &= d.filter.mask(flows, agents, cache)
        cols = list(base)
        for spec in d.keys:
            kc = cache.get(spec.name)
            if kc is None:
                kc = cache[spec.name] = spec.extract(flows)
            sel &= kc.defined
            cols.extend(kc.words)
        idx = np.flatnonzero(sel)
        if len(idx) == 0:
            return
        x = (frame_bytes if d.value == "bytes" else rate)[idx]
        rows, inv = _group([c[idx] for c in cols])
        m = len(rows)
        raw = np.bincount(inv, weights=x, minlength=m)
        w = np.bincount(inv, weights=x * np.exp(-age[idx] / d.t), minlength=m)
        d.samples += len(idx)
        slots = d.slots_for(rows)
        dt = np.maximum(now - d.last[slots], 0.0)
        d.val[slots] = d.val[slots] * np.exp(-dt / d.t) + w / d.t
        d.last[slots] = now
        d.total[slots] += raw
        if d.size >= 2 * d.n:
            self._prune(d, now)

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
            d.keep(alive)

    def _count_loss(self, flows: np.ndarray, agents: Callable[[int], str]) -> None:
        cols = [flows["agent"].astype(np.uint64), flows["sub_agent_id"].astype(np.uint64),
                flows["source_id"].astype(np.uint64)]
        rows, inv = _group(cols)
        order = np.argsort(inv, kind="stable")
        g = inv[order]
        seq = flows["sequence_number"][order].astype(np.int64)
        starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
        ends = np.r_[starts[1:], len(g)]
        # gaps inside the batch
        d = (seq[1:] - seq[:-1]) & 0xFFFFFFFF
        inner = np.where((d > 1) & (d <= _GAP_LIMIT) & (g[1:] == g[:-1]), d - 1, 0)
        inner_lost = np.add.reduceat(np.r_[inner, 0], starts) if len(inner) else \
            np.zeros(len(starts), np.int64)
        for gi, (a, b) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
            key = tuple(rows[g[a]].tolist())
            st = self._seq.get(key)
            lost = int(inner_lost[gi]) if b - a > 1 else 0
            if st is None:
                agent = agents(int(key[0]))
                sid = int(key[2])
                st = self._seq[key] = [0, 0, 0, agent,
                                       data_source_text(sid >> 24, sid & 0xFFFFFF)]
            else:
                gap = (int(seq[a]) - st[0]) & 0xFFFFFFFF
                if 1 < gap <= _GAP_LIMIT:
                    lost += gap - 1
            st[0] = int(seq[b - 1])
            st[1] += b - a
            st[2] += lost
            self.lost_samples += lost

    # -- queries --------------------------------------------------------------------------------
    def now(self) -> float:
        """The engine's time: the clock, never earlier than the newest sample seen."""
        return max(self.clock.now(), self._now)

    def flows(self, name: str, now: float | None = None) -> list[dict[str, Any]]:
        """Every flow of ``name`` (per agent and data source) with its rate and undecayed total."""
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
                            "value": float(vals[i]), "total": float(d.total[i])})
            return out

    def active_flows(self, agents: str, name: str, max_flows: int | None = None,
                     min_value: float = 0.0, agg_mode: str = "max") -> list[dict[str, Any]]:
        """sFlow-RT ``/activeflows``: flows aggregated over data sources, largest first.

        ``agents`` is "ALL" or a ``;``-separated list of agent addresses. ``agg_mode`` "max" reports
        the largest data source's value, "sum" the sum over data sources (agent/dataSource are
        those of the largest contributor). Vectorised; only the reported flows are formatted."""
        if agg_mode not in AGG_MODES:
            raise FilterError(f"aggMode must be one of {', '.join(AGG_MODES)}")
        d = self.definition(name)
        if d is None:
            raise KeyError(name)
        limit = d.n if max_flows is None else max(0, int(max_flows))
        with self.lock:
            now = self.now()
            self._prune(d, now)
            k = d.size
            if k == 0 or limit == 0:
                return []
            alive = (now - d.last[:k]) <= self.expire_factor * d.t
            vals = np.where(alive, d.decayed(now), 0.0)
            sel = vals > 0
            if agents.strip().upper() not in ("ALL", ""):
                want = {a.strip() for a in agents.replace(",", ";").split(";") if a.strip()}
                aidx = d.rows[:k, 0]
                codes = np.unique(aidx[sel])
                ok = [c for c in codes.tolist() if self._agents(int(c)) in want]
                sel &= np.isin(aidx, np.array(ok, np.uint64))
            idx = np.flatnonzero(sel)
            if len(idx) == 0:
                return []
            v = vals[idx]
            _, inv = _group([d.rows[idx, j] for j in range(3, d.width)]) if d.width > 3 else \
                (None, np.zeros(len(idx), np.int64))
            g = int(inv.max()) + 1
            sums = np.bincount(inv, weights=v, minlength=g)
            o = np.lexsort((-v, inv))                 # by group, largest first
            first = o[np.r_[True, inv[o][1:] != inv[o][:-1]]]
            best_slot = np.empty(g, np.int64)
            best_slot[inv[first]] = idx[first]
            maxes = np.empty(g)
            maxes[inv[first]] = v[first]
            score = sums if agg_mode == "sum" else maxes
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

    def stats(self) -> dict[str, Any]:
        """Flow samples seen and lost (sequence gaps), in total and per data source."""
        with self.lock:
            return {"samples": self.samples, "lostSamples": self.lost_samples,
                    "definitions": len(self._defs),
                    "dataSources": [{"agent": st[3], "subAgentId": k[1], "dataSource": st[4],
                                     "samples": st[1], "lostSamples": st[2],
                                     "lastSequence": st[0]}
                                    for k, st in self._seq.items()]}
