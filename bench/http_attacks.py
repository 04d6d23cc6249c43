"""Issue #11's HTTP attacks (2, 4, 6, 7, 12) against ``fastflow run`` from a given source tree.

    python3 bench/http_attacks.py [--src /work/main/src] [--pcap ../shared/data/hsflowd/docker-swarm.pcap]

Prints one line per attack with what a client sees: /healthz answer time during the attack, status
codes, the stop time after SIGINT, RSS growth. Run it once with the old tree and once with this one
for a before/after table. Traffic goes to 127.0.0.1 only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _attack_util import (  # noqa: E402
    SERVICE,
    attack_regex,
    distinct_patterns,
    get,
    healthz_seconds,
    idle_connections,
    rss_kib,
    send,
    service,
    wait_metrics,
)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", default=str(Path(__file__).resolve().parent.parent / "src"))
    ap.add_argument("--pcap", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"
                                          / "hsflowd" / "docker-swarm.pcap"))
    args = ap.parse_args()
    sys.path.insert(0, args.src)
    from fastflow import pcap
    dgrams = [d for _, _, d in pcap.iter_datagrams(args.pcap)]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    print(f"tree {args.src}")

    with tempfile.TemporaryDirectory() as d, service(Path(d), src=args.src) as (p, sp, hp):
        send(sp, dgrams)
        wait_metrics(hp)
        threads, answers = attack_regex(hp, 4)
        h = healthz_seconds(hp, 10)
        t0 = time.monotonic()
        rc = p.stop(10)
        print(f"#2 regex filter {json.dumps('(.*.*)*!')}: /healthz {h:.3f} s during the attack; "
              f"SIGINT -> exit {rc} after {time.monotonic() - t0:.1f} s "
              f"(killed if > 10 s); answers {[a[0] if a else None for a in answers]}")

    with tempfile.TemporaryDirectory() as d, service(Path(d), src=args.src) as (p, sp, hp):
        socks = idle_connections(hp, 1100)
        h = healthz_seconds(hp, 10)
        st, body = get(hp, "/healthz")
        limit_lines = sum("connection limit" in ln for ln in p.lines)
        for s in socks:
            s.close()
        print(f"#4 {len(socks)} idle TCP connections (ulimit -n 1024): /healthz "
              f"{h:.3f} s ({st}); log lines about the limit: {limit_lines}; "
              f"http stats {body.get('http') if isinstance(body, dict) else None}")

    with tempfile.TemporaryDirectory() as d, service(Path(d), src=args.src) as (p, sp, hp):
        send(sp, dgrams)
        wait_metrics(hp)
        r0 = rss_kib(p.p.pid)
        t0 = time.monotonic()
        ok = distinct_patterns(hp, 20000, 64)
        dt = time.monotonic() - t0
        r1 = rss_kib(p.p.pid)
        h = healthz_seconds(hp, 10)
        print(f"#6 20,000 distinct patterns in {ok} GETs ({dt:.1f} s): RSS {r0 // 1024} -> "
              f"{r1 // 1024} MiB (+{(r1 - r0) / 1024:.1f}); /healthz {h:.3f} s")

    with tempfile.TemporaryDirectory() as d, service(Path(d), src=args.src) as (p, sp, hp):
        host = f"127.0.0.1:{hp}"
        img = get(hp, "/scaler/json?state=enabled",
                  headers={"Host": host, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors",
                           "Referer": "http://evil.example/"})[0]
        on = get(hp, "/scaler/json")[1].get("enabled")
        rebind = get(hp, "/scaler/json", headers={"Host": f"evil.example:{hp}"})[0]
        print(f"#7 <img src=.../scaler/json?state=enabled> from another site: {img}, scaler "
              f"enabled afterwards: {on}; DNS-rebound read (Host: evil.example): {rebind}")

    with tempfile.TemporaryDirectory() as d, \
            service(Path(d), src=args.src, api_token="A", scaler_token="S") as (p, sp, hp):
        codes = []
        for tok in ("A", "S"):
            codes.append(get(hp, f"/scaler/{SERVICE}/json", method="PUT",
                             body=b'{"enabled": true}',
                             headers={"Authorization": f"Bearer {tok}",
                                      "Content-Type": "application/json"})[0])
        print(f"#12 [api] token A, [scaler] token S: PUT /scaler/{SERVICE}/json with A -> "
              f"{codes[0]}, with S -> {codes[1]}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return 0


if __name__ == "__main__":
    sys.exit(main())
