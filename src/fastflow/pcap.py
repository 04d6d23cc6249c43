"""Capture files in, UDP datagrams out: the offline twin of :mod:`fastflow.collector.ingest`.

:func:`read` turns a whole capture (classic pcap or pcapng) into one :class:`Capture` whose payloads
sit back to back in a single ``uint8`` buffer, so a capture is decoded as one batch
(``Decoder.feed(cap.buf, cap.offsets, cap.lengths, cap.ts)``). :func:`iter_datagrams` streams the
same datagrams one at a time; :func:`write` writes a classic Ethernet/IPv4 (or IPv6)/UDP pcap (for
the simulator, replay tests and benchmarks).

Supported: classic pcap in both byte orders with micro- or nanosecond timestamps; pcapng (sections
in either byte order, interface link types, ``if_tsresol``/``if_tsoffset``, Enhanced, Simple and
obsolete Packet Blocks; other blocks are skipped). Link types: Ethernet (1, with 802.1Q/802.1ad/QinQ
tags), Linux cooked SLL (113) and SLL2 (276), raw IP (101, 228 IPv4, 229 IPv6, and 12/14 as some
systems write DLT_RAW), BSD loopback NULL (0) and LOOP (108). IPv4 and IPv6 (extension headers
walked) carrying UDP.

Frames that are not taken are counted in ``Capture.skipped`` by reason (:data:`SKIP_REASONS`):
``not_ip``, ``not_udp``, ``wrong_port``, ``fragment`` (non-first fragments, and first fragments whose
datagram is incomplete: no reassembly), ``short_frame`` (too short for its link/IP/UDP headers),
``bad_ip`` (bad IP version/header length or UDP length), ``snapped`` (UDP payload cut by the snap
length), ``unsupported_linktype``, and file-level ``truncated`` (the file ends inside a record: what
was read before is kept) and ``corrupt`` (an impossible record/block length: reading stops there).

The record walk and header parsing run in Cython (:mod:`fastflow._pcap`) when it is built; the
pure-Python path here is the fallback and the reference the tests compare against.
``FASTFLOW_PURE_PYTHON=1`` forces the pure-Python path.
"""

from __future__ import annotations

import ipaddress
import logging
import mmap
import os
import socket
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO, overload

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["PcapError", "Capture", "read", "iter_datagrams", "write", "SKIP_REASONS"]

# Reason codes, shared with _pcap.pyx (code 0 means "taken").
SKIP_REASONS: tuple[str, ...] = (
    "ok",
    "not_ip",
    "not_udp",
    "wrong_port",
    "fragment",
    "short_frame",
    "bad_ip",
    "snapped",
    "unsupported_linktype",
    "truncated",
    "corrupt",
)
_R = {name: i for i, name in enumerate(SKIP_REASONS)}
R_OK, R_NOT_IP, R_NOT_UDP, R_WRONG_PORT, R_FRAGMENT = 0, 1, 2, 3, 4
R_SHORT, R_BAD_IP, R_SNAPPED, R_LINKTYPE, R_TRUNCATED, R_CORRUPT = 5, 6, 7, 8, 9, 10

# Classic pcap magic numbers as read little-endian.
_MAGIC_US = 0xA1B2C3D4
_MAGIC_NS = 0xA1B23C4D
_PCAPNG_SHB = 0x0A0D0D0A
_BOM = 0x1A2B3C4D
_MAX_CAPLEN = 1 << 28  # a record claiming more than 256 MiB is corrupt

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_LOOP = 108
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
_MMAP_THRESHOLD = 8 << 20  # files this large are mapped, not read
SUPPORTED_LINKTYPES = frozenset({0, 1, 12, 14, 101, 108, 113, 228, 229, 276})

_VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
_AF_INET6_VALUES = (10, 23, 24, 28, 30)  # Linux, Windows, NetBSD/OpenBSD, FreeBSD, macOS


class PcapError(ValueError):
    """The file is not a capture this module can read (bad magic, truncated file header, ...)."""


class Sources(Sequence[str]):
    """The source address of each datagram, as text, without a string per datagram: an index
    per datagram into the table of distinct addresses. Compares equal to a list of the same
    addresses."""

    def __init__(self, names: list[str], index: np.ndarray) -> None:
        self._names = names
        self._index = index

    def __len__(self) -> int:
        return len(self._index)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self._names[j] for j in self._index[i].tolist()]
        return self._names[int(self._index[i])]

    def __iter__(self) -> Iterator[str]:
        names = self._names
        return (names[j] for j in self._index.tolist())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Sources({list(self)!r})"


@dataclass
class Capture:
    """The UDP datagrams of a capture, laid out for one decoder batch.

    Datagram ``i`` is ``buf[offsets[i] : offsets[i] + lengths[i]]``, captured at ``ts[i]`` (epoch
    seconds) from ``src[i]``.
    """

    buf: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray
    ts: np.ndarray
    src: Sequence[str]       # a list, or Sources (same behaviour, one index per datagram)
    skipped: dict[str, int] = field(default_factory=dict)
    linktype: int = LINKTYPE_ETHERNET

    def __len__(self) -> int:
        return len(self.offsets)

    def datagram(self, i: int) -> bytes:
        """Datagram ``i`` as bytes."""
        o = int(self.offsets[i])
        return self.buf[o : o + int(self.lengths[i])].tobytes()

    def datagrams(self) -> list[bytes]:
        """Every datagram as bytes (convenience for small captures and tests)."""
        return [self.datagram(i) for i in range(len(self))]


# --------------------------------------------------------------------------------------------------
# Frame parsing (pure Python reference; _pcap.pyx mirrors it exactly)
# --------------------------------------------------------------------------------------------------
def _parse_ip(fr: bytes, off: int, version: int, port: int) -> tuple[int, int, int, bytes, int]:
    """Parse IP + UDP at ``fr[off:]``; returns (reason, payload offset, length, src16, af)."""
    n = len(fr)
    if version == 4:
        if n - off < 20:
            return R_SHORT, 0, 0, b"", 0
        vihl = fr[off]
        ihl = (vihl & 0x0F) * 4
        if vihl >> 4 != 4 or ihl < 20:
            return R_BAD_IP, 0, 0, b"", 0
        if n - off < ihl:
            return R_SHORT, 0, 0, b"", 0
        frag = (fr[off + 6] << 8) | fr[off + 7]
        proto = fr[off + 9]
        src = fr[off + 12 : off + 16]
        if proto != 17:
            return R_NOT_UDP, 0, 0, b"", 0
        if frag & 0x1FFF:
            return R_FRAGMENT, 0, 0, b"", 0
        more = bool(frag & 0x2000)
        l4 = off + ihl
        af = 4
    elif version == 6:
        if n - off < 40:
            return R_SHORT, 0, 0, b"", 0
        if fr[off] >> 4 != 6:
            return R_BAD_IP, 0, 0, b"", 0
        nh = fr[off + 6]
        src = fr[off + 8 : off + 24]
        l4 = off + 40
        nonfirst = False
        more = False
        while nh in (0, 43, 44, 51, 60):
            if n - l4 < 8:
                return R_SHORT, 0, 0, b"", 0
            if nh == 44:
                fo = (fr[l4 + 2] << 8) | fr[l4 + 3]
                if fo >> 3:
                    nonfirst = True
                if fo & 1:
                    more = True
                hlen = 8
            elif nh == 51:
                hlen = (fr[l4 + 1] + 2) * 4
            else:
                hlen = (fr[l4 + 1] + 1) * 8
            nh = fr[l4]
            l4 += hlen
        if nh != 17:
            return R_NOT_UDP, 0, 0, b"", 0
        if nonfirst:
            return R_FRAGMENT, 0, 0, b"", 0
        af = 6
    else:
        return R_BAD_IP, 0, 0, b"", 0
    if n - l4 < 8:
        return (R_FRAGMENT if more else R_SHORT), 0, 0, b"", 0
    dport = (fr[l4 + 2] << 8) | fr[l4 + 3]
    if port >= 0 and dport != port:
        return R_WRONG_PORT, 0, 0, b"", 0
    ulen = (fr[l4 + 4] << 8) | fr[l4 + 5]
    if ulen < 8:
        return R_BAD_IP, 0, 0, b"", 0
    plen = ulen - 8
    if plen > n - l4 - 8:
        return (R_FRAGMENT if more else R_SNAPPED), 0, 0, b"", 0
    if more:
        return R_FRAGMENT, 0, 0, b"", 0
    return R_OK, l4 + 8, plen, src, af


def _version_of(ethertype: int) -> int:
    """4 or 6 for the IPv4 / IPv6 ethertypes, else 0 (as ``version_of`` in _pcap.pyx)."""
    return 4 if ethertype == 0x0800 else 6 if ethertype == 0x86DD else 0


def _parse_frame(linktype: int, fr: bytes, port: int) -> tuple[int, int, int, bytes, int]:
    """Parse one link-layer frame; returns (reason, payload offset, payload length, src, af)."""
    n = len(fr)
    if linktype == LINKTYPE_ETHERNET:
        if n < 14:
            return R_SHORT, 0, 0, b"", 0
        et = (fr[12] << 8) | fr[13]
        off = 14
        while et in _VLAN_TPIDS:
            if n - off < 4:
                return R_SHORT, 0, 0, b"", 0
            et = (fr[off + 2] << 8) | fr[off + 3]
            off += 4
        version = _version_of(et)
    elif linktype == LINKTYPE_LINUX_SLL:
        if n < 16:
            return R_SHORT, 0, 0, b"", 0
        et = (fr[14] << 8) | fr[15]
        off = 16
        version = _version_of(et)
    elif linktype == LINKTYPE_LINUX_SLL2:
        if n < 20:
            return R_SHORT, 0, 0, b"", 0
        et = (fr[0] << 8) | fr[1]
        off = 20
        version = _version_of(et)
    elif linktype in (LINKTYPE_RAW, 12, 14):
        if n < 1:
            return R_SHORT, 0, 0, b"", 0
        off = 0
        v = fr[0] >> 4
        version = v if v in (4, 6) else 0
    elif linktype == LINKTYPE_IPV4:
        off, version = 0, 4
    elif linktype == LINKTYPE_IPV6:
        off, version = 0, 6
    elif linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if n < 4:
            return R_SHORT, 0, 0, b"", 0
        if linktype == LINKTYPE_LOOP:
            fam = int.from_bytes(fr[0:4], "big")
        else:
            fam = int.from_bytes(fr[0:4], "little")
            if fam > 0xFFFF:
                fam = int.from_bytes(fr[0:4], "big")
        off = 4
        version = 4 if fam == 2 else 6 if fam in _AF_INET6_VALUES else 0
    else:
        return R_LINKTYPE, 0, 0, b"", 0
    if version == 0:
        return R_NOT_IP, 0, 0, b"", 0
    return _parse_ip(fr, off, version, port)


def _src_text(src: bytes, af: int) -> str:
    if af == 4:
        return socket.inet_ntop(socket.AF_INET, src[:4])
    return str(ipaddress.IPv6Address(bytes(src[:16])))


# --------------------------------------------------------------------------------------------------
# Record walk (pure Python, streaming)
# --------------------------------------------------------------------------------------------------
@dataclass
class _Format:
    kind: str            # "pcap" or "pcapng"
    endian: str = "<"    # classic pcap byte order
    ns: bool = False
    linktype: int = LINKTYPE_ETHERNET


def _sniff(head: bytes, name: str) -> _Format:
    """Identify the capture format from its first bytes, or raise PcapError."""
    if len(head) < 4:
        raise PcapError(f"{name}: not a capture file ({len(head)} bytes, too short for a magic number)")
    m_le = struct.unpack_from("<I", head)[0]
    m_be = struct.unpack_from(">I", head)[0]
    if m_le == _PCAPNG_SHB:
        if len(head) < 12:
            raise PcapError(f"{name}: pcapng file truncated inside its section header block")
        bom = head[8:12]
        if bom not in (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"):
            raise PcapError(f"{name}: pcapng section header has a bad byte-order magic {bom.hex()}")
        return _Format("pcapng")
    for endian, m in (("<", m_le), (">", m_be)):
        if m in (_MAGIC_US, _MAGIC_NS):
            if len(head) < 24:
                raise PcapError(f"{name}: pcap file truncated inside its 24-byte file header "
                                f"({len(head)} bytes)")
            lt = struct.unpack_from(endian + "I", head, 20)[0] & 0xFFFF
            return _Format("pcap", endian, m == _MAGIC_NS, lt)
    raise PcapError(f"{name}: not a pcap or pcapng capture (magic {head[:4].hex()})")


def _walk_classic(f: IO[bytes], fmt: _Format, stats: list[int]
                  ) -> Iterator[tuple[int, float, bytes]]:
    """Yield (linktype, ts, frame) for every record after the 24-byte file header."""
    hdr = struct.Struct(fmt.endian + "IIII")
    scale = 1e-9 if fmt.ns else 1e-6
    lt = fmt.linktype
    while True:
        h = f.read(16)
        if not h:
            return
        if len(h) < 16:
            stats[R_TRUNCATED] += 1
            return
        sec, frac, caplen, _orig = hdr.unpack(h)
        if caplen > _MAX_CAPLEN:
            stats[R_CORRUPT] += 1
            return
        fr = f.read(caplen)
        if len(fr) < caplen:
            stats[R_TRUNCATED] += 1
            return
        yield lt, sec + frac * scale, fr


def _walk_pcapng(f: IO[bytes], stats: list[int]) -> Iterator[tuple[int, float, bytes]]:
    """Yield (linktype, ts, frame) for every packet block of a pcapng file."""
    e = "<"
    # per interface: (linktype, units per second, offset seconds, snaplen)
    ifaces: list[tuple[int, int, int, int]] = []
    while True:
        h = f.read(8)
        if not h:
            return
        if len(h) < 8:
            stats[R_TRUNCATED] += 1
            return
        btype_le = struct.unpack_from("<I", h)[0]
        if btype_le == _PCAPNG_SHB:
            bom = f.read(4)
            if len(bom) < 4:
                stats[R_TRUNCATED] += 1
                return
            if bom == b"\x4d\x3c\x2b\x1a":
                e = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                e = ">"
            else:
                stats[R_CORRUPT] += 1
                return
            blen = struct.unpack_from(e + "I", h, 4)[0]
            if blen < 28 or blen % 4 or blen > _MAX_CAPLEN:
                stats[R_CORRUPT] += 1
                return
            rest = f.read(blen - 12)
            if len(rest) < blen - 12:
                stats[R_TRUNCATED] += 1
                return
            ifaces = []
            continue
        btype, blen = struct.unpack_from(e + "II", h)
        if blen < 12 or blen % 4 or blen > _MAX_CAPLEN:
            stats[R_CORRUPT] += 1
            return
        body = f.read(blen - 8)
        if len(body) < blen - 8:
            stats[R_TRUNCATED] += 1
            return
        body = body[:-4]  # trailing block length
        if btype == 1:  # Interface Description Block
            if len(body) < 8:
                stats[R_CORRUPT] += 1
                return
            lt, _res, snap = struct.unpack_from(e + "HHI", body)
            units, tsoff = 1_000_000, 0
            p = 8
            while p + 4 <= len(body):
                code, olen = struct.unpack_from(e + "HH", body, p)
                p += 4
                if code == 0 or p + olen > len(body):
                    break
                if code == 9 and olen >= 1:
                    r = body[p]
                    if r & 0x80:
                        if r & 0x7F <= 62:
                            units = 1 << (r & 0x7F)
                    elif r <= 18:  # finer than 1e-18 s cannot be real; keep the default
                        units = 10**r
                elif code == 14 and olen >= 8:
                    tsoff = struct.unpack_from(e + "q", body, p)[0]
                p += (olen + 3) & ~3
            ifaces.append((lt, units, tsoff, snap))
        elif btype in (6, 2):  # Enhanced / obsolete Packet Block
            if len(body) < 20:
                stats[R_CORRUPT] += 1
                return
            if btype == 6:
                iid, hi, lo, caplen, _orig = struct.unpack_from(e + "IIIII", body)
            else:
                iid, _drops, hi, lo, caplen, _orig = struct.unpack_from(e + "HHIIII", body)
            if caplen > len(body) - 20:
                stats[R_CORRUPT] += 1
                return
            if iid >= len(ifaces):
                stats[R_CORRUPT] += 1
                return
            lt, units, tsoff, _snap = ifaces[iid]
            ticks = (hi << 32) | lo
            ts = float(ticks // units + tsoff) + (ticks % units) / units
            yield lt, ts, body[20 : 20 + caplen]
        elif btype == 3:  # Simple Packet Block: interface 0, no timestamp
            if len(body) < 4 or not ifaces:
                stats[R_CORRUPT] += 1
                return
            orig = struct.unpack_from(e + "I", body)[0]
            lt, _u, _o, snap = ifaces[0]
            caplen = min(orig, len(body) - 4)
            if snap:
                caplen = min(caplen, snap)
            yield lt, 0.0, body[4 : 4 + caplen]
        # other blocks (NRB, ISB, DSB, custom, ...) are skipped


def _open_walk(f: BinaryIO, name: str, stats: list[int]
               ) -> tuple[_Format, Iterator[tuple[int, float, bytes]]]:
    head = f.read(24)
    fmt = _sniff(head, name)
    if fmt.kind == "pcap":
        return fmt, _walk_classic(f, fmt, stats)
    f.seek(0)
    return fmt, _walk_pcapng(f, stats)


def _port_arg(port: int | None) -> int:
    if port is None:
        return -1
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"port must be 0..65535 or None, not {port!r}")
    return int(port)


def _skipped_dict(stats: Any) -> dict[str, int]:
    return {SKIP_REASONS[i]: int(v) for i, v in enumerate(stats) if i and v}


def iter_datagrams(path: str | os.PathLike[str], port: int | None = 6343,
                   skipped: dict[str, int] | None = None) -> Iterator[tuple[float, str, bytes]]:
    """Stream ``(ts, source address, payload)`` for each UDP datagram to ``port`` (None: any).

    Reads the file incrementally (constant memory). Skipped frames are logged at DEBUG level at the
    end; when ``skipped`` is given it receives the counts by reason (as :attr:`Capture.skipped`,
    e.g. ``truncated`` for a file that ends inside a record) once the iteration is done.
    """
    p = _port_arg(port)
    stats = [0] * len(SKIP_REASONS)
    with open(path, "rb") as f:
        _fmt, walk = _open_walk(f, str(path), stats)
        for lt, ts, fr in walk:
            r, off, ln, src, af = _parse_frame(lt, fr, p)
            if r:
                stats[r] += 1
                continue
            yield ts, _src_text(src, af), fr[off : off + ln]
    if skipped is not None:
        skipped.update(_skipped_dict(stats))
    if any(stats):
        log.debug("%s: skipped %s", path, _skipped_dict(stats))


def _read_python(path: str | os.PathLike[str], port: int) -> Capture:
    stats = [0] * len(SKIP_REASONS)
    chunks: list[bytes] = []
    lengths: list[int] = []
    ts_list: list[float] = []
    srcs: list[str] = []
    cache: dict[tuple[bytes, int], str] = {}
    with open(path, "rb") as f:
        fmt, walk = _open_walk(f, str(path), stats)
        linktype = fmt.linktype
        first_lt = True
        for lt, ts, fr in walk:
            if first_lt:
                linktype, first_lt = lt, False
            r, off, ln, src, af = _parse_frame(lt, fr, port)
            if r:
                stats[r] += 1
                continue
            chunks.append(fr[off : off + ln])
            lengths.append(ln)
            ts_list.append(ts)
            key = (bytes(src), af)
            s = cache.get(key)
            if s is None:
                s = cache[key] = _src_text(src, af)
            srcs.append(s)
    buf = np.frombuffer(b"".join(chunks), dtype=np.uint8).copy()
    lens = np.asarray(lengths, dtype=np.int64)
    offsets = np.zeros(len(lens), dtype=np.int64)
    if len(lens) > 1:
        np.cumsum(lens[:-1], out=offsets[1:])
    return Capture(buf, offsets, lens, np.asarray(ts_list, dtype=np.float64), srcs,
                   _skipped_dict(stats), linktype)


def _read_cython(path: str | os.PathLike[str], port: int) -> Capture:
    from fastflow import _pcap  # noqa: PLC0415

    name = str(path)
    with open(path, "rb") as f:
        fmt = _sniff(f.read(24), name)
        size = os.fstat(f.fileno()).st_size
        compact = size < _MMAP_THRESHOLD
        if not compact:
            # a read-only mapping: the payloads stay where they lie in the file (offsets point
            # into it), so nothing is copied and no page is written; the mapping lives as long as
            # Capture.buf does.
            data = np.frombuffer(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), np.uint8)
        else:
            data = np.empty(size, dtype=np.uint8)
            f.seek(0)
            got = f.readinto(data.data)
            if got != size:  # the file shrank while we read it
                data = data[:got].copy()
    if fmt.kind == "pcap":
        res = _pcap.scan_classic(data, fmt.endian == ">", fmt.ns, fmt.linktype, port, compact)
    else:
        res = _pcap.scan_pcapng(data, port, compact)
    total, offsets, lengths, ts, src_idx, src16, af, stats, linktype = res
    names = [_src_text(bytes(src16[i]), int(af[i])) for i in range(len(af))]
    src = Sources(names, src_idx)
    if compact:
        buf = data[:total]
    elif total < size // 2:  # mostly headers or skipped frames: do not pin the whole file
        pos = np.zeros(len(lengths), dtype=np.int64)
        if len(lengths) > 1:
            np.cumsum(lengths[:-1], out=pos[1:])
        # gather the payloads back to back: byte j of the copy comes from data[idx[j]]
        idx = np.repeat(offsets - pos, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)
        buf = data[idx]
        offsets = pos
    else:
        buf = data
    return Capture(buf, offsets, lengths, ts, src, _skipped_dict(stats),
                   fmt.linktype if linktype < 0 else linktype)


def _use_cython() -> bool:
    if os.environ.get("FASTFLOW_PURE_PYTHON") == "1":
        return False
    try:
        from fastflow import _pcap  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def read(path: str | os.PathLike[str], port: int | None = 6343, *,
         pure_python: bool | None = None) -> Capture:
    """Read every UDP datagram to ``port`` (None: any port) from a pcap/pcapng file.

    Raises :class:`PcapError` when the file is not a capture or its file header is cut short; a file
    that ends inside a record keeps what was read and counts ``skipped["truncated"]``.
    ``pure_python`` forces (True) or forbids (False) the reference implementation; by default the
    Cython one is used when built.
    """
    p = _port_arg(port)
    if pure_python is None:
        pure_python = not _use_cython()
    cap = _read_python(path, p) if pure_python else _read_cython(path, p)
    if cap.skipped:
        log.debug("%s: %d datagrams, skipped %s", path, len(cap), cap.skipped)
    return cap


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------
def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def udp_frame(payload: bytes, src: tuple[str, int], dst: tuple[str, int], ident: int = 0) -> bytes:
    """An Ethernet + IPv4/IPv6 + UDP frame carrying ``payload`` (checksums filled in)."""
    sip = ipaddress.ip_address(src[0])
    dip = ipaddress.ip_address(dst[0])
    if sip.version != dip.version:
        raise ValueError(f"source {src[0]} and destination {dst[0]} are different IP versions")
    ulen = 8 + len(payload)
    if sip.version == 4:
        if ulen + 20 > 65535:
            raise ValueError(f"datagram of {len(payload)} bytes is too large for IPv4/UDP")
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, ident & 0xFFFF, 0x4000, 64, 17, 0,
                         sip.packed, dip.packed)
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        udp = struct.pack("!HHHH", src[1], dst[1], ulen, 0)
        eth = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"
        return eth + ip + udp + payload
    if ulen > 65535:
        raise ValueError(f"datagram of {len(payload)} bytes is too large for UDP")
    pseudo = sip.packed + dip.packed + struct.pack("!IxxxB", ulen, 17)
    udp = struct.pack("!HHHH", src[1], dst[1], ulen, 0)
    csum = _checksum(pseudo + udp + payload) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", csum)
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, ulen, 17, 64, sip.packed, dip.packed)
    eth = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x86\xdd"
    return eth + ip6 + udp + payload


def write(path: str | os.PathLike[str], datagrams: Iterable[tuple[float, bytes]],
          src: tuple[str, int] = ("127.0.0.1", 6343),
          dst: tuple[str, int] = ("127.0.0.1", 6343)) -> int:
    """Write ``(ts, payload)`` pairs as a classic little-endian microsecond pcap (Ethernet link).

    Frames are Ethernet + IPv4 + UDP (IPv6 when the addresses are IPv6) from ``src`` to ``dst``.
    Returns the number of datagrams written.
    """
    n = 0
    rec = struct.Struct("<IIII")
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", _MAGIC_US, 2, 4, 0, 0, 262144, LINKTYPE_ETHERNET))
        for ts, payload in datagrams:
            fr = udp_frame(bytes(payload), src, dst, n)
            us = int(round(float(ts) * 1e6))
            sec, frac = divmod(us, 1_000_000)
            f.write(rec.pack(sec & 0xFFFFFFFF, frac, len(fr), len(fr)))
            f.write(fr)
            n += 1
    return n
