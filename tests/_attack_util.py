"""Issue #11's HTTP attacks (2, 4, 6, 7, 12), run against a real ``fastflow run`` on 127.0.0.1.

Shared by tests/test_http_attacks.py (asserts the bounds) and bench/http_attacks.py (prints the
before/after figures for any source tree). Every loop is bounded in count and time; traffic goes
only to 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from _service_util import Proc

SERVICE = "sflowpeer_burn"
CATASTROPHIC = "(.*.*)*!"           # exponential for a backtracking regex on any real name


class LimitedProc(Proc):
    """``fastflow run`` with ``ulimit -n`` = ``nofile`` (the usual 1024) and a chosen source tree."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, nofile: int = 1024,
                 src: str | None = None) -> None:
        self.lines = []
        full_env = {**os.environ, **(env or {})}
        if src:
            full_env["PYTHONPATH"] = src
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

        self.p = subprocess.Popen([sys.executable, "-m", "fastflow", "run", *args],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                  env=full_env, preexec_fn=limit)
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()


def config(tmp: Path, *, api_token: str = "", scaler_token: str = "") -> Path:
    cfg = tmp / "fastflow.toml"
    cfg.write_text(f"""
[collector]
bind = "127.0.0.1"
port = 0
[api]
bind = "127.0.0.1"
port = 0
token = "{api_token}"
[scaler]
enabled = false
dry_run = true
token = "{scaler_token}"
state_file = "{tmp / 'scaler-state.json'}"
[[scaler.services]]
service = "{SERVICE}"
util_min = 20.0
util_max = 80.0
replicas_max = 4
""")
    return cfg


@contextmanager
def service(tmp: Path, *, api_token: str = "", scaler_token: str = "", nofile: int = 1024,
            src: str | None = None) -> Iterator[tuple[LimitedProc, int, int]]:
    """(proc, sflow_port, http_port) of a running ``fastflow run``; stopped afterwards."""
    cfg = config(tmp, api_token=api_token, scaler_token=scaler_token)
    proc = LimitedProc("-c", str(cfg), env={"DOCKER_HOST": "unix:///nonexistent/docker.sock",
                                            "XDG_STATE_HOME": str(tmp)}, nofile=nofile, src=src)
    try:
        yield proc, proc.port("sFlow", 60), proc.port("HTTP", 60)
    finally:
        proc.stop(10)


def send(sflow_port: int, datagrams: list[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for d in datagrams:
            s.sendto(d, ("127.0.0.1", sflow_port))


def get(port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 10.0,
        method: str = "GET", body: bytes | None = None) -> tuple[int, Any]:
    """(status, parsed JSON or text) on a fresh connection; (0, reason) when it fails."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        raw = r.read()
        try:
            return r.status, json.loads(raw or b"null")
        except ValueError:
            return r.status, raw.decode("utf-8", "replace")
    except (OSError, http.client.HTTPException) as exc:
        return 0, f"{type(exc).__name__}: {exc}"
    finally:
        c.close()


def healthz_seconds(port: int, timeout: float = 10.0) -> float:
    """Seconds /healthz took to answer 200 (``inf`` when it did not within ``timeout``)."""
    t0 = time.monotonic()
    st, _ = get(port, "/healthz", timeout=timeout)
    return time.monotonic() - t0 if st == 200 else float("inf")


def wait_metrics(port: int, timeout: float = 20.0) -> bool:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        st, body = get(port, "/dump/ALL/vir_cpu_utilization/json")
        if st == 200 and isinstance(body, list) and len(body) >= 3:
            return True
        time.sleep(0.2)
    return False


# ---------------------------------------------------------------------------------------- attacks
def attack_regex(port: int, n: int = 4) -> tuple[list[threading.Thread], list[Any]]:
    """#2: ``n`` unauthenticated GETs with a catastrophic-backtracking filter, in parallel threads
    (each waits at most 5 s). Returns the threads and their (status, body) or (0, reason)."""
    path = ("/metric/ALL/avg:vir_cpu_utilization/json?vir_host_name=" + quote(CATASTROPHIC))
    out: list[Any] = [None] * n

    def one(i: int) -> None:
        out[i] = get(port, path, timeout=5.0)
    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    return threads, out


def idle_connections(port: int, n: int = 1100) -> list[socket.socket]:
    """#4: ``n`` TCP connections that never send a byte (bounded: connect timeout 2 s each)."""
    socks = []
    for _ in range(n):
        try:
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        except OSError:
            break
    return socks


def distinct_patterns(port: int, total: int = 20000, per_request: int = 64) -> int:
    """#6: ``total`` distinct filter patterns, ``per_request`` per GET (the filter's OR list),
    over one keep-alive connection. Returns the number of 200 answers."""
    ok = 0
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for start in range(0, total, per_request):
            q = "&".join(f"vir_host_name=x{i}y*" for i in range(start, min(total, start + per_request)))
            c.request("GET", "/metric/ALL/vir_cpu_utilization/json?" + q)
            r = c.getresponse()
            r.read()
            ok += r.status == 200
    finally:
        c.close()
    return ok


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
