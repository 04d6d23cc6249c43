#!/usr/bin/env python3
"""Cost of running sFlow-RT scripts in fastflow's script host (QuickJS worker per script).

    python bench/scripts.py            # a few seconds

Measured on the path a script takes: the host's thread, the worker process, the JSON bridge.

* load: spawn the worker and evaluate a script (median of 5);
* API round trip: ``metric('ALL', 'avg:vir_cpu_utilization', filter)`` called from JavaScript
  (JS -> worker -> pipe -> collector thread -> Metrics.query -> back) vs the same
  ``Metrics.query`` called directly in Python, over 200 containers of real UDP telemetry;
* HTTP handler call through ``ScriptHost.http`` (what /script/{file}/json awaits);
* CPU per elb.js-shaped tick (one metric() call, the decision in JS): collector process vs worker,
  from /proc (user + system);
* worker resident memory.
Prints a table and writes bench/results/scripts.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from _sflow_util import TelemetryRig  # noqa: E402
from fastflow.scripts import ScriptApi, ScriptHost  # noqa: E402

FILTER = {"vir_host_name": ["apache*"], "vir_cpu_state": ["running"]}
TICK = ("var r = metric('ALL', 'avg:vir_cpu_utilization,avg:vir_bytes_in,avg:vir_bytes_out', "
        "{'vir_host_name': ['apache*'], 'vir_cpu_state': ['running']});"
        "var up = r[0].metricValue > 80;")


def cpu_s(pid: int | str = "self") -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def host_for(tmp: Path, name: str, src: str, metrics: Any) -> ScriptHost:
    p = tmp / name
    p.write_text(src)
    h = ScriptHost([p], ScriptApi(metrics, state_dir=tmp), call_timeout=30)
    h.start()
    assert h.wait_started(30)
    return h


def main() -> int:
    out: dict[str, Any] = {}
    rig = TelemetryRig()
    names = [f"apache.{i}.x{i:04d}" for i in range(1, 201)]
    for _ in range(3):
        rig.send(names, util=50.0, bytes_per_s=1000.0)
        time.sleep(0.3)
    time.sleep(0.5)
    tmp = Path(tempfile.mkdtemp(prefix="ffbench-"))
    try:
        # load
        loads = []
        for i in range(5):
            t0 = time.perf_counter()
            h = host_for(tmp, f"l{i}.js", "var x = 1;", rig.metrics)
            loads.append(time.perf_counter() - t0)
            h.stop()
        out["load_ms"] = statistics.median(loads) * 1000

        n = 2000
        h = host_for(tmp, "api.js", f"setHttpHandler(function(req) {{ var n = {n}; "
                     "for (var i = 0; i < n; i++) metric('ALL', 'avg:vir_cpu_utilization', "
                     "{'vir_host_name': ['apache*'], 'vir_cpu_state': ['running']}); return n; });"
                     f"setIntervalHandler(function() {{ {TICK} }}, 1000);", rig.metrics)
        script = h.get("api.js")
        assert script is not None and script._proc is not None
        pid = script._proc.pid

        async def call() -> Any:
            return await h.http("api.js", {"method": "GET", "path": [], "query": {}})
        t0 = time.perf_counter()
        ans = asyncio.run(call())
        t_js = (time.perf_counter() - t0) / n
        assert ans.status == 200, ans
        t0 = time.perf_counter()
        for _ in range(n):
            rig.metrics.query("ALL", "avg:vir_cpu_utilization", FILTER)
        t_py = (time.perf_counter() - t0) / n
        out["metric_from_js_us"] = t_js * 1e6
        out["metric_direct_us"] = t_py * 1e6
        h.stop()

        # HTTP handler round trip, and an elb.js-shaped tick
        h = host_for(tmp, "tick.js", f"setHttpHandler(function(req) {{ {TICK} return up; }});",
                     rig.metrics)
        script = h.get("tick.js")
        assert script is not None and script._proc is not None
        pid = script._proc.pid
        m = 500

        async def ticks() -> None:
            for _ in range(m):
                await h.http("tick.js", {"method": "GET", "path": [], "query": {}})
        c_self, c_worker = cpu_s(), cpu_s(pid)
        t0 = time.perf_counter()
        asyncio.run(ticks())
        dt = time.perf_counter() - t0
        out["tick_via_http_ms"] = dt / m * 1000
        out["tick_cpu_collector_ms"] = (cpu_s() - c_self) / m * 1000
        out["tick_cpu_worker_ms"] = (cpu_s(pid) - c_worker) / m * 1000
        out["worker_rss_mb"] = rss_mb(pid)
        out["containers"] = len(names)
        h.stop()
    finally:
        rig.close()
    print(f"script load (spawn + eval)            {out['load_ms']:8.1f} ms")
    print(f"metric() from JS  | direct Metrics.query {out['metric_from_js_us']:8.1f} us | "
          f"{out['metric_direct_us']:.1f} us  (x{out['metric_from_js_us'] / out['metric_direct_us']:.2f})")
    print(f"elb.js tick via /script route          {out['tick_via_http_ms']:8.2f} ms")
    print(f"  CPU per tick: collector | worker    {out['tick_cpu_collector_ms']:8.2f} ms | "
          f"{out['tick_cpu_worker_ms']:.2f} ms")
    print(f"worker RSS                            {out['worker_rss_mb']:8.1f} MB")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "scripts.json").write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
