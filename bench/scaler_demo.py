#!/usr/bin/env python3
"""The elastic scaler, demonstrated and measured.

    python bench/scaler_demo.py            # engine demo + decision time for 1,000 services
    python bench/scaler_demo.py --quick    # decision time for 100 services only (no Docker)
    python bench/scaler_demo.py --no-engine --services 5000

1. Demo with the real Docker engine (swarm mode, image fastflow-busybox from .ci/docker-up.sh): a
   service ``apache`` (host network, label fastflow-test=1) starts at 1 replica; sFlow counters
   describing its real tasks are sent over UDP to 127.0.0.1 into a Pipeline -> Store -> Metrics;
   the load (percent of one CPU, spread over the running tasks) rises step by step, then drops. The
   scaler's log lines are printed (``apache set replicas=2`` ... back to 1).
2. Decision time: N managed services x 2 containers in a real Store/Metrics (datagrams fed to
   Pipeline.feed); per interval, for every service, the metrics query + dump + policy decision (no
   Docker). Reported per service and per interval.

Writes bench/results/scaler.json (and scaler_demo.json, the name bench/run.py collects).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time
import zlib
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
sys.path.insert(0, str(ROOT / "tests"))  # the telemetry rig and docker helpers live with the tests


def decision_time(n_services: int, repeats: int) -> dict[str, Any]:
    import numpy as np

    from fastflow import encode as e
    from fastflow.collector.metrics import Metrics
    from fastflow.collector.pipeline import Pipeline
    from fastflow.collector.store import Store
    from fastflow.scaler.controller import gather_telemetry
    from fastflow.scaler.policy import History, Policy, decide

    store = Store(depth=8, expire_after=60.0)
    metrics = Metrics(store)
    pipe = Pipeline([store])
    names = [f"svc{i:05d}" for i in range(n_services)]
    hosts = {n: [f"{n}.{s}.task{zlib.crc32(f'{n}{s}'.encode()):08x}" for s in (1, 2)]
             for n in names}
    now = time.time()
    for k, t in enumerate((now - 2.0, now - 1.0)):
        blobs = []
        for i, n in enumerate(names):
            for j, h in enumerate(hosts[n]):
                sample = e.counter_sample(f"3:{100000 + 2 * i + j}", [
                    e.host_descr(hostname=h), e.host_parent(2, 1),
                    e.virt_cpu(cpu_time=1000 + k * (i % 100) * 10),
                    e.virt_net_io(rx_bytes=k * 1000, tx_bytes=k * 2000)],
                    sequence_number=k + 1, expanded=True)
                agent = f"10.{(i >> 8) & 255}.{i & 255}.1"
                blobs.append(e.encode_datagram(e.datagram(
                    agent, [sample], sequence_number=k + 1, uptime=100_000 + 1000 * k)))
        buf = np.frombuffer(b"".join(blobs), np.uint8)
        lengths = np.array([len(b) for b in blobs], np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        pipe.feed(buf, offsets, lengths, t)
    policies = [Policy.from_dict({"service": n, "util_min": 20, "util_max": 80,
                                  "bytes_min": 100, "bytes_max": 1e9, "staleness": 3600})
                for n in names]
    histories = [History() for _ in names]
    per_interval = []
    actions: dict[str, int] = {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        for p, hist in zip(policies, histories, strict=True):
            tel = gather_telemetry(metrics, p, hosts[p.service])
            d = decide(p, 2, tel, time.monotonic(), hist)
            actions[d.action] = actions.get(d.action, 0) + 1
        per_interval.append(time.perf_counter() - t0)
    med = statistics.median(per_interval)
    return {"services": n_services, "containers": 2 * n_services, "repeats": repeats,
            "interval_s_median": med, "interval_s_min": min(per_interval),
            "interval_s_max": max(per_interval), "per_service_ms": med / n_services * 1e3,
            "actions": actions}


def engine_demo(max_replicas: int, step_s: float) -> dict[str, Any]:
    import docker

    from _sflow_util import TelemetryRig
    from dockerenv import LABELS, SwarmHelper, ensure_engine
    from fastflow.scaler.controller import Scaler
    from fastflow.scaler.policy import Policy
    from fastflow.scaler.swarm import Swarm

    reason = ensure_engine()
    if reason is not None:
        return {"status": f"skipped: {reason}"}
    client = docker.from_env(timeout=30)
    name = "apache"
    try:
        existing = client.services.get(name)
        if (existing.attrs["Spec"].get("Labels") or {}).get("fastflow-test") == "1":
            existing.remove()
            time.sleep(1)
        else:
            name = f"apache-demo-{int(time.time()) % 10000}"
    except docker.errors.NotFound:
        pass
    helper = SwarmHelper(client)
    rig = TelemetryRig()
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            line = f"{time.strftime('%H:%M:%S')} {record.levelname}: {record.getMessage()}"
            if "set replicas" in line:
                print(line, flush=True)
                lines.append(line)

    logger = logging.getLogger("fastflow.scaler")
    handler = Capture()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        svc = helper.create_service(name, ["sleep", "3600"], replicas=1, labels=LABELS)
        helper.wait_running(svc, 1)
        pol = Policy.from_dict({"service": name, "replicas_max": max_replicas, "util_min": 20,
                                "util_max": 70, "interval": 0.5, "staleness": 3})
        # the rig sends every 0.25 s: a sample 0.5 s after a change describes the new state
        scaler = Scaler([pol], rig.metrics, enabled=True, swarm=Swarm(client), state_file=None,
                        polling_interval=0.5)
        # total load in percent of one CPU: rises by 60 per step, then drops to 10
        schedule = [60.0 * (i + 1) for i in range(max_replicas)] + [10.0] * max_replicas
        timeline: list[tuple[float, float, int]] = []

        async def main() -> None:
            stop = asyncio.Event()
            run = asyncio.create_task(scaler.run(stop))
            loop = asyncio.get_running_loop()
            t0 = time.monotonic()
            try:
                for load in schedule:
                    end = time.monotonic() + step_s
                    tasks: list[str] = []
                    tt = 0.0
                    while time.monotonic() < end:
                        if time.monotonic() - tt > 0.8:
                            tasks = await loop.run_in_executor(None, helper.running_tasks, svc)
                            tt = time.monotonic()
                        if tasks:
                            rig.send(tasks, min(100.0, load / len(tasks)))
                        await asyncio.sleep(0.25)
                    timeline.append((round(time.monotonic() - t0, 1), load, helper.replicas(svc)))
                    print(f"  t={timeline[-1][0]:6.1f}s load={load:5.0f}% "
                          f"replicas={timeline[-1][2]}", flush=True)
            finally:
                stop.set()
                await asyncio.wait_for(run, 10)

        asyncio.run(main())
        reps = [r for _, _, r in timeline]
        return {"status": "ok", "service": name, "log": lines,
                "timeline": [{"t": t, "load": ld, "replicas": r} for t, ld, r in timeline],
                "peak_replicas": max(reps), "final_replicas": reps[-1],
                "events": list(scaler.events)}
    finally:
        logger.removeHandler(handler)
        rig.close()
        helper.cleanup()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100 services, no engine demo")
    ap.add_argument("--services", type=int, default=None, help="managed services (default 1000)")
    ap.add_argument("--no-engine", action="store_true", help="skip the Docker demo")
    ap.add_argument("--max-replicas", type=int, default=4)
    ap.add_argument("--step", type=float, default=6.0, help="seconds per load step in the demo")
    args = ap.parse_args()
    n = args.services or (100 if args.quick else 1000)
    out: dict[str, Any] = {"quick": args.quick}
    if not (args.quick or args.no_engine):
        print(f"== engine demo: apache, 1..{args.max_replicas} replicas ==", flush=True)
        out["demo"] = engine_demo(args.max_replicas, args.step)
        if out["demo"]["status"] != "ok":
            print(out["demo"]["status"])
    else:
        out["demo"] = {"status": "skipped (--quick / --no-engine)"}
    print(f"== decision time: {n} services x 2 containers (metrics query + dump + policy) ==")
    dt = decision_time(n, 3 if args.quick else 5)
    out["decision"] = dt
    print(f"{'services':>9} {'interval ms (median)':>21} {'min':>8} {'max':>8} {'per service us':>15}")
    print(f"{dt['services']:>9} {dt['interval_s_median'] * 1e3:>21.1f} "
          f"{dt['interval_s_min'] * 1e3:>8.1f} {dt['interval_s_max'] * 1e3:>8.1f} "
          f"{dt['per_service_ms'] * 1e3:>15.1f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(out, indent=1, default=str)
    (RESULTS / "scaler.json").write_text(text)
    (RESULTS / "scaler_demo.json").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
