#!/usr/bin/env python3
"""``fastflow run`` CPU per datagram at offered rates users see (issue #10 part 3, live path).

    python bench/live.py                       # 1k, 10k, 100k datagrams/s and flat out
    python bench/live.py --rates 1000 --duration 20 --linger 0,0.002

One ``python -m fastflow run --no-scaler`` subprocess per linger setting (``[collector] linger``
through FASTFLOW_COLLECTOR_LINGER) receives ``fastflow replay`` of the 124 real Host sFlow
datagrams of hsflowd/docker-swarm.pcap (looped, sequence numbers rewritten) at each offered rate,
on 127.0.0.1 (bench/e2e.py's harness: CPU of the service process from /proc/<pid>/stat over the
time datagrams flowed, datagrams decoded vs sent from /healthz). Printed side by side with the
figures measured before the compiled store / agent statistics (issue #10's table). Writes
bench/results/live.json. Bounded: each replay is bounded by count and --duration.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import e2e  # noqa: E402  (bench/e2e.py: the service harness)

# issue #10, measured on this machine before this change (same replay, same harness)
BEFORE: dict[int, dict[str, float]] = {
    1000: {"cpu_pct": 56.0, "us_per_dg": 558.0},
    5000: {"cpu_pct": 58.0, "us_per_dg": 116.0},
    20000: {"us_per_dg": 31.0},
    100000: {"us_per_dg": 9.5},
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rates", default="1000,10000,20000,100000,0",
                    help="comma-separated offered rates, datagrams/s (0 = flat out)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per rate")
    ap.add_argument("--linger", default="0.002", help="comma-separated [collector] linger values")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "live.json")
    args = ap.parse_args(argv)
    rates = [int(float(r)) for r in args.rates.split(",") if r.strip()]
    capture = e2e.capture_path()
    results: list[dict[str, Any]] = []
    for linger in [float(x) for x in args.linger.split(",")]:
        os.environ["FASTFLOW_COLLECTOR_LINGER"] = str(linger)
        svc = e2e.Service()
        api = e2e.Api(svc.http_port)
        try:
            startup = e2e.sender_startup_cpu(svc, capture)
            for rate in rates:
                dur = args.duration if rate else min(args.duration, 3.0)
                r = e2e.run_rate(svc, api, capture, rate, dur, startup)
                r["linger"] = linger
                hz = api.json("/healthz").get("ingest", {})
                r["batches"] = hz.get("batches")
                r["rss_mb"] = round(e2e.rss_mib(svc.proc.pid), 1)
                results.append(r)
                _row(r)
        finally:
            api.close()
            svc.stop()
    out = {"bench": "live", "machine": platform.node(), "cpus": os.cpu_count(),
           "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": results,
           "before": BEFORE}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0




def _row(r: dict[str, Any]) -> None:
    rate = r["offered_rate"] or 0
    b = BEFORE.get(rate, {})
    before = (f"before {b.get('cpu_pct', float('nan')):5.1f}% {b['us_per_dg']:7.1f} us/dg"
              if b else "before      -")
    print(f"linger {r['linger']:.3f}  offered {rate or 'max':>7}  sent {r['sent']:>8}  "
          f"decoded {r['decoded']:>8}  lost {r['loss']:>6}  cpu {r['service_cpu_pct']:5.1f}%  "
          f"{r['service_cpu_us_per_datagram'] or 0:7.2f} us/dg  batches {r['batches']}  "
          f"rss {r['rss_mb']} MB  | {before}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
