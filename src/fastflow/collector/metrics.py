"""sFlow-RT-style metrics computed vectorised over every data source of the store.

Each metric is one numpy pass over a record group's ring rows (``virt``, ``host`` or ``if``; see
:mod:`fastflow.collector.store`): gauges are the newest sample's value; counters become per-second rates from
the last two samples of each data source; text metrics (host names, cpu state, ...) are integer codes
resolved to text only where needed. A metric's vector covers all key slots and is cached for the
store's current generation, so many queries between two batches cost one pass per metric.

Formulas (see ``/work/shared/sflow/LAYOUTS.md`` "Derived metrics"):

* ``Δt`` in ms from the agent uptime of the two samples (u32 wrap-around); when it is 0 (agents that
  send no uptime), from arrival time. No rate when Δt is not positive.
* Counter deltas in the counter's own width (u32 wraps at 2**32); a u32 counter that would have to
  move more than 2**31 forward, a u64 counter that goes backwards, or a delta above a metric's
  plausibility bound (cpu time: 1024 CPUs' worth) is a reset: no value for that data source.
* All-ones values (0xFFFFFFFF, 0xFFFF_FFFF_FFFF_FFFF; -1 for percentages; NaN floats) are unknown
  and left out (no value); a sum (``ifinpkts``) adds only its known parts.
* ``vir_cpu_utilization = 100 × ΔcpuTime_ms / Δt_ms`` (% of one CPU).

Query semantics follow sFlow-RT's ``/metric/{agents}/{metrics}/json``: ``prefix:name`` with prefixes
max (default), min, sum, avg, var (population), sdev, med, q1, q2, q3, iqr, any; filters are
sFlow-RT globs (``*``, ``?``, ``\\`` escapes, whole-string; a list of patterns matches when any
does) on any text or numeric metric of the same data source; only data sources heard from within
the store's ``expire_after`` contribute.
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastflow._schema import COUNTER_BIT, COUNTER_DTYPE
from fastflow.collector.glob import GlobCache
from fastflow.collector.store import Store

__all__ = ["AGGREGATIONS", "METRICS", "MetricDef", "Metrics", "parse_metrics"]

AGGREGATIONS: tuple[str, ...] = ("max", "min", "sum", "avg", "var", "sdev", "med", "q1", "q2",
                                 "q3", "iqr", "any")
_TEXT_AGGREGATIONS = ("max", "min", "any")

U32_ALL = 0xFFFFFFFF
U64_ALL = 0xFFFFFFFFFFFFFFFF
CPU_MAX_CPUS = 1024          # plausibility bound of a cpu-time delta: 1024 CPUs busy

VIR_CPU_STATES: dict[int, str] = {0: "nostate", 1: "running", 2: "blocked", 3: "paused",
                                  4: "shutdown", 5: "shutoff", 6: "crashed", 7: "pmsuspended"}
MACHINE_TYPES: dict[int, str] = {0: "unknown", 1: "other", 2: "x86", 3: "x86_64", 4: "ia64",
                                 5: "sparc", 6: "alpha", 7: "powerpc", 8: "m68k", 9: "mips",
                                 10: "arm", 11: "hppa", 12: "s390"}
IF_TYPES: dict[int, str] = {1: "other", 6: "ethernetCsmacd", 24: "softwareLoopback",
                             53: "propVirtual", 71: "ieee80211", 131: "tunnel", 135: "l2vlan",
                             136: "l3ipvlan", 161: "ieee8023adLag", 209: "bridge"}
IF_DIRECTIONS: dict[int, str] = {0: "unknown", 1: "full", 2: "half", 3: "in", 4: "out"}
UP_DOWN: dict[int, str] = {0: "down", 1: "up"}
OS_NAMES: dict[int, str] = {0: "unknown", 1: "other", 2: "linux", 3: "windows", 4: "darwin",
                            5: "hpux", 6: "aix", 7: "dragonfly", 8: "freebsd", 9: "netbsd",
                            10: "openbsd", 11: "osf", 12: "solaris"}


# --------------------------------------------------------------------------------------------------
# Per-group computation context
# --------------------------------------------------------------------------------------------------
class _Group:
    """The newest and previous sample of every used row of one ring, gathered lazily."""

    def __init__(self, store: Store, group: str) -> None:
        self.ring = ring = store.rings[group]
        self.rows = ring.used_rows()
        self.keys = ring.key_of_row[self.rows]
        cnt = ring.count[self.rows]
        self.has1 = cnt >= 1
        self.has2 = cnt >= 2
        # every row in use (the common case): contiguous slices instead of gathers
        self._sl: slice | np.ndarray = (slice(0, ring.n_rows) if len(self.rows) == ring.n_rows
                                        else self.rows)
        self._cache: dict[tuple[str, int], np.ndarray] = {}
        self._dt: np.ndarray | None = None

    def cur(self, col: str) -> np.ndarray:
        key = (col, 0)
        v = self._cache.get(key)
        if v is None:
            v = self._cache[key] = self.ring.last[col][self._sl]
        return v

    def prev(self, col: str) -> np.ndarray:
        key = (col, 1)
        v = self._cache.get(key)
        if v is None:
            v = self._cache[key] = self.ring.prev[col][self._sl]
        return v

    def has(self, record: str) -> np.ndarray:
        """Newest sample carries ``record`` (a fresh array: callers may modify it)."""
        key = ("__has:" + record, 0)
        v = self._cache.get(key)
        if v is None:
            bit = np.uint32(1 << COUNTER_BIT[record])
            v = self._cache[key] = self.has1 & ((self.cur("mask") & bit) != 0)
        return v.copy()

    def has_both(self, record: str) -> np.ndarray:
        """Newest and previous samples both carry ``record`` (a fresh array)."""
        key = ("__has2:" + record, 0)
        v = self._cache.get(key)
        if v is None:
            bit = np.uint32(1 << COUNTER_BIT[record])
            v = self._cache[key] = (self.has2 & ((self.cur("mask") & bit) != 0)
                                    & ((self.prev("mask") & bit) != 0))
        return v.copy()

    @property
    def dt_ms(self) -> np.ndarray:
        """Milliseconds between the two newest samples (NaN when unknown or not positive)."""
        if self._dt is None:
            du = ((self.cur("uptime").astype(np.int64) - self.prev("uptime").astype(np.int64))
                  & U32_ALL)
            dts = (self.cur("ts") - self.prev("ts")) * 1000.0
            dt = np.where(du == 0, dts, du.astype(np.float64))
            ok = self.has2 & (dt > 0) & (du < (1 << 31))
            self._dt = np.where(ok, dt, np.nan)
        return self._dt

    def gauge(self, col: str, record: str) -> tuple[np.ndarray, np.ndarray]:
        """Newest value as sent; unknown (all-ones, -1 percentage, NaN) left out."""
        v = self.cur(col)
        ok = self.has(record)
        kind = v.dtype.kind
        if kind == "u":
            ok &= v != np.iinfo(v.dtype).max
        elif kind == "i":
            ok &= v != -1
        else:
            ok &= np.isfinite(v)
        return v.astype(np.float64), ok

    def delta(self, col: str, record: str) -> tuple[np.ndarray, np.ndarray]:
        """Counter delta between the two newest samples, in the counter's width."""
        c, p = self.cur(col), self.prev(col)
        ok = self.has_both(record)
        if c.dtype.itemsize == 8:
            ok &= (c != U64_ALL) & (p != U64_ALL) & (c >= p)
            d = (c - p).astype(np.float64)
        else:
            ok &= (c != U32_ALL) & (p != U32_ALL)
            di = (c.astype(np.int64) - p.astype(np.int64)) & U32_ALL
            ok &= di < (1 << 31)
            d = di.astype(np.float64)
        return d, ok

    def rate(self, col: str, record: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-second rate of a counter."""
        d, ok = self.delta(col, record)
        dt = self.dt_ms
        ok &= np.isfinite(dt)
        with np.errstate(invalid="ignore", divide="ignore"):
            return d * 1000.0 / dt, ok


# --------------------------------------------------------------------------------------------------
# Metric definitions
# --------------------------------------------------------------------------------------------------
NumFn = Callable[[_Group], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class MetricDef:
    """One metric: numeric (``fn`` over a group) or text (codes + how to name them)."""

    name: str
    group: str                                  # "virt", "host" or "if"
    fn: NumFn | None = None                     # numeric metrics
    text_col: str = ""                          # text metrics: ring column or key column
    text_record: str = ""                       # ring column's record ("" for key columns)
    names: Mapping[int, str] | None = None      # code -> text; None: string-table index
    description: str = ""
    code_fn: NumFn | None = None                # text metrics computed as codes (ifadminstatus)

    @property
    def is_text(self) -> bool:
        return self.fn is None


def _g(col: str, rec: str) -> NumFn:
    return lambda g: g.gauge(col, rec)


def _r(col: str, rec: str) -> NumFn:
    return lambda g: g.rate(col, rec)


def _vir_cpu(g: _Group) -> tuple[np.ndarray, np.ndarray]:
    d, ok = g.delta("vcpu_cpu_time", "virt_cpu")
    dt = g.dt_ms
    ok &= np.isfinite(dt) & (d <= np.nan_to_num(dt) * CPU_MAX_CPUS)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * d / dt, ok


def _ratio(num: Callable[[_Group], tuple[np.ndarray, np.ndarray]], total_col: str,
           rec: str) -> NumFn:
    def fn(g: _Group) -> tuple[np.ndarray, np.ndarray]:
        n, ok = num(g)
        t, tok = g.gauge(total_col, rec)
        ok = ok & tok & (t > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return 100.0 * n / t, ok
    return fn


def _vir_mem_util(g: _Group) -> tuple[np.ndarray, np.ndarray]:
    return _ratio(lambda g: g.gauge("vmem_memory", "virt_memory"), "vmem_max_memory",
                  "virt_memory")(g)


def _mem_used(g: _Group) -> tuple[np.ndarray, np.ndarray]:
    v = np.zeros(len(g.rows))
    ok = np.ones(len(g.rows), bool)
    for i, col in enumerate(("mem_total", "mem_free", "mem_buffers", "mem_cached")):
        x, xok = g.gauge(col, "host_memory")
        v = x if i == 0 else v - x
        ok &= xok
    return v, ok


def _disk_used(g: _Group) -> tuple[np.ndarray, np.ndarray]:
    t, tok = g.gauge("disk_total", "host_disk_io")
    f, fok = g.gauge("disk_free", "host_disk_io")
    return t - f, tok & fok


_CPU_PARTS = ("cpu_user", "cpu_nice", "cpu_system", "cpu_idle", "cpu_wio", "cpu_intr", "cpu_sintr",
              "cpu_steal")


def _cpu_total(g: _Group) -> tuple[np.ndarray, np.ndarray]:
    key = ("__cpu_total", 0)
    if key not in g._cache:
        tot = np.zeros(len(g.rows))
        ok = np.ones(len(g.rows), bool)
        for col in _CPU_PARTS:
            d, dok = g.delta(col, "host_cpu")
            tot += np.where(dok, d, 0.0)
            ok &= dok
        g._cache[key] = tot
        g._cache[("__cpu_total_ok", 0)] = ok & (tot > 0)
    return g._cache[key], g._cache[("__cpu_total_ok", 0)]


def _cpu_pct(col: str) -> NumFn:
    def fn(g: _Group) -> tuple[np.ndarray, np.ndarray]:
        d, ok = g.delta(col, "host_cpu")
        tot, tok = _cpu_total(g)
        with np.errstate(invalid="ignore", divide="ignore"):
            return 100.0 * d / tot, ok & tok
    return fn


def _cpu_util(g: _Group) -> tuple[np.ndarray, np.ndarray]:
    v, ok = _cpu_pct("cpu_idle")(g)
    return 100.0 - v, ok


def _pct_hundredths(g: _Group) -> tuple[np.ndarray, np.ndarray]:
    v, ok = g.gauge("part_max_used", "host_disk_io")
    return v / 100.0, ok


def _if_pkts(direction: str) -> NumFn:
    def fn(g: _Group) -> tuple[np.ndarray, np.ndarray]:
        tot = np.zeros(len(g.rows))
        anyok = np.zeros(len(g.rows), bool)
        for kind in ("ucast", "multicast", "broadcast"):
            r, ok = g.rate(f"if_{direction}_{kind}_pkts", "if_counters")
            tot += np.where(ok, r, 0.0)
            anyok |= ok
        return tot, anyok
    return fn


def _if_util(direction: str) -> NumFn:
    def fn(g: _Group) -> tuple[np.ndarray, np.ndarray]:
        r, ok = g.rate(f"if_{direction}_octets", "if_counters")
        sp, sok = g.gauge("if_speed", "if_counters")
        ok = ok & sok & (sp > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return r * 800.0 / sp, ok
    return fn


def _if_status(bit: int) -> NumFn:
    def fn(g: _Group) -> tuple[np.ndarray, np.ndarray]:
        v, ok = g.gauge("if_status", "if_counters")
        return ((v.astype(np.int64) >> bit) & 1).astype(np.float64), ok
    return fn


def _build() -> dict[str, MetricDef]:
    out: dict[str, MetricDef] = {}

    def add(m: MetricDef) -> None:
        out[m.name] = m

    # ---- containers / VMs
    add(MetricDef("vir_host_name", "virt", text_col="hostname",
                  description="container / VM name (its host_descr hostname)"))
    add(MetricDef("vir_cpu_state", "virt", text_col="vcpu_state", text_record="virt_cpu",
                  names=VIR_CPU_STATES, description="running, blocked, paused, ..."))
    add(MetricDef("vir_cpu_utilization", "virt", _vir_cpu,
                  description="100 × ΔcpuTime_ms / Δt_ms (% of one CPU)"))
    add(MetricDef("vir_cpu_count", "virt", _g("vcpu_nr_virt_cpu", "virt_cpu")))
    add(MetricDef("vir_memory", "virt", _g("vmem_memory", "virt_memory"), description="bytes"))
    add(MetricDef("vir_memory_max", "virt", _g("vmem_max_memory", "virt_memory")))
    add(MetricDef("vir_memory_utilization", "virt", _vir_mem_util))
    for name, col in (("vir_disk_capacity", "vdsk_capacity"),
                      ("vir_disk_allocation", "vdsk_allocation"),
                      ("vir_disk_available", "vdsk_available")):
        add(MetricDef(name, "virt", _g(col, "virt_disk_io")))
    for name, col in (("vir_read_requests", "vdsk_rd_req"), ("vir_read_bytes", "vdsk_rd_bytes"),
                      ("vir_write_requests", "vdsk_wr_req"), ("vir_write_bytes", "vdsk_wr_bytes"),
                      ("vir_disk_errors", "vdsk_errs")):
        add(MetricDef(name, "virt", _r(col, "virt_disk_io"), description="per second"))
    for name, col in (("vir_bytes_in", "vnet_rx_bytes"), ("vir_packets_in", "vnet_rx_packets"),
                      ("vir_errors_in", "vnet_rx_errs"), ("vir_drops_in", "vnet_rx_drop"),
                      ("vir_bytes_out", "vnet_tx_bytes"), ("vir_packets_out", "vnet_tx_packets"),
                      ("vir_errors_out", "vnet_tx_errs"), ("vir_drops_out", "vnet_tx_drop")):
        add(MetricDef(name, "virt", _r(col, "virt_net_io"), description="per second"))
    # ---- physical host
    add(MetricDef("host_name", "host", text_col="hostname"))
    add(MetricDef("machine_type", "host", text_col="machine_type", names=MACHINE_TYPES))
    add(MetricDef("os_name", "host", text_col="os_name", names=OS_NAMES))
    add(MetricDef("os_release", "host", text_col="os_release"))
    for col in ("load_one", "load_five", "load_fifteen", "proc_run", "proc_total", "cpu_num",
                "cpu_speed"):
        add(MetricDef(col, "host", _g(col, "host_cpu")))
    add(MetricDef("uptime", "host", _g("host_uptime", "host_cpu"), description="seconds"))
    for col in _CPU_PARTS + ("cpu_guest", "cpu_guest_nice"):
        add(MetricDef(col, "host", _cpu_pct(col), description="% of all cpu time"))
    add(MetricDef("cpu_utilization", "host", _cpu_util, description="100 - cpu_idle"))
    add(MetricDef("cpu_interrupts", "host", _r("interrupts", "host_cpu")))
    add(MetricDef("cpu_contexts", "host", _r("contexts", "host_cpu")))
    for col in ("mem_total", "mem_free", "mem_shared", "mem_buffers", "mem_cached", "swap_total",
                "swap_free"):
        add(MetricDef(col, "host", _g(col, "host_memory"), description="bytes"))
    add(MetricDef("mem_utilization", "host", _ratio(_mem_used, "mem_total", "host_memory")))
    for col in ("page_in", "page_out", "swap_in", "swap_out"):
        add(MetricDef(col, "host", _r(col, "host_memory")))
    for col in ("disk_total", "disk_free"):
        add(MetricDef(col, "host", _g(col, "host_disk_io"), description="bytes"))
    add(MetricDef("disk_utilization", "host", _ratio(_disk_used, "disk_total", "host_disk_io")))
    add(MetricDef("part_max_used", "host", _pct_hundredths, description="%"))
    for name, col in (("disk_reads", "reads"), ("disk_bytes_read", "bytes_read"),
                      ("disk_read_time", "read_time"), ("disk_writes", "writes"),
                      ("disk_bytes_written", "bytes_written"), ("disk_write_time", "write_time")):
        add(MetricDef(name, "host", _r(col, "host_disk_io")))
    for name, col in (("bytes_in", "bytes_in"), ("pkts_in", "pkts_in"), ("errs_in", "errs_in"),
                      ("drops_in", "drops_in"), ("bytes_out", "bytes_out"),
                      ("pkts_out", "packets_out"), ("errs_out", "errs_out"),
                      ("drops_out", "drops_out")):
        add(MetricDef(name, "host", _r(col, "host_net_io"), description="per second"))
    for name, col in (("node_mhz", "vnode_mhz"), ("node_cpus", "vnode_cpus"),
                      ("node_memory", "vnode_memory"), ("node_memory_free", "vnode_memory_free"),
                      ("node_domains", "vnode_num_domains")):
        add(MetricDef(name, "host", _g(col, "virt_node")))
    # ---- interfaces
    for name, col in (("ifindex", "if_index"), ("ifspeed", "if_speed"),
                      ("ifpromiscuousmode", "if_promiscuous_mode")):
        add(MetricDef(name, "if", _g(col, "if_counters")))
    # text, as sFlow-RT shows them ("ethernetCsmacd", "full", "up")
    add(MetricDef("iftype", "if", code_fn=_g("if_type", "if_counters"), names=IF_TYPES,
                  description="IANA ifType name"))
    add(MetricDef("ifdirection", "if", code_fn=_g("if_direction", "if_counters"),
                  names=IF_DIRECTIONS))
    add(MetricDef("ifadminstatus", "if", code_fn=_if_status(0), names=UP_DOWN,
                  description="up or down"))
    add(MetricDef("ifoperstatus", "if", code_fn=_if_status(1), names=UP_DOWN,
                  description="up or down"))
    if "ifname" in (COUNTER_DTYPE.names or ()) and "if_name" in COUNTER_BIT:
        # 0:1005 (decoded per contract C1); shown where the store keeps the column
        add(MetricDef("ifname", "if", text_col="ifname", text_record="if_name",
                      description="interface name (0:1005)"))
    for d in ("in", "out"):
        cols = ["octets", "ucast_pkts", "multicast_pkts", "broadcast_pkts", "discards", "errors"]
        if d == "in":
            cols.append("unknown_protos")
        for c in cols:
            add(MetricDef(f"if{d}{c.replace('_', '')}", "if", _r(f"if_{d}_{c}", "if_counters"),
                          description="per second"))
        add(MetricDef(f"if{d}pkts", "if", _if_pkts(d), description="ucast + multicast + broadcast"))
        add(MetricDef(f"if{d}utilization", "if", _if_util(d), description="% of ifspeed"))
    for col in COUNTER_DTYPE.names or ():
        if col.startswith("dot3_stats_"):
            name = "eth_" + col[len("dot3_stats_"):].replace("_", "")
            add(MetricDef(name, "if", _r(col, "ethernet_counters"), description="per second"))
    return out


METRICS: dict[str, MetricDef] = _build()
MAX_FILTER_KEYS = 32        # filters in one query
MAX_FILTER_VALUES = 64      # patterns per filter
MAX_MATCH_CACHE = 256       # filter results kept per store generation
_KEY_TEXT = ("hostname", "machine_type", "os_name", "os_release")


def _has_column(table: Any, col: str) -> bool:
    """``col`` is a column of ``table`` (a structured/record array or a mapping of columns)."""
    names = getattr(getattr(table, "dtype", None), "names", None)
    return col in names if names is not None else col in table



def reduce_values(prefix: str, x: np.ndarray) -> float:
    """sFlow-RT's numeric aggregation ``prefix`` (sum, avg, var, sdev, med/q2, q1, q3, iqr, or
    max/min/any) of the non-empty array ``x``; ``any`` here is the first value."""
    if prefix == "sum":
        return float(np.sum(x))
    if prefix == "avg":
        return float(np.mean(x))
    if prefix == "var":
        return float(np.var(x))
    if prefix == "sdev":
        return float(np.std(x))
    if prefix in ("med", "q2"):
        return float(np.median(x))
    if prefix == "q1":
        return float(np.percentile(x, 25))
    if prefix == "q3":
        return float(np.percentile(x, 75))
    if prefix == "iqr":
        q1, q3 = np.percentile(x, [25, 75])
        return float(q3 - q1)
    if prefix == "min":
        return float(np.min(x))
    if prefix == "any":
        return float(x[0])
    return float(np.max(x))

def parse_metrics(metrics: str | Sequence[str]) -> list[tuple[str, str, str]]:
    """``"avg:vir_cpu_utilization,vir_bytes_in"`` -> [(spec, prefix, name), ...]; ValueError if bad."""
    items = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    out: list[tuple[str, str, str]] = []
    for raw in items:
        spec = raw.strip()
        if not spec:
            continue
        prefix, _, name = spec.rpartition(":")
        prefix = prefix or "max"
        if prefix not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {prefix!r} in {spec!r} (use one of "
                             f"{', '.join(AGGREGATIONS)})")
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r}")
        if METRICS[name].is_text and prefix not in _TEXT_AGGREGATIONS:
            raise ValueError(f"{prefix}: needs a numeric metric; {name!r} is text "
                             f"(use max, min or any)")
        out.append((spec, prefix, name))
    if not out:
        raise ValueError("no metric named")
    return out


def _num_text(v: float) -> str:
    if math.isfinite(v) and v == int(v) and abs(v) < 2**53:
        return str(int(v))
    return repr(float(v))


def _json_num(v: float) -> float | int:
    return int(v) if math.isfinite(v) and v == int(v) and abs(v) < 2**53 else float(v)


# --------------------------------------------------------------------------------------------------
class _Vec:
    """A metric over all key slots: ``values`` (float64) or ``codes`` (int64) with ``valid``."""

    __slots__ = ("codes", "m", "valid", "values")

    def __init__(self, m: MetricDef, values: np.ndarray | None, codes: np.ndarray | None,
                 valid: np.ndarray) -> None:
        self.m = m
        self.values = values
        self.codes = codes
        self.valid = valid


class Metrics:
    """Queries over the store (sFlow-RT ``/metric`` and ``/dump`` semantics).

    ``lock``: held while reading the store (pass ``pipeline.lock`` when batches arrive on another
    thread). It is held only to take a snapshot (the metric vectors of the store's generation, the
    key columns and the texts the query needs); filter matching, aggregation and answer building
    run after it is released, so a query never holds up ingest. ``agentstats`` is kept for callers
    that want agent-level figures next to the metrics.

    Filters: ``{metric: [pattern, ...]}``; a data source passes when its metric's text fully matches
    any pattern of every filter. Patterns are sFlow-RT globs (:mod:`fastflow.collector.glob`),
    compiled through a bounded LRU (``max_patterns``). Trusted internal callers may pass compiled
    ``re.Pattern`` objects instead (``fullmatch``); the REST layer never builds one.
    """

    def __init__(self, store: Store, agentstats: Any = None, lock: Any = None, *,
                 max_patterns: int = 1024) -> None:
        self.store = store
        self.agentstats = agentstats
        self.lock = lock if lock is not None else contextlib.nullcontext()
        self._gen = -1
        self._groups: dict[str, _Group] = {}
        self._vecs: dict[str, _Vec] = {}
        self.globs = GlobCache(max_patterns)
        self._gen_cache: dict[str, Any] = {}  # per store generation: key copies, text tables
        self._glock = threading.Lock()        # the glob cache is used outside the store lock

    # ------------------------------------------------------------------ vectors
    def _sync(self) -> None:
        if self._gen != self.store.generation:
            self._gen = self.store.generation
            self._groups.clear()
            self._vecs.clear()
            self._gen_cache = {}

    def _group(self, name: str) -> _Group:
        g = self._groups.get(name)
        if g is None:
            g = self._groups[name] = _Group(self.store, name)
        return g

    def vector(self, name: str) -> _Vec:
        """The metric for every key slot (cached for the store's generation)."""
        self._sync()
        v = self._vecs.get(name)
        if v is not None:
            return v
        m = METRICS.get(name)
        if m is None:
            raise ValueError(f"unknown metric {name!r}")
        g = self._group(m.group)
        n = self.store.n_keys
        valid = np.zeros(n, bool)
        if m.code_fn is not None:
            c, ok = m.code_fn(g)
            codes = np.zeros(n, np.int64)
            codes[g.keys] = c.astype(np.int64)
            valid[g.keys] = ok
            v = _Vec(m, None, codes, valid)
        elif m.fn is not None:
            vals, ok = m.fn(g)
            values = np.full(n, np.nan)
            values[g.keys] = vals
            valid[g.keys] = ok & np.isfinite(vals)
            v = _Vec(m, values, None, valid)
        else:
            codes = np.zeros(n, np.int64)
            key_col = _has_column(self.store.k, m.text_col)
            ring_col = _has_column(g.ring.last, m.text_col)
            if m.text_record and not ring_col and not key_col:
                pass                      # a column this store does not keep: never valid
            elif m.text_record and ring_col:
                c, ok = g.cur(m.text_col).astype(np.int64), g.has(m.text_record)
                codes[g.keys] = c
                valid[g.keys] = ok
            else:
                codes[g.keys] = self.store.k[m.text_col][g.keys]
                valid[g.keys] = True
                if m.names is None:
                    valid &= codes != 0
            v = _Vec(m, None, codes, valid)
        self._vecs[name] = v
        return v

    def _texts(self, m: MetricDef, codes: np.ndarray) -> list[str]:
        if m.names is not None:
            return [m.names.get(c, str(c)) for c in codes.tolist()]
        strings = self.store.strings
        if strings is None:
            return [""] * len(codes)
        return strings.resolve(codes)

    # ------------------------------------------------------------------ snapshot (under the lock)
    def _snapshot(self, agents: str, names: Sequence[str]) -> _Snap:
        """Everything a query needs, taken while holding the store lock (cheap, vectorised).

        The key columns and the text tables are copied once per store generation (many queries
        between two batches share them); per query only the fresh/agent selection is new.
        """
        with self.lock:
            self._sync()
            st = self.store
            now = st.clock.now()
            n = st.n_keys
            base = np.asarray(st.fresh(now))[:n] & self._agent_sel(agents)[:n]
            vecs = {nm: self.vector(nm) for nm in dict.fromkeys(names)}
            gc = self._gen_cache
            keys = gc.get("keys")
            if keys is None:
                k = st.k
                agent = k["agent"][:n].copy()
                hcodes = k["hostname"][:n].astype(np.int64)
                hu = np.unique(hcodes)
                hosts = dict(zip(hu.tolist(), st.strings.resolve(hu), strict=True)) \
                    if st.strings is not None else {}
                agent_names = {int(a): (st.agents[int(a)] if st.agents is not None else str(a))
                               for a in np.unique(agent).tolist()}
                keys = gc["keys"] = (agent, k["source_id"][:n].copy(), k["last_seen"][:n].copy(),
                                     hcodes, hosts, agent_names)
            texts: dict[str, dict[int, str]] = {}
            for nm, v in vecs.items():
                if v.codes is not None:
                    t = gc.get("texts:" + nm)
                    if t is None:
                        u = np.unique(v.codes[:n][v.valid[:n]])
                        t = gc["texts:" + nm] = dict(zip(u.tolist(), self._texts(v.m, u),
                                                         strict=True))
                    texts[nm] = t
            agent, source_id, last_seen, hcodes, hosts, agent_names = keys
            matches = gc.setdefault("matches", {})
            return _Snap(now, n, base, vecs, texts, agent, source_id, last_seen, hcodes, hosts,
                         agent_names, matches)

    def _agent_sel(self, agents: str) -> np.ndarray:
        st = self.store
        n = st.n_keys
        if agents is None or agents.strip() in ("", "ALL"):
            return np.ones(n, bool)
        idxs = []
        for a in agents.split(";"):
            a = a.strip()
            if not a:
                continue
            i = st.agents.index_of(a) if st.agents is not None else None
            if i is not None:
                idxs.append(i)
        return np.isin(st.k["agent"][:n], np.array(idxs, np.uint32))

    # ------------------------------------------------------------------ filters (outside the lock)
    def _matchers(self, name: str, patterns: Sequence[Any] | str | re.Pattern[str]
                  ) -> list[Callable[[str], Any]]:
        if isinstance(patterns, str | re.Pattern):
            patterns = [patterns]
        if len(patterns) > MAX_FILTER_VALUES:
            raise ValueError(f"filter {name}: more than {MAX_FILTER_VALUES} patterns")
        out: list[Callable[[str], Any]] = []
        for p in patterns:
            if isinstance(p, re.Pattern):            # trusted internal callers only
                out.append(p.fullmatch)
            else:
                with self._glock:
                    out.append(self.globs.get(str(p)).match)
        return out

    def _filtered(self, snap: _Snap, filters: Mapping[str, Any] | None) -> np.ndarray:
        sel = snap.base.copy()
        if not filters:
            return sel
        if len(filters) > MAX_FILTER_KEYS:
            raise ValueError(f"more than {MAX_FILTER_KEYS} filters")
        for name, pats in filters.items():
            sel &= self._matching(snap, name, pats)
        return sel

    def _matching(self, snap: _Snap, name: str, pats: Any) -> np.ndarray:
        """Bool over key slots: the metric is valid and its text fully matches a pattern.

        Results for string patterns are kept for the store generation (at most
        ``MAX_MATCH_CACHE`` pattern sets), so repeated queries (dashboards, the scaler) match once.
        """
        plain = isinstance(pats, str) or all(isinstance(p, str) for p in pats)
        ckey = (name, (pats,) if isinstance(pats, str) else tuple(pats)) if plain else None
        if ckey is not None:
            with self._glock:
                hit = snap.matches.get(ckey)
            if hit is not None:
                return hit
        fns = self._matchers(name, pats)
        v = snap.vecs[name]
        idx = np.nonzero(v.valid[: snap.n])[0]
        keep = np.zeros(snap.n, bool)
        if len(idx) and fns:
            if v.codes is not None:
                u, inv = np.unique(v.codes[idx], return_inverse=True)
                tx = snap.texts[name]
                ok = np.array([any(f(tx.get(c, "")) for f in fns) for c in u.tolist()], bool)
            else:
                assert v.values is not None
                u, inv = np.unique(v.values[idx], return_inverse=True)
                ok = np.array([any(f(_num_text(x)) for f in fns) for x in u.tolist()], bool)
            keep[idx] = ok[inv.reshape(-1)]
        if ckey is not None:
            with self._glock:
                if len(snap.matches) < MAX_MATCH_CACHE:
                    snap.matches[ckey] = keep
        return keep

    def _prepare(self, agents: str, names: Sequence[str],
                 filters: Mapping[str, Any] | None) -> tuple[_Snap, np.ndarray]:
        for fname in filters or {}:
            if fname not in METRICS:
                raise ValueError(f"unknown filter metric {fname!r}")
        snap = self._snapshot(agents, list(names) + list(filters or {}))
        return snap, self._filtered(snap, filters)

    # ------------------------------------------------------------------ naming
    @staticmethod
    def _ds_text(sid: int) -> str:
        cls, idx = sid >> 24, sid & 0xFFFFFF
        return str(idx) if cls == 0 else f"{cls}.{idx}"

    def _agent_text(self, slot: int) -> str:
        a = int(self.store.k["agent"][slot])
        return self.store.agents[a] if self.store.agents is not None else str(a)

    def _data_source(self, slot: int) -> str:
        return self._ds_text(int(self.store.k["source_id"][slot]))

    @staticmethod
    def _value_of(snap: _Snap, name: str, slot: int) -> Any:
        v = snap.vecs[name]
        if v.codes is not None:
            return snap.texts[name].get(int(v.codes[slot]), "")
        assert v.values is not None
        return _json_num(float(v.values[slot]))

    # ------------------------------------------------------------------ public
    def query(self, agents: str, metrics: str | Sequence[str],
              filters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """One answer per metric (sFlow-RT ``/metric/{agents}/{metrics}/json``)."""
        specs = parse_metrics(metrics)
        snap, base = self._prepare(agents, [nm for _s, _p, nm in specs], filters)
        now = snap.now
        out = []
        for spec, prefix, name in specs:
            v = snap.vecs[name]
            idx = np.nonzero(base & v.valid[: snap.n])[0]
            res: dict[str, Any] = {"metricName": spec, "metricN": int(len(idx))}
            if len(idx):
                ages = np.maximum(0.0, (now - snap.last_seen[idx]) * 1000.0)
                res["lastUpdate"] = int(ages.min())
                res["lastUpdateMax"] = int(ages.max())
                res["lastUpdateMin"] = int(ages.min())
                pick = self._aggregate(snap, v, name, prefix, idx, ages, res)
                if pick is not None:
                    res["agent"] = snap.agent_names.get(int(snap.agent[pick]), "")
                    res["dataSource"] = self._ds_text(int(snap.source_id[pick]))
                    res["lastUpdate"] = int(max(0.0, now - snap.last_seen[pick]) * 1000.0)
            out.append(res)
        return out

    def _aggregate(self, snap: _Snap, v: _Vec, name: str, prefix: str, idx: np.ndarray,
                   ages: np.ndarray, res: dict[str, Any]) -> int | None:
        """Put metricValue into ``res``; return the key slot holding it for max/min/any."""
        if v.codes is not None:
            tx = snap.texts[name]
            texts = [tx.get(c, "") for c in v.codes[idx].tolist()]
            if prefix == "any":
                j = int(np.argmin(ages))
            elif prefix == "max":
                j = max(range(len(texts)), key=texts.__getitem__)
            else:
                j = min(range(len(texts)), key=texts.__getitem__)
            res["metricValue"] = texts[j]
            return int(idx[j])
        assert v.values is not None
        x = v.values[idx]
        if prefix in ("max", "min", "any"):
            j = int(np.argmax(x) if prefix == "max" else np.argmin(x) if prefix == "min"
                    else np.argmin(ages))
            res["metricValue"] = _json_num(float(x[j]))
            return int(idx[j])
        val = reduce_values(prefix, x)
        res["metricValue"] = val
        return None

    def values(self, agents: str, metric: str,
               filters: Mapping[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(key slots, values) of one numeric metric for the selected fresh data sources."""
        name = metric.rpartition(":")[2]
        if name not in METRICS or METRICS[name].is_text:
            raise ValueError(f"unknown numeric metric {name!r}")
        snap, base = self._prepare(agents, [name], filters)
        v = snap.vecs[name]
        idx = np.nonzero(base & v.valid[: snap.n])[0]
        assert v.values is not None
        return idx, v.values[idx].copy()

    @staticmethod
    def _names(metrics: str | Sequence[str]) -> list[str]:
        if isinstance(metrics, str) and metrics.strip() == "ALL":
            return list(METRICS)
        items = metrics.split(",") if isinstance(metrics, str) else list(metrics)
        if [i.strip() for i in items] == ["ALL"]:
            return list(METRICS)
        names = []
        for it in items:
            n = it.strip().rpartition(":")[2]
            if not n:
                continue
            if n not in METRICS:
                raise ValueError(f"unknown metric {n!r}")
            names.append(n)
        return names

    def _entry(self, snap: _Snap, name: str, slot: int) -> dict[str, Any]:
        e: dict[str, Any] = {
            "agent": snap.agent_names.get(int(snap.agent[slot]), ""),
            "dataSource": self._ds_text(int(snap.source_id[slot])),
            "metricName": name, "metricValue": self._value_of(snap, name, slot),
            "lastUpdate": int(max(0.0, snap.now - float(snap.last_seen[slot])) * 1000)}
        host = snap.hosts.get(int(snap.hostname[slot]))
        if host:
            e["hostName"] = host
        return e

    def dump(self, agents: str, metrics: str | Sequence[str],
             filters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """One entry per (data source, metric): agent, dataSource, metricName, metricValue, ..."""
        names = self._names(metrics)
        snap, base = self._prepare(agents, names, filters)
        out: list[dict[str, Any]] = []
        for name in names:
            v = snap.vecs[name]
            for slot in np.nonzero(base & v.valid[: snap.n])[0].tolist():
                out.append(self._entry(snap, name, slot))
        return out

    def table(self, agents: str, metrics: str | Sequence[str],
              filters: Mapping[str, Any] | None = None) -> list[list[dict[str, Any]]]:
        """sFlow-RT ``table()``: one row per data source that has every metric, in metric order.

        A metric written ``sort:name:N`` sorts the rows by that metric (N < 0: largest first) and
        keeps |N| rows.
        """
        items = metrics.split(",") if isinstance(metrics, str) else list(metrics)
        names: list[str] = []
        sort: tuple[str, int] | None = None
        for raw in items:
            it = raw.strip()
            if not it:
                continue
            if it.startswith("sort:"):
                _, nm, cnt = (it.split(":") + ["0"])[:3]
                try:
                    count = int(cnt)
                except ValueError:
                    raise ValueError(f"bad sort count in {it!r} (sort:metric:-N)") from None
                sort = (nm, count)
                it = nm
            nm = it.rpartition(":")[2]
            if nm not in METRICS:
                raise ValueError(f"unknown metric {nm!r}")
            names.append(nm)
        if not names:
            raise ValueError("no metric named")
        snap, base = self._prepare(agents, names, filters)
        sel = base.copy()
        for nm in names:
            sel &= snap.vecs[nm].valid[: snap.n]
        slots = np.nonzero(sel)[0].tolist()
        if sort is not None:
            sname, count = sort
            slots.sort(key=lambda s: self._value_of(snap, sname, s), reverse=count < 0)
            if count:
                slots = slots[: abs(count)]
        return [[self._entry(snap, nm, s) for nm in names] for s in slots]

    def agent_metrics(self, agent: str) -> dict[str, Any] | None:
        """sFlow-RT ``/metric/{agent}/json``: ``{"<dataSource>.<metric>": value}``; None if unknown."""
        if self.store.agents is None or self.store.agents.index_of(agent) is None:
            return None
        snap, base = self._prepare(agent, list(METRICS), None)
        out: dict[str, Any] = {}
        slots = np.nonzero(base)[0].tolist()
        for name in METRICS:
            valid = snap.vecs[name].valid
            for slot in slots:
                if valid[slot]:
                    ds = self._ds_text(int(snap.source_id[slot]))
                    out[f"{ds}.{name}"] = self._value_of(snap, name, slot)
        return dict(sorted(out.items()))

    def names(self) -> dict[str, int]:
        """Every metric some fresh data source has -> ms since its newest update."""
        with self.lock:
            self._sync()
            now = self.store.clock.now()
            fresh = self.store.fresh(now)
            last_seen = self.store.k["last_seen"][: self.store.n_keys]
            out: dict[str, int] = {}
            for name in METRICS:
                v = self.vector(name)
                sel = fresh & v.valid
                if sel.any():
                    out[name] = int(max(0.0, now - float(last_seen[sel].max())) * 1000)
            return out

    def stats(self) -> dict[str, Any]:
        """The filter-pattern cache's counters (for /healthz and Prometheus)."""
        with self._glock:
            return {"patterns": self.globs.stats()}


@dataclass
class _Snap:
    """What one query needs, copied under the store lock and used after it is released."""

    now: float
    n: int
    base: np.ndarray                          # fresh and agent-selected key slots
    vecs: dict[str, _Vec]                     # per-generation vectors (never modified later)
    texts: dict[str, dict[int, str]]          # text metric -> code -> text
    agent: np.ndarray
    source_id: np.ndarray
    last_seen: np.ndarray
    hostname: np.ndarray
    hosts: dict[int, str]
    agent_names: dict[int, str]
    matches: dict[tuple[str, tuple[Any, ...]], np.ndarray]   # filter results, per generation
