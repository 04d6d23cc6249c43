#!/usr/bin/env python3
"""Top-flows accounting throughput: flow samples per second with 1, 10 and 100 flow definitions.

    python bench/flows.py            # 200k samples, 5 repeats
    python bench/flows.py --quick    # 20k samples, 3 repeats (a few seconds)
    python bench/flows.py --spoof 1000000   # memory under spoofed (agent, sub-agent, source)
    python bench/flows.py --spoof 1000000 --src /work/main/src   # the same against another tree
    python bench/flows.py --udp 300000 [--src ...]   # spoofed datagrams to a real `fastflow run`

Input: a synthetic FLOW_DTYPE table shaped like a busy swarm (2,000 source / 500 destination
addresses, TCP and UDP, 64 agents, sampling 1-in-1000 .. 1-in-10), fed to ``FlowEngine.add_flows``
in decoder-sized batches (4,096 samples) with a replay clock moving 0.1 s per batch. The definitions
cycle through 10 key sets (5-tuples, address pairs, ports, MACs, agents...), a third of them with a
filter. Measured (medians of the repeats):

* samples/s: flow samples accounted per second (all definitions updated for each sample);
* defs x samples/s: the same times the number of definitions (work per definition-sample);
* query ms: ``active_flows("ALL", name, maxFlows=20)`` on the last definition.

Prints a table and writes bench/results/flows.json (or --out).

``--spoof N`` instead feeds N flow samples, each from a distinct spoofed (agent, sub-agent,
source id) triple, in batches of 4,096 (one replay second per batch), to a FlowEngine with its
default caps and one definition, and prints the process RSS (VmRSS from /proc/self/status) before
and after, the loss-state entries kept, the seconds per batch, and the size of the
``/flowstats/json`` answer (``json.dumps(engine.stats())``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
if "--src" in sys.argv:             # measure another tree (before/after comparisons)
    sys.path.insert(0, sys.argv[sys.argv.index("--src") + 1])
else:
    sys.path.insert(0, str(HERE))
    from _checkout import use_checkout

    use_checkout()

from fastflow._schema import FLOW_BIT, FLOW_DTYPE  # noqa: E402
from fastflow.collector.flows import FlowEngine  # noqa: E402

BATCH = 4096
KEYSETS = [
    "ipsource,ipdestination,ipprotocol,tcpsourceport,tcpdestinationport",
    "ipsource,ipdestination",
    "ipdestination,udpdestinationport",
    "ipsource",
    "macsource,macdestination",
    "agent,inputifindex",
    "ipprotocol",
    "tcpdestinationport",
    "ipsource,ipdestination,udpsourceport,udpdestinationport",
    "agent,ipsource",
]
FILTERS = [None, "ipprotocol=6", "ipsource=10.1.0.0/16&tcpdestinationport=80,443"]


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def now(self) -> float:
        return self.t


def make_table(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    f = np.zeros(n, FLOW_DTYPE)
    f["agent"] = rng.integers(1, 65, n)
    f["source_id_index"] = rng.integers(1, 49, n)
    f["source_id"] = f["source_id_index"]
    f["sampling_rate"] = rng.choice([10, 100, 1000], n)
    f["frame_length"] = rng.integers(64, 1519, n)
    f["mask"] = 1 << FLOW_BIT["sampled_header"]
    f["header_protocol"] = 1
    f["eth_type"] = 0x0800
    f["eth_src"] = 0x020000000000 + rng.integers(0, 2000, n)
    f["eth_dst"] = 0x020000100000 + rng.integers(0, 500, n)
    f["ip_version"] = 4
    f["ip_protocol"] = rng.choice([6, 17], n, p=[0.8, 0.2])
    src = (10 << 24) | (1 << 16) | rng.integers(0, 2000, n)
    dst = (10 << 24) | (2 << 16) | rng.integers(0, 500, n)
    ip_src = np.zeros((n, 16), np.uint8)
    ip_dst = np.zeros((n, 16), np.uint8)
    ip_src[:, 10:12] = 0xFF
    ip_dst[:, 10:12] = 0xFF
    ip_src[:, 12:16] = src.astype(">u4").view(np.uint8).reshape(n, 4)
    ip_dst[:, 12:16] = dst.astype(">u4").view(np.uint8).reshape(n, 4)
    f["ip_src"] = ip_src
    f["ip_dst"] = ip_dst
    f["src_port"] = rng.integers(1024, 65535, n)
    f["dst_port"] = rng.choice([80, 443, 53, 8080, 6379, 5432], n)
    f["l4_ok"] = 1
    f["input"] = rng.integers(1, 49, n)
    f["output"] = rng.integers(1, 49, n)
    return f


def run_once(table: np.ndarray, ndefs: int) -> tuple[float, float]:
    clock = Clock()
    fe = FlowEngine(clock=clock)
    for i in range(ndefs):
        fe.define(f"d{i}", KEYSETS[i % len(KEYSETS)], filter=FILTERS[i % len(FILTERS)],
                  t=2.0, n=100, persistent=True)
    agents = [""] + [f"192.0.2.{i}" for i in range(1, 65)]
    n = len(table)
    seq = 1
    t0 = time.perf_counter()
    for a in range(0, n, BATCH):
        b = table[a:a + BATCH]
        b["ts"] = clock.t
        b["sequence_number"] = np.arange(seq, seq + len(b))
        seq += len(b)
        fe.add_flows(b, agents.__getitem__)
        clock.t += 0.1
    elapsed = time.perf_counter() - t0
    q0 = time.perf_counter()
    fe.active_flows("ALL", f"d{ndefs - 1}", max_flows=20)
    return n / elapsed, (time.perf_counter() - q0) * 1000


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def spoof(n: int) -> dict[str, Any]:
    clock = Clock()
    fe = FlowEngine(clock=clock)
    fe.define("f", "ipsource,ipdestination", persistent=True)
    base = make_table(BATCH, seed=3)
    agents = [""] + [f"198.51.100.{i}" for i in range(1, 256)]
    rss0 = rss_mib()
    t0 = time.perf_counter()
    done = 0
    while done < n:
        b = base[:min(BATCH, n - done)].copy()
        i = np.arange(done, done + len(b), dtype=np.uint64)
        b["agent"] = 1 + i % 255
        b["sub_agent_id"] = (i // 255) & 0xFFFFFFFF
        b["source_id"] = i & 0xFFFFFFFF
        b["sequence_number"] = 1
        b["ts"] = clock.t
        fe.add_flows(b, agents.__getitem__)
        clock.t += 1.0
        done += len(b)
    elapsed = time.perf_counter() - t0
    s0 = time.perf_counter()
    answer = len(json.dumps(fe.stats()))
    stats_ms = (time.perf_counter() - s0) * 1000
    st = fe.stats()
    tracked = st.get("dataSourcesTracked", len(st.get("dataSources", [])))
    return {"spoofed": n, "rss_before_mib": rss0, "rss_after_mib": rss_mib(),
            "tracked": tracked, "refused": st.get("dataSourcesRefused"),
            "evicted": st.get("dataSourcesEvicted"), "ms_per_batch": elapsed / (n / BATCH) * 1000,
            "flowstats_bytes": answer, "flowstats_ms": stats_ms}


def _spoofed_datagram(i: int) -> bytes:
    """One sFlow v5 datagram with one flow sample from spoofed (agent, sub-agent, source) i."""
    import struct
    eth = bytes.fromhex("020000000002020000000001") + struct.pack(">H", 0x0800)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0, bytes([10, 0, 0, 1]),
                     bytes([10, 0, 0, 2]))
    tcp = struct.pack(">HHIIBBHHH", 1234, 80, 0, 0, 0x50, 0x18, 0, 0, 0)
    hdr = eth + ip + tcp + b"\0\0"
    rec = struct.pack(">IIII", 1, 1000, 0, 54) + hdr
    body = struct.pack(">IIIIIIII", 1, i & 0xFFFFFF, 10, 1000, 0, 1, 2, 1) + \
        struct.pack(">II", 1, len(rec)) + rec
    agent = bytes([198, 18, 0, 1 + i % 16])      # 16 agents; sub-agent and source id spoofed
    return struct.pack(">II4sIIII", 5, 1, agent, i >> 4, 1, 1000, 1) + \
        struct.pack(">II", 1, len(body)) + body


def udp_service(n: int, src: Path | None) -> dict[str, Any]:
    """``fastflow run`` (from ``src`` or this tree) fed ``n`` spoofed datagrams over UDP on
    127.0.0.1 (at most 10,000/s, at most 120 s); the service's RSS and CPU from /proc, the
    /flowstats/json answer and the /healthz answer time."""
    import os
    import re
    import socket
    import subprocess
    import tempfile
    import threading
    import urllib.request
    tmp = tempfile.mkdtemp()
    if src:
        env = {**os.environ, "PYTHONPATH": str(src), "FASTFLOW_SCALER_STATE_FILE": f"{tmp}/s.json"}
    else:
        sys.path.insert(0, str(HERE))
        from _checkout import child_env

        env = child_env({"FASTFLOW_SCALER_STATE_FILE": f"{tmp}/s.json"})
    tree = env.get("PYTHONPATH") or "the installed package"
    p = subprocess.Popen([sys.executable, "-m", "fastflow", "run", "--sflow-port", "0",
                          "--http-port", "0", "--bind", "127.0.0.1", "--no-scaler"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(p.stderr or []), daemon=True).start()

    def port(what: str) -> int:
        end = time.monotonic() + 30
        while time.monotonic() < end:
            for line in list(lines):
                m = re.search(rf"Listening, {what} port (\d+)", line)
                if m:
                    return int(m.group(1))
            time.sleep(0.05)
        raise RuntimeError("no port: " + "".join(lines[-5:]))

    def status(field: str) -> float:
        for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu() -> float:
        f = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

    def get(path: str) -> tuple[bytes, float]:
        t0 = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{hport}{path}", timeout=120) as r:
            return r.read(), time.monotonic() - t0
    try:
        sport, hport = port("sFlow"), port("HTTP")
        time.sleep(1.0)
        rss0, cpu0 = status("VmRSS:"), cpu()
        sent, t0 = 0, time.monotonic()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(n):
                if time.monotonic() - t0 > 120:
                    break
                s.sendto(_spoofed_datagram(i), ("127.0.0.1", sport))
                sent += 1
                if i % 200 == 199:
                    ahead = (i + 1) / 10_000 - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
        last, seen = -1, 0
        end = time.monotonic() + 60
        while time.monotonic() < end:        # until the sample count stops moving
            time.sleep(1.0)
            body, _ = get("/flowstats/json")
            seen = json.loads(body)["samples"]
            if seen == last:
                break
            last = seen
        body, stats_s = get("/flowstats/json")
        _, health_s = get("/healthz")
        st = json.loads(body)
        return {"tree": tree, "sent": sent, "samples_seen": seen,
                "rss_before_mib": rss0, "rss_after_mib": status("VmRSS:"),
                "rss_peak_mib": status("VmHWM:"), "service_cpu_s": cpu() - cpu0,
                "tracked": st.get("dataSourcesTracked", len(st.get("dataSources", []))),
                "refused": st.get("dataSourcesRefused"), "flowstats_bytes": len(body),
                "flowstats_s": stats_s, "healthz_s": health_s}
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20k samples, 3 repeats")
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--defs", type=lambda s: [int(x) for x in s.split(",")], default=[1, 10, 100])
    ap.add_argument("--out", type=Path, default=HERE / "results" / "flows.json")
    ap.add_argument("--spoof", type=int, default=0, help="spoofed-source memory run (N samples)")
    ap.add_argument("--udp", type=int, default=0,
                    help="spoofed datagrams over UDP to a real `fastflow run` (N datagrams)")
    ap.add_argument("--src", type=Path, default=None, help="import fastflow from this src/ tree")
    args = ap.parse_args()
    if args.udp:
        print(json.dumps(udp_service(args.udp, args.src), indent=1))
        return 0
    if args.spoof:
        print(json.dumps(spoof(args.spoof), indent=1))
        return 0
    n = args.samples or (20_000 if args.quick else 200_000)
    repeats = args.repeats or (3 if args.quick else 5)
    table = make_table(n)
    rows: list[dict[str, Any]] = []
    print(f"flow accounting, {n} samples in batches of {BATCH}, median of {repeats}")
    print(f"{'definitions':>11} | {'samples/s':>12} | {'defs x samples/s':>16} | {'query ms':>8}")
    print("-" * 58)
    for d in args.defs:
        rates, qms = [], []
        for _ in range(repeats):
            r, q = run_once(table.copy(), d)
            rates.append(r)
            qms.append(q)
        med = statistics.median(rates)
        row = {"definitions": d, "samples": n, "samples_per_s": med, "min": min(rates),
               "max": max(rates), "def_samples_per_s": med * d,
               "query_ms": statistics.median(qms)}
        rows.append(row)
        print(f"{d:>11} | {med:>12,.0f} | {med * d:>16,.0f} | {row['query_ms']:>8.2f}")
    report = {"meta": {"quick": args.quick, "samples": n, "batch": BATCH, "repeats": repeats,
                       "python": platform.python_version(), "numpy": np.__version__,
                       "machine": platform.machine(),
                       "time": dt.datetime.now().isoformat(timespec="seconds")},
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
