"""fastflow's core, sFlow-RT compatible REST routes (the server itself is :mod:`fastflow.web.server`).

:func:`core_routes` exposes the metrics engine the way sFlow-RT does — ``/metric/{agents}/{metrics}``,
``/metric/{agent}/json``, ``/dump``, ``/table`` (with ``sort:name:-N``), ``/agents/json`` (sFlow-RT's
field names), ``/metrics/json``, ``/analyzer/json``, ``/version`` — plus thresholds and events
(``/threshold/{name}/json``, ``/events/json`` long poll), sFlow-RT's Prometheus routes
(``/prometheus/metrics/{agents}/{metrics}/txt`` with ``sflow_`` names and agent/datasource/host
labels, ``/prometheus/analyzer/txt``), fastflow's own ``/metrics`` exposition, ``/healthz`` and
``/errors/json``.

Query work (filters, aggregation, answer building) runs on a small thread pool, never on the event
loop, and only takes the pipeline lock for a snapshot (see :class:`fastflow.collector.metrics.Metrics`).
Query-string filters are sFlow-RT globs; no regular expression is ever compiled from a request.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastflow import __version__
from fastflow.collector.flows import query_metrics
from fastflow.web.http import HTTPError, Request, Response, Route, json_response
from fastflow.web.server import MAX_REQUEST_BYTES, ApiServer, is_loopback

__all__ = ["ApiServer", "MAX_REQUEST_BYTES", "core_routes", "is_loopback", "prometheus_text",
           "agent_fields", "own_metrics_text", "offload", "shutdown_offload"]

log = logging.getLogger("fastflow.api")

RESERVED_QUERY = frozenset({"_", "callback"})   # cache busters / JSONP names, not filters
MAX_FILTER_KEYS = 32
MAX_FILTER_VALUES = 64
MAX_FILTER_CHARS = 512
MAX_LONG_POLL = 60.0                            # seconds an /events/json request may wait

_POOL: ThreadPoolExecutor | None = None


async def offload(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` on the query pool: the event loop (HTTP, scaler) keeps going meanwhile."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fastflow-query")
    return await asyncio.get_running_loop().run_in_executor(_POOL, fn, *args)


INLINE_KEYS = 4096     # stores up to this many data sources are queried on the loop (< 1 ms)


INLINE_PATTERN = 64    # and its filter patterns are short and have no "?" (C-speed matching)


async def query_work(metrics: Any, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` inline when it is cheap (a small store, short star-only patterns), else on
    the query pool, so no query (100k data sources, long ``?`` patterns) holds the event loop."""
    store = getattr(metrics, "store", None)
    cheap = int(getattr(store, "n_keys", INLINE_KEYS + 1)) <= INLINE_KEYS
    for a in args:
        if cheap and isinstance(a, Mapping):
            cheap = all(isinstance(v, str) and len(v) <= INLINE_PATTERN and "?" not in v
                        for vals in a.values() for v in vals)
    return fn(*args) if cheap else await offload(fn, *args)


def shutdown_offload() -> None:
    """Let the query pool's threads end (the service calls it when it stops)."""
    global _POOL
    pool, _POOL = _POOL, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


# ==================================================================================================
# Request helpers
# ==================================================================================================
def _filters(req: Request) -> dict[str, list[str]]:
    """Query-string keys (other than reserved ones) are metric filters; several values = OR.

    Values are sFlow-RT glob patterns (``*``, ``?``, ``\\`` escapes); bounded in number and length.
    """
    out: dict[str, list[str]] = {}
    for key, values in req.query.items():
        if key in RESERVED_QUERY:
            continue
        if not key:
            raise HTTPError(400, "empty filter name in query string")
        if len(values) > MAX_FILTER_VALUES:
            raise HTTPError(400, f"filter {key}: more than {MAX_FILTER_VALUES} values")
        for v in values:
            if len(v) > MAX_FILTER_CHARS:
                raise HTTPError(400, f"filter {key}: pattern longer than {MAX_FILTER_CHARS}")
        out[key] = list(values)
    if len(out) > MAX_FILTER_KEYS:
        raise HTTPError(400, f"more than {MAX_FILTER_KEYS} filters")
    return out


def _metric_list(spec: str) -> list[str]:
    # sFlow-RT separates metrics with "," in /metric and ";" in /dump; accept both everywhere.
    names = [m.strip() for m in re.split(r"[,;]", spec) if m.strip()]
    if not names:
        raise HTTPError(400, "no metric given")
    return names


def _agents(spec: str) -> str:
    if not spec.strip():
        raise HTTPError(400, "no agent given")
    return spec


def _int_arg(req: Request, name: str, default: int, lo: int, hi: int) -> int:
    v = req.arg(name)
    if v is None or v == "":
        return default
    try:
        n = int(float(v))
    except ValueError:
        raise HTTPError(400, f"{name} must be a number, not {v[:20]!r}") from None
    return max(lo, min(hi, n))


# ==================================================================================================
# sFlow-RT names
# ==================================================================================================
#: fastflow's agent-statistics keys -> sFlow-RT's /agents/json names
AGENT_NAMES = {
    "sFlowDatagramsDuplicated": "sFlowDatagramsDuplicates",
    "lastUpdate": "lastSeen",
    "sFlowFlowSamplesLost": "sFlowFlowLostSamples",
    "sFlowCounterSamplesLost": "sFlowCounterLostSamples",
}


def agent_fields(stats: Mapping[str, Any]) -> dict[str, Any]:
    """One agent's statistics under sFlow-RT's names (unknown keys pass through unchanged)."""
    return {AGENT_NAMES.get(k, k): v for k, v in stats.items()}


# ==================================================================================================
# Prometheus text exposition (0.0.4)
# ==================================================================================================
_PROM_NAME_BAD = re.compile(r"[^a-zA-Z0-9_:]")


def _prom_name(name: str) -> str:
    n = _PROM_NAME_BAD.sub("_", name)
    return "_" + n if n[:1].isdigit() or not n else n


def _prom_label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _prom_value(v: Any) -> str | None:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "+Inf" if v > 0 else "-Inf"
        return repr(v)
    if hasattr(v, "item"):   # numpy scalar
        return _prom_value(v.item())
    return None


def _labels(labels: Mapping[str, Any]) -> str:
    return ",".join(f'{k}="{_prom_label(v)}"' for k, v in labels.items())


def _numeric_items(d: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    """Flatten nested dicts of numbers into (key_path, value) pairs."""
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            yield from _numeric_items(v, key + "_")
        elif _prom_value(v) is not None:
            yield key, v


Family = tuple[str, str, list[tuple[dict[str, Any], Any]]]     # (type, help, samples)


def prometheus_text(entries: Sequence[Mapping[str, Any]],
                    own: Mapping[str, Any] | None = None, prefix: str = "sflow_") -> str:
    """sFlow-RT's ``/prometheus/metrics`` text: ``sflow_<metric>{agent,datasource[,ifname],host}``.

    ``entries`` are :meth:`Metrics.dump` rows; text values become labels where sFlow-RT uses them
    (``ifname``) and are otherwise left out. ``own`` (optional) is extra families as
    ``{name: [(labels, value), ...]}`` or ``{name: (type, help, samples)}``.
    """
    ifnames: dict[tuple[str, str], str] = {}
    for e in entries:
        if e.get("metricName") == "ifname" and isinstance(e.get("metricValue"), str):
            ifnames[(str(e.get("agent", "")), str(e.get("dataSource", "")))] = e["metricValue"]
    families: dict[str, list[str]] = {}
    for e in entries:
        val = _prom_value(e.get("metricValue"))
        if val is None:
            continue
        name = _prom_name(prefix + str(e.get("metricName", "")))
        agent, ds = str(e.get("agent", "")), str(e.get("dataSource", ""))
        labels: dict[str, Any] = {"agent": agent, "datasource": ds}
        ifn = ifnames.get((agent, ds))
        if ifn:
            labels["ifname"] = ifn
        host = e.get("hostName")
        if host:
            labels["host"] = host
        families.setdefault(name, []).append(f"{name}{{{_labels(labels)}}} {val}")
    out: list[str] = []
    for name in sorted(families):
        out.append(f"# TYPE {name} gauge")
        out.extend(families[name])
    text = "\n".join(out) + ("\n" if out else "")
    if own:
        text += _families_text(own)
    return text


def _families_text(fams: Mapping[str, Any]) -> str:
    out: list[str] = []
    for name in sorted(fams):
        f = fams[name]
        if isinstance(f, tuple) and len(f) == 3:
            kind, help_, series = f
        else:
            kind = "counter" if name.endswith("_total") else "gauge"
            help_, series = "", f
        lines = []
        for labels, value in series:
            val = _prom_value(value)
            if val is None:
                continue
            lab = _labels(labels)
            lines.append(f"{name}{{{lab}}} {val}" if lab else f"{name} {val}")
        if not lines:
            continue
        if help_:
            out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(lines)
    return "\n".join(out) + ("\n" if out else "")


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def _snake(name: str) -> str:
    return _CAMEL.sub("_", name).lower()


_AGENT_GAUGES = {"last_seen": ("fastflow_agent_last_seen_seconds", 0.001),
                 "first_seen": ("fastflow_agent_first_seen_seconds", 0.001),
                 "uptime": ("fastflow_agent_uptime_seconds", 0.001),
                 "sub_agents": ("fastflow_agent_sub_agents", 1.0)}


def _agent_family(key: str) -> tuple[str, float, str]:
    """Prometheus name, scale and type of an ``/agents/json`` field (sFlow-RT name)."""
    base = _snake(key[5:] if key.startswith("sFlow") else key)
    if base in _AGENT_GAUGES:
        name, scale = _AGENT_GAUGES[base]
        return name, scale, "gauge"
    return _prom_name(f"fastflow_agent_{base}_total"), 1.0, "counter"


def own_metrics_text(parts: Mapping[str, Any]) -> str:
    """fastflow's own ``/metrics``: # HELP/# TYPE, units in names, counters end in ``_total``.

    ``parts``: ``uptime`` (s), ``ingest`` (dict), ``errors`` ({reason: n}), ``kinds``
    ({reason: kind}), ``agents`` ({agent: stats, sFlow-RT names}), ``http`` (server stats),
    ``scaler`` (Scaler.state() or None), ``scaler_events`` (list), ``thresholds`` (stats),
    ``metrics`` (Metrics.stats()), ``scripts`` (ScriptHost.state()), ``interned`` (the
    decoder's intern tables, Pipeline.interned_stats()).
    """
    fams: dict[str, Family] = {}

    def add(name: str, kind: str, help_: str, labels: dict[str, Any], value: Any) -> None:
        fams.setdefault(name, (kind, help_, []))[2].append((labels, value))

    add("fastflow_build_info", "gauge", "fastflow version", {"version": __version__}, 1)
    add("fastflow_uptime_seconds", "gauge", "seconds since the service started", {},
        round(float(parts.get("uptime", 0.0)), 3))
    for key, v in _numeric_items(parts.get("ingest") or {}):
        base = _snake(key)
        if any(w in base for w in ("datagrams", "bytes", "drops", "dropped", "batches", "errors",
                                   "received", "truncated", "decoded", "rejected", "refused")):
            name = _prom_name(f"fastflow_ingest_{base}")
            name = name if name.endswith("_total") else name + "_total"
            add(name, "counter", f"UDP ingest: {key}", {}, v)
        else:
            add(_prom_name(f"fastflow_ingest_{base}"), "gauge", f"UDP ingest: {key}", {}, v)
    errs: Mapping[str, int] = parts.get("errors") or {}
    kinds: Mapping[str, str] = parts.get("kinds") or {}
    for r in [r for r in kinds if r != "ok"] + sorted(set(errs) - set(kinds)):
        add("fastflow_decoder_rejected_total", "counter",
            "datagrams/samples/records the decoder rejected or skipped, by reason",
            {"reason": r, "kind": kinds.get(r, "error")}, errs.get(r, 0))
    agents: Mapping[str, Any] = parts.get("agents") or {}
    add("fastflow_agents", "gauge", "sFlow agents currently known", {}, len(agents))
    for agent, st in agents.items():
        if not isinstance(st, Mapping):
            continue
        for key, v in st.items():
            if _prom_value(v) is None or isinstance(v, Mapping):
                continue
            name, scale, kind = _agent_family(key)
            add(name, kind, f"per agent: sFlow-RT /agents/json {key}", {"agent": str(agent)},
                v * scale if scale != 1.0 else v)
    for key, v in (parts.get("http") or {}).items():
        add(_prom_name(f"fastflow_http_{key}_total"), "counter", f"HTTP guard: {key}", {}, v)
    if "http_connections" in parts:
        add("fastflow_http_connections", "gauge", "open HTTP connections", {},
            parts["http_connections"])
    for key, v in (parts.get("thresholds") or {}).items():
        kind = "counter" if key in ("evaluations", "errors") else "gauge"
        name = f"fastflow_thresholds_{key}" + ("_total" if kind == "counter" else "")
        add(name, kind, f"thresholds: {key}", {}, v)
    pat = (parts.get("metrics") or {}).get("patterns") or {}
    for key in ("hits", "misses", "evictions"):
        if key in pat:
            add(f"fastflow_filter_patterns_{key}_total", "counter",
                f"query filter pattern cache {key}", {}, pat[key])
    if "size" in pat:
        add("fastflow_filter_patterns_cached", "gauge", "compiled filter patterns cached", {},
            pat["size"])
    sc = parts.get("scaler")
    if isinstance(sc, Mapping):
        add("fastflow_scaler_enabled", "gauge", "scaler master switch (1 on)", {},
            bool(sc.get("enabled")))
        add("fastflow_scaler_dry_run", "gauge", "scaler dry run (1: decides, never writes)", {},
            bool(sc.get("dry_run")))
        for svc, st in (sc.get("services") or {}).items():
            if not isinstance(st, Mapping):
                continue
            lab = {"service": str(svc)}
            add("fastflow_scaler_service_enabled", "gauge", "service managed and enabled", lab,
                bool(st.get("enabled")))
            if isinstance(st.get("current"), int):
                add("fastflow_scaler_replicas", "gauge", "running replicas seen by the scaler",
                    lab, st["current"])
            if isinstance(st.get("desired"), int):
                add("fastflow_scaler_desired_replicas", "gauge", "replicas the scaler wants", lab,
                    st["desired"])
            cfg = st.get("config") or {}
            for k in ("replicas_min", "replicas_max"):
                if isinstance(cfg.get(k), int):
                    add(f"fastflow_scaler_{k}", "gauge", f"configured {k}", lab, cfg[k])
            for m, v in (st.get("metrics") or {}).items():
                if _prom_value(v) is not None:
                    unit = "_percent" if "utilization" in m else \
                        "_bytes_per_second" if "bytes" in m else ""
                    add(_prom_name(f"fastflow_scaler_input_{m}{unit}"), "gauge",
                        f"the scaler's input {m}", lab, v)
    events = parts.get("scaler_events")
    if events is not None:
        counts: dict[tuple[str, str, bool], int] = {}
        for ev in events:
            if isinstance(ev, Mapping):
                ck = (str(ev.get("service", "")), str(ev.get("action", "")),
                      bool(ev.get("dry_run")))
                counts[ck] = counts.get(ck, 0) + 1
        for (svc, action, dry), n in sorted(counts.items()):
            add("fastflow_scaler_decisions_total", "counter",
                "scaling decisions in the scaler's event log, by service and action",
                {"service": svc, "action": action, "dry_run": str(dry).lower()}, n)
    it = parts.get("interned") or {}
    if it:
        for key, help_ in (("strings", "entries in the decoder's string table"),
                           ("agents", "entries in the decoder's agent table")):
            add(f"fastflow_decoder_interned_{key}", "gauge", help_, {}, int(it.get(key, 0)))
        add("fastflow_decoder_interned_max", "gauge", "cap of each intern table", {},
            int(it.get("max_interned", 0)))
        add("fastflow_decoder_intern_compactions_total", "counter",
            "compactions of the intern tables (entries no sink holds dropped)", {},
            int(it.get("compactions", 0)))
        add("fastflow_decoder_interned_dropped_total", "counter",
            "intern-table entries dropped by compactions", {}, int(it.get("dropped", 0)))
    for sc in parts.get("scripts") or []:
        lab = {"script": sc.get("name", ""), "app": sc.get("app") or ""}
        add("fastflow_script_running", "gauge", "script loaded and running (1), else 0", lab,
            1 if sc.get("state") == "running" else 0)
        for key, help_ in (("calls", "handler calls run (interval, HTTP, events)"),
                           ("errors", "handler calls that failed"),
                           ("dropped", "calls refused because the script's queue was full"),
                           ("restarts", "times the script was started again after it stopped")):
            add(f"fastflow_script_{key}_total", "counter", help_, lab, int(sc.get(key) or 0))
        add("fastflow_script_flows_missed_total", "counter",
            "logged flows not handed to the script's flow handler (it fell behind)", lab,
            int(sc.get("flowsMissed") or 0))
    return _families_text(fams)


# ==================================================================================================
# Core routes
# ==================================================================================================
def _call_stats(fn: Callable[[], Any] | None) -> dict[str, Any]:
    if fn is None:
        return {}
    try:
        st = fn()
    except Exception:  # noqa: BLE001 - health must answer even if a stats source breaks
        log.exception("stats source failed")
        return {"error": "unavailable"}
    if hasattr(st, "_asdict"):
        st = st._asdict()
    elif hasattr(st, "__dataclass_fields__"):
        import dataclasses
        st = dataclasses.asdict(st)
    return dict(st) if isinstance(st, Mapping) else {"value": st}


def _reason_kinds() -> dict[str, str]:
    from fastflow._schema import REASONS
    return {name: kind for name, kind, _ in REASONS}


def core_routes(pipeline: Any, metrics: Any, agentstats: Any = None,
                ingest_stats: Callable[[], Any] | None = None,
                started: float | None = None, *, thresholds: Any = None, scaler: Any = None,
                server: Callable[[], ApiServer | None] | None = None,
                flows: Any = None, scripts: Any = None) -> list[Route]:
    """The sFlow-RT compatible query routes plus thresholds, health, errors and Prometheus.

    ``pipeline`` gives decoder error counts (``errors()``) and the lock; ``metrics`` answers
    ``query``/``dump``/``table``/``agent_metrics``/``names``; ``agentstats`` (optional) gives
    ``snapshot()``; ``ingest_stats`` (optional) returns the UDP listener's counters;
    ``thresholds`` (a :class:`fastflow.collector.thresholds.Thresholds`) adds ``/threshold`` and
    ``/events``; ``scaler`` and ``server`` (a callable giving the running ApiServer) add their
    state to ``/metrics``; ``flows`` (a FlowEngine) lets ``/metric`` read flow definitions by name,
    as sFlow-RT does (:func:`fastflow.collector.flows.query_metrics`); ``scripts`` (a ScriptHost)
    adds each script's state and counters to ``/metrics``.
    """
    t0 = time.time() if started is None else started
    lock = getattr(pipeline, "lock", None)

    def errors() -> dict[str, int]:
        try:
            if lock is not None:
                with lock:
                    return {k: int(v) for k, v in dict(pipeline.errors()).items()}
            return {k: int(v) for k, v in dict(pipeline.errors()).items()}
        except Exception:  # noqa: BLE001
            log.exception("pipeline.errors() failed")
            return {}

    def agents_snapshot() -> dict[str, Any]:
        if agentstats is None:
            # no per-agent statistics module: at least list the agents the decoder has seen
            view = getattr(pipeline, "agents", None)
            if view is None:
                return {}
            if lock is not None:
                with lock:
                    names = [view[i] for i in range(1, len(view))]
            else:
                names = [view[i] for i in range(1, len(view))]
            return {a: {} for a in names if a}
        snap = agentstats.snapshot()
        if not isinstance(snap, Mapping):
            return {"agents": snap}
        return {a: agent_fields(st) if isinstance(st, Mapping) else st for a, st in snap.items()}

    # ------------------------------------------------------------------ metrics
    async def metric(req: Request) -> Response:
        return json_response(await query_work(metrics, query_metrics, metrics, flows,
                                              _agents(req.params["agents"]),
                                              _metric_list(req.params["metrics"]), _filters(req)))

    async def agent_metric(req: Request) -> Response:
        fn = getattr(metrics, "agent_metrics", None)
        if fn is None:
            raise HTTPError(404, "per-agent metrics are not available")
        out = await query_work(metrics, fn, req.params["agent"])
        if out is None:
            raise HTTPError(404, f"unknown agent {req.params['agent']!r}")
        return json_response(out)

    def _dump_names(spec: str) -> str | list[str]:
        names = _metric_list(spec)
        return "ALL" if names == ["ALL"] else names

    async def dump(req: Request) -> Response:
        return json_response(await query_work(metrics, metrics.dump, _agents(req.params["agents"]),
                                           _dump_names(req.params["metrics"]), _filters(req)))

    async def table(req: Request) -> Response:
        return json_response(await query_work(metrics, metrics.table, _agents(req.params["agents"]),
                                           _metric_list(req.params["metrics"]), _filters(req)))

    def agents(req: Request) -> Response:
        snap = agents_snapshot()
        want = req.query.get("agent")
        if want:
            snap = {a: v for a, v in snap.items() if a in want}
        return json_response(snap)

    async def names(req: Request) -> Response:
        return json_response(await query_work(metrics, metrics.names))

    def version(req: Request) -> Response:
        return Response(200, __version__.encode(), "text/plain; charset=utf-8")

    def version_json(req: Request) -> Response:
        return json_response({"version": __version__, "implementation": "fastflow",
                              "compatible": "sFlow-RT REST API (subset, docs/rest-api.md)"})

    def analyzer_stats() -> dict[str, Any]:
        ing = _call_stats(ingest_stats)
        snap = agents_snapshot()
        errs = errors()
        kinds = _reason_kinds()
        tot: dict[str, int] = {}
        for st in snap.values():
            if isinstance(st, Mapping):
                for k in ("sFlowDatagramsReceived", "sFlowFlowSamples", "sFlowCounterSamples",
                          "sFlowDatagramsLost", "sFlowFlowLostSamples",
                          "sFlowCounterLostSamples"):
                    v = st.get(k)
                    if isinstance(v, int):
                        tot[k] = tot.get(k, 0) + v
        received = ing.get("datagrams", ing.get("datagrams_received", tot.get(
            "sFlowDatagramsReceived", 0)))
        return {
            "sFlowAgents": len(snap),
            "sFlowDatagramsReceived": received,
            "sFlowBytesReceived": ing.get("bytes", ing.get("bytes_received", 0)),
            "sFlowDatagramsDiscarded": sum(v for k, v in errs.items()
                                           if kinds.get(k, "error") == "error"),
            "sFlowFlowSamples": tot.get("sFlowFlowSamples", 0),
            "sFlowCounterSamples": tot.get("sFlowCounterSamples", 0),
            "sFlowDatagramsLost": tot.get("sFlowDatagramsLost", 0),
            "sFlowFlowLostSamples": tot.get("sFlowFlowLostSamples", 0),
            "sFlowCounterLostSamples": tot.get("sFlowCounterLostSamples", 0),
            "uptime": int((time.time() - t0) * 1000),
            "version": __version__,
        }

    def analyzer(req: Request) -> Response:
        return json_response(analyzer_stats())

    # ------------------------------------------------------------------ health and errors
    def agent_count() -> int:
        fn = getattr(agentstats, "count", None)
        return int(fn()) if fn is not None else len(agents_snapshot())

    def interned() -> dict[str, int]:
        fn = getattr(pipeline, "interned_stats", None)
        if fn is None:
            return {}
        if lock is not None:
            with lock:
                return dict(fn())
        return dict(fn())

    def health(req: Request) -> Response:
        ing = _call_stats(ingest_stats)
        errs = errors()
        kinds = _reason_kinds()
        body: dict[str, Any] = {
            "status": "ok", "version": __version__, "uptime": round(time.time() - t0, 3),
            "ingest": ing,
            "decoder": {"errors": errs, "rejected": sum(
                v for k, v in errs.items() if kinds.get(k, "error") == "error"),
                "interned": interned()},
            "agents": agent_count()}
        srv = server() if server is not None else None
        if srv is not None:
            body["http"] = dict(srv.stats, connections=srv.connections,
                                max_connections=srv.max_connections)
        ms = getattr(metrics, "stats", None)
        if callable(ms):
            body["queries"] = ms()
        return json_response(body)

    def errors_json(req: Request) -> Response:
        from fastflow._schema import REASONS
        errs = errors()
        kinds = _reason_kinds()
        body: dict[str, Any] = {
            "errors": errs,
            "total": sum(v for k, v in errs.items() if kinds.get(k, "error") == "error"),
            "skipped": sum(v for k, v in errs.items() if kinds.get(k) == "skip"),
            "reasons": {n: {"kind": k, "description": d} for n, k, d in REASONS if n != "ok"}}
        srv = server() if server is not None else None
        if srv is not None:
            body["http"] = dict(srv.stats)
        return json_response(body)

    # ------------------------------------------------------------------ Prometheus
    def own_parts() -> dict[str, Any]:
        parts: dict[str, Any] = {"uptime": time.time() - t0, "ingest": _call_stats(ingest_stats),
                                 "errors": errors(), "kinds": _reason_kinds(),
                                 "agents": agents_snapshot(), "interned": interned()}
        srv = server() if server is not None else None
        if srv is not None:
            parts["http"] = dict(srv.stats)
            parts["http_connections"] = srv.connections
        if thresholds is not None:
            parts["thresholds"] = thresholds.stats()
        ms = getattr(metrics, "stats", None)
        if callable(ms):
            parts["metrics"] = ms()
        if scripts is not None:
            parts["scripts"] = scripts.state()
        if scaler is not None:
            try:
                parts["scaler"] = scaler.state()
                parts["scaler_events"] = list(getattr(scaler, "events", []))
            except Exception:  # noqa: BLE001
                log.exception("scaler state unavailable for /metrics")
        return parts

    async def prometheus(req: Request) -> Response:
        agents_spec = _agents(req.params["agents"])
        names = _dump_names(req.params["metrics"])
        entries = await query_work(metrics, metrics.dump, agents_spec, names, _filters(req))
        if names != "ALL" and "ifname" not in names:
            # sFlow-RT labels interface series with ifname where the agent sends it
            try:
                entries = list(entries) + [e for e in await query_work(
                    metrics, metrics.dump, agents_spec, ["ifname"], _filters(req))]
            except ValueError:
                pass
        text = prometheus_text(entries)
        return Response(200, text.encode(), "text/plain; version=0.0.4; charset=utf-8")

    def prometheus_analyzer(req: Request) -> Response:
        st = analyzer_stats()
        fams: dict[str, Family] = {
            "sflow_analyzer_agent_count": ("gauge", "sFlow agents", [({}, st["sFlowAgents"])]),
            "sflow_analyzer_datagrams_received_total": (
                "counter", "sFlow datagrams received", [({}, st["sFlowDatagramsReceived"])]),
            "sflow_analyzer_datagrams_discarded_total": (
                "counter", "sFlow datagrams rejected", [({}, st["sFlowDatagramsDiscarded"])]),
            "sflow_analyzer_bytes_received_total": (
                "counter", "sFlow bytes received", [({}, st["sFlowBytesReceived"])]),
            "sflow_analyzer_flow_samples_total": (
                "counter", "flow samples", [({}, st["sFlowFlowSamples"])]),
            "sflow_analyzer_counter_samples_total": (
                "counter", "counter samples", [({}, st["sFlowCounterSamples"])]),
            "sflow_analyzer_datagrams_lost_total": (
                "counter", "datagrams lost (sequence gaps)", [({}, st["sFlowDatagramsLost"])]),
            "sflow_analyzer_uptime_seconds": ("gauge", "analyzer uptime",
                                              [({}, st["uptime"] / 1000.0)]),
        }
        return Response(200, _families_text(fams).encode(),
                        "text/plain; version=0.0.4; charset=utf-8")

    def own_metrics(req: Request) -> Response:
        return Response(200, own_metrics_text(own_parts()).encode(),
                        "text/plain; version=0.0.4; charset=utf-8")

    routes = [
        Route("GET", "/metric/{agents}/{metrics}/json", metric),
        Route("GET", "/metric/{agent}/json", agent_metric),
        Route("GET", "/dump/{agents}/{metrics}/json", dump),
        Route("GET", "/table/{agents}/{metrics}/json", table),
        Route("GET", "/agents/json", agents),
        Route("GET", "/metrics/json", names),
        Route("GET", "/analyzer/json", analyzer),
        Route("GET", "/version", version),
        Route("GET", "/version/json", version_json),
        Route("GET", "/healthz", health),
        Route("GET", "/errors/json", errors_json),
        Route("GET", "/prometheus/metrics/{agents}/{metrics}/txt", prometheus),
        Route("GET", "/prometheus/analyzer/txt", prometheus_analyzer),
        Route("GET", "/metrics", own_metrics),
    ]
    if thresholds is not None:
        routes += threshold_routes(thresholds, server)
    return routes


# ==================================================================================================
# Thresholds and events
# ==================================================================================================
def threshold_routes(thresholds: Any,
                     server: Callable[[], ApiServer | None] | None = None) -> list[Route]:
    """sFlow-RT ``/threshold/json``, ``/threshold/{name}/json`` and the ``/events/json`` long poll."""
    from fastflow.collector.thresholds import ThresholdError

    waiters: set[asyncio.Future[None]] = set()
    loop_ref: list[asyncio.AbstractEventLoop] = []

    def wake(_event: dict[str, Any]) -> None:
        # called from the evaluating thread: hand over to the loop
        if loop_ref:
            loop_ref[0].call_soon_threadsafe(_wake_all)

    def _wake_all() -> None:
        for f in list(waiters):
            if not f.done():
                f.set_result(None)

    thresholds.add_listener(wake)

    def get_all(req: Request) -> Response:
        return json_response(thresholds.all())

    def get(req: Request) -> Response:
        spec = thresholds.get(req.params["name"])
        if spec is None:
            raise HTTPError(404, f"no threshold {req.params['name']!r}")
        return json_response(spec)

    def put(req: Request) -> Response:
        try:
            return json_response(thresholds.set(req.params["name"], req.json()))
        except ThresholdError as exc:
            raise HTTPError(400, str(exc)) from None

    def delete(req: Request) -> Response:
        if not thresholds.delete(req.params["name"]):
            raise HTTPError(404, f"no threshold {req.params['name']!r}")
        return Response(204)

    async def events(req: Request) -> Response:
        ids = [i for v in req.query.get("thresholdID", []) for i in v.split(",") if i] or None
        after = _int_arg(req, "eventID", -1, -1, 2**62)
        max_events = _int_arg(req, "maxEvents", 100, 1, 10000)
        timeout = min(MAX_LONG_POLL, max(0.0, float(_int_arg(req, "timeout", 0, 0, 3600))))
        out = thresholds.events(after, max_events, ids)
        if out or timeout <= 0:
            return json_response(out)
        loop = asyncio.get_running_loop()
        if not loop_ref:
            loop_ref.append(loop)
        srv = server() if server is not None else None
        deadline = loop.time() + timeout
        while not out:
            left = deadline - loop.time()
            if left <= 0 or (srv is not None and srv.closing is not None and srv.closing.is_set()):
                break
            fut: asyncio.Future[None] = loop.create_future()
            waiters.add(fut)
            try:
                await asyncio.wait_for(fut, min(left, 1.0))
            except TimeoutError:
                pass
            finally:
                waiters.discard(fut)
            out = thresholds.events(after, max_events, ids)
        return json_response(out)

    return [
        Route("GET", "/threshold/json", get_all),
        Route("GET", "/threshold/{name}/json", get),
        Route("PUT", "/threshold/{name}/json", put, mutating=True),
        Route("POST", "/threshold/{name}/json", put, mutating=True),
        Route("DELETE", "/threshold/{name}/json", delete, mutating=True),
        Route("GET", "/events/json", events),
    ]
