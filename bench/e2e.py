#!/usr/bin/env python3
"""End to end on loopback: ``fastflow replay`` into ``fastflow run``.

    python bench/e2e.py            # rates 50k, 100k, 200k and flat out, 2 s each, 3 repeats
    python bench/e2e.py --quick    # rates 50k and flat out, 0.5 s each, 1 repeat (~15 s)

What it measures, and how:

* **Throughput and loss.** One ``python -m fastflow run --no-scaler`` subprocess (sFlow and HTTP on
  127.0.0.1, free ports read from its "Listening" log lines) receives
  ``python -m fastflow replay CAPTURE --to 127.0.0.1:P --loop K --rewrite-seq [--rate N] --json``
  (the 124 real Host sFlow datagrams of hsflowd/docker-swarm.pcap, looped to ``rate x duration``
  datagrams, bounded by ``--duration``). Before and after each replay (after the service has
  drained its socket: counters steady for 3 polls) the service's REST API is read: ``/healthz``
  (ingest ``datagrams`` received, ``datagrams_decoded`` fed through the decoder, ``kernel_drops``,
  decoder ``rejected``), ``/agents/json`` (datagrams lost by sequence number, as the collector's
  per-agent statistics see them), ``/errors/json`` and ``/metrics``
  (``fastflow_ingest_datagrams_total``, a cross-check). Offered = datagrams the replay sent over
  its elapsed time; received/decoded per second use the same elapsed time; loss = sent - received.
* **CPU per datagram.** The service's utime+stime from /proc/<pid>/stat (and per thread from
  /proc/<pid>/task/*/stat, to show the busiest thread) over the replay and drain, divided by the
  datagrams received; the sender's CPU (getrusage of the finished replay child, startup included)
  (less the CPU of a replay that sends the capture once: its start-up) divided by the datagrams
  sent. CPU % is over the time datagrams flowed (the replay's sending
  time plus the service's drain).
* **Arrival-to-metric latency.** With the service idle: for a fresh container ``latency.<run>.<i>``
  (agent 192.0.2.250, its own data source) one counters datagram built with ``fastflow.encode``
  (host_descr + virt_cpu), then, once visible, a second one 1 s of agent uptime later (500 ms more
  CPU time, so the rate is 50 %). From the send of the second datagram, ``GET
  /metric/ALL/max:vir_cpu_utilization/json?vir_host_name=latency.<run>.<i>`` is polled as fast as
  a keep-alive ``http.client`` connection allows until the value appears; the time of the first
  answer showing it minus the send time is the latency (it includes up to one HTTP round trip).
  The round trip alone is the same poll on a value already there.

Every figure is the median of the repeats with min and max. Every loop is bounded in count and
time; traffic goes only to 127.0.0.1. Prints a table and writes bench/results/e2e.json. Exits
non-zero only when the service fails to start or dies, never for a missed target. The sender,
the service and everything else on the machine share its cores: the figures are a floor.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SRC = ROOT / "src"
sys.path.insert(0, str(HERE))
from _checkout import child_env as _child_env  # noqa: E402
from _checkout import use_checkout  # noqa: E402

use_checkout()

CAPTURE_DATAGRAMS = 124
TARGET_RATE = 500_000          # datagrams/s received and decoded, no loss (the target)
LAT_AGENT = "192.0.2.250"      # the latency probe's agent (TEST-NET-1; never leaves loopback)
CLK_TCK = os.sysconf("SC_CLK_TCK")


class ServiceError(RuntimeError):
    """The service did not start, or died while measured."""


def capture_path() -> Path:
    env = os.environ.get("FASTFLOW_CORPUS")
    for c in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data"]:
        p = c / "hsflowd" / "docker-swarm.pcap"
        if p.exists():
            return p
    raise SystemExit("e2e: capture hsflowd/docker-swarm.pcap not found (set FASTFLOW_CORPUS)")


def child_env() -> dict[str, str]:
    return _child_env()


# ------------------------------------------------------------------------------------------------
# the service under test
# ------------------------------------------------------------------------------------------------
class Service:
    """``python -m fastflow run`` on 127.0.0.1 with free ports, its log drained by a thread."""

    def __init__(self, start_timeout: float = 30.0) -> None:
        cmd = [sys.executable, "-m", "fastflow", "run", "--sflow-port", "0", "--http-port", "0",
               "--bind", "127.0.0.1", "--http-bind", "127.0.0.1", "--no-scaler"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, cwd=ROOT, env=child_env())
        self.log: deque[str] = deque(maxlen=200)
        self.sflow_port = 0
        self.http_port = 0
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._drain, name="service-log", daemon=True)
        self._reader.start()
        if not self._ready.wait(start_timeout) or not (self.sflow_port and self.http_port):
            self.stop()
            raise ServiceError("service did not log its Listening lines within "
                               f"{start_timeout:.0f} s:\n" + "\n".join(list(self.log)[-15:]))

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip())
            if not self._ready.is_set():
                m = re.search(r"Listening, (sFlow|HTTP) port (\d+)", line)
                if m:
                    if m.group(1) == "sFlow":
                        self.sflow_port = int(m.group(2))
                    else:
                        self.http_port = int(m.group(2))
                    if self.sflow_port and self.http_port:
                        self._ready.set()
        self._ready.set()   # EOF: the process ended

    def check(self) -> None:
        """Raise ServiceError when the service process has ended."""
        rc = self.proc.poll()
        if rc is not None:
            raise ServiceError(f"service exited with {rc}:\n" + "\n".join(list(self.log)[-15:]))

    def cpu(self) -> tuple[float, float]:
        """(process CPU seconds, busiest thread's CPU seconds) from /proc."""
        total = _stat_cpu(Path(f"/proc/{self.proc.pid}/stat"))
        busiest = 0.0
        for t in Path(f"/proc/{self.proc.pid}/task").glob("*/stat"):
            try:
                busiest = max(busiest, _stat_cpu(t))
            except (OSError, ValueError, IndexError):
                continue
        return total, busiest

    def thread_cpu(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for t in Path(f"/proc/{self.proc.pid}/task").glob("*/stat"):
            try:
                out[t.parent.name] = _stat_cpu(t)
            except (OSError, ValueError, IndexError):
                continue
        return out

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(2)
        return self.proc.returncode


def rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` (VmRSS from /proc), MiB; 0.0 when it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def health_row(svc: Service, api: Api, label: str,
               fields: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """One printed row of a bench: ``label``, the service's RSS, how long ``/healthz`` took, and
    ``fields(healthz answer)``."""
    t = time.monotonic()
    h = api.json("/healthz")
    dt = time.monotonic() - t
    row = {"label": label, "rss_mib": round(rss_mib(svc.proc.pid), 1), "healthz_s": round(dt, 4),
           **fields(h)}
    print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    return row


def _stat_cpu(path: Path) -> float:
    text = path.read_text()
    fields = text[text.rindex(")") + 2:].split()   # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / CLK_TCK   # utime, stime (fields 14, 15)


class Api:
    """A keep-alive HTTP client to the service's REST API (reconnects once on a broken pipe)."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.port = port
        self.timeout = timeout
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def get(self, path: str) -> tuple[int, bytes]:
        for attempt in (0, 1):
            try:
                self.conn.request("GET", path)
                r = self.conn.getresponse()
                return r.status, r.read()
            except (http.client.HTTPException, ConnectionError, TimeoutError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def json(self, path: str) -> Any:
        status, body = self.get(path)
        if status != 200:
            raise ServiceError(f"GET {path}: HTTP {status}: {body[:200]!r}")
        return json.loads(body)

    def close(self) -> None:
        self.conn.close()


def counters(api: Api) -> dict[str, float]:
    """The service's cumulative counters, from /healthz, /agents/json, /errors/json, /metrics."""
    h = api.json("/healthz")
    ing = h.get("ingest", {})
    agents = api.json("/agents/json")
    errs = api.json("/errors/json")
    _st, prom = api.get("/metrics")   # fastflow's own exposition
    m = re.search(rb"^fastflow_ingest_datagrams_total (\d+)", prom, re.M)
    return {
        "received": float(ing.get("datagrams", 0)),
        "decoded": float(ing.get("datagrams_decoded", 0)),
        "kernel_drops": float(ing.get("kernel_drops", 0)),
        "rejected": float(h.get("decoder", {}).get("rejected", errs.get("total", 0))),
        "errors_total": float(errs.get("total", 0)),
        "seq_lost": float(sum(a.get("sFlowDatagramsLost", 0) for a in agents.values()
                              if isinstance(a, dict))),
        "prom_received": float(m.group(1)) if m else math.nan,
        "rcvbuf_granted": float(ing.get("rcvbuf_granted", 0)),
    }


def settle(api: Api, svc: Service, limit: float = 10.0) -> None:
    """Wait until received and decoded stop moving (3 equal polls 20 ms apart), at most ``limit`` s."""
    last: tuple[int, int] | None = None
    same = 0
    end = time.monotonic() + limit
    while time.monotonic() < end and same < 3:
        svc.check()
        ing = api.json("/healthz").get("ingest", {})
        cur = (int(ing.get("datagrams", 0)), int(ing.get("datagrams_decoded", 0)))
        same = same + 1 if cur == last else 0
        last = cur
        time.sleep(0.02)


# ------------------------------------------------------------------------------------------------
# throughput runs
# ------------------------------------------------------------------------------------------------
def sender_startup_cpu(svc: Service, capture: Path) -> float:
    """CPU seconds of a replay process that sends the capture once (start-up: imports, pcap read,
    rewriter): subtracted from each run's sender CPU."""
    cmd = [sys.executable, "-m", "fastflow", "replay", str(capture), "--to",
           f"127.0.0.1:{svc.sflow_port}", "--loop", "1", "--rewrite-seq", "--json"]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=child_env(), timeout=60)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)


def run_rate(svc: Service, api: Api, capture: Path, rate: float, duration: float,
             startup_cpu: float = 0.0) -> dict[str, Any]:
    """One replay at ``rate`` datagrams/s (0 = flat out) for about ``duration`` s."""
    want = (rate if rate > 0 else 1_000_000) * duration
    loops = max(1, math.ceil(want / CAPTURE_DATAGRAMS))
    cmd = [sys.executable, "-m", "fastflow", "replay", str(capture), "--to",
           f"127.0.0.1:{svc.sflow_port}", "--loop", str(loops), "--rewrite-seq", "--json",
           "--duration", f"{duration * (1.5 if rate > 0 else 1.0) + 0.5:.3f}"]
    if rate > 0:
        cmd += ["--rate", str(int(rate))]
    settle(api, svc)
    before = counters(api)
    cpu0, _ = svc.cpu()
    threads0 = svc.thread_cpu()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=child_env(),
                       timeout=duration * 2 + 60)
    proc_wall = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    svc.check()
    settle(api, svc)
    wall = time.monotonic() - t0
    cpu1, _ = svc.cpu()
    threads1 = svc.thread_cpu()
    after = counters(api)
    svc.check()
    try:
        rep = json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise ServiceError(f"replay failed (exit {p.returncode}): {p.stderr.strip()[-500:]}") from None
    d = {k: after[k] - before[k] for k in after}
    sent = int(rep["sent"])
    secs = float(rep["elapsed"]) or 1e-9
    recv = int(d["received"])
    svc_cpu = cpu1 - cpu0
    # the window while datagrams flowed: replay's sending time plus the service's drain (the
    # replay process's start-up, when the service is idle, is left out)
    active = max(wall - max(proc_wall - secs, 0.0), 1e-3)
    busiest = max((threads1[t] - threads0.get(t, 0.0) for t in threads1), default=0.0)
    snd_cpu = max((ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime) - startup_cpu, 0.0)
    return {
        "offered_rate": rate or None,
        "sent": sent,
        "send_errors": int(rep.get("errors", 0)),
        "seconds": round(secs, 3),
        "offered_per_s": round(sent / secs),
        "received": recv,
        "received_per_s": round(recv / secs),
        "decoded": int(d["decoded"]),
        "decoded_per_s": round(d["decoded"] / secs),
        "rejected": int(d["rejected"]),
        "loss": max(sent - recv, 0),
        "loss_pct": round(100.0 * max(sent - recv, 0) / sent, 3) if sent else 0.0,
        "kernel_drops": int(d["kernel_drops"]),
        "seq_lost": int(max(d["seq_lost"], 0)),
        "prom_received": None if math.isnan(d["prom_received"]) else int(d["prom_received"]),
        "service_cpu_s": round(svc_cpu, 3),
        "service_cpu_pct": round(100.0 * svc_cpu / active, 1),
        "busiest_thread_cpu_pct": round(100.0 * busiest / active, 1),
        "service_cpu_us_per_datagram": round(1e6 * svc_cpu / recv, 3) if recv else None,
        "sender_cpu_us_per_datagram": round(1e6 * snd_cpu / sent, 3) if sent else None,
        "active_s": round(active, 3),
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Median, min and max of every numeric field over the runs."""
    out: dict[str, dict[str, float]] = {}
    for k in runs[0]:
        vals = [r[k] for r in runs if isinstance(r.get(k), int | float) and not isinstance(r[k], bool)]
        if vals and k != "offered_rate":
            out[k] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
    return out


# ------------------------------------------------------------------------------------------------
# latency from arrival to metric effect
# ------------------------------------------------------------------------------------------------
class Prober:
    """Builds the probe datagrams: one agent, a fresh container (data source) per trial."""

    def __init__(self, tag: str) -> None:
        import socket

        self.tag = tag
        self.seq = 0
        self.uptime = 5_000
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def datagram(self, trial: int, cpu_time: int) -> bytes:
        from fastflow import encode as e

        self.seq += 1
        self.uptime += 1000
        host = f"latency.{self.tag}.{trial}"
        sample = e.counter_sample(f"3:{100_000 + trial}", [
            e.host_descr(hostname=host),
            e.virt_cpu(state=1, cpu_time=cpu_time, nr_virt_cpu=1),
            e.virt_memory(memory=1 << 20, max_memory=1 << 30),
        ], sequence_number=self.seq)
        return e.encode_datagram(e.datagram(LAT_AGENT, [sample], sequence_number=self.seq,
                                            uptime=self.uptime))


def poll_until(api: Api, path: str, limit: float, max_polls: int = 100_000) -> tuple[float, int] | None:
    """Poll ``path`` until its first metric has a metricValue; (monotonic time seen, polls)."""
    end = time.monotonic() + limit
    for i in range(max_polls):
        status, body = api.get(path)
        t = time.monotonic()
        if status == 200:
            ans = json.loads(body)
            if ans and "metricValue" in ans[0]:
                return t, i + 1
        if t > end:
            return None
    return None


def latency(svc: Service, api: Api, trials: int, tag: str) -> dict[str, Any]:
    pr = Prober(tag)
    dest = ("127.0.0.1", svc.sflow_port)
    settle(api, svc)
    lat: list[float] = []
    first: list[float] = []
    polls: list[int] = []
    missed = 0
    last_path = ""
    for i in range(trials):
        svc.check()
        host = f"latency.{tag}.{i}"
        gauge_path = f"/metric/ALL/max:vir_cpu_count/json?vir_host_name={host}"
        rate_path = f"/metric/ALL/max:vir_cpu_utilization/json?vir_host_name={host}"
        t0 = time.monotonic()
        pr.sock.sendto(pr.datagram(i, 10_000), dest)
        seen = poll_until(api, gauge_path, 2.0)
        if seen is None:
            missed += 1
            continue
        first.append(seen[0] - t0)
        t1 = time.monotonic()
        pr.sock.sendto(pr.datagram(i, 10_500), dest)
        seen = poll_until(api, rate_path, 2.0)
        if seen is None:
            missed += 1
            continue
        lat.append(seen[0] - t1)
        polls.append(seen[1])
        last_path = rate_path
        time.sleep(0.01)
    rtt: list[float] = []
    if last_path:
        for _ in range(max(trials, 10)):
            t0 = time.monotonic()
            api.get(last_path)
            rtt.append(time.monotonic() - t0)
    pr.sock.close()
    return {
        "trials": trials,
        "missed": missed,
        "arrival_to_metric_ms": _ms_stats(lat),
        "first_sample_visible_ms": _ms_stats(first),
        "http_rtt_ms": _ms_stats(rtt),
        "polls_median": statistics.median(polls) if polls else None,
        "arrival_to_metric_raw_ms": [round(1e3 * x, 3) for x in lat],
        "first_sample_visible_raw_ms": [round(1e3 * x, 3) for x in first],
    }


def _ms_stats(xs: list[float]) -> dict[str, float | None]:
    if not xs:
        return {"median": None, "min": None, "max": None}
    return {"median": round(1e3 * statistics.median(xs), 3), "min": round(1e3 * min(xs), 3),
            "max": round(1e3 * max(xs), 3)}


# ------------------------------------------------------------------------------------------------
def _k(v: float | None) -> str:
    return "-" if v is None else f"{v / 1000:,.1f}k"


def print_table(rows: list[dict[str, Any]], lat: dict[str, Any], duration: float,
                repeats: int) -> None:
    print(f"fastflow replay -> fastflow run on loopback: {duration} s per rate, median of {repeats} "
          "[min-max]")
    print(f"{'offered':>8} {'sent/s':>18} {'recv/s':>18} {'decoded/s':>18} {'loss %':>16} "
          f"{'kdrops':>8} {'svc µs/dg':>16} {'svc cpu%':>9} {'busiest%':>9} {'send µs/dg':>10}")
    for r in rows:
        s = r["summary"]

        def rng(k: str, f: Any = _k, s: dict[str, Any] = s) -> str:
            v = s.get(k)
            return "-" if v is None else f"{f(v['median'])} [{f(v['min'])}-{f(v['max'])}]"

        off = "max" if r["offered_rate"] is None else _k(r["offered_rate"])
        print(f"{off:>8} {rng('offered_per_s'):>18} {rng('received_per_s'):>18} "
              f"{rng('decoded_per_s'):>18} {rng('loss_pct', lambda x: f'{x:.1f}'):>16} "
              f"{s['kernel_drops']['median']:>8,.0f} "
              f"{rng('service_cpu_us_per_datagram', lambda x: f'{x:.2f}'):>16} "
              f"{s['service_cpu_pct']['median']:>9.0f} {s['busiest_thread_cpu_pct']['median']:>9.0f} "
              f"{s['sender_cpu_us_per_datagram']['median'] if 'sender_cpu_us_per_datagram' in s else 0:>10.2f}")
    a, f, h = lat["arrival_to_metric_ms"], lat["first_sample_visible_ms"], lat["http_rtt_ms"]

    def ms(d: dict[str, Any]) -> str:
        return "n/a" if d["median"] is None else f"{d['median']:.2f} ms [{d['min']:.2f}-{d['max']:.2f}]"

    print(f"arrival -> metric() answer ({lat['trials']} trials, {lat['missed']} missed): {ms(a)}; "
          f"first sample visible {ms(f)}; HTTP round trip alone {ms(h)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 rates, 0.5 s each, 1 repeat, 5 trials")
    ap.add_argument("--rates", default=None, help="comma-separated offered rates (0 = flat out)")
    ap.add_argument("--duration", type=float, default=None, help="seconds per replay")
    ap.add_argument("--repeats", type=int, default=None, help="replays per rate")
    ap.add_argument("--trials", type=int, default=None, help="latency trials")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "e2e.json")
    a = ap.parse_args(argv)
    duration = max(0.1, min(a.duration or (0.5 if a.quick else 2.0), 30.0))
    repeats = max(1, min(a.repeats or (1 if a.quick else 3), 20))
    trials = max(1, min(a.trials or (5 if a.quick else 20), 200))
    rates = [float(x) for x in a.rates.split(",")] if a.rates else (
        [50_000, 0] if a.quick else [50_000, 100_000, 200_000, 0])
    capture = capture_path()
    t_start = time.monotonic()
    try:
        svc = Service()
    except ServiceError as exc:
        print(f"e2e: {exc}", file=sys.stderr)
        return 1
    api = Api(svc.http_port)
    rows: list[dict[str, Any]] = []
    try:
        base = counters(api)
        startup = sender_startup_cpu(svc, capture)
        for rate in rates:
            runs = [run_rate(svc, api, capture, rate, duration, startup)
                    for _ in range(repeats)]
            rows.append({"offered_rate": rate or None, "summary": summarise(runs), "runs": runs})
        lat = latency(svc, api, trials, str(os.getpid()))
        svc.check()
    except (ServiceError, OSError, http.client.HTTPException, subprocess.TimeoutExpired) as exc:
        print(f"e2e: {exc}", file=sys.stderr)
        api.close()
        svc.stop()
        return 1
    api.close()
    rc = svc.stop()
    print_table(rows, lat, duration, repeats)
    lossless = [r["summary"]["received_per_s"]["median"] for r in rows
                if r["summary"]["loss"]["median"] == 0]
    best_recv = max(r["summary"]["received_per_s"]["median"] for r in rows)
    best_lossless = max(lossless) if lossless else 0
    met = best_lossless >= TARGET_RATE
    print(f"target {TARGET_RATE:,}/s received+decoded without loss: "
          f"{'met' if met else 'NOT met'} (best lossless {best_lossless:,.0f}/s, "
          f"best received {best_recv:,.0f}/s)")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({
        "bench": "e2e", "quick": a.quick, "capture": f"{capture.name} ({CAPTURE_DATAGRAMS} datagrams)",
        "duration_s": duration, "repeats": repeats, "cpus": os.cpu_count(),
        "python": platform.python_version(), "rcvbuf_granted": int(base["rcvbuf_granted"]),
        "service_exit": rc, "seconds": round(time.monotonic() - t_start, 1),
        "target": {"datagrams_per_s": TARGET_RATE, "met": met,
                   "best_lossless_received_per_s": best_lossless,
                   "best_received_per_s": best_recv},
        "sender_startup_cpu_s": round(startup, 3), "rates": rows, "latency": lat}, indent=2) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
