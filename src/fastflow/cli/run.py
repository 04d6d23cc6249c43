"""``fastflow run``: the collector service that wires every part together.

UDP ingest (its own thread) -> Pipeline (decoder + sinks: Store, AgentStats, FlowEngine) ->
Metrics -> REST API (core routes, flows routes, scaler routes, dashboard) and the Scaler task, all
on one uvloop event loop. Logs like sFlow-RT (``INFO: Listening, sFlow port 6343``) with the ports
actually bound (port 0 picks a free one), and stops cleanly on SIGINT/SIGTERM.

Every part is required; the flows engine can be switched off (``[flows] enabled = false``) and the
scaler left out (``--no-scaler``).

In-process use (tests)::

    svc = Service(load_config(overrides={"collector.port": 0, "api.port": 0}))
    await svc.start(); ...; await svc.stop()      # svc.sflow_port, svc.http_port
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fastflow import __version__
from fastflow.cli.config import Config, ConfigError, load_config
from fastflow.web import STATIC_DIR
from fastflow.web.api import ApiServer, core_routes
from fastflow.web.flows import flow_routes
from fastflow.web.http import Route
from fastflow.web.scaler import scaler_routes

__all__ = ["Service", "LockedMetrics", "add_arguments", "main", "LOG_DATEFMT"]

log = logging.getLogger("fastflow.service")

LOG_DATEFMT = "%Y-%m-%dT%H:%M:%S%z"      # 2026-11-24T21:02:54+0000, as sFlow-RT logs
_FLOWS_ENGINE_KEYS = ("definition_ttl", "expire_factor", "max_definitions")


class LockedMetrics:
    """``Metrics`` whose reads hold the pipeline lock, so readers never see half a batch.

    The ingest thread feeds the pipeline under ``lock``; the API and the scaler read from the
    event loop. This proxy is what both are given.
    """

    def __init__(self, metrics: Any, lock: Any) -> None:
        self._metrics = metrics
        self._lock = lock

    def query(self, agents: str, metrics: str | Sequence[str],
              filters: Mapping[str, Sequence[str]] | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._metrics.query(agents, metrics, filters))

    def dump(self, agents: str, metrics: str | Sequence[str],
             filters: Mapping[str, Sequence[str]] | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._metrics.dump(agents, metrics, filters))

    def names(self) -> dict[str, int]:
        with self._lock:
            return dict(self._metrics.names())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._metrics, name)


class _LockedAgentStats:
    """``AgentStats.snapshot()`` under the pipeline lock."""

    def __init__(self, agentstats: Any, lock: Any) -> None:
        self._a = agentstats
        self._lock = lock

    def snapshot(self) -> Any:
        with self._lock:
            return self._a.snapshot()


class Service:
    """The running collector: ingest thread + pipeline + API server + scaler task."""

    def __init__(self, config: Config, *, scaler: bool = True,
                 state_file: Path | None = None) -> None:
        self.config = config
        self.want_scaler = scaler
        self.state_file = state_file
        self.started = time.time()
        self.sflow_port: int | None = None
        self.http_port: int | None = None
        self.feed_errors = 0
        self._feed_error_logged = 0.0
        self.stop_event: asyncio.Event | None = None
        self.pipeline: Any = None
        self.store: Any = None
        self.metrics: Any = None
        self.agentstats: Any = None
        self.flows: Any = None
        self.scaler: Any = None
        self.ingest: Any = None
        self.api: ApiServer | None = None
        self._scaler_task: asyncio.Task[None] | None = None
        self._ingest_started = False
        self._build()

    # ------------------------------------------------------------------------------ assembly
    def _build(self) -> None:
        """Create every part (nothing is bound or started yet). Raises ConfigError/ImportError."""
        cfg = self.config
        from fastflow.collector.agentstats import AgentStats
        from fastflow.collector.metrics import Metrics
        from fastflow.collector.pipeline import LiveClock, Pipeline
        from fastflow.collector.store import Store

        clock = LiveClock()
        c = cfg.collector
        self.store = Store(depth=cfg.store.depth, expire_after=cfg.expire_after, clock=clock,
                           max_sources=c.max_sources, dt_tolerance=c.dt_tolerance)
        self.agentstats = AgentStats(clock=clock, max_agents=c.max_agents,
                                     max_streams=c.max_streams, max_sources=c.max_sources,
                                     sample_ttl=cfg.expire_after)
        sinks: list[Any] = [self.store, self.agentstats]
        flows_cfg = dict(cfg.flows)
        enabled = flows_cfg.pop("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError(f"[flows] enabled: expected true or false, got {enabled!r}")
        if enabled:
            self.flows = self._flow_engine(flows_cfg, clock)
            sinks.append(self.flows)
        self.pipeline = Pipeline(sinks, clock=clock)
        raw_metrics = Metrics(self.store, agentstats=self.agentstats, lock=self.pipeline.lock)
        self.metrics = LockedMetrics(raw_metrics, self.pipeline.lock)
        if self.want_scaler:
            from fastflow.scaler.controller import Scaler

            section = dict(cfg.scaler)
            if not section.get("token") and cfg.api.token:
                # the scaler's GET ...?state= switches check its own token: without one of
                # its own, the API token protects them too
                section["token"] = cfg.api.token
            try:
                self.scaler = Scaler.from_config(section, self.metrics, self.state_file)
            except ValueError as exc:   # PolicyError is a ValueError
                raise ConfigError(str(exc)) from None

    @staticmethod
    def _flow_engine(section: dict[str, Any], clock: Any) -> Any:
        """A FlowEngine from the [flows] keys (numbers checked here: bad values are config errors)."""
        from fastflow.collector.flows import FlowEngine

        unknown = sorted(set(section) - set(_FLOWS_ENGINE_KEYS))
        if unknown:
            raise ConfigError(f"[flows]: unknown key(s) {', '.join(unknown)}; known: "
                              f"enabled, {', '.join(_FLOWS_ENGINE_KEYS)}")
        for key, value in section.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"[flows] {key}: expected a positive number, got {value!r}")
        return FlowEngine(clock=clock, **section)

    def routes(self) -> list[Route]:
        """Every REST route: core, flows, scaler (dashboard files are served by the ApiServer)."""
        agents = _LockedAgentStats(self.agentstats, self.pipeline.lock) \
            if self.agentstats is not None else None
        routes = core_routes(self.pipeline, self.metrics, agents, ingest_stats=self.ingest_stats,
                             started=self.started)
        if self.flows is not None:
            routes += flow_routes(self.flows)
        if self.scaler is not None:
            routes += scaler_routes(self.scaler)
        return routes

    def ingest_stats(self) -> dict[str, Any]:
        """The UDP listener's counters plus the pipeline's (for /healthz and /prometheus)."""
        out: dict[str, Any] = {}
        if self.ingest is not None:
            st = self.ingest.stats()
            if hasattr(st, "_asdict"):
                st = st._asdict()
            elif hasattr(st, "__dataclass_fields__"):
                import dataclasses
                st = dataclasses.asdict(st)
            out.update(dict(st))
        if self.pipeline is not None:
            out["datagrams_decoded"] = int(getattr(self.pipeline, "n_datagrams", 0))
            with self.pipeline.lock:       # table sizes, caps and refusals (bounded state)
                for prefix, part in (("store", self.store), ("agentstats", self.agentstats)):
                    if part is not None:
                        for key, v in part.stats().items():
                            if isinstance(v, int | float) and not isinstance(v, bool):
                                out[f"{prefix}_{key}"] = v
        out["feed_errors"] = self.feed_errors
        return out

    def _on_batch(self, buf: Any, offsets: Any, lengths: Any, ts: Any = None) -> None:
        """Called by the ingest thread for each batch; a pipeline failure is counted, not fatal.

        Four parameters on purpose: the ingest then skips building the source-address array.
        """
        try:
            self.pipeline.feed(buf, offsets, lengths, ts)
        except Exception:  # noqa: BLE001 - the ingest thread must keep running
            self.feed_errors += 1
            now = time.monotonic()
            if now - self._feed_error_logged > 10.0:
                self._feed_error_logged = now
                log.exception("pipeline failed on a batch (%d failures so far)", self.feed_errors)

    # ------------------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Bind the sFlow and HTTP ports, start the ingest thread and the scaler task."""
        from fastflow.collector.ingest import UdpIngest

        c, a = self.config.collector, self.config.api
        self.stop_event = asyncio.Event()
        self.ingest = UdpIngest(host=c.bind, port=c.port, rcvbuf=c.rcvbuf, batch=c.batch,
                             reuseport=c.reuseport, linger=c.linger, allow=c.agents,
                             on_batch=self._on_batch, on_idle=self.pipeline.tick)
        static = STATIC_DIR if (STATIC_DIR / "index.html").is_file() else None
        self.api = ApiServer(self.routes(), a.bind, a.port, token=a.token or None,
                             static_dir=static)
        try:
            await self.api.start()     # first: it refuses unsafe configurations
            await asyncio.to_thread(self.ingest.start)
            self._ingest_started = True
        except BaseException:
            await self.stop()
            raise
        self.sflow_port = int(getattr(self.ingest, "port", c.port))
        self.http_port = self.api.port
        log.info("Listening, sFlow port %d", self.sflow_port)
        log.info("Listening, HTTP port %d", self.http_port)
        if static is None:
            log.debug("no dashboard files in %s", STATIC_DIR)
        if self.scaler is not None:
            self._scaler_task = asyncio.create_task(self._run_scaler(), name="scaler")

    async def _run_scaler(self) -> None:
        assert self.stop_event is not None and self.scaler is not None
        try:
            await self.scaler.run(self.stop_event)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the collector keeps running without the scaler
            log.exception("scaler stopped with an error; collector keeps running")

    async def stop(self) -> None:
        """Stop the scaler, the API and the ingest thread (joined); idempotent."""
        if self.stop_event is not None:
            self.stop_event.set()
        if self._scaler_task is not None:
            try:
                await asyncio.wait_for(self._scaler_task, 5.0)
            except (TimeoutError, asyncio.CancelledError):
                self._scaler_task.cancel()
            except Exception:  # noqa: BLE001
                log.exception("scaler task failed while stopping")
            self._scaler_task = None
        if self.api is not None:
            await self.api.stop()
        if self.ingest is not None and self._ingest_started:
            self._ingest_started = False
            try:
                await asyncio.to_thread(self.ingest.stop)
            except Exception:  # noqa: BLE001
                log.exception("ingest did not stop cleanly")

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """start(), wait for ``stop`` (or the service's own stop event), stop()."""
        await self.start()
        assert self.stop_event is not None
        try:
            waiters = [asyncio.ensure_future(self.stop_event.wait())]
            if stop is not None:
                waiters.append(asyncio.ensure_future(stop.wait()))
            _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for p in pending:
                p.cancel()
        finally:
            await self.stop()


# ==================================================================================================
# Command line
# ==================================================================================================
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``fastflow run`` options (each overrides the config file and the environment)."""
    parser.add_argument("--config", "-c", metavar="FILE", help="TOML configuration file "
                        "(see docs/config.example.toml); FASTFLOW_<SECTION>_<KEY> overrides it")
    parser.add_argument("--sflow-port", type=int, metavar="N",
                        help="UDP port for sFlow (default 6343; 0 = any free port)")
    parser.add_argument("--http-port", type=int, metavar="N",
                        help="TCP port for the REST API (default 8008; 0 = any free port)")
    parser.add_argument("--bind", metavar="ADDR", help="address to receive sFlow on (default 0.0.0.0)")
    parser.add_argument("--http-bind", metavar="ADDR",
                        help="address for the REST API (default 127.0.0.1)")
    parser.add_argument("--no-scaler", action="store_true", help="do not run the scaler")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error", "critical"),
                        help="log level (default: [log] level)")


def config_from_args(args: argparse.Namespace) -> Config:
    """The configuration for ``args``: file, then environment, then flags."""
    overrides = {
        "collector.port": getattr(args, "sflow_port", None),
        "collector.bind": getattr(args, "bind", None),
        "api.port": getattr(args, "http_port", None),
        "api.bind": getattr(args, "http_bind", None),
        "log.level": getattr(args, "log_level", None),
    }
    return load_config(getattr(args, "config", None), overrides=overrides)


def _setup_logging(level: str, verbose: int) -> None:
    root = logging.getLogger()
    fmt = logging.Formatter("%(asctime)s %(levelname)s: %(message)s", LOG_DATEFMT)
    if not root.handlers:
        logging.basicConfig(stream=sys.stderr)
    for h in root.handlers:
        h.setFormatter(fmt)
    root.setLevel(logging.DEBUG if verbose else getattr(logging, level.upper()))


def main(args: argparse.Namespace) -> int:
    """Run until SIGINT/SIGTERM. Exit 0 on a clean stop, 2 on a configuration error, 1 otherwise."""
    try:
        cfg = config_from_args(args)
    except ConfigError as exc:
        print(f"fastflow run: configuration error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(cfg.log.level, int(getattr(args, "verbose", 0) or 0))
    log.info("fastflow %s starting (config: %s)", __version__, cfg.source)
    try:
        svc = Service(cfg, scaler=not getattr(args, "no_scaler", False))
    except ConfigError as exc:
        print(f"fastflow run: configuration error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:     # a core module missing from the installation
        log.error("cannot start: %s (is fastflow fully installed/built?)", exc)
        return 1

    async def amain() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def on_signal(sig: signal.Signals) -> None:
            if not stop.is_set():
                log.info("%s received, stopping", sig.name)
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal, sig)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - not on Unix
                pass
        try:
            await svc.run(stop)
        except (OSError, ValueError) as exc:
            log.error("cannot start: %s", exc)
            return 1
        log.info("stopped")
        return 0

    try:
        import uvloop
        loop_factory: Any = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        rc = runner.run(amain())
    leftover = [t for t in threading.enumerate() if t is not threading.main_thread()
                and not t.daemon and t.is_alive()]
    if leftover:
        log.warning("threads still running at exit: %s", [t.name for t in leftover])
    return rc
