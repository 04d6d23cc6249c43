#!/usr/bin/env python3
"""Table-decoder throughput: Cython ``fastflow._decode`` vs the pure-Python reference, same data.

    python bench/decode.py            # ~1M datagrams, 5 repeats (about a minute)
    python bench/decode.py --quick    # ~200k datagrams, 3 repeats (a few seconds)

Input: the Host sFlow container mix (the 124 real datagrams of hsflowd/docker-swarm.pcap) replicated
into one in-memory buffer, as the ingest path hands it over. The Cython decoder is timed over the
whole buffer, feeding, reading nothing and clearing when a table fills (as a consumer would); the
pure-Python decoder on a slice of the same datagrams. Figures are medians of several repeats.
Prints a table and writes bench/results/decode.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))


def corpus_pcap() -> Path:
    """The swarm capture: $FASTFLOW_CORPUS or ../shared/data beside the checkout."""
    env = os.environ.get("FASTFLOW_CORPUS")
    for c in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data"]:
        p = c / "hsflowd" / "docker-swarm.pcap"
        if p.exists():
            return p
    sys.exit("bench/decode.py: hsflowd/docker-swarm.pcap not found; set FASTFLOW_CORPUS")


def read_datagrams(path: Path) -> list[bytes]:
    """UDP payloads of the capture (fastflow.pcap when present, else a minimal classic-pcap parse)."""
    try:
        from fastflow import pcap

        cap = pcap.read(path, port=None)
        buf = bytes(cap.buf)
        return [buf[o:o + n] for o, n in zip(cap.offsets.tolist(), cap.lengths.tolist(), strict=True)]
    except ImportError:
        pass
    data = path.read_bytes()
    if data[:4] != b"\xd4\xc3\xb2\xa1":
        sys.exit("bench/decode.py: only little-endian classic pcap without fastflow.pcap")
    out, pos = [], 24
    while pos + 16 <= len(data):
        incl = struct.unpack_from("<I", data, pos + 8)[0]
        frame = data[pos + 16:pos + 16 + incl]
        pos += 16 + incl
        if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
            continue
        ihl = (frame[14] & 0x0F) * 4
        out.append(frame[14 + ihl + 8:])
    return out


def replicate(dgrams: list[bytes], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n datagrams cycling through ``dgrams``, back to back in one uint8 buffer."""
    reps = -(-n // len(dgrams))
    one = b"".join(dgrams)
    buf = np.frombuffer(one * reps, np.uint8)
    lens1 = np.array([len(d) for d in dgrams], np.int64)
    lens = np.tile(lens1, reps)[:n]
    offs = np.zeros(len(lens1) * reps, np.int64)
    np.cumsum(np.tile(lens1, reps)[:-1], out=offs[1:])
    return buf, offs[:n], lens


def run_all(decoder: Any, buf: Any, offs: np.ndarray, lens: np.ndarray) -> tuple[int, int]:
    """Feed everything, clearing when full; returns (datagram rows, sample rows)."""
    i, n, rows, samples = 0, len(offs), 0, 0
    decoder.clear()
    while i < n:
        k = decoder.feed(buf, offs[i:], lens[i:])
        rows += decoder.n_datagrams
        samples += decoder.n_counters + decoder.n_flows
        decoder.clear()
        if k == 0:
            raise RuntimeError("decoder made no progress")
        i += k
    return rows, samples


def timed(fn: Any, repeats: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU (this thread) seconds of each repeat. On a shared machine the CPU time is
    the steadier figure: it leaves out the time other processes held the core."""
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.thread_time()
        fn()
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - t0)
    return wall, cpu


def fmt(v: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= div:
            return f"{v / div:.2f}{unit}"
    return f"{v:.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small input, few repeats (~5 s)")
    ap.add_argument("-n", "--datagrams", type=int, help="datagrams in the buffer")
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--py-datagrams", type=int, help="datagrams for the pure-Python decoder")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "decode.json")
    args = ap.parse_args(argv)
    n = args.datagrams or (200_000 if args.quick else 1_000_000)
    repeats = args.repeats or (3 if args.quick else 5)
    n_py = args.py_datagrams or (500 if args.quick else 3_000)

    from fastflow._decode import Decoder as CyDecoder
    from fastflow._pydecode import Decoder as PyDecoder

    src = corpus_pcap()
    dgrams = read_datagrams(src)
    buf, offs, lens = replicate(dgrams, n)
    results: dict[str, Any] = {
        "meta": {"date": time.strftime("%Y-%m-%dT%H:%M:%S"), "quick": args.quick,
                 "python": platform.python_version(), "machine": platform.machine(),
                 "input": str(src.name), "distinct_datagrams": len(dgrams),
                 "datagrams": n, "bytes": int(lens.sum()), "repeats": repeats},
        "runs": {},
    }
    configs = [
        ("cython (default capacities)", CyDecoder, {}, n, offs, lens, repeats),
        ("cython (capacities 4096/8192/8192)", CyDecoder,
         {"datagram_capacity": 4096, "counter_capacity": 8192, "flow_capacity": 8192},
         n, offs, lens, repeats),
        ("python reference", PyDecoder, {}, min(n_py, n), offs[:n_py], lens[:n_py],
         max(1, repeats // 2 + 1)),
    ]
    for name, cls, kw, count, o, ln, reps in configs:
        dec = cls(**kw)
        rows, samples = run_all(dec, buf, o, ln)  # warm-up, and the row counts
        secs, cpu = timed(lambda d=dec, o=o, ln=ln: run_all(d, buf, o, ln), reps)
        med = statistics.median(secs)
        cmed = statistics.median(cpu)
        results["runs"][name] = {
            "datagrams": count, "samples": samples, "rows": rows,
            "seconds": {"median": med, "min": min(secs), "max": max(secs)},
            "datagrams_per_s": count / med, "samples_per_s": samples / med,
            "bytes_per_s": float(ln.sum()) / med,
            "cpu_seconds": {"median": cmed, "min": min(cpu), "max": max(cpu)},
            "datagrams_per_cpu_s": count / cmed,
        }
    py = results["runs"]["python reference"]["datagrams_per_s"]
    for r in results["runs"].values():
        r["ratio_vs_python"] = r["datagrams_per_s"] / py
    best = max(r["datagrams_per_s"] for k, r in results["runs"].items() if k.startswith("cython"))
    results["summary"] = {"cython_datagrams_per_s": best, "ratio_vs_python": best / py,
                          "cython_datagrams_per_cpu_s": max(
                              r["datagrams_per_cpu_s"] for k, r in results["runs"].items()
                              if k.startswith("cython")),
                          "target_datagrams_per_s": 3e6, "target_ratio": 300}

    print(f"decode: {n} datagrams ({len(dgrams)} distinct from {src.name}), "
          f"{results['meta']['bytes'] / 1e6:.1f} MB, median of {repeats}")
    print(f"| {'decoder':38} | {'datagrams':>9} | {'datagrams/s':>11} | {'samples/s':>9} | "
          f"{'MB/s':>7} | {'x python':>8} | {'dg/CPU-s':>9} |")
    print(f"|{'-' * 40}|{'-' * 11}|{'-' * 13}|{'-' * 11}|{'-' * 9}|{'-' * 10}|{'-' * 11}|")
    for name, r in results["runs"].items():
        print(f"| {name:38} | {r['datagrams']:9d} | {fmt(r['datagrams_per_s']):>11} | "
              f"{fmt(r['samples_per_s']):>9} | {r['bytes_per_s'] / 1e6:7.0f} | "
              f"{r['ratio_vs_python']:8.0f} | {fmt(r['datagrams_per_cpu_s']):>9} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
