"""``fastflow demo``: the collector, REST API, dashboard and scaler against a simulated swarm.

No Docker and no agents needed: a :class:`fastflow.sources.simulate.SimulatedSwarm` plays the swarm, the
simulator sends hsflowd-shaped sFlow to the in-process collector on 127.0.0.1, and the scaler
(driving the simulated swarm through the same interface it uses for Docker) sizes service
``apache`` while its demand rises and falls. The scaler's decisions print as the original post
showed them: ``apache set replicas=2`` ... ``=8`` ... back to ``=1``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from fastflow._console import (
    EXIT_FAILURE,
    fail,
    port_number,
    positive_float,
    positive_int,
)

log = logging.getLogger("fastflow.demo")


class _Echo(logging.Handler):
    """Prints the scaler's ``set replicas`` lines on stdout as they happen."""

    def __init__(self, out: Any) -> None:
        super().__init__(logging.INFO)
        self.out = out
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if "set replicas=" in msg:
            self.lines.append(msg)
            print(msg, file=self.out, flush=True)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``fastflow demo``."""
    p.add_argument("--duration", type=positive_float, default=75.0, metavar="SECONDS",
                   help="wall-clock seconds to run (as everywhere in fastflow; the simulated swarm "
                        "lives DURATION x SPEED simulated seconds)")
    p.add_argument("--speed", type=positive_float, default=10.0, metavar="X",
                   help="simulated seconds per wall second (agents poll every 10 simulated s)")
    p.add_argument("--nodes", type=positive_int, default=3, metavar="N",
                   help="simulated swarm nodes")
    p.add_argument("--peak", type=positive_float, default=650.0, metavar="PERCENT",
                   help="peak demand, percent of one CPU (650 = 6.5 busy cores)")
    p.add_argument("--http-port", type=port_number, default=8008, metavar="N",
                   help="dashboard/API port (0: any free port)")


async def _run(args: argparse.Namespace, echo: _Echo) -> int:
    from fastflow.cli.config import Config, ConfigError
    from fastflow.cli.run import Service, StartError
    from fastflow.sources.simulate import SimulatedSwarm, Simulator, parse_demand, run, udp_sender

    polling = 10.0
    wall_poll = polling / args.speed
    sim_duration = args.duration * args.speed
    cfg = Config()
    cfg.collector.bind = "127.0.0.1"
    cfg.collector.port = 0
    cfg.api.bind = "127.0.0.1"
    cfg.api.port = args.http_port
    cfg.store.polling_interval = wall_poll
    cfg.scaler = {"enabled": True, "services": [{
        "service": "apache", "pattern": r"apache\..*", "replicas_min": 1, "replicas_max": 10,
        "util_min": 20.0, "util_max": 80.0, "interval": max(wall_poll, 0.2)}]}
    swarm = SimulatedSwarm({"apache": 1})
    with tempfile.TemporaryDirectory(prefix="fastflow-demo-") as tmp:
        svc = Service(cfg, state_file=Path(tmp) / "scaler.json")
        if svc.scaler is None:
            print("fastflow demo: the scaler is not available in this build", file=sys.stderr)
            return 1
        svc.scaler.swarm = swarm
        try:
            await svc.start()
        except (StartError, ConfigError) as exc:
            return fail("demo", str(exc), EXIT_FAILURE)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, lambda: print(
            "fastflow demo: SIGHUP: nothing to reload, still running", file=sys.stderr, flush=True))
        print(f"fastflow demo: dashboard http://127.0.0.1:{svc.http_port}/ (while it runs); "
              f"sFlow on 127.0.0.1:{svc.sflow_port}; {args.duration:.0f} s at {args.speed:g}x",
              file=sys.stderr, flush=True)
        # demand: low, a rise to the peak over the middle of the run, then back down
        third = sim_duration / 3
        demand = parse_demand(f"step:40,{args.peak / 2},{args.peak},{args.peak},"
                              f"{args.peak / 2},30,30,30@{third / 3}")
        sim = Simulator(args.nodes, {"apache": demand}, swarm)
        stop = threading.Event()
        assert svc.sflow_port is not None
        sender = udp_sender(("127.0.0.1", svc.sflow_port), wall_poll)
        worker = threading.Thread(target=run, args=(sim, polling, sim_duration),
                                  kwargs={"speed": args.speed, "send": sender, "stop": stop},
                                  daemon=True)
        worker.start()
        try:
            while worker.is_alive():
                await asyncio.sleep(0.2)
        finally:
            stop.set()
            await asyncio.to_thread(worker.join, 5)
            await svc.stop()
    print(f"fastflow demo: done; {len(echo.lines)} scaling decisions, apache ended at "
          f"{swarm.replicas('apache')} replica(s). Run it yourself: fastflow run -c CONFIG "
          "(see README) against real agents, or fastflow simulate --to 127.0.0.1:6343.",
          file=sys.stderr)
    return 0


def main(args: argparse.Namespace) -> int:
    """Run ``fastflow demo``."""
    echo = _Echo(sys.stdout)
    scaler_log = logging.getLogger("fastflow.scaler")
    scaler_log.addHandler(echo)
    scaler_log.setLevel(logging.INFO)
    scaler_log.propagate = False   # print decisions once, cleanly
    try:
        return asyncio.run(_run(args, echo))
    finally:
        scaler_log.removeHandler(echo)
        scaler_log.propagate = True
