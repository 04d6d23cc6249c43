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
from fastflow._console import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, bind_error, setup_logging
from fastflow.cli.config import Config, ConfigError, load_config
from fastflow.web import STATIC_DIR
from fastflow.web.api import ApiServer, core_routes, offload, shutdown_offload
from fastflow.web.flows import flow_routes
from fastflow.web.http import Route
from fastflow.web.scaler import scaler_routes
from fastflow.web.scripts import script_routes
from fastflow.web.trends import Trends, trend_routes

__all__ = ["Service", "LockedMetrics", "add_arguments", "main", "LOG_DATEFMT"]

log = logging.getLogger("fastflow.service")

LOG_DATEFMT = "%Y-%m-%dT%H:%M:%S%z"      # 2026-11-24T21:02:54+0000, as sFlow-RT logs
_FLOWS_ENGINE_KEYS = ("definition_ttl", "expire_factor", "max_definitions", "max_flow_rows",
                      "max_sources", "source_min_age", "source_idle_expire", "max_logged_flows")


class StartError(OSError):
    """A port or address could not be bound; the message names it and what to do."""


class LockedMetrics:
    """The ``Metrics`` the API and the scaler are given.

    ``Metrics`` (built with ``lock=pipeline.lock``) holds the pipeline lock only while it takes a
    snapshot of the store; filters, aggregation and answers are computed after releasing it, so a
    query never holds up the ingest thread. This proxy keeps the older interface.
    """

    def __init__(self, metrics: Any, lock: Any) -> None:
        self._metrics = metrics
        self._lock = lock

    def query(self, agents: str, metrics: str | Sequence[str],
              filters: Mapping[str, Sequence[Any]] | None = None) -> list[dict[str, Any]]:
        return list(self._metrics.query(agents, metrics, filters))

    def dump(self, agents: str, metrics: str | Sequence[str],
             filters: Mapping[str, Sequence[Any]] | None = None) -> list[dict[str, Any]]:
        return list(self._metrics.dump(agents, metrics, filters))

    def names(self) -> dict[str, int]:
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

    def count(self) -> int:
        """Agents tracked (without building their snapshot)."""
        with self._lock:
            return int(self._a.stats()["agents"])


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
        self.scripts: Any = None          # fastflow.scripts.ScriptHost when [scripts] files
        self.ingest: Any = None
        self.api: ApiServer | None = None
        self.thresholds: Any = None
        self.trends: Trends | None = None
        self._scaler_task: asyncio.Task[None] | None = None
        self._tick_tasks: list[asyncio.Task[None]] = []
        self.lease: Any = None
        self._lease_task: asyncio.Task[None] | None = None
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
        from fastflow.collector.thresholds import Thresholds
        self.thresholds = Thresholds(raw_metrics, clock=clock.now, flows=self.flows)
        self.trends = Trends(raw_metrics)
        if self.want_scaler:
            from fastflow.scaler.controller import Scaler

            # scaler routes accept the scaler's own token or the API token (either one; without
            # one of its own the API token is the scaler's); samples count once a full agent
            # polling interval describes the new state
            section = dict(cfg.scaler)
            if not section.get("token") and cfg.api.token:
                section["token"] = cfg.api.token
            try:
                self.scaler = Scaler.from_config(section, self.metrics, self.state_file,
                                                 api_token=cfg.api.token,
                                                 polling_interval=cfg.store.polling_interval)
            except ValueError as exc:   # PolicyError is a ValueError
                raise ConfigError(str(exc)) from None
            self._build_lease(section)
        else:
            log.info("scaler not started (--no-scaler)")
        if cfg.scripts.get("files"):
            from fastflow import scripts

            try:
                self.scripts = scripts.from_config(
                    cfg.scripts, metrics=self.metrics, agentstats=self.agentstats,
                    flows=self.flows, lock=self.pipeline.lock,
                    docker_host=cfg.scaler.get("docker_host"), token=cfg.api.token or None)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None

    def _build_lease(self, scaler_section: dict[str, Any]) -> None:
        """[ha]: several instances, one scaler acting (docs/ha.md); None when off."""
        from fastflow.scaler.lease import Lease

        scaler = self.scaler
        try:
            self.lease = Lease.from_config(self.config.ha,
                                           docker_host=scaler_section.get("docker_host") or None,
                                           tls_dir=scaler_section.get("tls_dir") or None,
                                           want=lambda: bool(scaler.enabled))
        except ValueError as exc:   # LeaseError is a ValueError
            raise ConfigError(str(exc)) from None
        scaler.lease = self.lease

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
                             started=self.started, thresholds=self.thresholds,
                             scaler=self.scaler, server=lambda: self.api, flows=self.flows,
                             scripts=self.scripts)
        if self.trends is not None:
            routes += trend_routes(self.trends,
                                   lambda: self.api.closing if self.api is not None else None)
        if self.flows is not None:
            routes += flow_routes(self.flows)
        if self.scaler is not None:
            scaler = self.scaler
            for r in scaler_routes(scaler):
                # one token model (#11 #12): on scaler routes the server accepts the API token or
                # the scaler's own; GET ...?state= is a change (cross-site and token checks)
                if r.tokens is None:
                    r.tokens = lambda: [getattr(scaler, "token", None)]
                if r.method == "GET" and not r.mutates_on:
                    r.mutates_on = ("state",)
                routes.append(r)
        if self.scripts is not None:
            routes += script_routes(self.scripts)
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
                             static_dir=static, max_request_bytes=a.max_request_bytes,
                             header_timeout=a.header_timeout, idle_timeout=a.idle_timeout,
                             body_timeout=a.body_timeout, max_connections=a.max_connections,
                             allowed_hosts=[h for h in a.allowed_hosts.split(",") if h.strip()])
        try:
            try:
                await self.api.start()     # first: it refuses unsafe configurations
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            except OSError as exc:
                raise StartError(bind_error(exc, "HTTP", a.bind, a.port, "--http-port")) from None
            try:
                await asyncio.to_thread(self.ingest.start)
            except OSError as exc:
                raise StartError(bind_error(exc, "sFlow", c.bind, c.port, "--sflow-port")) from None
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
        self._tick_tasks = [asyncio.create_task(self._every(1.0, self._evaluate), name="thresholds"),
                            asyncio.create_task(self._every(2.0, self._sample), name="trends")]
        if self.lease is not None:
            self._lease_task = asyncio.create_task(self.lease.run(self.stop_event), name="lease")
        if self.scripts is not None:
            # threshold events reach scripts through the service's Thresholds (when it has one)
            self.scripts.api.thresholds = getattr(self, "thresholds", None)
            self.scripts.start()

    async def _every(self, interval: float, fn: Any) -> None:
        """Run ``await fn()`` every ``interval`` seconds until stopped; errors are logged, not fatal."""
        assert self.stop_event is not None
        failures = 0
        while not self.stop_event.is_set():
            try:
                await fn()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a periodic job must not stop the service
                failures += 1
                if failures in (1, 10, 100) or failures % 1000 == 0:
                    log.exception("%s failed (%d times)", getattr(fn, "__name__", fn), failures)
            try:
                await asyncio.wait_for(self.stop_event.wait(), interval)
            except TimeoutError:
                pass

    async def _evaluate(self) -> None:
        """Thresholds every second, off the event loop (sFlow-RT evaluates them continuously)."""
        if self.thresholds is not None and self.thresholds.all():
            await offload(self.thresholds.evaluate)

    async def _sample(self) -> None:
        """The dashboard's server-side trend: one point per managed service, pushed to streams."""
        if self.trends is None or self.scaler is None:
            return
        state = self.scaler.state()
        points, detail = await offload(self.trends.compute, state)
        self.trends.record(points, detail, state)
        self.trends.publish(points, state, list(getattr(self.scaler, "events", []))[-50:])

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
        for task in self._tick_tasks:
            task.cancel()
        if self._tick_tasks:
            await asyncio.gather(*self._tick_tasks, return_exceptions=True)
        self._tick_tasks = []
        if self._scaler_task is not None:
            try:
                await asyncio.wait_for(self._scaler_task, 5.0)
            except (TimeoutError, asyncio.CancelledError):
                self._scaler_task.cancel()
            except Exception:  # noqa: BLE001
                log.exception("scaler task failed while stopping")
            self._scaler_task = None
        if self._lease_task is not None:   # it releases the lease on its way out
            try:
                await asyncio.wait_for(self._lease_task, 10.0)
            except (TimeoutError, asyncio.CancelledError):
                self._lease_task.cancel()
            except Exception:  # noqa: BLE001
                log.exception("lease task failed while stopping")
            self._lease_task = None
        if self.scripts is not None:
            await asyncio.to_thread(self.scripts.stop)
        if self.api is not None:
            await self.api.stop()
        await asyncio.to_thread(shutdown_offload)
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
    parser.add_argument("--script", action="append", metavar="FILE", default=None,
                        help="run an sFlow-RT JavaScript file (repeatable; added to [scripts] "
                             "files; needs the fastflow[scripts] extra)")
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
        "log.format": getattr(args, "log_format", None),
    }
    cfg = load_config(getattr(args, "config", None), overrides=overrides)
    extra = getattr(args, "script", None) or []
    if extra:
        files = cfg.scripts.get("files", [])
        cfg.scripts["files"] = ([files] if isinstance(files, str) else list(files)) + list(extra)
    return cfg


def main(args: argparse.Namespace) -> int:
    """Run until SIGINT/SIGTERM. Exit 0 on a clean stop, 2 on a configuration error, 1 when it
    cannot start (a port in use, an address not of this host). SIGHUP reloads the configuration
    file: the [log] settings apply at once, other changes are logged as needing a restart."""
    from fastflow.cli.configcmd import describe_sources, preflight, reload_config

    verbose = int(getattr(args, "verbose", 0) or 0)
    try:
        cfg = config_from_args(args)
    except ConfigError as exc:
        print(f"fastflow run: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(logging.DEBUG if verbose else cfg.log.level, cfg.log.format)
    log.info("fastflow %s starting (config: %s)", __version__, describe_sources(cfg))
    try:
        svc = Service(cfg, scaler=not getattr(args, "no_scaler", False))
        preflight(cfg, scaler=svc.scaler is not None)
    except ConfigError as exc:
        print(f"fastflow run: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ImportError as exc:     # a core module missing from the installation
        log.error("cannot start: %s (is fastflow fully installed/built?)", exc)
        return EXIT_FAILURE
    current = [cfg]

    async def amain() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def on_signal(sig: signal.Signals) -> None:
            if not stop.is_set():
                log.info("%s received, stopping", sig.name)
            stop.set()

        def on_hup() -> None:
            current[0] = reload_config(args, current[0], verbose=verbose)

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal, sig)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - not on Unix
                pass
        loop.add_signal_handler(signal.SIGHUP, on_hup)
        try:
            await svc.run(stop)
        except ConfigError as exc:
            log.error("configuration error: %s", exc)
            return EXIT_USAGE
        except (OSError, ValueError) as exc:
            log.error("cannot start: %s", exc)
            return EXIT_FAILURE
        log.info("stopped")
        return EXIT_OK

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
