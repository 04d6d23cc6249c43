"""The REST API: a small asyncio HTTP/1.1 server and fastflow's core, sFlow-RT compatible routes.

:class:`ApiServer` serves a list of :class:`fastflow.web.http.Route` (contributed by this module, the
scaler and the flows engine) plus, optionally, a directory of static files (the dashboard). It is
deliberately small and defensive: keep-alive, ``Content-Length`` bodies only, a request size limit
(413), a header timeout (408), HEAD, 404/405, percent-decoding of path segments and query strings,
and never a traceback on the wire — a handler's unexpected exception is logged and answered with a
bare JSON 500. Mutating routes need ``Authorization: Bearer <token>`` when a token is configured, and
the server refuses to start on a non-loopback address with mutating routes and no token.

:func:`core_routes` exposes the metrics engine the way sFlow-RT does (``/metric``, ``/dump``,
``/agents/json``, ``/metrics/json``, ``/version``), plus ``/healthz``, ``/errors/json`` and a
Prometheus exposition at ``/prometheus/metrics/{agents}/{metrics}/txt``.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import ipaddress
import logging
import math
import mimetypes
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from fastflow import __version__
from fastflow.web.http import HTTPError, Request, Response, Route, error_response, json_response

__all__ = ["ApiServer", "core_routes", "prometheus_text", "MAX_REQUEST_BYTES"]

log = logging.getLogger("fastflow.api")

MAX_REQUEST_BYTES = 1 << 20        # request line + headers + body
MAX_HEADER_BYTES = 64 * 1024       # request line + headers
HEADER_TIMEOUT = 10.0              # seconds to receive a full header block once a request started
IDLE_TIMEOUT = 60.0                # keep-alive: seconds to wait for the next request
BODY_TIMEOUT = 30.0                # seconds to receive a declared body
MAX_HEADERS = 100

_REASONS = {
    200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 301: "Moved Permanently",
    304: "Not Modified", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict",
    411: "Length Required", 413: "Content Too Large", 415: "Unsupported Media Type",
    422: "Unprocessable Content", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}
_TOKEN_RX = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")   # RFC 9110 token (methods, header names)
_SLASH = "\x00"   # stands for a percent-encoded "/" inside a path segment while matching


class _Close(Exception):
    """Answer ``response`` then close the connection (protocol-level error)."""

    def __init__(self, response: Response | None) -> None:
        super().__init__()
        self.response = response


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts local connections (127.0.0.0/8, ::1, "localhost")."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiServer:
    """An asyncio HTTP/1.1 server for a list of routes (and an optional static directory).

    ``port`` 0 picks a free port; :attr:`port` holds the bound one after :meth:`start`.
    Routes are tried in order; the first whose pattern matches the path and whose method matches
    answers (GET routes answer HEAD too). A path that matches only with another method gets 405.
    """

    def __init__(self, routes: Iterable[Route], host: str = "127.0.0.1", port: int = 8008,
                 token: str | None = None, static_dir: str | Path | None = None, *,
                 max_request_bytes: int = MAX_REQUEST_BYTES, header_timeout: float = HEADER_TIMEOUT,
                 idle_timeout: float = IDLE_TIMEOUT, body_timeout: float = BODY_TIMEOUT) -> None:
        self.routes: list[Route] = list(routes)
        self.host = host
        self.port = port
        self.token = token or None
        self.static_dir = Path(static_dir).resolve() if static_dir else None
        self.max_request_bytes = max_request_bytes
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.body_timeout = body_timeout
        self.requests = 0                      # requests answered
        self.errors: dict[int, int] = {}       # answers by status >= 400
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()

    def add_routes(self, routes: Iterable[Route]) -> None:
        """Append routes (before :meth:`start`, or at run time: they are matched per request)."""
        self.routes.extend(routes)

    # ---------------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Bind and listen. Raises ValueError for an unsafe configuration, OSError when binding fails."""
        if self.token is None and not is_loopback(self.host) and any(r.mutating for r in self.routes):
            names = ", ".join(sorted({f"{r.method} {r.pattern}" for r in self.routes if r.mutating}))
            raise ValueError(
                f"refusing to serve mutating routes ({names}) on non-loopback address {self.host!r} "
                "without a token: set [api] token (or FASTFLOW_API_TOKEN), or bind 127.0.0.1")
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=MAX_HEADER_BYTES + 1024, reuse_address=True)
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        if self._server is not None:
            self._server.close()
            for task in list(self._conns):
                task.cancel()
            if self._conns:
                await asyncio.gather(*self._conns, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    @property
    def sockets(self) -> list[Any]:
        return list(self._server.sockets) if self._server else []

    # ---------------------------------------------------------------------------------- protocol
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        try:
            while True:
                keep = await self._one(reader, writer)
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001 - a connection must never take the server down
            log.exception("HTTP connection error")
        finally:
            if task is not None:
                self._conns.discard(task)
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            except (Exception, asyncio.CancelledError):  # noqa: BLE001
                pass

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read one request and answer it. Returns False when the connection must close."""
        # Idle wait for the first byte, then a bounded wait for the rest of the header block.
        try:
            first = await asyncio.wait_for(reader.read(1), self.idle_timeout)
        except TimeoutError:
            return False
        for _ in range(8):       # RFC 9112 2.2: ignore empty lines before a request line
            if first not in (b"\r", b"\n"):
                break
            try:
                first = await asyncio.wait_for(reader.read(1), self.header_timeout)
            except TimeoutError:
                return False
        if not first:
            return False
        head = first
        try:
            rest = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.header_timeout)
            head += rest
        except TimeoutError:
            await self._write(writer, error_response(408, "request header timeout"), False, False)
            return False
        except asyncio.LimitOverrunError:
            await self._write(writer, error_response(431, "request header block too large"),
                              False, False)
            return False
        except asyncio.IncompleteReadError:
            return False
        method = "GET"
        try:
            req, keep_alive = self._parse_head(head)
            method = req.method
            await self._read_body(reader, req, writer)
        except _Close as c:
            if c.response is not None:
                await self._write(writer, c.response, False, method == "HEAD")
            return False
        resp = await self._dispatch(req)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s -> %d (%d bytes)", req.method, req.path, resp.status, len(resp.body))
        await self._write(writer, resp, keep_alive, req.method == "HEAD")
        return keep_alive

    def _parse_head(self, head: bytes) -> tuple[Request, bool]:
        if len(head) > MAX_HEADER_BYTES:
            raise _Close(error_response(431, "request header block too large"))
        try:
            text = head[:-4].decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes everything
            raise _Close(error_response(400, "bad request encoding")) from None
        lines = text.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not _TOKEN_RX.match(parts[0]) or not parts[1]:
            raise _Close(error_response(400, "malformed request line"))
        method, target, version = parts
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            if version.startswith("HTTP/"):
                raise _Close(error_response(505, f"HTTP version {version} not supported"))
            raise _Close(error_response(400, "malformed request line"))
        if len(lines) - 1 > MAX_HEADERS:
            raise _Close(error_response(431, "too many header fields"))
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not _TOKEN_RX.match(name):
                raise _Close(error_response(400, f"malformed header line {line[:40]!r}"))
            key = name.lower()
            value = value.strip(" \t")
            if key in headers:
                if key in ("content-length", "host", "authorization"):
                    if headers[key] != value:
                        raise _Close(error_response(400, f"conflicting {key} headers"))
                    continue
                headers[key] = f"{headers[key]}, {value}"
            else:
                headers[key] = value
        conn = headers.get("connection", "").lower()
        if version == "HTTP/1.1":
            keep_alive = "close" not in conn
        else:
            keep_alive = "keep-alive" in conn
        if "transfer-encoding" in headers:
            raise _Close(error_response(501, "Transfer-Encoding is not supported; send Content-Length"))
        req = Request(method=method, path="/", headers=headers)
        self._parse_target(req, target)
        return req, keep_alive

    @staticmethod
    def _parse_target(req: Request, target: str) -> None:
        if target == "*" or not target.startswith("/"):
            raise _Close(error_response(400, "request target must be an absolute path"))
        raw_path, _, raw_query = target.partition("?")
        raw_path = raw_path.partition("#")[0]
        try:
            segs = [unquote(s, errors="strict") for s in raw_path.split("/")]
            query = parse_qsl(raw_query, keep_blank_values=True, strict_parsing=False,
                              errors="strict", max_num_fields=1000)
        except (UnicodeDecodeError, ValueError) as exc:
            raise _Close(error_response(400, f"bad percent-encoding in request target: {exc}")) \
                from None
        if any(_SLASH in s for s in segs) or any(_SLASH in k or _SLASH in v for k, v in query):
            raise _Close(error_response(400, "NUL byte in request target"))
        req.path = "/".join(segs)
        # for matching, a decoded "/" inside a segment must not split it
        req.params = {"__match__": "/".join(s.replace("/", _SLASH) for s in segs)}
        q: dict[str, list[str]] = {}
        for k, v in query:
            q.setdefault(k, []).append(v)
        req.query = q

    async def _read_body(self, reader: asyncio.StreamReader, req: Request,
                         writer: asyncio.StreamWriter | None = None) -> None:
        cl = req.headers.get("content-length")
        if cl is None:
            return
        if not cl.isdigit():
            raise _Close(error_response(400, "bad Content-Length"))
        n = int(cl)
        if n > self.max_request_bytes:
            raise _Close(error_response(
                413, f"request body of {n} bytes exceeds the limit of {self.max_request_bytes}"))
        if n and writer is not None and req.headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")   # curl waits for it on big bodies
            await writer.drain()
        if n:
            try:
                req.body = await asyncio.wait_for(reader.readexactly(n), self.body_timeout)
            except TimeoutError:
                raise _Close(error_response(408, "request body timeout")) from None
            except asyncio.IncompleteReadError:
                raise _Close(None) from None

    # ---------------------------------------------------------------------------------- routing
    async def _dispatch(self, req: Request) -> Response:
        match_path = req.params.pop("__match__", req.path)
        allowed: set[str] = set()
        for route in self.routes:
            params = route.match(match_path)
            if params is None:
                continue
            if route.method != req.method and not (req.method == "HEAD" and route.method == "GET"):
                allowed.add(route.method)
                continue
            if route.mutating and self.token is not None and not self._authorised(req):
                resp = error_response(401, "missing or wrong bearer token")
                resp.headers["WWW-Authenticate"] = 'Bearer realm="fastflow"'
                return self._count(resp)
            req.params = {k: v.replace(_SLASH, "/") for k, v in params.items()}
            return self._count(await self._call(route, req))
        if req.method in ("GET", "HEAD") and self.static_dir is not None:
            static = self._static(req.path)
            if static is not None:
                return self._count(static)
        if allowed:
            if "GET" in allowed:
                allowed.add("HEAD")
            resp = error_response(405, f"method {req.method} not allowed for {req.path}")
            resp.headers["Allow"] = ", ".join(sorted(allowed))
            return self._count(resp)
        return self._count(error_response(404, f"no such resource: {req.path}"))

    def _count(self, resp: Response) -> Response:
        self.requests += 1
        if resp.status >= 400:
            self.errors[resp.status] = self.errors.get(resp.status, 0) + 1
        return resp

    def _authorised(self, req: Request) -> bool:
        scheme, _, cred = req.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or self.token is None:
            return False
        return hmac.compare_digest(cred.strip().encode(), self.token.encode())

    async def _call(self, route: Route, req: Request) -> Response:
        try:
            result = route.handler(req)
            if inspect.isawaitable(result):
                result = await result
            if not isinstance(result, Response):
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
        except asyncio.CancelledError:
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

    async def _write(self, writer: asyncio.StreamWriter, resp: Response, keep_alive: bool,
                     head_only: bool) -> None:
        reason = _REASONS.get(resp.status, "Unknown")
        body = resp.body if isinstance(resp.body, bytes | bytearray) else str(resp.body).encode()
        lines = [f"HTTP/1.1 {resp.status} {reason}",
                 f"Content-Type: {resp.content_type}",
                 f"Content-Length: {len(body)}",
                 f"Connection: {'keep-alive' if keep_alive else 'close'}",
                 "Server: fastflow/" + __version__]
        for k, v in resp.headers.items():
            if k.lower() in ("content-length", "connection", "content-type"):
                continue
            if "\r" in k or "\n" in k or "\r" in str(v) or "\n" in str(v):
                continue
            lines.append(f"{k}: {v}")
        out = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        writer.write(out if head_only else out + body)
        await writer.drain()


# ==================================================================================================
# Core routes
# ==================================================================================================
RESERVED_QUERY = frozenset({"_", "callback"})   # cache busters / JSONP names, not filters


def _filters(req: Request) -> dict[str, list[str]]:
    """Query-string keys (other than reserved ones) are metric filters; several values = OR."""
    out: dict[str, list[str]] = {}
    for key, values in req.query.items():
        if key in RESERVED_QUERY:
            continue
        if not key:
            raise HTTPError(400, "empty filter name in query string")
        for v in values:
            try:
                re.compile(v)
            except re.error as exc:
                raise HTTPError(400, f"filter {key}={v!r} is not a valid regular expression: "
                                     f"{exc}") from None
        out[key] = list(values)
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


def _numeric_items(d: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    """Flatten nested dicts of numbers into (key_path, value) pairs."""
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            yield from _numeric_items(v, key + "_")
        elif _prom_value(v) is not None:
            yield key, v


def prometheus_text(entries: Sequence[Mapping[str, Any]], own: Mapping[str, Any]) -> str:
    """Prometheus text exposition 0.0.4.

    ``entries`` are :meth:`Metrics.dump` rows (agent, dataSource, metricName, metricValue,
    hostName); numeric values become gauges named as in sFlow-RT (``vir_cpu_utilization``) with
    labels agent, datasource, host. ``own`` is fastflow's own counters, already shaped as
    ``{metric_name: [(labels_dict, value), ...]}`` with names starting ``fastflow_``.
    """
    families: dict[str, list[str]] = {}
    for e in entries:
        val = _prom_value(e.get("metricValue"))
        if val is None:
            continue
        name = _prom_name(str(e.get("metricName", "")))
        labels = {"agent": e.get("agent", ""), "datasource": e.get("dataSource", "")}
        host = e.get("hostName") or e.get("host_name") or e.get("vir_host_name")
        if host:
            labels["host"] = host
        lab = ",".join(f'{k}="{_prom_label(v)}"' for k, v in labels.items())
        families.setdefault(name, []).append(f"{name}{{{lab}}} {val}")
    out: list[str] = []
    for name in sorted(families):
        out.append(f"# TYPE {name} gauge")
        out.extend(families[name])
    for name in sorted(own):
        series = own[name]
        kind = "counter" if name.endswith("_total") else "gauge"
        out.append(f"# TYPE {name} {kind}")
        for labels, value in series:
            val = _prom_value(value)
            if val is None:
                continue
            lab = ",".join(f'{k}="{_prom_label(v)}"' for k, v in labels.items())
            out.append(f"{name}{{{lab}}} {val}" if lab else f"{name} {val}")
    return "\n".join(out) + "\n"


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


def core_routes(pipeline: Any, metrics: Any, agentstats: Any = None,
                ingest_stats: Callable[[], Any] | None = None,
                started: float | None = None) -> list[Route]:
    """The sFlow-RT compatible query routes plus health, errors and Prometheus.

    ``pipeline`` gives decoder error counts (``errors()``) and the lock; ``metrics`` answers
    ``query``/``dump``/``names``; ``agentstats`` (optional) gives ``snapshot()``; ``ingest_stats``
    (optional) returns the UDP listener's counters (a dict, dataclass or named tuple).
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
                    n = len(view)
                    names = [view[i] for i in range(1, n)]
            else:
                names = [view[i] for i in range(1, len(view))]
            return {a: {} for a in names if a}
        snap = agentstats.snapshot()
        return dict(snap) if isinstance(snap, Mapping) else {"agents": snap}

    def metric(req: Request) -> Response:
        return json_response(metrics.query(_agents(req.params["agents"]),
                                           _metric_list(req.params["metrics"]), _filters(req)))

    def dump(req: Request) -> Response:
        return json_response(metrics.dump(_agents(req.params["agents"]),
                                          _metric_list(req.params["metrics"]), _filters(req)))

    def agents(req: Request) -> Response:
        return json_response(agents_snapshot())

    def names(req: Request) -> Response:
        return json_response(metrics.names())

    def version(req: Request) -> Response:
        return Response(200, __version__.encode(), "text/plain; charset=utf-8")

    def version_json(req: Request) -> Response:
        return json_response({"version": __version__, "implementation": "fastflow",
                              "compatible": "sFlow-RT REST API (subset)"})

    def health(req: Request) -> Response:
        ing = _call_stats(ingest_stats)
        errs = errors()
        kinds = _reason_kinds()
        return json_response({"status": "ok", "version": __version__,
                              "uptime": round(time.time() - t0, 3),
                              "ingest": ing,
                              "decoder": {"errors": errs, "rejected": sum(
                                  v for k, v in errs.items() if kinds.get(k, "error") == "error")},
                              "agents": len(agents_snapshot())})

    def errors_json(req: Request) -> Response:
        from fastflow._schema import REASONS
        errs = errors()
        kinds = _reason_kinds()
        return json_response({
            "errors": errs,
            "total": sum(v for k, v in errs.items() if kinds.get(k, "error") == "error"),
            "skipped": sum(v for k, v in errs.items() if kinds.get(k) == "skip"),
            "reasons": {n: {"kind": k, "description": d} for n, k, d in REASONS if n != "ok"}})

    def own_counters() -> dict[str, list[tuple[dict[str, str], Any]]]:
        own: dict[str, list[tuple[dict[str, str], Any]]] = {}
        for key, v in _numeric_items(_call_stats(ingest_stats)):
            name = _prom_name(f"fastflow_ingest_{key}")
            if not name.endswith("_total") and any(w in key for w in (
                    "datagrams", "bytes", "drops", "dropped", "batches", "errors", "received",
                    "truncated", "decoded")):
                name += "_total"
            own.setdefault(name, []).append(({}, v))
        errs = errors()
        kinds = _reason_kinds()
        names = [r for r in kinds if r != "ok"] + sorted(set(errs) - set(kinds))
        own["fastflow_decoder_rejected_total"] = [
            ({"reason": r, "kind": kinds.get(r, "error")}, errs.get(r, 0)) for r in names]
        snap = agents_snapshot()
        for agent, st in snap.items():
            if not isinstance(st, Mapping):
                continue
            for key, v in _numeric_items(st):
                own.setdefault(_agent_metric(key), []).append(({"agent": str(agent)}, v))
        own["fastflow_agents"] = [({}, len(snap))]
        own["fastflow_uptime_seconds"] = [({}, round(time.time() - t0, 3))]
        return own

    def prometheus(req: Request) -> Response:
        agents_spec = _agents(req.params["agents"])
        mspec = req.params["metrics"]
        wanted = list(metrics.names()) if mspec == "ALL" else _metric_list(mspec)
        entries = metrics.dump(agents_spec, wanted, _filters(req)) if wanted else []
        text = prometheus_text(entries, own_counters())
        return Response(200, text.encode(), "text/plain; version=0.0.4; charset=utf-8")

    return [
        Route("GET", "/metric/{agents}/{metrics}/json", metric),
        Route("GET", "/dump/{agents}/{metrics}/json", dump),
        Route("GET", "/agents/json", agents),
        Route("GET", "/metrics/json", names),
        Route("GET", "/version", version),
        Route("GET", "/version/json", version_json),
        Route("GET", "/healthz", health),
        Route("GET", "/errors/json", errors_json),
        Route("GET", "/prometheus/metrics/{agents}/{metrics}/txt", prometheus),
    ]


def _reason_kinds() -> dict[str, str]:
    from fastflow._schema import REASONS
    return {name: kind for name, kind, _ in REASONS}


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_AGENT_GAUGES = frozenset({"sub_agents", "last_update", "first_seen", "uptime"})


def _agent_metric(key: str) -> str:
    """Prometheus name of an ``/agents/json`` field: ``sFlowDatagramsLost`` ->
    ``fastflow_agent_datagrams_lost_total``; ``lastUpdate`` -> ``fastflow_agent_last_update``."""
    base = _snake(key[5:] if key.startswith("sFlow") else key)
    name = _prom_name(f"fastflow_agent_{base}")
    return name if base in _AGENT_GAUGES or name.endswith("_total") else name + "_total"


def _snake(name: str) -> str:
    return _CAMEL.sub("_", name).lower()
