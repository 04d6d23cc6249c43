"""Requests per second of ``fastflow run``'s REST API on 127.0.0.1, one keep-alive client.

    python3 bench/http_rps.py [--src /work/main/src] [--n 2000]

Feeds the shared swarm capture, then times ``n`` sequential requests of three kinds: /healthz, a
filtered /metric query and /dump/ALL/vir_cpu_utilization. Prints requests/s and the service's CPU
seconds per 1000 requests (from /proc). Run it for two source trees for a side-by-side.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _attack_util import send, service, wait_metrics  # noqa: E402


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / 100.0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", default=str(Path(__file__).resolve().parent.parent / "src"))
    ap.add_argument("--pcap", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"
                                          / "hsflowd" / "docker-swarm.pcap"))
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    sys.path.insert(0, args.src)
    from fastflow import pcap
    dgrams = [d for _, _, d in pcap.iter_datagrams(args.pcap)]
    paths = {"healthz": "/healthz",
             "metric": "/metric/ALL/avg:vir_cpu_utilization/json?vir_host_name=sflowpeer_burn.1.*",
             "dump": "/dump/ALL/vir_cpu_utilization/json"}
    with tempfile.TemporaryDirectory() as d, service(Path(d), src=args.src) as (p, sp, hp):
        send(sp, dgrams)
        wait_metrics(hp)
        for name, path in paths.items():
            c = http.client.HTTPConnection("127.0.0.1", hp, timeout=10)
            c0, t0 = cpu_seconds(p.p.pid), time.perf_counter()
            for _ in range(args.n):
                c.request("GET", path, headers={"Host": "127.0.0.1"})
                r = c.getresponse()
                r.read()
                assert r.status == 200, r.status
            dt, dc = time.perf_counter() - t0, cpu_seconds(p.p.pid) - c0
            c.close()
            print(f"{name:8s} {args.n / dt:8.0f} req/s   service CPU {1000 * dc / args.n:.3f} s "
                  f"per 1000 requests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
