"""sFlow-RT thresholds and events (``setThreshold`` / ``/threshold/{name}/json`` / ``/events/json``).

A threshold watches one metric: a counter metric of the store (``vir_cpu_utilization``, ...) per data
source, or a flow definition's values (when a flows engine is given; ``byFlow`` reports each flow
key separately). :meth:`Thresholds.evaluate` (the service calls it every second) compares the newest
values with the threshold and appends an event when a value goes **above** it for a (data source[,
flow]) that is armed; the pair is disarmed until its value comes back to or below the threshold,
or until it has not been seen for ``timeout`` seconds. Events carry sFlow-RT's fields: ``agent``,
``dataSource``, ``eventID``, ``metric``, ``threshold``, ``thresholdID``, ``timestamp`` (ms),
``value`` (and ``flowKey`` for byFlow thresholds).

Bounded: at most ``max_thresholds`` thresholds (more is a :class:`ThresholdError`), the newest
``max_events`` events, and per threshold at most ``MAX_TRIGGERED`` disarmed pairs (oldest dropped).
Filters are sFlow-RT globs (``{"vir_host_name": ["apache\\\\.*"]}``), as for queries.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastflow.collector.glob import MAX_PATTERN

__all__ = ["MAX_TRIGGERED", "ThresholdError", "Thresholds"]

log = logging.getLogger("fastflow.thresholds")

MAX_TRIGGERED = 10000
_FIELDS = {"metric", "value", "filter", "byFlow", "timeout", "agents"}
_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


class ThresholdError(ValueError):
    """A threshold specification that cannot be used (the message says which field)."""


class Thresholds:
    """Named thresholds over :class:`fastflow.collector.metrics.Metrics` (and optionally flows)."""

    def __init__(self, metrics: Any, *, clock: Callable[[], float] = time.time,
                 max_thresholds: int = 1000, max_events: int = 10000,
                 flows: Any = None) -> None:
        self.metrics = metrics
        self.flows = flows
        self.clock = clock
        self.max_thresholds = max_thresholds
        self._specs: dict[str, dict[str, Any]] = {}
        self._armed: dict[str, OrderedDict[tuple[str, ...], float]] = {}   # disarmed -> last seen
        self._events: deque[dict[str, Any]] = deque(maxlen=max_events)
        self._next_id = 1
        self._listeners: list[tuple[Callable[[dict[str, Any]], None], frozenset[str] | None]] = []
        self._lock = threading.Lock()
        self.evaluations = 0
        self.errors = 0

    # ------------------------------------------------------------------ definitions
    def set(self, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Define (or replace) threshold ``name``; returns the stored spec."""
        if not name or len(name) > 100 or not set(name) <= _NAME_OK:
            raise ThresholdError("threshold name: 1-100 characters of letters, digits, _ - .")
        if not isinstance(spec, Mapping):
            raise ThresholdError("threshold must be a JSON object {metric, value, ...}")
        unknown = set(spec) - _FIELDS
        if unknown:
            raise ThresholdError(f"unknown threshold field(s): {', '.join(sorted(unknown))}")
        metric = spec.get("metric")
        if not isinstance(metric, str) or not metric:
            raise ThresholdError("metric: a metric or flow name is required")
        value = spec.get("value")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ThresholdError("value: a finite number is required")
        from fastflow.collector.metrics import METRICS
        is_metric = metric in METRICS
        if is_metric and METRICS[metric].is_text:
            raise ThresholdError(f"metric: {metric!r} is text, a threshold needs a number")
        if not is_metric and (self.flows is None or self.flows.definition(metric) is None):
            raise ThresholdError(f"metric: {metric!r} is neither a metric nor a flow definition")
        flt = spec.get("filter") or {}
        if not isinstance(flt, Mapping):
            raise ThresholdError("filter: an object of metric name -> list of patterns")
        clean: dict[str, list[str]] = {}
        for k, v in flt.items():
            vals = [v] if isinstance(v, str) else v
            if (not isinstance(k, str) or k not in METRICS or not isinstance(vals, list)
                    or not all(isinstance(x, str) and len(x) <= MAX_PATTERN for x in vals)):
                raise ThresholdError(f"filter {k!r}: a known metric name -> list of patterns")
            clean[k] = list(vals)
        by_flow = spec.get("byFlow", False)
        if not isinstance(by_flow, bool):
            raise ThresholdError("byFlow: true or false")
        timeout = spec.get("timeout", 60)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) \
                or not 0 < timeout <= 86400:
            raise ThresholdError("timeout: seconds, > 0 and <= 86400")
        agents = spec.get("agents", "ALL")
        if not isinstance(agents, str):
            raise ThresholdError("agents: a ';'-separated list of agents or ALL")
        stored = {"metric": metric, "value": value, "filter": clean, "byFlow": by_flow,
                  "timeout": timeout, "agents": agents}
        with self._lock:
            if name not in self._specs and len(self._specs) >= self.max_thresholds:
                raise ThresholdError(f"too many thresholds (max {self.max_thresholds})")
            self._specs[name] = stored
            self._armed[name] = OrderedDict()
        return dict(stored)

    def get(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            s = self._specs.get(name)
            return dict(s) if s is not None else None

    def delete(self, name: str) -> bool:
        with self._lock:
            self._armed.pop(name, None)
            return self._specs.pop(name, None) is not None

    def all(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: dict(v) for k, v in self._specs.items()}

    # ------------------------------------------------------------------ evaluation
    def _values(self, spec: dict[str, Any]) -> list[tuple[tuple[str, ...], str, str, float]]:
        """[(key, agent, dataSource, value)] for one threshold."""
        metric = spec["metric"]
        out: list[tuple[tuple[str, ...], str, str, float]] = []
        if self.flows is not None and self.flows.definition(metric) is not None:
            flows = self.flows.active_flows(spec["agents"], metric, 1000, float(spec["value"]))
            if not spec["byFlow"]:
                flows = flows[:1]
            for f in flows:
                agent, ds = str(f.get("agent", "")), str(f.get("dataSource", ""))
                key = (agent, ds, str(f.get("key", ""))) if spec["byFlow"] else (agent, ds)
                out.append((key, agent, ds, float(f.get("value", 0.0))))
            return out
        for e in self.metrics.dump(spec["agents"], [metric], spec["filter"] or None):
            v = e.get("metricValue")
            if isinstance(v, int | float) and not isinstance(v, bool):
                agent, ds = str(e["agent"]), str(e["dataSource"])
                out.append(((agent, ds), agent, ds, float(v)))
        return out

    def evaluate(self) -> list[dict[str, Any]]:
        """Check every threshold now; new events are appended, returned and sent to listeners."""
        self.evaluations += 1
        now = self.clock()
        new: list[dict[str, Any]] = []
        for name, spec in self.all().items():
            try:
                values = self._values(spec)
            except Exception as exc:  # noqa: BLE001 - one bad threshold must not stop the others
                self.errors += 1
                log.warning("threshold %s: evaluation failed: %s", name, exc)
                continue
            with self._lock:
                if name not in self._specs:
                    continue
                fired = self._armed.setdefault(name, OrderedDict())
                for key, agent, ds, value in values:
                    if value <= spec["value"]:
                        fired.pop(key, None)
                        continue
                    if key in fired:
                        fired[key] = now
                        fired.move_to_end(key)
                        continue
                    fired[key] = now
                    if len(fired) > MAX_TRIGGERED:
                        fired.popitem(last=False)
                    ev = {"agent": agent, "dataSource": ds, "eventID": self._next_id,
                          "metric": spec["metric"], "threshold": spec["value"],
                          "thresholdID": name, "timestamp": int(now * 1000), "value": value}
                    if spec["byFlow"] and len(key) > 2:
                        ev["flowKey"] = key[2]
                    self._next_id += 1
                    self._events.append(ev)
                    new.append(ev)
                stale = [k for k, seen in fired.items() if now - seen > spec["timeout"]]
                for k in stale:
                    del fired[k]
        for ev in new:
            for fn, ids in list(self._listeners):
                if ids is None or ev["thresholdID"] in ids:
                    try:
                        fn(ev)
                    except Exception:  # noqa: BLE001
                        log.exception("threshold event listener failed")
        return new

    # ------------------------------------------------------------------ events
    def events(self, after_id: int = -1, max_events: int = 100,
               threshold_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Events newer than ``after_id``, newest first, at most ``max_events`` (sFlow-RT order)."""
        want = set(threshold_ids) if threshold_ids else None
        out: list[dict[str, Any]] = []
        with self._lock:
            for ev in reversed(self._events):
                if ev["eventID"] <= after_id or len(out) >= max_events:
                    break
                if want is None or ev["thresholdID"] in want:
                    out.append(dict(ev))
        return out

    @property
    def last_event_id(self) -> int:
        return self._next_id - 1

    def add_listener(self, fn: Callable[[dict[str, Any]], None],
                     threshold_ids: Sequence[str] | None = None) -> None:
        """Call ``fn(event)`` for each new event (of ``threshold_ids`` only, when given)."""
        self._listeners.append((fn, frozenset(threshold_ids) if threshold_ids else None))

    def remove_listener(self, fn: Callable[[dict[str, Any]], None]) -> None:
        self._listeners = [(f, i) for f, i in self._listeners if f is not fn]

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"thresholds": len(self._specs), "events": len(self._events),
                    "last_event_id": self._next_id - 1, "evaluations": self.evaluations,
                    "errors": self.errors}
