#!/usr/bin/env python3
"""UDP ingest throughput on loopback: offered vs received vs decoded datagrams/s, and loss.

    python bench/ingest.py            # 4 offered rates + flat out, 3 s each
    python bench/ingest.py --quick    # 2 rates, 0.7 s each

A sender process replays the 124 real Host sFlow datagrams of hsflowd/docker-swarm.pcap (or
synthetic 600-byte datagrams without the corpus) to 127.0.0.1 at a paced rate, with sendmmsg
(``fastflow.sources._replay.send_batch``) when built, else ``socket.send``. The collector is
``fastflow.collector.ingest.UdpIngest`` (recvmmsg batches) feeding ``fastflow.decode.Decoder`` in the receive
thread. Every run is bounded in time and count. Prints a table; writes bench/results/ingest.json.
Note: sender, receiver and decoder share the machine's cores, so figures are a floor; the
``capacity/s`` column is received datagrams per CPU-second of the receive thread (recvmmsg +
decode), i.e. what one dedicated core would sustain.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import socket
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _checkout import use_checkout  # noqa: E402

use_checkout()


def corpus_pcap() -> Path | None:
    env = os.environ.get("FASTFLOW_CORPUS")
    for c in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data"]:
        p = c / "hsflowd" / "docker-swarm.pcap"
        if p.exists():
            return p
    return None


def datagrams() -> tuple[list[bytes], str]:
    p = corpus_pcap()
    if p is not None:
        from fastflow import pcap

        return pcap.read(p).datagrams(), "hsflowd/docker-swarm.pcap (124 real datagrams)"
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, 600, np.uint8).tobytes() for _ in range(124)], "synthetic 600 B"


def sender(port: int, rate: float, duration: float, max_count: int, dgrams: list[bytes],
           out: Any) -> None:
    """Send at ``rate`` datagrams/s (0: flat out) for ``duration`` s; put (sent, seconds) to out."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.connect(("127.0.0.1", port))
    reps = 8
    buf = np.frombuffer(b"".join(dgrams * reps), np.uint8)
    lengths = np.array([len(d) for d in dgrams] * reps, np.int64)
    offsets = np.r_[0, np.cumsum(lengths)[:-1]].astype(np.int64)
    send_batch: Any
    try:
        from fastflow.sources._replay import send_batch
    except ImportError:
        send_batch = None
    n = len(lengths)
    sent = 0
    t0 = time.perf_counter()
    end = t0 + duration
    i = 0
    while sent < max_count:
        now = time.perf_counter()
        if now >= end:
            break
        chunk = 256
        if rate > 0:
            due = int((now - t0) * rate)
            if sent >= due:
                time.sleep(min(0.0005, end - now))
                continue
            chunk = min(due - sent, 256)
        j = min(i + chunk, n)
        if send_batch is not None:
            k, _err, _eno = send_batch(s.fileno(), buf, offsets, lengths, i, j)
        else:
            k = 0
            for q in range(i, j):
                try:
                    s.send(buf[offsets[q] : offsets[q] + lengths[q]].tobytes())
                    k += 1
                except OSError:
                    pass
        sent += k
        i = 0 if j == n else j
    out.put((sent, time.perf_counter() - t0))
    s.close()


def run_one(rate: float, duration: float, dgrams: list[bytes], batch: int,
            senders: int) -> dict[str, Any]:
    from fastflow.collector.ingest import UdpIngest

    try:
        from fastflow.decode import Decoder
        dec: Any = Decoder()
    except Exception:  # noqa: BLE001 - the bench still measures receiving
        dec = None
    decoded = [0]
    cpu = [0.0, 0.0, 0]  # receive-thread CPU time at the first and latest batch, datagrams since

    def on_batch(buf: Any, offsets: Any, lengths: Any, ts: Any) -> None:
        t = time.thread_time()
        if cpu[0] == 0.0:
            cpu[0] = t
        else:
            cpu[2] += len(offsets)
        cpu[1] = t
        if dec is None:
            return
        i, n = 0, len(offsets)
        while i < n:
            k = dec.feed(buf, offsets[i:], lengths[i:], ts[i:])
            decoded[0] += dec.n_datagrams
            dec.clear()
            i += max(k, 1)

    ing = UdpIngest("127.0.0.1", 0, rcvbuf=32 << 20, batch=batch, on_batch=on_batch)
    ing.start()
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=sender, args=(ing.port, rate / senders, duration, 50_000_000,
                                              dgrams, q)) for _ in range(senders)]
    for p in procs:
        p.start()
    res = [q.get(timeout=duration + 30) for _ in procs]
    for p in procs:
        p.join(10)
    sent = sum(r[0] for r in res)
    secs = max(r[1] for r in res)
    time.sleep(0.3)  # let the receiver drain its socket buffer
    st = ing.stats()
    ing.stop()
    recv = st["datagrams"]
    return {
        "offered_rate": rate or None,
        "sent": sent,
        "seconds": round(secs, 3),
        "sent_per_s": round(sent / secs),
        "received": recv,
        "received_per_s": round(recv / secs),
        "decoded": decoded[0] if dec is not None else None,
        "decoded_per_s": round(decoded[0] / secs) if dec is not None else None,
        "loss_pct": round(100.0 * (sent - recv) / sent, 3) if sent else 0.0,
        "kernel_drops": st["kernel_drops"],
        "batches": st["batches"],
        "mean_batch": round(recv / st["batches"], 1) if st["batches"] else 0,
        # what the receive thread could sustain at 100% of one core (recv + decode CPU time)
        "capacity_per_s": round(cpu[2] / (cpu[1] - cpu[0])) if cpu[1] > cpu[0] else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 rates, 0.7 s each")
    ap.add_argument("--duration", type=float, default=None, help="seconds per rate")
    ap.add_argument("--rates", default=None,
                    help="comma-separated offered rates in datagrams/s (0 = flat out)")
    ap.add_argument("--batch", type=int, default=1024, help="recvmmsg batch size")
    ap.add_argument("--senders", type=int, default=2, help="sender processes")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "ingest.json")
    a = ap.parse_args(argv)
    duration = a.duration or (0.7 if a.quick else 3.0)
    rates = [float(x) for x in a.rates.split(",")] if a.rates else (
        [100_000, 0] if a.quick else [50_000, 200_000, 500_000, 1_000_000, 0])
    dgrams, source = datagrams()
    rows = [run_one(r, duration, dgrams, a.batch, max(a.senders, 1)) for r in rates]
    print(f"UDP ingest on loopback, data: {source}, batch {a.batch}, {duration} s per rate")
    print(f"{'offered/s':>10} {'sent/s':>10} {'recv/s':>10} {'decoded/s':>10} {'loss %':>8} "
          f"{'drops':>8} {'batch':>6} {'capacity/s':>11}")
    for r in rows:
        off = "max" if r["offered_rate"] is None else f"{int(r['offered_rate']):,}"
        dec = "-" if r["decoded_per_s"] is None else f"{r['decoded_per_s']:,}"
        print(f"{off:>10} {r['sent_per_s']:>10,} {r['received_per_s']:>10,} {dec:>10} "
              f"{r['loss_pct']:>8} {r['kernel_drops']:>8} {r['mean_batch']:>6} "
              f"{r['capacity_per_s'] or 0:>11,}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({
        "bench": "ingest", "data": source, "batch": a.batch, "duration_s": duration,
        "quick": a.quick, "senders": a.senders, "cpus": os.cpu_count(), "python": platform.python_version(),
        "results": rows}, indent=2) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
