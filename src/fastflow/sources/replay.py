"""``fastflow replay``: re-send a capture's sFlow datagrams over UDP.

Pacing: the capture's own timing scaled by ``--speed X`` (2 = twice as fast), a fixed ``--rate N``
datagrams/s, or (default, said at start) flat out: as fast as the socket takes them. Sending goes through ``sendmmsg(2)``
batches from Cython (``fastflow.sources._replay``, GIL released), so one process offers hundreds of
thousands of datagrams per second.

``--loop K`` sends the capture K times (0 = until interrupted or ``--duration``). With
``--rewrite-seq`` every loop's datagram sequence numbers, uptimes and sample sequence numbers are
shifted so that the collector sees each agent continue instead of restarting.

The destination must be given explicitly (``--to HOST:PORT``); the tests and benchmarks only ever
use 127.0.0.1.
"""

from __future__ import annotations

import argparse
import logging
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger("fastflow.replay")

CHUNK = 8192  # datagrams per send_batch call in fast mode (progress/stop checks in between)


def parse_hostport(text: str, default_port: int = 6343) -> tuple[str, int]:
    """``"127.0.0.1:6343"``, ``"[::1]:6343"``, ``"host"`` -> (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":") or str(default_port)
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, str(default_port)
    try:
        p = int(port)
    except ValueError:
        raise ValueError(f"bad port in {text!r}") from None
    if not host or not 0 < p < 65536:
        raise ValueError(f"bad destination {text!r}: expected HOST:PORT")
    return host, p


def connect_udp(host: str, port: int, sndbuf: int = 4 << 20) -> socket.socket:
    """A UDP socket connected to (host, port), with a large send buffer."""
    infos = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"cannot resolve {host}")
    fam, typ, proto, _c, addr = infos[0]
    s = socket.socket(fam, typ, proto)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    except OSError:
        pass
    s.connect(addr)
    return s


def send(sock: socket.socket, buf: np.ndarray | bytes, offsets: np.ndarray, lengths: np.ndarray,
         start: int = 0, stop: int = -1) -> tuple[int, int]:
    """Send datagrams start..stop-1 on a connected socket via sendmmsg; (sent, errors)."""
    from fastflow.sources._replay import send_batch

    sent, errors, _err = send_batch(sock.fileno(), buf, offsets, lengths, start, stop)
    return sent, errors


# --------------------------------------------------------------------------------------------------
# sequence / uptime rewriting across loops
# --------------------------------------------------------------------------------------------------
@dataclass
class SeqRewriter:
    """Where each datagram's sequence number, uptime and sample sequence numbers are, and by how
    much each must move per loop so that every agent looks continuous."""

    seq_off: np.ndarray      # byte offsets (into the capture buffer) of datagram sequence numbers
    seq_val: np.ndarray      # their original values (uint64)
    seq_step: np.ndarray     # per-loop shift of each
    up_off: np.ndarray
    up_val: np.ndarray
    up_step: np.ndarray
    sseq_off: np.ndarray     # sample sequence numbers
    sseq_val: np.ndarray
    sseq_step: np.ndarray
    skipped: int = 0         # datagrams too malformed to rewrite (sent as they are)

    @classmethod
    def build(cls, buf: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, ts: np.ndarray,
              period_s: float) -> SeqRewriter:
        raw = np.ascontiguousarray(buf, np.uint8).tobytes()
        seqs: list[tuple[int, int, tuple]] = []   # (offset, value, key)
        ups: list[tuple[int, int, tuple]] = []
        sseqs: list[tuple[int, int, tuple]] = []
        skipped = 0
        u32 = struct.Struct(">I").unpack_from
        for o, n in zip(offsets.tolist(), lengths.tolist(), strict=True):
            try:
                if n < 8 or u32(raw, o)[0] != 5:
                    raise ValueError
                at = u32(raw, o + 4)[0]
                alen = {0: 0, 1: 4, 2: 16}[at]
                h = o + 8 + alen
                if h + 16 > o + n:
                    raise ValueError
                akey = (bytes(raw[o + 4:h]), u32(raw, h)[0])
                seqs.append((h + 4, u32(raw, h + 4)[0], akey))
                ups.append((h + 8, u32(raw, h + 8)[0], akey))
                ns = u32(raw, h + 12)[0]
                p, end = h + 16, o + n
                for _ in range(min(ns, 10000)):
                    if p + 8 > end:
                        break
                    fmt, slen = u32(raw, p)[0], u32(raw, p + 4)[0]
                    body = p + 8
                    if body + slen > end:
                        break
                    if fmt in (1, 2, 3, 4) and slen >= 12:
                        src = bytes(raw[body + 4:body + (12 if fmt in (3, 4) else 8)])
                        sseqs.append((body, u32(raw, body)[0], (akey, fmt in (1, 3), src)))
                    p = body + slen
            except (ValueError, KeyError, struct.error):
                skipped += 1

        def arrays(items: list[tuple[int, int, tuple]], kind: str) -> tuple[np.ndarray, ...]:
            off = np.array([i[0] for i in items], dtype=np.int64)
            val = np.array([i[1] for i in items], dtype=np.uint64)
            lo: dict[tuple, int] = {}
            hi: dict[tuple, int] = {}
            for _o, v, k in items:
                lo[k] = min(lo.get(k, v), v)
                hi[k] = max(hi.get(k, v), v)
            if kind == "up":
                step_of = {}
                for k in lo:
                    vs = sorted(v for _o, v, kk in items if kk == k)
                    gaps = [b - a for a, b in zip(vs, vs[1:], strict=False) if b > a]
                    gap = int(np.median(gaps)) if gaps else 1000
                    step_of[k] = max(int(period_s * 1000), hi[k] - lo[k] + gap)
            else:
                step_of = {k: hi[k] - lo[k] + 1 for k in lo}
            step = np.array([step_of[i[2]] for i in items], dtype=np.uint64)
            return off, val, step

        so, sv, ss = arrays(seqs, "seq")
        uo, uv, us = arrays(ups, "up")
        qo, qv, qs = arrays(sseqs, "seq")
        return cls(so, sv, ss, uo, uv, us, qo, qv, qs, skipped)

    def apply(self, buf: np.ndarray, loop: int) -> None:
        """Write loop ``loop``'s values into ``buf`` (a copy of the capture buffer)."""
        from fastflow.sources._replay import put_be32

        k = np.uint64(loop)
        for off, val, step in ((self.seq_off, self.seq_val, self.seq_step),
                               (self.up_off, self.up_val, self.up_step),
                               (self.sseq_off, self.sseq_val, self.sseq_step)):
            if len(off):
                put_be32(buf, off, (val + k * step) & np.uint64(0xFFFFFFFF))


# --------------------------------------------------------------------------------------------------
# the replay loop
# --------------------------------------------------------------------------------------------------
@dataclass
class ReplayStats:
    """What a replay did."""

    sent: int = 0
    errors: int = 0
    bytes: int = 0
    loops: int = 0
    elapsed: float = 0.0
    skipped_rewrite: int = 0
    last_errno: int = 0      # errno of the last failed send (ECONNREFUSED: nothing listening)
    extra: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0


def replay(buf: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, ts: np.ndarray | None,
           dest: tuple[str, int], *, speed: float | None = None, rate: float | None = None,
           loops: int = 1, rewrite_seq: bool = False, duration: float | None = None,
           progress: Callable[[ReplayStats, int], None] | None = None,
           sock: socket.socket | None = None) -> ReplayStats:
    """Send datagrams (buf, offsets, lengths) to ``dest``.

    ``speed``: original pacing (from ``ts``) divided by speed; ``rate``: fixed datagrams/s; neither:
    as fast as possible. ``loops`` = 0 repeats until ``duration`` (seconds) runs out (or forever
    when duration is None: the CLI's Ctrl-C case); ``duration`` bounds any replay. ``progress(stats, total)`` is called a few times a second.
    """
    if speed is not None and rate is not None:
        raise ValueError("give speed or rate, not both")
    if speed is not None and speed <= 0 or rate is not None and rate <= 0:
        raise ValueError("speed and rate must be > 0")
    if loops < 0:
        raise ValueError("loops must be >= 0")
    offsets = np.ascontiguousarray(offsets, np.int64)
    lengths = np.ascontiguousarray(lengths, np.int64)
    base = np.ascontiguousarray(buf, np.uint8).reshape(-1)
    n = len(offsets)
    st = ReplayStats()
    if n == 0:
        return st
    ts_rel = np.zeros(n) if ts is None else np.asarray(ts, np.float64) - float(np.min(ts))
    if speed is not None and np.any(np.diff(ts_rel) < 0):
        order = np.argsort(ts_rel, kind="stable")
        offsets, lengths, ts_rel = offsets[order], lengths[order], ts_rel[order]
    gaps = np.diff(ts_rel)
    pos_gaps = gaps[gaps > 0]
    period = float(ts_rel[-1]) + (float(np.median(pos_gaps)) if len(pos_gaps) else 1.0)
    rewriter = SeqRewriter.build(base, offsets, lengths, ts_rel, period) if rewrite_seq else None
    if rewriter is not None:
        st.skipped_rewrite = rewriter.skipped
    work = base.copy() if rewriter is not None else base
    nbytes_loop = int(lengths.sum())
    own = sock is None
    s = sock if sock is not None else connect_udp(*dest)
    t0 = time.monotonic()
    deadline = t0 + duration if duration is not None else None
    last_progress = 0.0
    total = n * loops if loops else 0
    try:
        k = 0
        while loops == 0 or k < loops:
            if rewriter is not None and k > 0:
                rewriter.apply(work, k)
            if speed is not None:
                targets = (ts_rel + k * period) / speed
            elif rate is not None:
                targets = (np.arange(n, dtype=np.float64) + k * n) / rate
            else:
                targets = None
            i = 0
            while i < n:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                if targets is None:
                    j = min(n, i + CHUNK)
                else:
                    j = int(np.searchsorted(targets, now - t0, side="right"))
                    j = min(j, i + CHUNK)
                    if j <= i:
                        wait = float(targets[i]) - (now - t0)
                        if deadline is not None:
                            wait = min(wait, deadline - now)
                        time.sleep(min(max(wait, 0.0), 0.05))
                        continue
                from fastflow.sources._replay import send_batch

                sent, errs, err_no = send_batch(s.fileno(), work, offsets, lengths, i, j)
                st.sent += sent
                st.errors += errs
                if errs:
                    st.last_errno = int(err_no)
                i = j
                if progress is not None and now - last_progress > 0.2:
                    last_progress = now
                    st.elapsed = time.monotonic() - t0
                    progress(st, total)
            st.bytes += nbytes_loop if i == n else int(lengths[:i].sum())
            st.loops += 1 if i == n else 0
            if i < n:
                break
            k += 1
    finally:
        st.elapsed = time.monotonic() - t0
        if own:
            s.close()
    return st


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``fastflow replay``."""
    from fastflow._console import nonneg_int, port_number, positive_float

    p.add_argument("capture", help="pcap/pcapng capture holding sFlow datagrams")
    p.add_argument("--to", required=True, metavar="HOST:PORT",
                   help="collector to send to (required; e.g. 127.0.0.1:6343)")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=positive_float, metavar="X",
                      help="keep the capture's pacing, X times faster (1 = real time). "
                           "Default without --speed/--rate: flat out, as fast as the socket "
                           "takes them")
    pace.add_argument("--rate", type=positive_float, metavar="N",
                      help="fixed rate, datagrams per second")
    p.add_argument("--loop", type=nonneg_int, default=1, metavar="K",
                   help="send the capture K times (0 = until --duration or Ctrl-C)")
    p.add_argument("--rewrite-seq", action="store_true",
                   help="shift sequence numbers and uptime across loops (a continuous agent)")
    p.add_argument("--port", type=port_number, default=6343,
                   help="UDP port of the sFlow datagrams in the capture (0 = any UDP)")
    p.add_argument("--duration", type=positive_float, metavar="SECONDS",
                   help="stop after this many wall-clock seconds")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")


def main(args: argparse.Namespace) -> int:
    """Run ``fastflow replay``: 0 ok; 2 for bad arguments or a missing/non-capture file; 1 when
    datagrams could not be sent (the reason is named) or the capture holds none; 130 when Ctrl-C
    stops a finite replay (``--loop 0`` without ``--duration`` ends with Ctrl-C: exit 0)."""
    from fastflow import pcap
    from fastflow._console import (
        EXIT_FAILURE,
        EXIT_INTERRUPTED,
        EXIT_OK,
        EXIT_USAGE,
        Progress,
        check_destination,
        check_input_file,
        explain_send_errno,
        fail,
    )

    try:
        dest = parse_hostport(args.to)
    except ValueError as exc:
        return fail("replay", str(exc), EXIT_USAGE)
    problem = check_destination(*dest)
    if problem:
        return fail("replay", problem, EXIT_USAGE)
    path = Path(args.capture)
    problem = check_input_file(path)
    if problem:
        return fail("replay", problem, EXIT_USAGE)
    try:
        cap = pcap.read(path, port=args.port or None)
    except (OSError, ValueError) as exc:
        return fail("replay", f"cannot read {path}: {exc}", EXIT_USAGE)
    if len(cap.offsets) == 0:
        return fail("replay", f"no datagrams in {path} (port {args.port}; skipped: "
                    f"{cap.skipped})", EXIT_FAILURE)
    n = len(cap.offsets)
    span = float(cap.ts.max() - cap.ts.min()) if n else 0.0
    if args.speed is not None:
        pacing = f"the capture's timing at {args.speed:g}x ({span / args.speed:,.1f} s per loop)"
    elif args.rate is not None:
        pacing = f"{args.rate:,.0f} datagrams/s"
    else:
        pacing = "flat out, as fast as the socket takes them (--speed 1 keeps the capture's timing)"
    loops = "until Ctrl-C" if args.loop == 0 and args.duration is None else (
        "in a loop" if args.loop == 0 else f"{args.loop} time(s)")
    print(f"fastflow replay: {n:,} datagrams ({span:,.1f} s of capture) to {dest[0]}:{dest[1]} "
          f"{loops}, {pacing}" + (f", for at most {args.duration:g} s" if args.duration else ""),
          file=sys.stderr, flush=True)
    bar = Progress("replay", total=n * args.loop or None, unit="datagrams")
    try:
        st = replay(cap.buf, cap.offsets, cap.lengths, cap.ts, dest, speed=args.speed,
                    rate=args.rate, loops=args.loop, rewrite_seq=args.rewrite_seq,
                    duration=args.duration,
                    progress=(lambda st, _total: bar.update(st.sent, f", errors {st.errors}"))
                    if bar.enabled else None)
    except KeyboardInterrupt:
        bar.close()
        if args.loop == 0 and args.duration is None:
            print("fastflow replay: stopped (Ctrl-C)", file=sys.stderr)
            return EXIT_OK
        return fail("replay", "interrupted", EXIT_INTERRUPTED)
    except OSError as exc:
        bar.close()
        return fail("replay", f"cannot send to {args.to}: {exc.strerror or exc}", EXIT_FAILURE)
    except ValueError as exc:
        bar.close()
        return fail("replay", str(exc), EXIT_USAGE)
    bar.close()
    print(f"fastflow replay: sent {st.sent:,} datagrams ({st.bytes:,} bytes) to {dest[0]}:{dest[1]} "
          f"in {st.elapsed:.2f} s, {st.rate:,.0f}/s, {st.loops} loop(s), errors {st.errors}"
          + (f", {st.skipped_rewrite} not rewritable" if st.skipped_rewrite else ""),
          file=sys.stderr)
    if args.json:
        import json
        print(json.dumps({"sent": st.sent, "bytes": st.bytes, "errors": st.errors,
                          "loops": st.loops, "elapsed": st.elapsed, "rate": st.rate}))
    if st.errors:
        return fail("replay", f"{st.errors:,} datagrams were not sent: "
                    f"{explain_send_errno(st.last_errno, *dest)}", EXIT_FAILURE)
    return EXIT_OK
