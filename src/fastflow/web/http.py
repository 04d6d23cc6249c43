"""HTTP request/response types and routing shared by every module that serves REST endpoints.

The server (:class:`fastflow.web.server.ApiServer`, on aiohttp) adapts each aiohttp request to a
:class:`Request` and each :class:`Response` back; modules contribute :class:`Route` lists. A handler
that streams (server-sent events) may return an ``aiohttp.web.StreamResponse`` it prepared on
``req.raw`` instead of a :class:`Response`.

Security flags on a :class:`Route` (enforced by the server, not by handlers):

* ``mutating``: the route changes state; it needs a valid token when one is configured and is
  refused (403) when the request comes from another site (``Origin``/``Referer``/``Sec-Fetch-Site``).
* ``mutates_on``: query parameters that turn a GET into a change (sFlow-RT's ``?state=enabled``):
  such a GET is treated exactly like a mutating request.
* ``tokens``: a callable giving extra tokens accepted on this route besides the API token
  (the scaler's own token on scaler routes). ``req.authorised`` tells the handler a valid token came.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


class HTTPError(Exception):
    """Raise from a handler to answer ``status`` with a JSON ``{"error": message}`` body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    query: dict[str, list[str]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    authorised: bool = False       # a valid bearer token (API token or a route token) came with it
    raw: Any = None                # the aiohttp request (streaming handlers prepare responses on it)

    def json(self) -> Any:
        """The body parsed as JSON; a 400 :class:`HTTPError` when it is not."""
        try:
            return json.loads(self.body or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise HTTPError(400, f"request body is not valid JSON: {exc}") from None

    def arg(self, name: str, default: str | None = None) -> str | None:
        """The first value of query parameter ``name``."""
        values = self.query.get(name)
        return values[0] if values else default


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(obj, separators=(",", ":"), allow_nan=False,
                                       default=_json_default).encode())


def error_response(status: int, message: str) -> Response:
    return json_response({"error": message, "status": status}, status)


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays, without importing numpy here
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


Handler = Callable[[Request], Any]   # -> Response | Awaitable[Response] (or a StreamResponse)


@dataclass
class Route:
    method: str
    pattern: str
    handler: Handler
    mutating: bool = False
    mutates_on: tuple[str, ...] = ()                       # GET query params that make it a change
    tokens: Callable[[], Iterable[str | None]] | None = None   # extra tokens accepted here
    _regex: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    def match(self, path: str) -> dict[str, str] | None:
        if self._regex is None:
            # {name} is one path segment; {name*} (last) is the rest of the path, slashes and all
            parts = re.split(r"(\{[a-zA-Z_]+\*?\})", self.pattern)
            rx = "".join(f"(?P<{p[1:-2]}>.+)" if p.endswith("*}") else
                         f"(?P<{p[1:-1]}>[^/]+)" if p.startswith("{") else re.escape(p)
                         for p in parts)
            self._regex = re.compile(f"^{rx}$")
        m = self._regex.match(path)
        return m.groupdict() if m else None

    def changes_state(self, req: Request) -> bool:
        """This request changes state: a mutating route, a GET carrying a ``mutates_on`` key, or
        any request carrying sFlow-RT's ``state=`` switch (:data:`STATE_PARAMS`, on every route,
        so a route that forgets its flag is still guarded)."""
        return (self.mutating or any(k in req.query for k in self.mutates_on)
                or any(k in req.query for k in STATE_PARAMS))


#: query parameters that make any request a state change (sFlow-RT's ``GET ...?state=enabled``)
STATE_PARAMS: tuple[str, ...] = ("state",)
