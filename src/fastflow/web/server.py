"""The HTTP server: aiohttp's low-level server under fastflow's routes, with the guards a daemon needs.

aiohttp parses requests (line, header count and size limits, chunked bodies, keep-alive, pipelining)
and shuts down gracefully; this module adds what a collector next to browsers and scanners needs:

* **A connection cap** below the file-descriptor limit (``max_connections``; default: half the soft
  ``RLIMIT_NOFILE``, at most 4096). At the cap the connection idle longest (no request in flight) is
  closed to make room; when none is idle the new one is refused. Either way a rate-limited warning
  says so and :attr:`ApiServer.stats` counts it. 1,100 idle sockets cannot lock the API out.
* **Timeouts**: a connection must complete its first request head within ``header_timeout``; an idle
  keep-alive connection is closed after ``idle_timeout``; a body must arrive within ``body_timeout``
  (408). Request bodies over ``max_request_bytes`` are refused (413) before they are read.
* **Host check** against DNS rebinding: a ``Host`` that is a name must be ``localhost``, the bind
  name, this machine's host name, or one of ``allowed_hosts`` (``"*"`` allows any); IP literals are always accepted (a
  rebinding page cannot present one). Unknown names get 421.
* **No cross-site changes**: a request that changes state (a mutating route, or a GET carrying a
  route's ``mutates_on`` parameter such as sFlow-RT's ``?state=enabled``) is refused with 403 when
  ``Sec-Fetch-Site`` says cross-site/same-site or ``Origin``/``Referer`` names another host.
* **One token model**: when a token is configured, a state change needs ``Authorization: Bearer``
  with the API token or one of the route's own tokens (``Route.tokens``).

Handlers never leak a traceback: an unexpected exception is logged and answered with a bare 500.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import ipaddress
import logging
import mimetypes
import resource
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from fastflow import __version__
from fastflow.web.http import HTTPError, Request, Response, Route, error_response

__all__ = ["ApiServer", "MAX_REQUEST_BYTES", "is_loopback", "default_max_connections"]

log = logging.getLogger("fastflow.api")

MAX_REQUEST_BYTES = 1 << 20        # request body
HEADER_TIMEOUT = 10.0              # seconds for a new connection to send its first request head
IDLE_TIMEOUT = 30.0                # keep-alive: seconds an idle connection is kept
BODY_TIMEOUT = 30.0                # seconds to receive a declared body
MAX_HEADERS = 100
MAX_LINE = 8190                    # request line and each header field
_SLASH = "\x00"                    # stands for a percent-encoded "/" inside a path segment


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts local connections (127.0.0.0/8, ::1, "localhost")."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_max_connections() -> int:
    """Half the soft file-descriptor limit (room for the store, sockets, files), 16..4096."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):  # pragma: no cover
        soft = 1024
    if soft == resource.RLIM_INFINITY or soft <= 0:
        soft = 8192
    return max(16, min(4096, soft // 2))


class RateLimitedLog:
    """A warning at most every ``every`` seconds per key, saying how many were held back."""

    def __init__(self, logger: logging.Logger, every: float = 10.0) -> None:
        self.log = logger
        self.every = every
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < self.every:
            self._held[key] = self._held.get(key, 0) + 1
            return
        held = self._held.pop(key, 0)
        self._last[key] = now
        if held:
            self.log.warning(msg + " (%d more like this in the last %.0f s)", *args, held,
                             self.every)
        else:
            self.log.warning(msg, *args)


class _QuietProtocolErrors(logging.Filter):
    """aiohttp logs each malformed request with a traceback: keep one line, at most every 10 s."""

    def __init__(self) -> None:
        super().__init__()
        self._last = 0.0
        self.held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        record.exc_info = None
        record.exc_text = None
        if exc is not None:
            record.msg = "HTTP: rejected a malformed request: %s"
            record.args = (str(exc).replace("\n", " ").strip()[:200],)
            record.levelno, record.levelname = logging.INFO, "INFO"
        now = time.monotonic()
        if now - self._last < 10.0:
            self.held += 1
            return False
        self._last = now
        return True


_protocol_log = logging.getLogger("fastflow.api.protocol")
_protocol_log.addFilter(_QuietProtocolErrors())


# ==================================================================================================
# Connection guard
# ==================================================================================================
class _Conn(RequestHandler):
    """aiohttp's protocol with a connection cap and a first-request-head timeout."""

    _manager: _GuardedServer | None     # type: ignore[assignment]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        mgr = self._manager
        if mgr is None:  # pragma: no cover
            return
        self.ff_since = time.monotonic()
        if not mgr.api._admit(self):
            cast(asyncio.Transport, transport).abort()
            return
        self._head_timer: asyncio.TimerHandle | None = self._loop.call_later(
            mgr.api.header_timeout, self._head_timeout)

    def _head_timeout(self) -> None:
        self._head_timer = None
        if getattr(self, "_request_count", 1) == 0 and self.transport is not None:
            assert self._manager is not None
            self._manager.api._limit("header_timeout", "closed a connection that sent no "
                                     "request head within %.0f s", self._manager.api.header_timeout)
            self.transport.abort()

    def connection_lost(self, exc: BaseException | None) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
        if self._manager is not None:
            self._manager.api._forget(self)
        super().connection_lost(exc)

    @property
    def ff_idle(self) -> bool:
        return (getattr(self, "_current_request", None) is None
                and not getattr(self, "_messages", None))


class _GuardedServer(Server):
    def __init__(self, api: ApiServer, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, request_factory=self._make_guarded_request, **kwargs)
        self.api = api

    def __call__(self) -> RequestHandler:
        return _Conn(self, loop=self._loop, **self._kwargs)

    def _make_guarded_request(self, message: Any, payload: Any, protocol: Any, writer: Any,
                              task: Any) -> BaseRequest:
        return BaseRequest(message, payload, protocol, writer, task, self._loop,
                           client_max_size=self.api.max_request_bytes)


# ==================================================================================================
class ApiServer:
    """An aiohttp server for a list of routes (and an optional static directory).

    ``port`` 0 picks a free port; :attr:`port` holds the bound one after :meth:`start`.
    Routes are tried in order; the first whose pattern matches the path and whose method matches
    answers (GET routes answer HEAD too). A path that matches only with another method gets 405.
    """

    def __init__(self, routes: Iterable[Route], host: str = "127.0.0.1", port: int = 8008,
                 token: str | None = None, static_dir: str | Path | None = None, *,
                 max_request_bytes: int = MAX_REQUEST_BYTES, header_timeout: float = HEADER_TIMEOUT,
                 idle_timeout: float = IDLE_TIMEOUT, body_timeout: float = BODY_TIMEOUT,
                 max_connections: int = 0, allowed_hosts: Iterable[str] = ()) -> None:
        self.routes: list[Route] = list(routes)
        self.host = host
        self.port = port
        self.token = token or None
        self.static_dir = Path(static_dir).resolve() if static_dir else None
        self.max_request_bytes = max_request_bytes
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.body_timeout = body_timeout
        self.max_connections = max_connections or default_max_connections()
        hosts = {"localhost", "localhost.", host.lower(), socket.gethostname().lower()}
        configured = frozenset(h.strip().lower() for h in allowed_hosts if h.strip())
        self.allowed_hosts = frozenset(hosts | configured)
        self.trusted_origins = configured - {"*"}   # pages served under these names (a proxy)
        self.requests = 0                      # requests answered
        self.errors: dict[int, int] = {}       # answers by status >= 400
        self.stats: dict[str, int] = {"connections_evicted": 0, "connections_refused": 0,
                                      "header_timeouts": 0, "body_timeouts": 0,
                                      "hosts_refused": 0, "cross_site_refused": 0,
                                      "unauthorised": 0}
        self.closing: asyncio.Event | None = None   # set by stop(): streaming handlers end
        self._rlog = RateLimitedLog(log)
        self._server: asyncio.Server | None = None
        self._web: _GuardedServer | None = None
        self._conns: dict[_Conn, None] = {}    # insertion order = age

    def add_routes(self, routes: Iterable[Route]) -> None:
        """Append routes (before :meth:`start`, or at run time: they are matched per request)."""
        self.routes.extend(routes)

    @property
    def connections(self) -> int:
        return len(self._conns)

    # ---------------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Bind and listen. Raises ValueError for an unsafe configuration, OSError when binding fails."""
        if self.token is None and not is_loopback(self.host) and any(r.mutating for r in self.routes):
            names = ", ".join(sorted({f"{r.method} {r.pattern}" for r in self.routes if r.mutating}))
            raise ValueError(
                f"refusing to serve mutating routes ({names}) on non-loopback address {self.host!r} "
                "without a token: set [api] token (or FASTFLOW_API_TOKEN), or bind 127.0.0.1")
        self.closing = asyncio.Event()
        self._web = _GuardedServer(
            self, self._handle, keepalive_timeout=self.idle_timeout, max_headers=MAX_HEADERS,
            max_line_size=MAX_LINE, max_field_size=MAX_LINE, access_log=None,
            lingering_time=2.0, logger=_protocol_log)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._web, self.host, self.port,
                                                reuse_address=True, backlog=256)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self, timeout: float = 3.0) -> None:
        """Stop listening, let requests in flight finish (up to ``timeout``), close the rest."""
        if self._server is None:
            return
        if self.closing is not None:
            self.closing.set()            # streaming handlers (events, long polls) end now
        self._server.close()
        assert self._web is not None
        try:
            await asyncio.wait_for(self._web.shutdown(timeout), timeout + 1.0)
        except (TimeoutError, asyncio.CancelledError):
            pass
        for conn in list(self._conns):
            if conn.transport is not None:
                conn.transport.abort()
        await self._server.wait_closed()
        self._server = None

    @property
    def sockets(self) -> list[Any]:
        return list(self._server.sockets) if self._server else []

    # ---------------------------------------------------------------------------------- guards
    def _limit(self, key: str, msg: str, *args: Any) -> None:
        stat = {"header_timeout": "header_timeouts"}.get(key, key)
        if stat in self.stats:
            self.stats[stat] += 1
        self._rlog.warning(key, "HTTP: " + msg, *args)

    def _admit(self, conn: _Conn) -> bool:
        """Track ``conn``; at the cap close the connection idle longest, or refuse ``conn``."""
        if len(self._conns) >= self.max_connections:
            victim = next((c for c in self._conns if c.ff_idle), None)
            if victim is None:
                self._limit("connections_refused", "connection limit %d reached and every "
                            "connection busy: refused a new one ([api] max_connections)",
                            self.max_connections)
                return False
            self._conns.pop(victim, None)
            if victim.transport is not None:
                victim.transport.abort()
            self._limit("connections_evicted", "connection limit %d reached: closed the "
                        "connection idle longest ([api] max_connections)", self.max_connections)
        self._conns[conn] = None
        return True

    def _forget(self, conn: Any) -> None:
        self._conns.pop(conn, None)

    def _host_ok(self, host: str | None) -> bool:
        if not host or "*" in self.allowed_hosts:
            return True
        h = host.strip().lower()
        if h.startswith("["):
            name = h[1:].partition("]")[0]
        else:
            name = h.rsplit(":", 1)[0] if h.count(":") == 1 else h
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            return name in self.allowed_hosts

    def _foreign(self, req: Request) -> str | None:
        """Why this request comes from another site, or None."""
        site = req.headers.get("sec-fetch-site", "").lower()
        if site in ("cross-site", "same-site"):
            return f"Sec-Fetch-Site: {site}"
        host = req.headers.get("host", "").lower()
        for hdr in ("origin", "referer"):
            val = req.headers.get(hdr)
            if not val:
                continue
            if val == "null":
                return f"{hdr}: null"
            try:
                netloc = urlsplit(val).netloc.lower()
            except ValueError:
                return f"bad {hdr}"
            netloc = netloc.rpartition("@")[2]
            if netloc != host and urlsplit(val).hostname not in self.trusted_origins:
                return f"{hdr} {val[:80]!r} is not this server ({host!r})"
        return None

    def _authorised(self, req: Request, route: Route) -> bool:
        scheme, _, cred = req.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not cred.strip():
            return False
        given = cred.strip().encode()
        tokens = [self.token] + (list(route.tokens()) if route.tokens is not None else [])
        ok = False
        for t in tokens:
            if t and hmac.compare_digest(given, t.encode()):
                ok = True
        return ok

    def _tokens_configured(self, route: Route) -> bool:
        return bool(self.token) or (route.tokens is not None and any(route.tokens()))

    # ---------------------------------------------------------------------------------- requests
    async def _handle(self, request: BaseRequest) -> web.StreamResponse:
        conn = request.protocol
        if isinstance(conn, _Conn) and conn not in self._conns:
            self._conns[conn] = None     # re-admitted after an eviction race; keep counting right
        try:
            out = await self._answer(request)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - never a traceback on the wire
            log.exception("HTTP error: %s %s", request.method, request.path)
            out = error_response(500, "internal server error")
        if isinstance(out, web.StreamResponse):
            self.requests += 1
            return out
        self.requests += 1
        if out.status >= 400:
            self.errors[out.status] = self.errors.get(out.status, 0) + 1
        return self._to_aiohttp(out, request.method == "HEAD")

    @staticmethod
    def _to_aiohttp(resp: Response, head: bool) -> web.Response:
        body = resp.body if isinstance(resp.body, bytes | bytearray) else str(resp.body).encode()
        headers = {"Server": f"fastflow/{__version__}"}
        for k, v in resp.headers.items():
            if k.lower() in ("content-length", "content-type", "connection"):
                continue
            if "\r" in k or "\n" in k or "\r" in str(v) or "\n" in str(v):
                continue
            headers[k] = str(v)
        headers["Content-Type"] = resp.content_type
        # aiohttp sends the Content-Length of the body but no body for HEAD
        return web.Response(status=resp.status, body=bytes(body), headers=headers)

    async def _answer(self, request: BaseRequest) -> Response | web.StreamResponse:
        headers = {k.lower(): v for k, v in request.headers.items()}
        if not self._host_ok(headers.get("host")):
            self._limit("hosts_refused", "refused Host %r (DNS rebinding guard; [api] "
                        "allowed_hosts)", headers.get("host", "")[:80])
            return error_response(421, "unknown Host header: add it to [api] allowed_hosts")
        req = Request(method=request.method, path="/", headers=headers, raw=request)
        try:
            match_path = self._parse_target(req, request.rel_url.raw_path,
                                            request.rel_url.raw_query_string)
        except HTTPError as exc:
            return error_response(exc.status, exc.message)
        allowed: set[str] = set()
        for route in self.routes:
            params = route.match(match_path)
            if params is None:
                continue
            if route.method != req.method and not (req.method == "HEAD" and route.method == "GET"):
                allowed.add(route.method)
                continue
            req.params = {k: v.replace(_SLASH, "/") for k, v in params.items()}
            if route.changes_state(req):
                why = self._foreign(req)
                if why is not None:
                    self._limit("cross_site_refused", "refused a cross-site change %s %s (%s)",
                                req.method, req.path, why)
                    return error_response(403, f"cross-site request refused ({why})")
                req.authorised = self._authorised(req, route)
                if self._tokens_configured(route) and not req.authorised:
                    self.stats["unauthorised"] += 1
                    resp = error_response(401, "missing or wrong bearer token")
                    resp.headers["WWW-Authenticate"] = 'Bearer realm="fastflow"'
                    return resp
            else:
                req.authorised = self._authorised(req, route)
            if request.can_read_body:
                err = await self._read_body(request, req)
                if err is not None:
                    return err
            return await self._call(route, req)
        if req.method in ("GET", "HEAD") and self.static_dir is not None:
            static = self._static(req.path)
            if static is not None:
                return static
        if allowed:
            if "GET" in allowed:
                allowed.add("HEAD")
            resp = error_response(405, f"method {req.method} not allowed for {req.path}")
            resp.headers["Allow"] = ", ".join(sorted(allowed))
            return resp
        return error_response(404, f"no such resource: {req.path}")

    async def _read_body(self, request: BaseRequest, req: Request) -> Response | None:
        cl = request.content_length
        if cl is not None and cl > self.max_request_bytes:
            return error_response(413, f"request body of {cl} bytes exceeds the limit of "
                                       f"{self.max_request_bytes}")
        if request.headers.get("Expect", "").lower() == "100-continue" and request.version >= (1, 1):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")   # curl waits for it
        try:
            req.body = await asyncio.wait_for(request.read(), self.body_timeout)
        except TimeoutError:
            self._limit("body_timeouts", "request body not received within %.0f s",
                        self.body_timeout)
            return error_response(408, "request body timeout")
        except web.HTTPRequestEntityTooLarge:
            return error_response(413, f"request body exceeds the limit of "
                                       f"{self.max_request_bytes} bytes")
        return None

    @staticmethod
    def _parse_target(req: Request, raw_path: str, raw_query: str) -> str:
        try:
            segs = [unquote(s, errors="strict") for s in raw_path.split("/")]
            query = parse_qsl(raw_query, keep_blank_values=True, strict_parsing=False,
                              errors="strict", max_num_fields=200)
        except UnicodeDecodeError:
            raise HTTPError(400, "bad percent-encoding (not UTF-8)") from None
        except ValueError as exc:
            raise HTTPError(400, f"bad query string: {exc}") from None
        if any("\x00" in s for s in segs) or any("\x00" in k or "\x00" in v for k, v in query):
            raise HTTPError(400, "NUL byte in request target")
        req.path = "/".join(segs)
        q: dict[str, list[str]] = {}
        for k, v in query:
            q.setdefault(k, []).append(v)
        req.query = q
        return "/".join(s.replace("/", _SLASH) for s in segs)

    async def _call(self, route: Route, req: Request) -> Response | web.StreamResponse:
        try:
            result = route.handler(req)
            if inspect.isawaitable(result):
                result = await result
            if not isinstance(result, Response | web.StreamResponse):
                log.error("handler for %s %s returned %r, not a Response",
                          route.method, route.pattern, type(result).__name__)
                return error_response(500, "internal server error")
            return result
        except HTTPError as exc:
            status = exc.status if 400 <= exc.status <= 599 else 500
            return error_response(status, exc.message)
        except (ValueError, KeyError) as exc:
            msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            return error_response(400, f"bad request: {msg}")
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception:  # noqa: BLE001 - logged; the client gets no internals
            log.exception("handler error: %s %s", req.method, req.path)
            return error_response(500, "internal server error")

    def _static(self, path: str) -> Response | None:
        assert self.static_dir is not None
        rel = path.lstrip("/") or "index.html"
        if rel.endswith("/"):
            rel += "index.html"
        try:
            target = (self.static_dir / rel).resolve()
        except (OSError, RuntimeError, ValueError):
            return None
        if self.static_dir not in target.parents and target != self.static_dir:
            return None
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            return None
        try:
            body = target.read_bytes()
        except OSError:
            return None
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype in ("application/javascript", "application/json"):
            ctype += "; charset=utf-8"
        return Response(200, body, ctype, {"Cache-Control": "no-cache"})
