"""Test helper: a real UDP receiver on 127.0.0.1 that collects datagrams in a thread (bounded)."""

from __future__ import annotations

import socket
import struct
import threading
import time


class Receiver:
    """Binds 127.0.0.1:0 and collects (monotonic time, bytes) until stopped, idle or full."""

    def __init__(self, max_datagrams: int = 2_000_000, idle: float = 1.0,
                 max_seconds: float = 60.0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.addr: tuple[str, int] = self.sock.getsockname()
        self.got: list[tuple[float, bytes]] = []
        self.max = max_datagrams
        self.idle = idle
        self.max_seconds = max_seconds
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        start = last = time.monotonic()
        while not self._stop.is_set() and len(self.got) < self.max:
            now = time.monotonic()
            if now - start > self.max_seconds or (self.got and now - last > self.idle):
                break
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            last = time.monotonic()
            self.got.append((last, data))

    def wait(self, n: int, timeout: float = 10.0) -> list[tuple[float, bytes]]:
        """Wait until n datagrams arrived (or timeout / idle), then stop and return them."""
        end = time.monotonic() + timeout
        while len(self.got) < n and time.monotonic() < end and self._t.is_alive():
            time.sleep(0.01)
        self.close()
        return self.got

    def close(self) -> None:
        self._stop.set()
        self._t.join(5)
        self.sock.close()


def header_fields(d: bytes) -> tuple[bytes, int, int, int]:
    """(agent address bytes, sub_agent_id, sequence_number, uptime) of a datagram."""
    at = struct.unpack_from(">I", d, 4)[0]
    h = 8 + {0: 0, 1: 4, 2: 16}[at]
    sub, seq, up = struct.unpack_from(">III", d, h)
    return d[8:h], sub, seq, up


def sample_seqs(d: bytes) -> list[tuple[int, bytes, int]]:
    """[(sample format, source bytes, sequence number)] of a datagram's samples."""
    at = struct.unpack_from(">I", d, 4)[0]
    h = 8 + {0: 0, 1: 4, 2: 16}[at]
    ns = struct.unpack_from(">I", d, h + 12)[0]
    p = h + 16
    out = []
    for _ in range(ns):
        fmt, ln = struct.unpack_from(">II", d, p)
        if fmt in (1, 2, 3, 4):
            src = d[p + 12:p + (20 if fmt in (3, 4) else 16)]
            out.append((fmt, src, struct.unpack_from(">I", d, p + 8)[0]))
        p += 8 + ln
    return out
