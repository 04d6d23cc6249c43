"""Helpers for the API tests: run an ApiServer on a background event loop, talk raw HTTP to it."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import weakref
from collections.abc import Iterable
from typing import Any

from fastflow.web.api import ApiServer
from fastflow.web.http import Route


class ServerThread:
    """An :class:`ApiServer` on 127.0.0.1:0 running in its own thread and event loop."""

    def __init__(self, routes: Iterable[Route], **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = ApiServer(list(routes), "127.0.0.1", 0, **kwargs)
        self.agents = False      # tests note here whether agent statistics are mounted
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    @property
    def port(self) -> int:
        return self.server.port

    def connect(self, timeout: float = 5.0) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)


_LEFTOVER: weakref.WeakKeyDictionary[socket.socket, bytes] = weakref.WeakKeyDictionary()


def read_response(sock: socket.socket, head_only: bool = False
                  ) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response (Content-Length framed) from ``sock``.

    Bytes past the response (pipelined answers arriving in the same segment) are kept for the
    next call on the same socket.
    """
    buf = _LEFTOVER.pop(sock, b"")
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before the response head: {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = 0 if head_only else int(headers.get("content-length", "0"))
    while len(rest) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed in the body")
        rest += chunk
    if rest[n:]:
        _LEFTOVER[sock] = rest[n:]
    return status, headers, rest[:n]


def request(port: int, method: str, target: str, body: bytes = b"",
            headers: dict[str, str] | None = None, timeout: float = 10.0
            ) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection (Connection: close)."""
    hdrs = {"Host": "127.0.0.1", "Connection": "close", **(headers or {})}
    if body or method in ("POST", "PUT"):
        hdrs["Content-Length"] = str(len(body))
    raw = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw.encode() + b"\r\n" + body)
        return read_response(s, head_only=method == "HEAD")


def get_json(port: int, target: str, **kw: Any) -> tuple[int, Any]:
    status, _, body = request(port, "GET", target, **kw)
    return status, json.loads(body)
