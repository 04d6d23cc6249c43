"""REST routes of the top-flows engine: sFlow-RT's ``/flow``, ``/flowkeys``, ``/activeflows``,
``/flowvalue``, ``/flows`` (flow log) and ``/flowstats`` (fastflow's loss statistics).

The engine (:class:`fastflow.collector.flows.FlowEngine`) offers plain methods (define, delete,
definition, definitions, active_flows, flow_value, logged_flows, stats); this module turns requests
into those calls and their errors into HTTP answers. Shapes follow sFlow-RT's REST API (its OpenAPI
``api.yml`` and https://sflow-rt.com/reference.php): ``PUT``/``DELETE /flow/{name}/json`` answer
204 No Content. docs/flows.md documents every route.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

from fastflow.collector.flowfilter import FilterError, key_descriptions
from fastflow.collector.flows import VALUES, FlowEngine
from fastflow.web.http import HTTPError, Request, Response, Route, json_response

MAX_LOG_TIMEOUT = 60.0          # seconds a /flows/json request may wait for new flows
MAX_LOG_WAITERS = 64            # /flows/json requests waiting at once (more: 503)
MAX_LOG_FLOWS = 10_000          # records in one /flows/json answer
MAX_STATS_SOURCES = 10_000      # data sources in one /flowstats/json answer
LOG_POLL = 0.1                  # seconds between checks of a waiting /flows/json request


def _num(req: Request, name: str, default: float | None,
         cast: Callable[[str], float] = float) -> float | None:
    v = req.arg(name)
    if v is None or v == "":
        return default
    try:
        out = cast(v)
    except ValueError:
        raise HTTPError(400, f"{name} must be a number, not {v!r}") from None
    if not math.isfinite(out):
        raise HTTPError(400, f"{name} must be finite")
    return out


def flow_routes(engine: FlowEngine, *, log_poll: float = LOG_POLL) -> list[Route]:
    """The sFlow-RT flow endpoints (docs/flows.md) for ``engine``."""
    waiting = [0]

    def flowkeys(req: Request) -> Response:
        return json_response(key_descriptions())

    def get(req: Request) -> Response:
        d = engine.definition(req.params["name"])
        if d is None:
            raise HTTPError(404, f"no flow definition {req.params['name']!r}")
        return json_response(d.spec())

    def put(req: Request) -> Response:
        try:
            engine.define_spec(req.params["name"], req.json())
        except FilterError as exc:
            raise HTTPError(400, str(exc)) from None
        return Response(204)

    def delete(req: Request) -> Response:
        if not engine.delete(req.params["name"]):
            raise HTTPError(404, f"no flow definition {req.params['name']!r}")
        return Response(204)

    def active(req: Request) -> Response:
        max_flows = _num(req, "maxFlows", None, int)
        min_value = _num(req, "minValue", 0.0)
        try:
            out = engine.active_flows(req.params["agents"], req.params["name"],
                                      None if max_flows is None else int(max_flows),
                                      float(min_value or 0.0), req.arg("aggMode") or None)
        except KeyError:
            raise HTTPError(404, f"no flow definition {req.params['name']!r}") from None
        except FilterError as exc:
            raise HTTPError(400, str(exc)) from None
        return json_response(out)

    def flowvalue(req: Request) -> Response:
        key = req.arg("key")
        if key is None:
            raise HTTPError(400, "flowvalue needs ?key=<flow key>")
        try:
            v = engine.flow_value(req.params["agent"], req.params["name"], key)
        except KeyError:
            raise HTTPError(404, f"no flow definition for {req.params['name']!r} (the name is "
                                 "<dataSource>.<flow name>)") from None
        return json_response(v)

    async def logged(req: Request) -> Response:
        after = _num(req, "flowID", -1, int)
        max_flows = _num(req, "maxFlows", 100, int)
        timeout = _num(req, "timeout", 0.0)
        args: dict[str, Any] = {"name": req.arg("name") or None, "after": int(after or -1),
                                "max_flows": max(0, min(int(max_flows or 0), MAX_LOG_FLOWS))}
        engine.tick()
        out = engine.logged_flows(**args)
        wait = min(max(float(timeout or 0.0), 0.0), MAX_LOG_TIMEOUT)
        if out or wait <= 0:
            return json_response(out)
        if waiting[0] >= MAX_LOG_WAITERS:
            raise HTTPError(503, f"too many /flows/json requests waiting ({MAX_LOG_WAITERS})")
        waiting[0] += 1
        try:
            loop = asyncio.get_running_loop()
            end = loop.time() + wait
            seen = engine.last_flow_id()
            while not out and loop.time() < end:
                await asyncio.sleep(min(log_poll, max(0.0, end - loop.time())))
                engine.tick()
                newest = engine.last_flow_id()
                if newest != seen:
                    seen = newest
                    out = engine.logged_flows(**args)
        finally:
            waiting[0] -= 1
        return json_response(out)

    def stats(req: Request) -> Response:
        n = _num(req, "maxSources", 100, int)
        return json_response(engine.stats(max(0, min(int(n or 0), MAX_STATS_SOURCES))))

    def values(req: Request) -> Response:
        return json_response({k: v[2] for k, v in VALUES.items()})

    return [
        Route("GET", "/flowkeys/json", flowkeys),
        Route("GET", "/flowvalues/json", values),
        Route("GET", "/flowstats/json", stats),
        Route("GET", "/flow/json", lambda r: json_response(engine.definitions())),
        Route("GET", "/flow/{name}/json", get),
        Route("PUT", "/flow/{name}/json", put, mutating=True),
        Route("POST", "/flow/{name}/json", put, mutating=True),
        Route("DELETE", "/flow/{name}/json", delete, mutating=True),
        Route("GET", "/activeflows/{agents}/{name}/json", active),
        Route("GET", "/flowvalue/{agent}/{name}/json", flowvalue),
        Route("GET", "/flows/json", logged),
    ]
