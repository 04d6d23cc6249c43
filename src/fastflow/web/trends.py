"""Dashboard history kept on the server, and its live stream (server-sent events).

:class:`Trends` samples, every ``interval`` seconds, each managed service's containers (the
service's own ``pattern`` from the operator's configuration, a trusted regular expression) and
keeps a bounded trend per service — replicas, mean CPU utilisation, bytes in/out and per-container
CPU (for the newest 10 minutes) — like an sFlow-RT app's trend; at most 1800 points (an hour)
per service, 32 services, 16 containers per point. A page opened late gets the whole trend at once and then each
new point: ``GET /dashboard/trend/json`` (the history) and ``GET /dashboard/stream`` (SSE:
``event: history`` first, then ``event: sample`` per point with the scaler's state and decision
log). Streams are capped (``max_streams``, 503 beyond) and a slow reader loses old points, never
holds the sampler.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from fastflow.web.http import HTTPError, Request, Response, Route, json_response

__all__ = ["Trends", "trend_routes"]

log = logging.getLogger("fastflow.trends")

TREND_METRICS = ("vir_cpu_utilization", "vir_bytes_in", "vir_bytes_out")
MAX_HOSTS_PER_POINT = 16      # per-container lines on a chart (the busiest)
PER_HOST_POINTS = 300         # newest points that keep per-container values (10 min at 2 s)


class Trends:
    """Bounded per-service trends sampled from the metrics (see module doc)."""

    def __init__(self, metrics: Any, *, interval: float = 2.0, keep: int = 1800,
                 max_services: int = 32, max_streams: int = 32,
                 clock: Callable[[], float] = time.time) -> None:
        self.metrics = metrics
        self.interval = interval
        self.keep = keep
        self.max_services = max_services
        self.max_streams = max_streams
        self.clock = clock
        self.series: dict[str, deque[dict[str, Any]]] = {}
        self._rx: dict[str, re.Pattern[str]] = {}
        self._queues: set[asyncio.Queue[str]] = set()
        self.last_state: dict[str, Any] = {}
        self.last_events: list[dict[str, Any]] = []
        self.detail: dict[str, dict[str, dict[str, Any]]] = {}   # newest per-container figures
        self.samples = 0

    def _pattern(self, pattern: str) -> re.Pattern[str] | None:
        rx = self._rx.get(pattern)
        if rx is None:
            try:
                rx = re.compile(pattern)     # operator configuration: trusted
            except re.error:
                return None
            if len(self._rx) > 4 * self.max_services:
                self._rx.clear()
            self._rx[pattern] = rx
        return rx

    def sample(self, state: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """:meth:`compute` then :meth:`record` (one thread)."""
        points, detail = self.compute(state)
        self.record(points, detail, state)
        return points

    def compute(self, state: Mapping[str, Any]
                ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, dict[str, Any]]]]:
        """One point per managed service from ``state`` (Scaler.state()); changes nothing, so it
        may run on a worker thread while the loop serves the history."""
        now = self.clock()
        points: dict[str, dict[str, Any]] = {}
        detail: dict[str, dict[str, dict[str, Any]]] = {}
        services = state.get("services") or {}
        for name, info in list(services.items())[: self.max_services]:
            cfg = info.get("config") or {}
            rx = self._pattern(str(cfg.get("pattern") or (re.escape(name) + r"\..*")))
            rows: list[dict[str, Any]] = []
            if rx is not None:
                try:
                    rows = self.metrics.dump("ALL", list(TREND_METRICS),
                                             {"vir_host_name": [rx]})
                except Exception as exc:  # noqa: BLE001 - a trend gap, not a crash
                    log.debug("trend sample for %s failed: %s", name, exc)
            per: dict[str, dict[str, Any]] = {}
            for r in rows:
                host = str(r.get("hostName") or f"{r.get('agent')}:{r.get('dataSource')}")
                v = r.get("metricValue")
                c = per.setdefault(host, {"cpu": None, "in": None, "out": None,
                                          "agent": r.get("agent")})
                val = float(v) if isinstance(v, int | float) and math.isfinite(v) else None
                key = {"vir_cpu_utilization": "cpu", "vir_bytes_in": "in",
                       "vir_bytes_out": "out"}.get(str(r.get("metricName")))
                if key:
                    c[key] = val
            cpus = [c["cpu"] for c in per.values() if c["cpu"] is not None]
            ins = [c["in"] for c in per.values() if c["in"] is not None]
            outs = [c["out"] for c in per.values() if c["out"] is not None]
            top = sorted(per, key=lambda h: -(per[h]["cpu"] or 0.0))[:MAX_HOSTS_PER_POINT]
            current = info.get("current")
            points[name] = {"t": round(now, 3),
                            "replicas": current if isinstance(current, int) else (len(per) or None),
                            "desired": info.get("desired"),
                            "util": sum(cpus) / len(cpus) if cpus else None,
                            "bytesIn": sum(ins) if ins else None,
                            "bytesOut": sum(outs) if outs else None,
                            "per": {h: per[h]["cpu"] for h in sorted(top)}}
            detail[name] = {h: per[h] for h in sorted(top)}
        return points, detail

    def record(self, points: Mapping[str, dict[str, Any]],
               detail: Mapping[str, dict[str, dict[str, Any]]], state: Mapping[str, Any]) -> None:
        """Append the points to the bounded trends (on the event loop)."""
        services = state.get("services") or {}
        for name, point in points.items():
            ser = self.series.setdefault(name, deque(maxlen=self.keep))
            ser.append(point)
            if len(ser) > PER_HOST_POINTS:       # older points keep the aggregates only
                old = ser[-PER_HOST_POINTS - 1]
                if old.get("per"):
                    ser[-PER_HOST_POINTS - 1] = {k: v for k, v in old.items() if k != "per"}
        self.detail = dict(detail)
        now = self.clock()
        for gone in set(self.series) - set(services):
            if not self.series[gone] or now - self.series[gone][-1]["t"] > self.keep * self.interval:
                del self.series[gone]
        self.samples += 1

    def history(self) -> dict[str, list[dict[str, Any]]]:
        return {name: list(pts) for name, pts in self.series.items()}

    # ------------------------------------------------------------------ streaming
    def publish(self, points: Mapping[str, Any], state: Mapping[str, Any],
                events: list[dict[str, Any]]) -> None:
        """Send a sample to every open stream (on the event loop)."""
        self.last_state = dict(state)
        self.last_events = events[-50:]
        msg = _sse("sample", {"points": points, "detail": self.detail,
                              "scaler": self.last_state, "events": self.last_events})
        for q in list(self._queues):
            if q.full():
                try:
                    q.get_nowait()           # a slow reader loses its oldest point
                except asyncio.QueueEmpty:
                    pass
            q.put_nowait(msg)

    def hello(self) -> str:
        return _sse("history", {"interval": self.interval, "history": self.history(),
                                "detail": self.detail, "scaler": self.last_state,
                                "events": self.last_events})

    def subscribe(self) -> asyncio.Queue[str] | None:
        if len(self._queues) >= self.max_streams:
            return None
        q: asyncio.Queue[str] = asyncio.Queue(maxsize=16)
        self._queues.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[str]) -> None:
        self._queues.discard(q)

    @property
    def streams(self) -> int:
        return len(self._queues)


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"


def trend_routes(trends: Trends, closing: Callable[[], asyncio.Event | None]) -> list[Route]:
    """``/dashboard/trend/json`` and the ``/dashboard/stream`` server-sent events."""

    def trend(req: Request) -> Response:
        return json_response({"interval": trends.interval, "history": trends.history()})

    async def stream(req: Request) -> Any:
        q = trends.subscribe()
        if q is None:
            raise HTTPError(503, f"too many dashboard streams (max {trends.max_streams})")
        try:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache",
                                               "X-Accel-Buffering": "no"})
            await resp.prepare(req.raw)
            await resp.write(trends.hello().encode())
            stop = closing()
            quiet = 0
            while stop is None or not stop.is_set():
                try:
                    msg = await asyncio.wait_for(q.get(), 1.0)
                    quiet = 0
                except TimeoutError:
                    quiet += 1
                    if quiet < 15:
                        continue
                    msg, quiet = ": keep-alive\n\n", 0
                await resp.write(msg.encode())
            return resp
        except (ConnectionError, asyncio.CancelledError):
            raise
        finally:
            trends.unsubscribe(q)

    return [Route("GET", "/dashboard/trend/json", trend),
            Route("GET", "/dashboard/stream", stream)]
