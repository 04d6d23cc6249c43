"""The HTTP client behind a script's ``http()`` and ``http2()`` (sFlow-RT's JavaScript API).

Only the hosts the operator allows are reached (:class:`AllowList`; by default the Docker API host
of the scaler configuration). ``certs`` names a directory holding ``ca.pem``, ``cert.pem`` and
``key.pem``: the server is verified against ``ca.pem`` and the client presents ``cert.pem``/
``key.pem`` — the layout ``docker --tlsverify`` uses, and what the seed's ``elb.js`` passes to reach
``https://manager:2376``. Redirects are not followed; every request has a timeout and a cap on the
answer's size.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import ssl
import urllib.parse
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

DEFAULT_TIMEOUT = 10.0
MAX_BODY = 16 << 20


class FetchError(Exception):
    """A request refused or failed; the message is what the script's exception says."""


def _norm_host(host: str) -> str:
    host = host.strip().lower().strip("[]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


class AllowList:
    """Hosts a script may reach: entries ``host`` (any port) or ``host:port`` (``[v6]:port``)."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.entries: set[tuple[str, int | None]] = set()
        for e in entries:
            e = str(e).strip()
            if not e:
                continue
            if "://" in e:
                u = urllib.parse.urlsplit(e)
                if not u.hostname:
                    raise ValueError(f"http_allow entry {e!r}: no host")
                self.entries.add((_norm_host(u.hostname), u.port))
                continue
            host, port = e, None
            if e.startswith("["):
                inner, _, rest = e[1:].partition("]")
                host, port = inner, (int(rest[1:]) if rest.startswith(":") else None)
            elif e.count(":") == 1:
                host, p = e.split(":")
                port = int(p)
            self.entries.add((_norm_host(host), port))

    def allows(self, host: str, port: int) -> bool:
        h = _norm_host(host)
        return (h, port) in self.entries or (h, None) in self.entries

    def __bool__(self) -> bool:
        return bool(self.entries)

    def describe(self) -> list[str]:
        return sorted(f"{h}:{p}" if p is not None else h for h, p in self.entries)


def tls_context(certs: str | Path | None) -> ssl.SSLContext:
    """Verification against ``certs/ca.pem`` plus the client pair, or the system CAs."""
    if not certs:
        return ssl.create_default_context()
    d = Path(certs).expanduser()
    missing = [n for n in ("ca.pem", "cert.pem", "key.pem") if not (d / n).is_file()]
    if missing:
        raise FetchError(f"certs {d}: missing {', '.join(missing)}")
    try:
        ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
        ctx.load_cert_chain(str(d / "cert.pem"), str(d / "key.pem"))
    except (ssl.SSLError, OSError) as exc:
        raise FetchError(f"certs {d}: {exc}") from None
    return ctx


def request(url: str, method: str = "GET", headers: Mapping[str, Any] | None = None,
            body: Any = None, certs: str | Path | None = None, user: str | None = None,
            password: str | None = None, *, allow: AllowList, timeout: float = DEFAULT_TIMEOUT,
            max_body: int = MAX_BODY) -> dict[str, Any]:
    """One request; ``{"status", "headers", "body"}`` (body as text). FetchError otherwise."""
    if not isinstance(url, str):
        raise FetchError("url must be a string")
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise FetchError(f"only http:// and https:// URLs with a host, not {url!r}")
    try:
        port = u.port or (443 if u.scheme == "https" else 80)
    except ValueError:
        raise FetchError(f"bad port in {url!r}") from None
    if not allow.allows(u.hostname, port):
        raise FetchError(f"{u.hostname}:{port} is not allowed ([scripts] http_allow: "
                         f"{', '.join(allow.describe()) or 'empty'})")
    method = str(method or "GET").upper()
    if not method.isalpha() or len(method) > 16:
        raise FetchError(f"bad method {method!r}")
    hdrs = {str(k): str(v) for k, v in (headers or {}).items()}
    data: bytes | None
    if body is None:
        data = None
    elif isinstance(body, str):
        data = body.encode()
    else:                                   # an object: sent as JSON
        data = json.dumps(body).encode()
        if not any(k.lower() == "content-type" for k in hdrs):
            hdrs["Content-Type"] = "application/json"
    if user is not None:
        cred = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        hdrs["Authorization"] = f"Basic {cred}"
    target = u.path or "/"
    if u.query:
        target += "?" + u.query
    conn: http.client.HTTPConnection
    if u.scheme == "https":
        conn = http.client.HTTPSConnection(u.hostname, port, timeout=timeout,
                                           context=tls_context(certs))
    else:
        conn = http.client.HTTPConnection(u.hostname, port, timeout=timeout)
    try:
        conn.request(method, target, data, hdrs)
        resp = conn.getresponse()
        raw = resp.read(max_body + 1)
        if len(raw) > max_body:
            raise FetchError(f"answer from {url} larger than {max_body} bytes")
        return {"status": resp.status, "headers": dict(resp.getheaders()),
                "body": raw.decode("utf-8", "replace")}
    except (OSError, http.client.HTTPException) as exc:
        raise FetchError(f"{method} {url}: {exc}") from None
    finally:
        conn.close()
