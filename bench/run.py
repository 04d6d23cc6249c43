#!/usr/bin/env python3
"""Every fastflow benchmark side by side, in one run.

    python bench/run.py            # full run: ~1M-datagram captures, several repeats
    python bench/run.py --quick    # small inputs, under a minute (the test suite runs this)

1. Builds its inputs under bench/data/: the Host sFlow container capture replicated to N datagrams,
   and a flow-sample capture replicated from the public corpus, both written as pcap files.
2. Decoding on the same files: ``fastflow.decode.read_pcap`` end to end (capture file -> tables in
   memory, in a subprocess: wall, CPU and peak RSS; the path notebook users run), the Cython core
   loop (the row decoder feeding and clearing, keeping nothing: labelled as such), the pure-Python
   twin, the floor (touching every byte: numpy sum and memcpy), and the peers a user might pick
   instead: pmacct's sfacctd reading the pcap, Wireshark's tshark printing sFlow fields, and pysflow
   (PyPI). The peers are installed by `--setup` (apt + pip into bench/.peers) and skipped with a
   note when absent.
3. Runs the other benchmark scripts (ingest end to end, replay, store/metrics, flows, scaler) and
   gathers their JSON.
4. Writes bench/results/latest.json, latest.md (the table the README quotes) and latest.png.

Each figure is the median of several repeats, with min and max.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = HERE / "data"
RESULTS = HERE / "results"
PEERS = HERE / ".peers"
sys.path.insert(0, str(HERE))
from _checkout import use_checkout  # noqa: E402

use_checkout()

from decode import child, run_all  # noqa: E402  (bench/decode.py: feed/clear loop, subprocess)
from fastflow import pcap  # noqa: E402
from fastflow._pydecode import Decoder as PyDecoder  # noqa: E402

try:
    from fastflow._decode import Decoder as CyDecoder
except ImportError:  # pragma: no cover - reported in the results
    CyDecoder = None  # type: ignore[assignment,misc]


def corpus_dir() -> Path:
    env = os.environ.get("FASTFLOW_CORPUS")
    for c in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data"]:
        if (c / "hsflowd" / "docker-swarm.pcap").exists():
            return c
    sys.exit("bench: the sFlow corpus (shared/data) was not found; set FASTFLOW_CORPUS")


# ----------------------------------------------------------------------------------------------
# measurement helpers
# ----------------------------------------------------------------------------------------------
def measure(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    """Run fn `repeats` times; seconds as median/min/max."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def rate(count: float, secs: dict[str, float]) -> dict[str, float]:
    """Seconds -> items/s (median, and min/max swapped: the slowest run is the min rate)."""
    return {
        "median": count / secs["median"],
        "min": count / secs["max"],
        "max": count / secs["min"],
    }


# ----------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------
def _datagrams_of(path: Path) -> list[bytes]:
    if path.suffix in (".pcap", ".pcapng"):
        cap = pcap.read(path, port=None)
        return [bytes(cap.buf[o : o + n]) for o, n in zip(cap.offsets, cap.lengths, strict=True)]
    return [path.read_bytes()]


def build_inputs(n: int, corpus: Path) -> dict[str, Path]:
    """Replicated captures: the Host sFlow container mix, and flow samples from the corpus."""
    DATA.mkdir(parents=True, exist_ok=True)
    out = {}
    swarm = _datagrams_of(corpus / "hsflowd" / "docker-swarm.pcap")
    flow_sources = [
        "public/tcpdump/sflow-print-v6.pcap", "public/gopacket/gopacket-SFlowTestPacket1.pcap",
        "public/vflow/vflow-TestsFlowRawPacket.bin", "public/telegraf/sflowplugin-TestIPv4SWRT.bin",
        "public/telegraf/netflow-sflow_issue_15918-message.bin",
        "public/logstash-codec-sflow/sflow_flow_sample.dat", "public/cistern-sflow/flow_sample_3.bin",
    ]
    flows: list[bytes] = []
    for rel in flow_sources:
        if (corpus / rel).exists():
            flows += _datagrams_of(corpus / rel)
    for name, unique in (("swarm", swarm), ("flows", flows)):
        path = DATA / f"{name}-{n}.pcap"
        if not path.exists():
            reps = -(-n // len(unique))
            seq = (unique * reps)[:n]
            tmp = path.with_suffix(".tmp")
            pcap.write(tmp, ((1.7e9 + i * 1e-5, d) for i, d in enumerate(seq)))
            tmp.rename(path)
        out[name] = path
    return out


# ----------------------------------------------------------------------------------------------
# decoding: fastflow, the floor, the peers
# ----------------------------------------------------------------------------------------------
def decode_all(decoder_cls: type, cap: pcap.Capture, limit: int | None = None) -> tuple[int, int]:
    """Decode the capture (or its first `limit` datagrams) as a consumer would, clearing when full;
    returns (datagrams, samples). The loop is bench/decode.py's."""
    m = len(cap.offsets) if limit is None else limit
    return run_all(decoder_cls(), cap.buf, cap.offsets[:m], cap.lengths[:m])


def bench_decode(inputs: dict[str, Path], repeats: int, py_limit: int) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for name, path in inputs.items():
        row: dict[str, Any] = {"file": path.name}
        read_t = measure(partial(pcap.read, path), repeats)
        cap = pcap.read(path)
        n = len(cap.offsets)
        nbytes = int(cap.lengths.sum())
        row.update(datagrams=n, bytes=nbytes, pcap_read=rate(n, read_t))
        # the user's path: read_pcap in a fresh process per repeat (peak RSS is its own)
        rp = child(path, "read_pcap", repeats)
        row["read_pcap"] = rate(n, {"median": rp["wall"], "min": rp["wall_min"],
                                    "max": rp["wall_max"]})
        row["read_pcap_cpu"] = rate(n, {"median": rp["cpu"], "min": rp["cpu_min"],
                                        "max": rp["cpu_max"]})
        row["read_pcap_peak_rss"] = rp["peak_rss"]
        row["capture_bytes"] = path.stat().st_size
        row["table_bytes"] = rp.get("table_bytes")
        if CyDecoder is not None:
            _, samples = decode_all(CyDecoder, cap)
            t = measure(partial(decode_all, CyDecoder, cap), repeats)
            row["cython"] = rate(n, t)
            row["cython_samples"] = rate(samples, t)
            both = {k: read_t[k] + t[k] for k in t}
            row["cython_with_read"] = rate(n, both)
        m = min(py_limit, n)
        _, psamples = decode_all(PyDecoder, cap, m)
        tp = measure(partial(decode_all, PyDecoder, cap, m), max(1, repeats // 2))
        row["python"] = rate(m, tp)
        row["python_samples"] = rate(psamples, tp)
        buf = np.frombuffer(cap.buf, dtype=np.uint8)
        dst = np.empty_like(buf)
        # the floor: read every byte once, 8 at a time (sum of the buffer as 64-bit words)
        words = buf[: len(buf) // 8 * 8].view(np.uint64)
        ts_ = measure(words.sum, repeats)
        tc = measure(partial(np.copyto, dst, buf), repeats)
        row["floor_sum"] = rate(n, ts_)
        row["floor_memcpy"] = rate(n, tc)
        row["floor_sum_gbps"] = nbytes / ts_["median"] / 1e9
        res[name] = row
    return res


def peer_setup() -> None:
    """Install the peers from the package registries (idempotent)."""
    if shutil.which("apt-get") and (not shutil.which("sfacctd") or not shutil.which("tshark")):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run("echo 'wireshark-common wireshark-common/install-setuid boolean false' | "
                       "debconf-set-selections", shell=True, check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "pmacct", "tshark"], env=env, check=False,
                       stdout=subprocess.DEVNULL)
    target = PEERS / "pysflow"
    if not (target / "sflow").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                        str(target), "pysflow==0.1.2"], check=False)


def _wall(cmd: list[str], repeats: int, **kw: Any) -> dict[str, float] | None:
    def go() -> None:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    try:
        go()
    except (OSError, subprocess.CalledProcessError):
        return None
    return measure(go, repeats)


def _sfacctd_cmd(pcap_path: Path, workdir: Path) -> list[str]:
    conf = workdir / f"sfacctd-{pcap_path.stem}.conf"
    conf.write_text(
        "daemonize: false\n"
        f"pcap_savefile: {pcap_path}\n"
        "plugins: print\n"
        "aggregate: src_host, dst_host, src_port, dst_port, proto\n"
        "print_output: json\n"
        f"print_output_file: {workdir}/flows.json\n"
        "print_refresh_time: 3600\n"
        f"sfacctd_counter_file: {workdir}/counters.json\n"
        "sfacctd_counter_output: json\n"
    )
    return ["sfacctd", "-f", str(conf)]


PYSFLOW_SCRIPT = r"""
import sys, time, struct
import sflow
path, n = sys.argv[1], int(sys.argv[2])
data = open(path, 'rb').read()
# classic little-endian pcap, Ethernet/IPv4/UDP frames as written by fastflow.pcap.write
off, count = 24, 0
t0 = time.perf_counter()
while off < len(data) and count < n:
    incl = struct.unpack_from('<I', data, off + 8)[0]
    frame = data[off + 16: off + 16 + incl]
    off += 16 + incl
    ihl = (frame[14] & 15) * 4
    sflow.decode(frame[14 + ihl + 8:])
    count += 1
print(count, time.perf_counter() - t0)
"""


def bench_peers(inputs: dict[str, Path], repeats: int, peer_n: int, corpus: Path) -> dict[str, Any]:
    """Each peer on the first `peer_n` datagrams of each input (the same bytes fastflow decodes)."""
    res: dict[str, Any] = {}
    work = Path(tempfile.mkdtemp(prefix="fastflow-bench-"))
    try:
        for name, path in inputs.items():
            cap = pcap.read(path)
            m = min(peer_n, len(cap.offsets))
            small = work / f"{name}-{m}.pcap"
            pcap.write(small, ((float(cap.ts[i]), bytes(cap.buf[cap.offsets[i]:cap.offsets[i] +
                                                              cap.lengths[i]])) for i in range(m)))
            row: dict[str, Any] = {"datagrams": m}
            # Each peer has a fixed start/stop cost: subtract its run on a 1-datagram capture.
            one = work / "one.pcap"
            pcap.write(one, [(1.7e9, bytes(cap.buf[cap.offsets[0]:cap.offsets[0] +
                                                   cap.lengths[0]]))])
            peer_cmds: dict[str, Callable[[Path], list[str]]] = {}
            if shutil.which("tshark"):
                peer_cmds["tshark"] = lambda f: [
                    "tshark", "-n", "-r", str(f), "-d", "udp.port==6343,sflow", "-T", "fields",
                    "-e", "sflow_245.sequence_number", "-e", "sflow_245.sampletype",
                    "-e", "sflow_245.counters_record_format", "-e", "sflow_245.flow_record_format"]
            if shutil.which("sfacctd"):
                peer_cmds["sfacctd"] = lambda f: _sfacctd_cmd(f, work)
            for peer, cmd in peer_cmds.items():
                t_base = _wall(cmd(one), max(1, repeats // 2))
                t = _wall(cmd(small), repeats)
                if t and t_base:
                    net = {k: max(v - t_base["median"], 1e-6) for k, v in t.items()}
                    row[peer] = rate(m, net)
                    row[f"{peer}_startup_s"] = t_base["median"]
            if (PEERS / "pysflow" / "sflow").exists():
                env = dict(os.environ, PYTHONPATH=str(PEERS / "pysflow"))
                times = []
                ok = True
                for _ in range(max(1, repeats // 2)):
                    p = subprocess.run([sys.executable, "-c", PYSFLOW_SCRIPT, str(small), str(m)],
                                       env=env, capture_output=True, text=True)
                    if p.returncode != 0:
                        ok = False
                        row["pysflow_error"] = p.stderr.strip().splitlines()[-1:]
                        break
                    cnt, secs = p.stdout.split()
                    times.append(float(secs))
                if ok and times:
                    row["pysflow"] = rate(m, {"median": statistics.median(times),
                                              "min": min(times), "max": max(times)})
            res[name] = row
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return res


# ----------------------------------------------------------------------------------------------
# the other benchmark scripts
# ----------------------------------------------------------------------------------------------
SUBBENCHES = ["ingest", "e2e", "replay", "metrics", "flows", "scaler_demo"]


def run_subbenches(quick: bool, timeout: float) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for name in SUBBENCHES:
        script = HERE / f"{name}.py"
        if not script.exists():
            res[name] = {"status": "missing"}
            continue
        out = RESULTS / f"{name}.json"
        before = out.stat().st_mtime if out.exists() else 0.0
        cmd = [sys.executable, str(script)] + (["--quick"] if quick else [])
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
            status = "ok" if p.returncode == 0 else f"exit {p.returncode}"
            tail = (p.stdout + p.stderr).strip().splitlines()[-3:]
        except subprocess.TimeoutExpired:
            status, tail = "timeout", []
        entry: dict[str, Any] = {"status": status, "seconds": round(time.perf_counter() - t0, 1)}
        if status != "ok":
            entry["tail"] = tail
        if out.exists() and out.stat().st_mtime > before:
            try:
                entry["results"] = json.loads(out.read_text())
            except ValueError:
                entry["status"] = "bad json"
        res[name] = entry
    return res


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------
def _fmt(v: float | None) -> str:
    if v is None:
        return "n/a"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= div:
            return f"{v / div:.2f}{unit}"
    return f"{v:.1f}"


def _cell(r: dict[str, float] | None) -> str:
    if not r:
        return "n/a"
    return f"{_fmt(r['median'])} ({_fmt(r['min'])}–{_fmt(r['max'])})"


def markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [
        f"# fastflow benchmarks — {meta['date']}",
        "",
        f"Machine: {meta['machine']}; Python {meta['python']}; "
        f"{'quick run' if meta['quick'] else 'full run'}; repeats {meta['repeats']}. "
        "Figures are datagrams/s, median (min–max).",
        "",
        "## Decoding the same capture files",
        "",
        "| input | datagrams | read_pcap (file → tables) | peak RSS ÷ file | "
        "Cython decode core loop (keeps nothing) | read_pcap ÷ core | pure Python | "
        "read_pcap ÷ Python | floor (read every byte) | read_pcap ÷ floor | tshark | sfacctd | "
        "pysflow | read_pcap ÷ best peer |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in report["decode"].items():
        peers = report["peers"].get(name, {})
        cy = row.get("cython", {}).get("median")
        rp = row.get("read_pcap", {}).get("median")
        py = row["python"]["median"]
        fl = row["floor_sum"]["median"]
        best = max([peers[k]["median"] for k in ("tshark", "sfacctd", "pysflow")
                    if peers.get(k)] or [0])
        rss = row.get("read_pcap_peak_rss", 0) / max(row.get("capture_bytes", 1), 1)
        lines.append(
            f"| {name} | {row['datagrams']} | {_cell(row.get('read_pcap'))} | {rss:.2f} | "
            f"{_cell(row.get('cython'))} | {(rp / cy if rp and cy else 0):.2f} | "
            f"{_cell(row['python'])} | {(rp / py if rp else 0):.0f}× | "
            f"{_cell(row['floor_sum'])} | {(rp / fl if rp else 0):.3f} | "
            f"{_cell(peers.get('tshark'))} | {_cell(peers.get('sfacctd'))} | "
            f"{_cell(peers.get('pysflow'))} | {(rp / best if rp and best else 0):.0f}× |")
    peer_n = next((v.get("datagrams") for v in report["peers"].values()), "n/a")
    lines += [
        "",
        f"Peers decode the first {peer_n} datagrams of each file "
        "(same bytes), each with its fixed start-up cost (a run on a 1-datagram capture) "
        "subtracted. tshark prints four sFlow fields per datagram (it dissects every sample but "
        "does not decode Host sFlow 2000+ records); sfacctd accounts flow samples and writes "
        "counter samples to its JSON counter file (it decodes interface counters only); pysflow "
        "is a pure-Python decoder (it rejects the expanded 0:4 samples of the Host sFlow capture), "
        "timed on its decode calls with a minimal pcap walk. read_pcap is fastflow's notebook call "
        "timed in its own process from the capture file (page cache warm, as for the peers) to "
        "every table in memory; its peak RSS (VmHWM, interpreter included) is divided by the "
        "file's size. The core loop is the Cython row decoder feeding and clearing its tables "
        "over the capture already in memory, keeping nothing (the live collector's inner loop). "
        "Wall-clock rates on a shared machine; bench/decode.py adds CPU-time rates.",
        "",
        "## Other benchmarks",
        "",
    ]
    for name, entry in report["other"].items():
        lines.append(f"### {name} ({entry['status']}, {entry.get('seconds', 0)} s)")
        lines.append("")
        results = entry.get("results")
        if isinstance(results, dict):
            lines.append("```json")
            lines.append(json.dumps(results, indent=1, default=str)[:3000])
            lines.append("```")
        lines.append("")
    return "\n".join(lines) + "\n"


def chart(report: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names, values = [], []
    for inp, row in report["decode"].items():
        for key, label in (("read_pcap", "fastflow read_pcap"), ("cython", "core loop"),
                           ("python", "fastflow Python"), ("floor_sum", "floor (sum)")):
            if row.get(key):
                names.append(f"{inp}\n{label}")
                values.append(row[key]["median"])
        for peer in ("tshark", "sfacctd", "pysflow"):
            r = report["peers"].get(inp, {}).get(peer)
            if r:
                names.append(f"{inp}\n{peer}")
                values.append(r["median"])
    if not values:
        return False
    fig, ax = plt.subplots(figsize=(max(8, len(values) * 0.9), 5))
    ax.bar(range(len(values)), values, color="#3b7dd8")
    ax.set_yscale("log")
    ax.set_xticks(range(len(values)), names, fontsize=7, rotation=45, ha="right")
    ax.set_ylabel("datagrams/s (log)")
    ax.set_title(f"fastflow decode vs floor and peers — {report['meta']['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small inputs, under a minute")
    ap.add_argument("--datagrams", type=int, help="size of the replicated captures")
    ap.add_argument("--repeats", type=int, help="repeats per figure (median, min, max)")
    ap.add_argument("--setup", action="store_true", help="install the peers first (apt, pip)")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--no-others", action="store_true", help="decode benchmarks only")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    n = args.datagrams or (20_000 if args.quick else 1_000_000)
    repeats = args.repeats or (3 if args.quick else 5)
    corpus = corpus_dir()
    if args.setup:
        peer_setup()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    inputs = build_inputs(n, corpus)
    report: dict[str, Any] = {
        "meta": {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
            "python": platform.python_version(),
            "quick": args.quick,
            "repeats": repeats,
            "datagrams": n,
            "cython_available": CyDecoder is not None,
        },
    }
    report["decode"] = bench_decode(inputs, repeats, py_limit=2_000 if args.quick else 20_000)
    report["peers"] = {} if args.no_peers else bench_peers(
        inputs, 1 if args.quick else repeats, peer_n=2_000 if args.quick else 50_000, corpus=corpus)
    report["other"] = {} if args.no_others else run_subbenches(
        args.quick, timeout=120 if args.quick else 900)
    report["meta"]["seconds"] = round(time.time() - t0, 1)
    (args.out / "latest.json").write_text(json.dumps(report, indent=1, default=str))
    md = markdown(report)
    (args.out / "latest.md").write_text(md)
    chart(report, args.out / "latest.png")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
