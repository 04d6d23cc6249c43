"""REST routes of the top-flows engine (sFlow-RT's ``/flow``, ``/flowkeys``, ``/activeflows``).

The engine (:class:`fastflow.collector.flows.FlowEngine`) offers plain methods (define, delete,
definition, definitions, active_flows, stats); this module turns requests into those calls and their
errors into HTTP answers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from fastflow.collector.flowfilter import KEYS, FilterError
from fastflow.collector.flows import FlowEngine
from fastflow.web.http import HTTPError, Request, Response, Route, json_response

DEFINITION_FIELDS = {"keys", "value", "filter", "t", "n", "fs", "log", "flowStart", "activeTimeout"}


def flow_routes(engine: FlowEngine) -> list[Route]:
    """The sFlow-RT flow endpoints (see README) for ``engine``."""

    def flowkeys(req: Request) -> Response:
        return json_response({k: v.description for k, v in KEYS.items()})

    def get(req: Request) -> Response:
        d = engine.definition(req.params["name"])
        if d is None:
            raise HTTPError(404, f"no flow definition {req.params['name']!r}")
        return json_response(d.spec())

    def put(req: Request) -> Response:
        body = req.json()
        if not isinstance(body, dict):
            raise HTTPError(400, "flow definition must be a JSON object "
                                 '{"keys", "value", "filter", "t", "n"}')
        unknown = set(body) - DEFINITION_FIELDS
        if unknown:
            raise HTTPError(400, f"unknown flow definition field(s): {', '.join(sorted(unknown))}")
        if "keys" not in body:
            raise HTTPError(400, "flow definition needs \"keys\"")
        try:
            d = engine.define(req.params["name"], body["keys"], body.get("value", "bytes"),
                              body.get("filter"), body.get("t", 2.0), body.get("n", 100))
        except FilterError as exc:
            raise HTTPError(400, str(exc)) from None
        return json_response(d.spec())

    def delete(req: Request) -> Response:
        if not engine.delete(req.params["name"]):
            raise HTTPError(404, f"no flow definition {req.params['name']!r}")
        return Response(204)

    def active(req: Request) -> Response:
        def num(name: str, default: float | None, cast: Callable[[str], float]) -> float | None:
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
        max_flows = num("maxFlows", None, int)
        min_value = num("minValue", 0.0, float)
        try:
            out = engine.active_flows(req.params["agents"], req.params["name"],
                                      None if max_flows is None else int(max_flows),
                                      float(min_value or 0.0), req.arg("aggMode", "max") or "max")
        except KeyError:
            raise HTTPError(404, f"no flow definition {req.params['name']!r}") from None
        except FilterError as exc:
            raise HTTPError(400, str(exc)) from None
        return json_response(out)

    return [
        Route("GET", "/flowkeys/json", flowkeys),
        Route("GET", "/flowstats/json", lambda r: json_response(engine.stats())),
        Route("GET", "/flow/json", lambda r: json_response(engine.definitions())),
        Route("GET", "/flow/{name}/json", get),
        Route("PUT", "/flow/{name}/json", put, mutating=True),
        Route("POST", "/flow/{name}/json", put, mutating=True),
        Route("DELETE", "/flow/{name}/json", delete, mutating=True),
        Route("GET", "/activeflows/{agents}/{name}/json", active),
    ]
