"""UDP ingest: receive sFlow datagrams in batches on a dedicated thread.

:class:`UdpIngest` binds a UDP socket (IPv4, IPv6, or dual-stack for ``"::"``), asks for a large
receive buffer, and runs a receive thread that pulls up to ``batch`` datagrams per system call
(``recvmmsg`` in :mod:`fastflow.collector._ingest`; a ``recvfrom_into`` loop when that is not built) into one
preallocated buffer and hands each batch to ``on_batch(buf, offsets, lengths, ts, src)``:

* ``buf``: ``uint8`` array; datagram ``i`` is ``buf[offsets[i] : offsets[i] + lengths[i]]``
* ``offsets``, ``lengths``: ``int64`` arrays; ``ts``: ``float64`` arrival times (epoch seconds)
* ``src``: ``uint8`` array ``(n, 16)``, the sender's address (IPv4 as ``::ffff:a.b.c.d``);
  :func:`src_text` turns a row into text. Passed only when ``on_batch`` accepts five arguments.

The arrays are reused for the next batch: ``on_batch`` must copy what it keeps (decoding does).
An exception raised by ``on_batch`` is logged (rate limited) and counted, never fatal.
:meth:`UdpIngest.stats` returns the counters (datagrams, bytes, batches, truncated, kernel drops,
callback errors, receive buffer requested/granted).
"""

from __future__ import annotations

import inspect
import ipaddress
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["UdpIngest", "src_text", "OnBatch"]

OnBatch = Callable[..., Any]

_SO_RXQ_OVFL = 40       # Linux values, used when fastflow.collector._ingest is not built
_SO_TIMESTAMPNS = 35
_RCVTIMEO = 0.1         # seconds: how long stop() may wait for the receive thread to notice
_LINGER_STEP = 0.002    # seconds between two top-ups of a lingering batch


def src_text(row: np.ndarray | bytes) -> str:
    """Text of a 16-byte source address row (IPv4-mapped addresses as a dotted quad)."""
    a = ipaddress.IPv6Address(bytes(row))
    return str(a.ipv4_mapped) if a.ipv4_mapped is not None else str(a)


def allow_masks(specs: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(nets, masks)``, ``uint8 (m, 16)`` each, for addresses / CIDRs (IPv4 ones as IPv4-mapped
    IPv6, the way the receiver stores senders). Raises ValueError on a bad entry."""
    nets = np.zeros((len(specs), 16), np.uint8)
    masks = np.zeros((len(specs), 16), np.uint8)
    for j, spec in enumerate(specs):
        net = ipaddress.ip_network(str(spec).strip(), strict=False)
        if net.version == 4:
            net = ipaddress.IPv6Network((b"\0" * 10 + b"\xff\xff" + net.network_address.packed,
                                         96 + net.prefixlen))
        nets[j] = np.frombuffer(net.network_address.packed, np.uint8)
        masks[j] = np.frombuffer(net.netmask.packed, np.uint8)
    return nets, masks


def _accepts_src(fn: OnBatch) -> bool:
    """Whether ``fn`` takes a fifth positional argument (the source addresses)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return True
    positional = [p for p in params if p.kind in (inspect.Parameter.POSITIONAL_ONLY,
                                                  inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 5


class _PyReceiver:
    """Fallback batch receiver (``recvfrom_into`` loop) with the same attributes as _ingest's."""

    def __init__(self, sock: socket.socket, batch: int, slot: int) -> None:
        self.sock = sock
        self.batch = batch
        self.slot = slot
        self.buf = np.zeros(batch * slot, dtype=np.uint8)
        self.offsets = np.zeros(batch, dtype=np.int64)
        self.lengths = np.zeros(batch, dtype=np.int64)
        self.ts = np.zeros(batch, dtype=np.float64)
        self.src = np.zeros((batch, 16), dtype=np.uint8)
        self.port = np.zeros(batch, dtype=np.uint16)
        self.datagrams = self.bytes = self.calls = self.truncated = self.kernel_drops = 0
        self.rejected = 0
        self.next_slot = 0
        self._mv = self.buf.data
        self._allow: list[tuple[np.ndarray, np.ndarray]] = []

    def set_allow(self, nets: np.ndarray, masks: np.ndarray) -> None:
        """Like ``_ingest.Receiver.set_allow``."""
        self._allow = [(np.asarray(n, np.uint8) & np.asarray(m, np.uint8), np.asarray(m, np.uint8))
                       for n, m in zip(nets, masks, strict=True)]

    def recv(self, first: int = 0, k0: int = 0, wait: bool = True) -> int:
        """Like ``_ingest.Receiver.recv``: rows at [0:k] (appended from ``k0`` into slots from
        ``first``), or -1 when nothing came."""
        if not 0 <= k0 <= first < self.batch:
            raise ValueError("recv: need 0 <= k0 <= first < batch")
        k = k0
        slot = self.slot
        self.next_slot = first
        for i in range(first, self.batch):
            try:
                n, addr = self.sock.recvfrom_into(self._mv[i * slot : (i + 1) * slot], 0,
                                                  0 if i == first and wait else socket.MSG_DONTWAIT)
            except (BlockingIOError, TimeoutError, InterruptedError):
                if i == first:
                    return -1
                break
            if not addr:  # socket shut down
                break
            if i == first:
                self.calls += 1
            self.next_slot = i + 1
            if n >= slot:  # filled the slot, spare byte included: oversize, cut by the kernel
                self.truncated += 1
                continue
            self.offsets[k] = i * slot
            self.lengths[k] = n
            self.ts[k] = time.time()
            ip = ipaddress.ip_address(addr[0].split("%")[0])
            packed = ip.packed if ip.version == 6 else b"\0" * 10 + b"\xff\xff" + ip.packed
            self.src[k] = np.frombuffer(packed, np.uint8)
            self.port[k] = addr[1]
            if self._allow and not any(np.array_equal(self.src[k] & m, n) for n, m in self._allow):
                self.rejected += 1
                continue
            self.datagrams += 1
            self.bytes += n
            k += 1
        return k


class UdpIngest:
    """Receive sFlow UDP datagrams on ``host:port`` and hand them to ``on_batch`` in batches.

    ``rcvbuf``: requested SO_RCVBUF in bytes (a WARNING names the sysctl to raise when the kernel
    grants less). ``batch``: most datagrams per batch. ``max_datagram``: largest datagram kept
    (bigger ones are counted as ``truncated`` and dropped). ``reuseport``: set SO_REUSEPORT so several
    ingest processes can share the port (the kernel spreads senders over them).
    ``port=0`` binds an ephemeral port; read :attr:`port` after :meth:`start`.
    """

    def __init__(self, host: str = "0.0.0.0", port: int = 6343, rcvbuf: int = 8 << 20,
                 batch: int = 1024, reuseport: bool = False,
                 on_batch: OnBatch | None = None, *, max_datagram: int = 9216,
                 pure_python: bool = False, linger: float = 0.02,
                 allow: Sequence[str] = (), on_idle: Callable[[], Any] | None = None) -> None:
        if not 0 <= int(port) <= 65535:
            raise ValueError(f"port must be 0..65535, not {port!r}")
        if not 1 <= int(batch) <= 65536:
            raise ValueError(f"batch must be 1..65536, not {batch!r}")
        if not 64 <= int(max_datagram) <= 65535:
            raise ValueError(f"max_datagram must be 64..65535, not {max_datagram!r}")
        if int(rcvbuf) < 0:
            raise ValueError(f"rcvbuf must be >= 0, not {rcvbuf!r}")
        if not 0.0 <= float(linger) <= 1.0:
            raise ValueError(f"linger must be 0..1 seconds, not {linger!r}")
        # A batch that comes back less than a quarter full waits this long (seconds) and is then
        # topped up with whatever arrived: at low and moderate rates the fixed per-batch costs
        # downstream (decode set-up, sinks, thread wake-ups, ~20-60 us) are paid at most 1/linger
        # times a second (50/s by default) instead of once per datagram.
        self.linger = float(linger)
        self.host = host
        self.port = int(port)
        self.rcvbuf = int(rcvbuf)
        self.batch = int(batch)
        self.reuseport = bool(reuseport)
        self.max_datagram = int(max_datagram)
        self.on_batch = on_batch
        # called from the receive thread when a receive times out (about every 0.1 s of silence):
        # housekeeping that must happen without traffic (expiry, memory given back)
        self.on_idle = on_idle
        # senders allowed (addresses / CIDRs; empty: every sender); checked here, before decoding
        self.allow = tuple(str(a) for a in allow)
        self._allow_arrays = allow_masks(self.allow)
        self._last_reject_log = 0.0
        self._rejected_logged = 0
        self.pure_python = pure_python or os.environ.get("FASTFLOW_PURE_PYTHON") == "1"
        self.rcvbuf_granted = 0
        self.sock: socket.socket | None = None
        self._rx: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._with_src = False
        self.batches = 0
        self.callback_errors = 0
        self.recv_errors = 0
        self.max_batch_seen = 0
        self._last_cb_log = 0.0
        self._proc_drops_base = 0

    # ------------------------------------------------------------------------------------ socket
    def _open(self) -> socket.socket:
        infos = socket.getaddrinfo(self.host or None, self.port, 0, socket.SOCK_DGRAM, 0,
                                   socket.AI_PASSIVE)
        if not infos:
            raise OSError(f"cannot resolve {self.host!r}")
        fam, typ, proto, _c, addr = infos[0]
        s = socket.socket(fam, typ, proto)
        try:
            if fam == socket.AF_INET6:
                # "::" listens on IPv4 too (IPv4 senders appear as ::ffff:a.b.c.d)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY,
                             0 if ipaddress.ip_address(str(addr[0]).split("%")[0]).is_unspecified else 1)
            if self.reuseport:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            self._set_rcvbuf(s)
            for opt in (_SO_RXQ_OVFL, _SO_TIMESTAMPNS):
                try:
                    s.setsockopt(socket.SOL_SOCKET, opt, 1)
                except OSError:
                    log.debug("socket option %d not supported", opt)
            s.settimeout(None)  # blocking, with a receive timeout so the thread can notice stop()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                         struct.pack("@ll", 0, int(_RCVTIMEO * 1e6)))
            s.bind(addr)
        except BaseException:
            s.close()
            raise
        self.port = s.getsockname()[1]
        return s

    def _set_rcvbuf(self, s: socket.socket) -> None:
        if not self.rcvbuf:
            self.rcvbuf_granted = s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            return
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, min(self.rcvbuf, 0x7FFFFFFF))
        except OSError as e:
            log.warning("SO_RCVBUF %d refused: %s", self.rcvbuf, e)
        got = s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        # Linux reports twice the usable size (it doubles the request for bookkeeping overhead)
        usable = got // 2 if os.uname().sysname == "Linux" else got
        self.rcvbuf_granted = usable
        if usable < self.rcvbuf:
            log.warning(
                "UDP receive buffer: asked for %d bytes, the kernel granted %d; bursts may be "
                "dropped. Raise the limit with: sysctl -w net.core.rmem_max=%d",
                self.rcvbuf, usable, self.rcvbuf)

    # ------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Bind the socket and start the receive thread (returns once bound)."""
        if self._thread is not None:
            raise RuntimeError("UdpIngest already started")
        self.sock = self._open()
        slot = self.max_datagram + 1  # one spare byte: a datagram filling its slot is not cut
        if self.pure_python:
            self._rx = _PyReceiver(self.sock, self.batch, slot)
        else:
            try:
                from fastflow.collector._ingest import Receiver  # noqa: PLC0415
            except ImportError:
                log.info("fastflow.collector._ingest not built; using the pure-Python receive loop")
                self._rx = _PyReceiver(self.sock, self.batch, slot)
            else:
                self._rx = Receiver(self.sock.fileno(), self.batch, min(slot, 65536))
        if self.allow:
            self._rx.set_allow(*self._allow_arrays)
        self._with_src = self.on_batch is not None and _accepts_src(self.on_batch)
        self._proc_drops_base = self._proc_drops() or 0
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"udp-ingest-{self.port}",
                                        daemon=True)
        self._thread.start()
        log.info("UDP ingest on %s port %d (batch %d, rcvbuf %d)", self.host, self.port,
                 self.batch, self.rcvbuf_granted)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the receive thread (within about 0.1 s) and close the socket; idempotent."""
        self._stop.set()
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RD)  # wakes a blocked receive at once on Linux
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("UDP ingest thread did not stop within %.1f s", timeout)
            self._thread = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self) -> UdpIngest:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ---------------------------------------------------------------------------------- thread
    def _run(self) -> None:
        rx = self._rx
        cb = self.on_batch
        with_src = self._with_src
        while not self._stop.is_set():
            try:
                n = rx.recv()
            except OSError as e:
                if self._stop.is_set():
                    break
                self.recv_errors += 1
                log.warning("UDP receive error: %s", e)
                time.sleep(0.01)
                continue
            if self.allow and rx.rejected != self._rejected_logged:
                now = time.monotonic()
                if now - self._last_reject_log >= 10.0:
                    self._last_reject_log = now
                    log.warning("dropped %d datagrams from senders outside [collector] agents "
                                "(%d in all)", rx.rejected - self._rejected_logged, rx.rejected)
                    self._rejected_logged = rx.rejected
            if n <= 0:
                if n < 0 and self.on_idle is not None:
                    try:
                        self.on_idle()
                    except Exception:  # noqa: BLE001 - the receive thread must survive it
                        self.callback_errors += 1
                        log.exception("on_idle failed")
                continue
            if self.linger and rx.next_slot < self.batch // 4:
                n = self._top_up(rx, n)
            self.batches += 1
            if n > self.max_batch_seen:
                self.max_batch_seen = n
            if cb is None:
                continue
            try:
                if with_src:
                    cb(rx.buf, rx.offsets[:n], rx.lengths[:n], rx.ts[:n], rx.src[:n])
                else:
                    cb(rx.buf, rx.offsets[:n], rx.lengths[:n], rx.ts[:n])
            except Exception:  # noqa: BLE001 - the receive thread must survive its consumer
                self.callback_errors += 1
                now = time.monotonic()
                if now - self._last_cb_log >= 10.0:
                    self._last_cb_log = now
                    log.exception("on_batch failed (%d failures so far)", self.callback_errors)

    def _top_up(self, rx: Any, n: int) -> int:
        """Let a sparse batch fill until it is a quarter full or ``linger`` has passed. The first
        wait is ``_LINGER_STEP`` (2 ms); each next one is as long as the rate seen so far needs to
        fill the quarter (at most the rest of the linger): few wake-ups at low rates, and at high
        rates no more than about a quarter batch waits in the socket buffer. Returns the rows."""
        quarter = self.batch // 4
        t0 = time.monotonic()
        deadline = t0 + self.linger
        step = _LINGER_STEP
        have = rx.next_slot
        while rx.next_slot < quarter and not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(step, left))
            try:
                more = rx.recv(rx.next_slot, n, False)
            except OSError:
                break
            if more > n:
                n = more
            rate = (rx.next_slot - have) / max(time.monotonic() - t0, 1e-6)
            step = max(_LINGER_STEP, (quarter - rx.next_slot) / rate) if rate > 0 else left
        return n

    # ----------------------------------------------------------------------------------- stats
    def _proc_drops(self) -> int | None:
        """The socket's drop counter from /proc/net/udp{,6} (None when not found)."""
        if self.sock is None:
            return None
        try:
            inode = str(os.fstat(self.sock.fileno()).st_ino)
        except OSError:
            return None
        for name in ("/proc/net/udp", "/proc/net/udp6"):
            try:
                with open(name) as f:
                    next(f, None)
                    for line in f:
                        cols = line.split()
                        if len(cols) >= 13 and cols[9] == inode:
                            return int(cols[-1])
            except (OSError, ValueError):
                continue
        return None

    def stats(self) -> dict[str, Any]:
        """Counters since start: datagrams/bytes received, batches, truncated (oversize)
        datagrams, kernel drops (socket buffer overflows), callback and receive errors."""
        rx = self._rx
        drops = int(rx.kernel_drops) if rx is not None else 0
        proc = self._proc_drops()
        if proc is not None:
            drops = max(drops, proc - self._proc_drops_base)
        return {
            "datagrams": int(rx.datagrams) if rx is not None else 0,
            "bytes": int(rx.bytes) if rx is not None else 0,
            "batches": self.batches,
            "max_batch": self.max_batch_seen,
            "truncated": int(rx.truncated) if rx is not None else 0,
            "rejected_senders": int(rx.rejected) if rx is not None else 0,
            "kernel_drops": drops,
            "callback_errors": self.callback_errors,
            "recv_errors": self.recv_errors,
            "rcvbuf_requested": self.rcvbuf,
            "rcvbuf_granted": self.rcvbuf_granted,
            "port": self.port,
            "running": self.running,
        }
