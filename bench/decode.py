#!/usr/bin/env python3
"""Decoding as users run it: ``fastflow.decode.read_pcap`` end to end, beside the core loop.

    python bench/decode.py            # 1M-datagram capture, 5 repeats (a few minutes)
    python bench/decode.py --quick    # 100k datagrams, 3 repeats

Input: the Host sFlow container mix (the 124 real datagrams of hsflowd/docker-swarm.pcap) replicated
into a pcap file (bench/data/swarm-N.pcap, shared with bench/run.py). Side by side, in one run:

* **read_pcap** (the notebook path): capture file -> tables in memory, in a fresh subprocess per
  repeat, timing the call (wall and CPU, user + system) and taking the process's peak RSS (VmHWM,
  the interpreter's own ~30 MB included);
* **core loop** (labelled as such): the Cython row ``Decoder`` feeding the capture's datagrams
  (already in memory) and clearing its tables when full, keeping nothing (the live collector's
  inner loop, and the old headline figure);
* **columnar decode only**: ``ColumnDecoder.feed`` + ``take`` on the in-memory capture (read_pcap
  minus reading the file);
* **pure-Python twin**: read_pcap with ``FASTFLOW_PURE_PYTHON=1`` on the first --py-datagrams
  datagrams (a subset, rates are per datagram so they scale);
* **floor**: reading every byte of the capture file once (map it and sum it as 64-bit words), in a
  subprocess like read_pcap.

Rates are datagrams per second of wall time and of CPU time (the machine is shared: CPU time is the
steadier figure); medians of the repeats. Prints a table with the ratios and writes
bench/results/decode.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _checkout import child_env, use_checkout  # noqa: E402

use_checkout()


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
    """Wall-clock and CPU (this process: user + system) seconds of each repeat."""
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - t0)
    return wall, cpu


def fmt(v: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= div:
            return f"{v / div:.2f}{unit}"
    return f"{v:.1f}"


# A child process per measurement of the user's path: its peak RSS is the path's own.
READ_PCAP_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter(); r0 = resource.getrusage(resource.RUSAGE_SELF)
if sys.argv[2] == "floor":
    import mmap, numpy as np
    with open(sys.argv[1], "rb") as f:
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    a = np.frombuffer(m, np.uint8)
    a[: len(a) // 8 * 8].view(np.uint64).sum()
    n = int(sys.argv[3])
    extra = {}
else:
    import fastflow.decode as fd
    import fastflow.pcap  # module imports are not the data's cost
    t0 = time.perf_counter(); r0 = resource.getrusage(resource.RUSAGE_SELF)
    t = fd.read_pcap(sys.argv[1], port=None)
    n = len(t.datagrams)
    extra = {"implementation": fd.IMPLEMENTATION, "samples": len(t.samples),
             "flows": len(t.flows), "records": {k: len(v) for k, v in t.records.items()},
             "table_bytes": sum(a.nbytes for a in (t.datagrams, t.samples, t.flows,
                                                   *t.records.values()))}
wall = time.perf_counter() - t0
r1 = resource.getrusage(resource.RUSAGE_SELF)
# VmHWM, not ru_maxrss: after fork + exec, ru_maxrss still holds the parent's high-water mark
hwm = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:"))
print(json.dumps({"datagrams": n, "wall": wall,
                  "cpu": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
                  "sys": r1.ru_stime - r0.ru_stime, "peak_rss": hwm * 1024, **extra}))
"""


def child(path: Path, what: str, repeats: int, n: int = 0, pure: bool = False) -> dict[str, Any]:
    """Run READ_PCAP_CHILD ``repeats`` times: medians of wall/CPU, max of peak RSS."""
    env = child_env({"OPENBLAS_NUM_THREADS": "1"})
    if pure:
        env["FASTFLOW_PURE_PYTHON"] = "1"
    else:
        env.pop("FASTFLOW_PURE_PYTHON", None)
    runs = []
    for _ in range(repeats):
        p = subprocess.run([sys.executable, "-c", READ_PCAP_CHILD, str(path), what, str(n)],
                           capture_output=True, text=True, env=env, check=True)
        runs.append(json.loads(p.stdout))
    out = dict(runs[-1])
    for key in ("wall", "cpu", "sys"):
        out[key] = statistics.median(r[key] for r in runs)
        out[f"{key}_min"] = min(r[key] for r in runs)
        out[f"{key}_max"] = max(r[key] for r in runs)
    out["peak_rss"] = max(r["peak_rss"] for r in runs)
    return out


def capture_file(n: int) -> Path:
    """bench/data/swarm-N.pcap (the file bench/run.py builds), written if absent."""
    from fastflow import pcap

    path = HERE / "data" / f"swarm-{n}.pcap"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        dgrams = read_datagrams(corpus_pcap())
        seq = (dgrams * -(-n // len(dgrams)))[:n]
        tmp = path.with_suffix(".tmp")
        pcap.write(tmp, ((1.7e9 + i * 1e-5, d) for i, d in enumerate(seq)))
        tmp.rename(path)
    return path


def subset_file(path: Path, m: int) -> Path:
    """The first ``m`` datagrams of ``path`` as their own capture (for the pure-Python twin)."""
    from fastflow import pcap

    out = path.with_name(f"{path.stem}-first{m}.pcap")
    if not out.exists():
        cap = pcap.read(path, port=None)
        pcap.write(out, ((float(cap.ts[i]), cap.datagram(i)) for i in range(min(m, len(cap)))))
    return out


def core_loop(cap: Any, repeats: int) -> dict[str, Any]:
    """The Cython row decoder's feed/clear loop over the capture in memory, keeping nothing."""
    from fastflow._decode import Decoder

    dec = Decoder()
    rows, samples = run_all(dec, cap.buf, cap.offsets, cap.lengths)
    wall, cpu = timed(lambda: run_all(dec, cap.buf, cap.offsets, cap.lengths), repeats)
    return {"datagrams": rows, "samples": samples, "wall": statistics.median(wall),
            "wall_min": min(wall), "wall_max": max(wall), "cpu": statistics.median(cpu)}


def columnar(cap: Any, repeats: int) -> dict[str, Any]:
    """ColumnDecoder feed + take on the capture in memory (read_pcap without the file)."""
    import fastflow.decode as fd

    def go() -> None:
        dec = fd.column_decoder_for(len(cap.offsets), int(cap.lengths.sum()))
        dec.feed(cap.buf, cap.offsets, cap.lengths, cap.ts)
        dec.take()
    wall, cpu = timed(go, repeats)
    return {"datagrams": len(cap.offsets), "wall": statistics.median(wall), "wall_min": min(wall),
            "wall_max": max(wall), "cpu": statistics.median(cpu)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="100k datagrams, 3 repeats")
    ap.add_argument("-n", "--datagrams", type=int, help="datagrams in the capture")
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--py-datagrams", type=int, help="datagrams for the pure-Python twin")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "decode.json")
    args = ap.parse_args(argv)
    n = args.datagrams or (100_000 if args.quick else 1_000_000)
    repeats = args.repeats or (3 if args.quick else 5)
    n_py = args.py_datagrams or (1_000 if args.quick else 5_000)

    from fastflow import pcap

    path = capture_file(n)
    size = path.stat().st_size
    cap = pcap.read(path, port=None)
    runs: dict[str, dict[str, Any]] = {}
    runs["read_pcap"] = child(path, "read_pcap", repeats)
    runs["core loop (Cython Decoder, in memory, keeps nothing)"] = core_loop(cap, repeats)
    runs["columnar decode only (in memory)"] = columnar(cap, repeats)
    py = child(subset_file(path, n_py), "read_pcap", max(1, repeats // 2), pure=True)
    runs["pure-Python twin read_pcap (subset)"] = py
    runs["floor: read every byte of the file once"] = child(path, "floor", repeats, n=len(cap))
    del cap
    for r in runs.values():
        r["datagrams_per_s"] = r["datagrams"] / r["wall"]
        r["datagrams_per_cpu_s"] = r["datagrams"] / r["cpu"]
    rp = runs["read_pcap"]
    core = runs["core loop (Cython Decoder, in memory, keeps nothing)"]
    floor = runs["floor: read every byte of the file once"]
    summary = {
        "read_pcap_datagrams_per_s": rp["datagrams_per_s"],
        "read_pcap_datagrams_per_cpu_s": rp["datagrams_per_cpu_s"],
        "core_loop_datagrams_per_s": core["datagrams_per_s"],
        "core_loop_datagrams_per_cpu_s": core["datagrams_per_cpu_s"],
        "read_pcap_vs_core_loop": rp["datagrams_per_s"] / core["datagrams_per_s"],
        "read_pcap_vs_core_loop_cpu": rp["datagrams_per_cpu_s"] / core["datagrams_per_cpu_s"],
        "read_pcap_vs_python": rp["datagrams_per_s"] / py["datagrams_per_s"],
        "read_pcap_vs_python_cpu": rp["datagrams_per_cpu_s"] / py["datagrams_per_cpu_s"],
        "read_pcap_vs_floor": rp["datagrams_per_s"] / floor["datagrams_per_s"],
        "peak_rss_bytes": rp["peak_rss"], "capture_bytes": size,
        "peak_rss_vs_capture": rp["peak_rss"] / size,
        "table_bytes": rp.get("table_bytes"), "table_vs_capture": rp.get("table_bytes", 0) / size,
        "targets": {"read_pcap_datagrams_per_s": 2e6, "read_pcap_vs_core_loop": 0.5,
                    "peak_rss_vs_capture": 3.0, "read_pcap_vs_python": 300,
                    "core_loop_datagrams_per_s": 4e6},
    }
    results = {
        "meta": {"date": time.strftime("%Y-%m-%dT%H:%M:%S"), "quick": args.quick,
                 "python": platform.python_version(), "machine": platform.machine(),
                 "cpus": os.cpu_count(), "input": path.name, "capture_bytes": size,
                 "datagrams": n, "repeats": repeats, "python_subset": n_py},
        "runs": runs, "summary": summary,
    }
    print(f"decode: {path.name}, {n} datagrams, {size / 1e6:.0f} MB, median of {repeats}")
    print(f"| {'path':52} | {'datagrams':>9} | {'dg/s (wall)':>11} | {'dg/CPU-s':>9} | "
          f"{'peak RSS':>9} |")
    print(f"|{'-' * 54}|{'-' * 11}|{'-' * 13}|{'-' * 11}|{'-' * 11}|")
    for name, r in runs.items():
        rss = f"{r['peak_rss'] / 1e6:.0f} MB" if "peak_rss" in r else "-"
        print(f"| {name:52} | {r['datagrams']:9d} | {fmt(r['datagrams_per_s']):>11} | "
              f"{fmt(r['datagrams_per_cpu_s']):>9} | {rss:>9} |")
    s = summary
    print(f"read_pcap / core loop: {s['read_pcap_vs_core_loop']:.2f} (CPU "
          f"{s['read_pcap_vs_core_loop_cpu']:.2f}); read_pcap / pure Python: "
          f"{s['read_pcap_vs_python']:.0f}x (CPU {s['read_pcap_vs_python_cpu']:.0f}x); "
          f"read_pcap / floor: {s['read_pcap_vs_floor']:.2f}; peak RSS / capture: "
          f"{s['peak_rss_vs_capture']:.2f}; tables / capture: {s['table_vs_capture']:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
