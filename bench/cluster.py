#!/usr/bin/env python3
"""Large-cluster scale: ``fastflow simulate`` (10k nodes x 21 containers, 10 s polling) into
``fastflow run`` (issue #10 targets: no datagram lost, < 5 % of a core, < 300 MB RSS).

    python bench/cluster.py                      # both shapes, 60 s each
    python bench/cluster.py --shapes spread --duration 30

For each shape (``burst``: every agent sends in the first half of each polling interval, the
simulator's default; ``spread``: each agent at its own phase, as real agents do) one
``python -m fastflow run --no-scaler`` subprocess receives ``python -m fastflow simulate --nodes N
--containers-per-node C --polling P --duration D [--spread] --to 127.0.0.1:PORT`` on 127.0.0.1.
Measured from the service: CPU (utime+stime from /proc/<pid>/stat over the run) as % of one core,
peak and final RSS (/proc/<pid>/status, sampled every 0.5 s), datagrams received / decoded /
dropped by the kernel (/healthz, before and after), data sources held, and the time of a filtered
``/metric`` query (one container by hostname), median of 20 after the run. The simulator's own CPU
is reported apart. Results side by side with issue #10's figures; bench/results/cluster.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import e2e  # noqa: E402

BEFORE = {"cpu_pct": 24.5, "rss_mb": 1500.0, "kernel_drops": 19_743, "sent": 360_000,
          "metric_ms": 310.0, "note": "issue #10: 60 s, burst shape, before this change"}




def run_shape(shape: str, args: argparse.Namespace) -> dict[str, Any]:
    svc = e2e.Service()
    api = e2e.Api(svc.http_port)
    try:
        time.sleep(1.0)
        h0 = api.json("/healthz")["ingest"]
        cpu0, _ = svc.cpu()
        peak = [e2e.rss_mib(svc.proc.pid)]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.5):
                try:
                    peak.append(e2e.rss_mib(svc.proc.pid))
                except OSError:
                    return

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        cmd = [sys.executable, "-m", "fastflow", "simulate", "--nodes", str(args.nodes),
               "--containers-per-node", str(args.containers), "--polling", str(args.polling),
               "--duration", str(args.duration), "--to", f"127.0.0.1:{svc.sflow_port}"]
        if shape == "spread":
            cmd.append("--spread")
        t0 = time.monotonic()
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=e2e.ROOT, env=e2e.child_env(),
                           timeout=args.duration * 3 + 300)
        e2e.settle(api, svc, limit=30)
        wall = time.monotonic() - t0
        cpu1, _ = svc.cpu()
        done.set()
        th.join(2)
        h1 = api.json("/healthz")["ingest"]
        times = []
        for _ in range(20):
            t = time.monotonic()
            api.json("/metric/ALL/max:vir_cpu_utilization/json?vir_host_name=static5.3.10.0.0.6")
            times.append(time.monotonic() - t)
        m = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""
        sent = int(m.split("sent ")[1].split(" ")[0].replace(",", "")) if "sent " in m else None
        recv = h1["datagrams"] - h0["datagrams"]
        return {
            "shape": shape, "nodes": args.nodes, "containers_per_node": args.containers + 1,
            "polling": args.polling, "duration": args.duration, "sent": sent, "received": recv,
            "decoded": h1["datagrams_decoded"] - h0["datagrams_decoded"],
            "kernel_drops": h1["kernel_drops"] - h0["kernel_drops"],
            "lost": (sent - recv) if sent is not None else None,
            "cpu_pct": round(100.0 * (cpu1 - cpu0) / wall, 2),
            "us_per_datagram": round(1e6 * (cpu1 - cpu0) / recv, 2) if recv else None,
            "rss_peak_mb": round(max(peak), 1), "rss_end_mb": round(e2e.rss_mib(svc.proc.pid), 1),
            "data_sources": h1.get("store_data_sources"), "rcvbuf": h1.get("rcvbuf_granted"),
            "metric_ms_median": round(1000 * statistics.median(times), 2),
            "simulator": m, "max_batch": h1.get("max_batch"), "batches": h1["batches"] - h0["batches"],
        }
    finally:
        api.close()
        svc.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--containers", type=int, default=20, help="static containers per node")
    ap.add_argument("--polling", type=float, default=10.0)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--shapes", default="burst,spread")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "cluster.json")
    args = ap.parse_args(argv)
    rows = []
    for shape in args.shapes.split(","):
        r = run_shape(shape.strip(), args)
        rows.append(r)
        print(" ".join(f"{k}={v}" for k, v in r.items()), flush=True)
    print(f"before ({BEFORE['note']}): cpu {BEFORE['cpu_pct']}%, RSS {BEFORE['rss_mb']:.0f} MB, "
          f"{BEFORE['kernel_drops']} of {BEFORE['sent']} datagrams dropped, filtered /metric "
          f"{BEFORE['metric_ms']:.0f} ms")
    out = {"bench": "cluster", "cpus": os.cpu_count(), "rows": rows, "before": BEFORE,
           "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
