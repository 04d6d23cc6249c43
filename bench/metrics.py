#!/usr/bin/env python3
"""Store + metrics at scale: a synthetic swarm of 1k / 10k / 100k containers.

    python bench/metrics.py            # 1k, 10k, 100k containers, 5 repeats
    python bench/metrics.py --quick    # 1k, 10k containers, 3 repeats (a few seconds)

The store is filled through its real vectorised write path (``Store.add`` with COUNTER_DTYPE tables
as the decoder makes them, one batch per polling round, 4 rounds) with containers spread over 100
services and 1 agent per 1000 containers. Measured (medians):

* fill: counter samples stored per second by ``Store.add``;
* full pass: every container metric (``vir_*``, 24 vectors) recomputed over the whole store, as
  after a new batch (cache invalidated);
* cpu pass: ``vir_cpu_utilization`` alone;
* service query: ``avg:vir_cpu_utilization,avg:vir_bytes_in,avg:vir_bytes_out`` filtered on one
  service's ``vir_host_name`` pattern and ``vir_cpu_state=running`` — "cold" right after a new
  batch (vectors recomputed), "warm" when nothing changed since the last query;
* bytes per container: key table + ring rows (depth 32) held by the store, divided by containers.

Prints a table and writes bench/results/metrics.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _checkout import use_checkout  # noqa: E402

use_checkout()

from fastflow._schema import COUNTER_BIT, COUNTER_DTYPE, DATAGRAM_DTYPE, FLOW_DTYPE  # noqa: E402
from fastflow.collector.metrics import METRICS, Metrics  # noqa: E402
from fastflow.collector.pipeline import Batch, ReplayClock, StringView  # noqa: E402
from fastflow.collector.store import Store  # noqa: E402

SERVICES = 100
PER_AGENT = 1000
POLL = 10.0
T0 = 1_700_000_000.0
VIRT_MASK = sum(1 << COUNTER_BIT[r] for r in ("host_descr", "virt_cpu", "virt_memory",
                                               "virt_disk_io", "virt_net_io"))


def strings(n: int) -> list[str]:
    """String table: "" then one container name per container (svcK.slot.taskid)."""
    return [""] + [f"svc{i % SERVICES}.{i // SERVICES + 1}.{i:025x}" for i in range(n)]


def batch(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Polling round ``k`` of ``n`` containers as a COUNTER_DTYPE table."""
    c = np.zeros(n, COUNTER_DTYPE)
    i = np.arange(n)
    c["agent"] = 1 + i // PER_AGENT
    c["source_id"] = (3 << 24) | (i + 1)
    c["source_id_type"] = 3
    c["source_id_index"] = i + 1
    c["sequence_number"] = k + 1
    c["uptime"] = 1_000_000 + int(k * POLL * 1000)
    c["ts"] = T0 + k * POLL + rng.random(n)
    c["mask"] = VIRT_MASK
    c["hostname"] = i + 1
    c["vcpu_state"] = np.where(i % 50 == 0, 2, 1)
    c["vcpu_nr_virt_cpu"] = 1
    util = (i % 100) / 100.0
    c["vcpu_cpu_time"] = (k * POLL * 1000 * util).astype(np.uint32)
    c["vmem_memory"] = 1 << 26
    c["vmem_max_memory"] = 1 << 28
    c["vnet_rx_bytes"] = k * (i + 1) * 1000
    c["vnet_tx_bytes"] = k * (i + 1) * 500
    return c


def timeit(fn: Any, repeats: int) -> tuple[float, Any]:
    times = []
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def run_size(n: int, repeats: int, rounds: int = 4) -> dict[str, Any]:
    rng = np.random.default_rng(n)
    names = strings(n)
    agents = [""] + [f"10.0.{a // 256}.{a % 256}" for a in range(n // PER_AGENT + 1)]
    sv, av = StringView(lambda: names), StringView(lambda: agents)
    tables = [batch(n, k, rng) for k in range(rounds)]
    empty_d, empty_f = np.zeros(0, DATAGRAM_DTYPE), np.zeros(0, FLOW_DTYPE)

    fill_times = []
    for _ in range(max(1, repeats // 2)):
        clock = ReplayClock(T0)
        store = Store(depth=32, expire_after=3 * POLL, clock=clock)
        for k, t in enumerate(tables):
            clock.set(T0 + k * POLL + 1)
            s = time.perf_counter()
            store.add(Batch(empty_d, t, empty_f, sv, av))
            fill_times.append(time.perf_counter() - s)
    assert len(store) == n
    metrics = Metrics(store)
    virt = [m for m, d in METRICS.items() if d.group == "virt"]

    def full_pass() -> None:
        store.generation += 1
        for m in virt:
            metrics.vector(m)

    def cpu_pass() -> None:
        store.generation += 1
        metrics.vector("vir_cpu_utilization")

    q_metrics = "avg:vir_cpu_utilization,avg:vir_bytes_in,avg:vir_bytes_out"
    q_filter = {"vir_host_name": ["svc7.*"], "vir_cpu_state": ["running"]}   # sFlow-RT globs
    t_first = time.perf_counter()
    first = metrics.query("ALL", q_metrics, q_filter)   # patterns meet every hostname once
    first_s = time.perf_counter() - t_first

    def query_cold() -> Any:
        store.generation += 1
        return metrics.query("ALL", q_metrics, q_filter)

    full_s, _ = timeit(full_pass, repeats)
    cpu_s, _ = timeit(cpu_pass, repeats)
    cold_s, ans = timeit(query_cold, repeats)
    warm_s, _ = timeit(lambda: metrics.query("ALL", q_metrics, q_filter), repeats)
    assert ans == first and ans[0]["metricN"] > 0
    return {
        "containers": n,
        "fill_samples_per_s": n / statistics.median(fill_times),
        "full_pass_ms": full_s * 1e3,
        "full_pass_metrics": len(virt),
        "cpu_pass_ms": cpu_s * 1e3,
        "service_query_first_ms": first_s * 1e3,
        "service_query_cold_ms": cold_s * 1e3,
        "service_query_warm_ms": warm_s * 1e3,
        "service_query_n": ans[0]["metricN"],
        "bytes_per_container": store.nbytes() / n,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1k and 10k containers, 3 repeats")
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=None,
                    help="comma-separated container counts (default 1000,10000,100000)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "metrics.json")
    args = ap.parse_args()
    sizes = args.sizes or ([1000, 10000] if args.quick else [1000, 10000, 100000])
    repeats = args.repeats or (3 if args.quick else 5)
    rows = [run_size(n, repeats) for n in sizes]
    hdr = (f"{'containers':>10} {'fill samp/s':>12} {'full pass ms':>13} {'cpu pass ms':>12} "
           f"{'svc q first':>12} {'svc q cold':>11} {'svc q warm':>11} {'B/container':>12}")
    print(hdr)
    for r in rows:
        print(f"{r['containers']:>10} {r['fill_samples_per_s']:>12.3g} {r['full_pass_ms']:>13.2f} "
              f"{r['cpu_pass_ms']:>12.2f} {r['service_query_first_ms']:>12.2f} "
              f"{r['service_query_cold_ms']:>11.2f} {r['service_query_warm_ms']:>11.2f} "
              f"{r['bytes_per_container']:>12.0f}")
    report = {"meta": {"quick": args.quick, "repeats": repeats, "depth": 32,
                       "python": platform.python_version(), "numpy": np.__version__,
                       "machine": platform.machine(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")},
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
