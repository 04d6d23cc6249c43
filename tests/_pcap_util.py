"""Builders for capture files of every flavour fastflow.pcap reads (for tests of the reader).

Independent of fastflow.pcap on purpose: these write the formats from their specifications, so the
reader is checked against something it did not produce itself.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from pathlib import Path


def ipv4_udp(payload: bytes, src: str = "192.0.2.2", dst: str = "127.0.0.1", sport: int = 50000,
             dport: int = 6343, *, proto: int = 17, frag: int = 0, ihl: int = 5,
             udp_len: int | None = None) -> bytes:
    """An IPv4 packet; ``frag`` is the raw flags+offset word (0x2000 = MF)."""
    ulen = 8 + len(payload) if udp_len is None else udp_len
    opts = b"\x01" * (ihl * 4 - 20) if ihl >= 5 else b""
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + 8 + len(payload), 1, frag, 64,
                      proto, 0, ipaddress.IPv4Address(src).packed,
                      ipaddress.IPv4Address(dst).packed) + opts
    return hdr + struct.pack("!HHHH", sport, dport, ulen, 0) + payload


def ipv6_udp(payload: bytes, src: str = "2001:db8::2", dst: str = "::1", sport: int = 50000,
             dport: int = 6343, *, ext: Sequence[tuple[int, bytes]] = (), nh_last: int = 17) -> bytes:
    """An IPv6 packet with optional extension headers ``ext`` = [(type, body)]; body padded."""
    chain = b""
    types = [t for t, _ in ext] + [nh_last]
    for i, (t, body) in enumerate(ext):
        nxt = types[i + 1]
        if t == 44:  # fragment header: body is the 6 bytes after next-header/reserved
            chain += bytes([nxt, 0]) + body[:6].ljust(6, b"\0")
        else:
            total = 2 + len(body)
            total = (total + 7) // 8 * 8
            chain += bytes([nxt, total // 8 - 1]) + body.ljust(total - 2, b"\0")
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    first = types[0]
    hdr = struct.pack("!IHBB16s16s", 6 << 28, len(chain) + len(udp), first, 64,
                      ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed)
    return hdr + chain + udp


def eth(pkt: bytes, ethertype: int = 0x0800, vlans: Sequence[tuple[int, int]] = ()) -> bytes:
    """Ethernet frame; ``vlans`` = [(tpid, vid)] outermost first."""
    tags = b"".join(struct.pack("!HH", tpid, vid) for tpid, vid in vlans)
    return b"\x02" * 6 + b"\x04" * 6 + tags + struct.pack("!H", ethertype) + pkt


def sll(pkt: bytes, ethertype: int = 0x0800) -> bytes:
    return struct.pack("!HHH8sH", 0, 1, 6, b"\x02" * 6 + b"\0\0", ethertype) + pkt


def sll2(pkt: bytes, ethertype: int = 0x0800) -> bytes:
    return struct.pack("!HHIHBB8s", ethertype, 0, 1, 1, 0, 6, b"\x02" * 6 + b"\0\0") + pkt


def null(pkt: bytes, family: int = 2, endian: str = "<") -> bytes:
    return struct.pack(endian + "I", family) + pkt


def loop(pkt: bytes, family: int = 2) -> bytes:
    return struct.pack(">I", family) + pkt


def write_classic(path: Path, linktype: int, frames: Sequence[tuple[float, bytes]], *,
                  big: bool = False, ns: bool = False, snaplen: int = 262144,
                  caplens: Sequence[int | None] | None = None) -> Path:
    """Classic pcap; ``caplens[i]`` cuts frame i (snapping) when not None."""
    e = ">" if big else "<"
    magic = 0xA1B23C4D if ns else 0xA1B2C3D4
    out = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    unit = 1_000_000_000 if ns else 1_000_000
    for i, (ts, fr) in enumerate(frames):
        ticks = round(ts * unit)
        sec, frac = divmod(ticks, unit)
        cl = len(fr) if caplens is None or caplens[i] is None else caplens[i]
        assert cl is not None
        out.append(struct.pack(e + "IIII", sec, frac, cl, len(fr)) + fr[:cl])
    path.write_bytes(b"".join(out))
    return path


def _block(e: str, btype: int, body: bytes) -> bytes:
    body = body + b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack(e + "II", btype, n) + body + struct.pack(e + "I", n)


def _opt(e: str, code: int, val: bytes) -> bytes:
    return struct.pack(e + "HH", code, len(val)) + val + b"\0" * (-len(val) % 4)


def shb(big: bool = False) -> bytes:
    e = ">" if big else "<"
    return _block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1)
                  + _opt(e, 4, b"fastflow tests") + _opt(e, 0, b""))


def idb(linktype: int, big: bool = False, tsresol: int | None = None, tsoffset: int | None = None,
        snaplen: int = 0) -> bytes:
    e = ">" if big else "<"
    opts = b""
    if tsresol is not None:
        opts += _opt(e, 9, bytes([tsresol]))
    if tsoffset is not None:
        opts += _opt(e, 14, struct.pack(e + "q", tsoffset))
    if opts:
        opts += _opt(e, 0, b"")
    return _block(e, 1, struct.pack(e + "HHI", linktype, 0, snaplen) + opts)


def epb(iface: int, ticks: int, frame: bytes, big: bool = False, caplen: int | None = None) -> bytes:
    e = ">" if big else "<"
    cl = len(frame) if caplen is None else caplen
    return _block(e, 6, struct.pack(e + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, cl,
                                    len(frame)) + frame[:cl] + _opt(e, 1, b"comment")
                  + _opt(e, 0, b""))


def opb(iface: int, ticks: int, frame: bytes, big: bool = False) -> bytes:
    """Obsolete Packet Block (type 2)."""
    e = ">" if big else "<"
    return _block(e, 2, struct.pack(e + "HHIIII", iface, 0, ticks >> 32, ticks & 0xFFFFFFFF,
                                    len(frame), len(frame)) + frame)


def spb(frame: bytes, big: bool = False) -> bytes:
    e = ">" if big else "<"
    return _block(e, 3, struct.pack(e + "I", len(frame)) + frame)


def other_block(btype: int, body: bytes = b"\x00" * 8, big: bool = False) -> bytes:
    return _block(">" if big else "<", btype, body)
