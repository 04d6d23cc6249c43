"""Hand-built counter tables for store / metrics tests: a Store + Metrics on a ReplayClock."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastflow._schema import COUNTER_BIT, COUNTER_DTYPE, DATAGRAM_DTYPE, FLOW_DTYPE
from fastflow.collector.metrics import Metrics
from fastflow.collector.pipeline import Batch, ReplayClock, StringView
from fastflow.collector.store import Store

VIRT_MASK = sum(1 << COUNTER_BIT[r] for r in ("host_descr", "virt_cpu", "virt_memory",
                                               "virt_disk_io", "virt_net_io"))
HOST_MASK = sum(1 << COUNTER_BIT[r] for r in ("host_descr", "host_cpu", "host_memory",
                                               "host_disk_io", "host_net_io"))
IF_MASK = 1 << COUNTER_BIT["if_counters"]


def rows(*dicts: dict[str, Any]) -> np.ndarray:
    """A COUNTER_DTYPE table with the given columns set (others 0)."""
    out = np.zeros(len(dicts), COUNTER_DTYPE)
    for i, d in enumerate(dicts):
        for k, v in d.items():
            out[k][i] = v
    return out


def container(index: int, seq: int, uptime_ms: int, cpu_ms: int = 0, rx: int = 0, tx: int = 0,
              agent: int = 1, ts: float | None = None, state: int = 1, hostname: int = 1,
              **extra: Any) -> dict[str, Any]:
    """One container (3:index) counter sample."""
    d: dict[str, Any] = {
        "agent": agent, "source_id": 3 << 24 | index, "source_id_type": 3,
        "source_id_index": index, "sequence_number": seq, "uptime": uptime_ms,
        "ts": 1_700_000_000.0 + uptime_ms / 1000.0 if ts is None else ts,
        "mask": VIRT_MASK, "vcpu_state": state, "vcpu_cpu_time": cpu_ms, "vcpu_nr_virt_cpu": 1,
        "vnet_rx_bytes": rx, "vnet_tx_bytes": tx, "hostname": hostname,
        "vmem_memory": 1 << 20, "vmem_max_memory": 1 << 22}
    d.update(extra)
    return d


class Engine:
    """Store + Metrics on a ReplayClock, fed hand-made counter tables."""

    def __init__(self, depth: int = 32, expire_after: float = 30.0,
                 strings: list[str] | None = None, agents: list[str] | None = None) -> None:
        self.clock = ReplayClock(1_700_000_000.0)
        self.store = Store(depth=depth, expire_after=expire_after, clock=self.clock)
        self.metrics = Metrics(self.store)
        self.strings = strings if strings is not None else ["", "web.1.abc", "web.2.def",
                                                            "db.1.xyz", "vm"]
        self.agents = agents if agents is not None else ["", "192.0.2.1", "192.0.2.2"]
        self.sv = StringView(lambda: list(self.strings))
        self.av = StringView(lambda: list(self.agents))

    def add(self, table: np.ndarray, now: float | None = None) -> None:
        """Feed one batch; the clock moves to ``now`` or to the newest ts in the batch."""
        if now is not None:
            self.clock.set(now)
        elif len(table):
            self.clock.advance(float(table["ts"].max()))
        self.store.add(Batch(np.zeros(0, DATAGRAM_DTYPE), table, np.zeros(0, FLOW_DTYPE),
                             self.sv, self.av))

    def feed(self, *samples: dict[str, Any]) -> None:
        """Each sample as its own batch, in order."""
        for s in samples:
            self.add(rows(s))

    def value(self, metric: str, agents: str = "ALL", **filters: Any) -> Any:
        """metricValue of a one-metric query (None when metricN == 0)."""
        r = self.metrics.query(agents, metric, filters or None)[0]
        return r.get("metricValue")
