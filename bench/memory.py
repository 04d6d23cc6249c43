#!/usr/bin/env python3
"""Memory ceilings of ``fastflow run`` under spoofed data sources (issue #11 attack #1).

    python bench/memory.py                  # 1M spoofed data sources, default caps
    python bench/memory.py --sources 343000 --expire 5

One ``python -m fastflow run --no-scaler`` subprocess (default caps; ``[store] expire_after`` set to
``--expire`` seconds so the aftermath is quick to see) receives, on 127.0.0.1, datagrams whose sFlow
agent address is spoofed (a new one per datagram) and which carry 229 counter samples each
(``virt_cpu`` + ``virt_memory``, a new source id per sample): the attack of issue #11, 1,500
datagrams = 343k data sources. Printed along the way: the service's RSS (/proc/<pid>/status), the
time ``/healthz`` takes to answer, and the store / agent-statistics figures it reports (data
sources held, refused, evicted). Then it waits for the sources to expire and prints the RSS again
(memory given back). Writes bench/results/memory.json. Bounded: datagram count and time.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _checkout import use_checkout  # noqa: E402

use_checkout()

import e2e  # noqa: E402
from fastflow import encode as E  # noqa: E402

PER_DATAGRAM = 229
BEFORE = {"sources": 343_000, "rss_mib": 2713.0, "healthz_s": None, "note": "RSS 48 MiB -> 2.65 "
          "GiB, never returned; /metric 3.6 s (issue #11, before the bounds)"}




def spoofed(i: int) -> bytes:
    """Datagram ``i``: agent 10.(i>>16).(i>>8).i, 229 containers with fresh source ids."""
    agent = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
    samples = [E.counter_sample(f"3:{(i * PER_DATAGRAM + j) & 0xFFFFFF}", [
        E.virt_cpu(state=1, cpu_time=j, nr_virt_cpu=1)], sequence_number=1)
        for j in range(PER_DATAGRAM)]
    return E.encode_datagram(E.datagram(agent, samples, sequence_number=1, uptime=1000))


def snapshot(svc: e2e.Service, api: e2e.Api, label: str, sent: int) -> dict[str, Any]:
    def fields(h: dict[str, Any]) -> dict[str, Any]:
        ing = h.get("ingest", {})
        return {"datagrams_sent": sent, "sources_sent": sent * PER_DATAGRAM,
                "received": ing.get("datagrams"), "kernel_drops": ing.get("kernel_drops"),
                "store_data_sources": ing.get("store_data_sources"),
                "store_rejected": ing.get("store_rejected"),
                "store_evicted": ing.get("store_evicted"),
                "store_expired": ing.get("store_expired"),
                "store_mib": round(ing.get("store_bytes", 0) / 2**20, 1),
                "agents": ing.get("agentstats_agents"),
                "agents_rejected": ing.get("agentstats_rejected_agents"),
                "sample_state": ing.get("agentstats_sample_sources")}
    return e2e.health_row(svc, api, label, fields)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sources", type=int, default=1_000_000, help="spoofed data sources to send")
    ap.add_argument("--rate", type=float, default=2000.0, help="datagrams/s (paced)")
    ap.add_argument("--expire", type=float, default=10.0, help="[store] expire_after, seconds")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "memory.json")
    args = ap.parse_args(argv)
    n = -(-args.sources // PER_DATAGRAM)
    print(f"building {n} spoofed datagrams ({n * PER_DATAGRAM} data sources)...", flush=True)
    grams = [spoofed(i) for i in range(n)]
    os.environ["FASTFLOW_STORE_EXPIRE_AFTER"] = str(args.expire)
    svc = e2e.Service()
    api = e2e.Api(svc.http_port)
    rows: list[dict[str, Any]] = []
    try:
        time.sleep(1.0)
        rows.append(snapshot(svc, api, "idle", 0))
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        t0 = time.monotonic()
        marks = {1500, n} | set(range(2000, n, 1000))
        for i, g in enumerate(grams, 1):
            sock.sendto(g, ("127.0.0.1", svc.sflow_port))
            ahead = t0 + i / args.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            if i in marks:
                svc.check()
                rows.append(snapshot(svc, api, f"after {i} datagrams", i))
        sock.close()
        e2e.settle(api, svc)
        rows.append(snapshot(svc, api, "sent, settled", n))
        worst = max(r["healthz_s"] for r in rows)
        peak = max(r["rss_mib"] for r in rows)
        time.sleep(args.expire + 3.0)
        rows.append(snapshot(svc, api, f"after expiry ({args.expire:.0f} s)", n))
    finally:
        api.close()
        svc.stop()
    out = {"bench": "memory", "sources": n * PER_DATAGRAM, "per_datagram": PER_DATAGRAM,
           "peak_rss_mib": peak, "worst_healthz_s": worst, "rows": rows, "before": BEFORE,
           "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"peak RSS {peak:.0f} MiB, slowest /healthz {worst * 1000:.0f} ms "
          f"(before: 343k sources -> {BEFORE['rss_mib']:.0f} MiB, never returned); "
          f"after expiry {rows[-1]['rss_mib']:.0f} MiB; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
