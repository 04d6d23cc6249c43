#!/usr/bin/env python3
"""The decoder's intern tables under a flood of spoofed names, end to end (``fastflow run``).

    python bench/intern.py                  # 700k spoofed agents + container names, ~30 s
    python bench/intern.py --names 1100000 --rate 40000

One ``python -m fastflow run --no-scaler`` subprocess (``[store] expire_after`` 10 s) receives on
127.0.0.1 small datagrams, each from a new spoofed agent address and naming a new container (one
``host_descr`` + ``virt_cpu`` sample): every datagram adds one agent and one string to the decoder's
intern tables (cap 1,048,576 each). Printed along the way: the tables' sizes and compactions from
``/healthz``, the service's RSS, the slowest ``/healthz`` answer, kernel drops. Then a new agent
reports a container: before compaction existed, past the cap it was decoded as agent 0 with no
name; now it must show under its own address and name in ``/agents/json`` and ``/dump``.
Bounded in count and time; traffic only to 127.0.0.1. Writes bench/results/intern.json.
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

LATE_AGENT = "192.0.2.200"
LATE_NAME = "late.1.container"


def spoofed(i: int) -> bytes:
    agent = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
    return late(agent, f"spoof.{i}.abcdefgh", 1)


def late(agent: str, name: str, seq: int) -> bytes:
    s = E.counter_sample("3:1", [E.host_descr(hostname=name), E.virt_cpu(state=1, cpu_time=seq,
                                                                          nr_virt_cpu=1)],
                         sequence_number=seq)
    return E.encode_datagram(E.datagram(agent, [s], sequence_number=seq, uptime=1000 * seq))




def snap(svc: e2e.Service, api: e2e.Api, label: str, sent: int) -> dict[str, Any]:
    def fields(h: dict[str, Any]) -> dict[str, Any]:
        it = h.get("decoder", {}).get("interned", {})
        ing = h.get("ingest", {})
        return {"sent": sent, "strings": it.get("strings"), "agents": it.get("agents"),
                "compactions": it.get("compactions"), "dropped": it.get("dropped"),
                "received": ing.get("datagrams"), "kernel_drops": ing.get("kernel_drops"),
                "table_full": h.get("decoder", {}).get("errors", {}).get("table_full", 0)}
    return e2e.health_row(svc, api, label, fields)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--names", type=int, default=700_000, help="spoofed agents/names to send")
    ap.add_argument("--rate", type=float, default=40_000.0, help="datagrams/s (paced)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "intern.json")
    args = ap.parse_args(argv)
    n = max(1, min(args.names, 4_000_000))
    print(f"building {n} spoofed datagrams...", flush=True)
    grams = [spoofed(i) for i in range(n)]
    os.environ["FASTFLOW_STORE_EXPIRE_AFTER"] = "10"
    svc = e2e.Service()
    api = e2e.Api(svc.http_port)
    rows: list[dict[str, Any]] = []
    found: dict[str, Any] = {}
    try:
        time.sleep(1.0)
        rows.append(snap(svc, api, "idle", 0))
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        dst = ("127.0.0.1", svc.sflow_port)
        t0 = time.monotonic()
        step = max(1, n // 8)
        for i, g in enumerate(grams, 1):
            sock.sendto(g, dst)
            if i % 256 == 0:
                ahead = t0 + i / args.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            if i % step == 0 or i == n:
                svc.check()
                rows.append(snap(svc, api, f"after {i}", i))
        e2e.settle(api, svc)
        for seq in (1, 2, 3):                       # a new agent after the flood
            sock.sendto(late(LATE_AGENT, LATE_NAME, seq), dst)
            time.sleep(1.0)
        sock.close()
        rows.append(snap(svc, api, "late agent", n))
        agents = api.json("/agents/json")
        dump = api.json("/dump/ALL/vir_host_name/json")
        found = {"late_agent_listed": LATE_AGENT in agents,
                 "late_name_dumped": any(d.get("agent") == LATE_AGENT and
                                         d.get("metricValue") == LATE_NAME for d in dump)}
        print(found, flush=True)
    finally:
        api.close()
        svc.stop()
    out = {"bench": "intern", "names": n, "rate": args.rate, "rows": rows, **found,
           "peak_rss_mib": max(r["rss_mib"] for r in rows),
           "worst_healthz_s": max(r["healthz_s"] for r in rows),
           "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"peak RSS {out['peak_rss_mib']:.0f} MiB, slowest /healthz "
          f"{out['worst_healthz_s'] * 1000:.0f} ms; wrote {args.out}")
    return 0 if found.get("late_agent_listed") and found.get("late_name_dumped") else 1


if __name__ == "__main__":
    sys.exit(main())
