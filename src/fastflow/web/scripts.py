"""REST routes of the script host: sFlow-RT's ``/script/{script}/json`` and a listing.

``GET|POST|PUT|DELETE /script/{file}/json`` (and deeper paths, ``/script/{file}/a/b/json``, up to
32 segments; an sFlow-RT application's script also at ``/app/{app}/scripts/{file}/.../json``, as
sFlow-RT serves ``app/{app}/scripts/{file}``) runs the script's ``setHttpHandler`` function with
sFlow-RT's request object ``{method, path, query, body, format}`` (``path`` the segments between the
file and the format; ``error`` set when a body is not JSON) and answers its returned value as JSON;
with ``/txt`` instead of ``/json`` a returned string is the plain-text answer (the Prometheus
exporter app answers that way). A handler that throws ``"not_found"`` / ``"bad_request"`` answers
404 / 400. ``GET /scripts/json`` lists the scripts and their state.

Safety, as for the rest of the mutating API: POST/PUT/DELETE are mutating routes (the bearer token
when one is set); a GET carrying query parameters (sFlow-RT apps switch state that way, e.g. the
seed's ``?state=enabled``) needs the token too when one is set; and a request a browser sends from
another origin (``Origin`` not this host, or ``Sec-Fetch-Site: cross-site``) is refused unless it is
a plain GET without parameters.
"""

from __future__ import annotations

import hmac
import json
import urllib.parse
from typing import Any

from fastflow.scripts.host import ScriptHost
from fastflow.web.http import HTTPError, Request, Response, Route, error_response, json_response

FORMATS = ("json", "txt")
MAX_SEGMENTS = 32


def _cross_origin(req: Request) -> bool:
    if req.headers.get("sec-fetch-site", "") in ("cross-site", "same-site"):
        return True
    origin = req.headers.get("origin")
    if not origin:
        return False
    if origin == "null":
        return True
    netloc = urllib.parse.urlsplit(origin).netloc.lower()
    return netloc != req.headers.get("host", "").lower()


def script_routes(host: ScriptHost, token: str | None = None) -> list[Route]:
    """The routes for ``host``'s scripts; ``token`` guards GETs with parameters (see above)."""
    token = token or host.token

    def check(req: Request) -> None:
        plain_get = req.method in ("GET", "HEAD") and not req.query
        if not plain_get and _cross_origin(req):
            raise HTTPError(403, "cross-origin requests may not drive scripts")
        if plain_get or token is None or req.method not in ("GET", "HEAD"):
            return                      # POST/PUT/DELETE: checked by the server (mutating)
        scheme, _, cred = req.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(cred.strip().encode(),
                                                                 token.encode()):
            raise HTTPError(401, "a GET with parameters to a script needs the bearer token")

    async def run(req: Request, name: str) -> Response:
        check(req)
        parts = req.params["tail"].split("/")
        fmt = parts.pop()
        if fmt not in FORMATS or len(parts) > MAX_SEGMENTS:
            raise HTTPError(404, f"no such route {req.path} (a script's paths end in /json or "
                                 f"/txt, with at most {MAX_SEGMENTS} segments before)")
        sreq: dict[str, Any] = {"method": req.method, "path": parts, "query": dict(req.query),
                                "format": fmt}
        if req.body:
            try:
                sreq["body"] = json.loads(req.body)
            except (ValueError, UnicodeDecodeError):
                sreq["body"] = req.body.decode("utf-8", "replace")
                sreq["error"] = "body is not valid JSON"
        ans = await host.http(name, sreq)
        if ans.status != 200:
            return error_response(ans.status, str(ans.value))
        if fmt == "txt" and isinstance(ans.value, str):
            return Response(200, ans.value.encode(), "text/plain; charset=utf-8")
        try:
            return json_response(ans.value)
        except (TypeError, ValueError):
            return error_response(500, f"script {name} answered a value that is not JSON")

    async def script(req: Request) -> Response:
        return await run(req, req.params["file"])

    async def app(req: Request) -> Response:
        return await run(req, f"{req.params['app']}/{req.params['file']}")

    def listing(req: Request) -> Response:
        return json_response(host.state())

    routes = [Route("GET", "/scripts/json", listing)]
    for pattern, handler in (("/script/{file}/{tail*}", script),
                             ("/app/{app}/scripts/{file}/{tail*}", app)):
        for method in ("GET", "POST", "PUT", "DELETE"):
            routes.append(Route(method, pattern, handler, mutating=method != "GET"))
    return routes
