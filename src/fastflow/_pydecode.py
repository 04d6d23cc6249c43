"""Pure-Python reference sFlow v5 decoder: the object parser and the reference table decoder.

Two things live here, sharing one implementation of the decoding rules of docs/internals.md:

* :func:`parse` turns one datagram into the nested dict of internals section 3 (the shape of
  ``fastflow decode --format json``). Nothing is dropped silently: a sample or record the table
  decoder would drop is kept with an ``"error"`` key and its raw bytes as ``"data"`` hex, so that
  ``fastflow.encode`` can give back the same bytes.
* :class:`Decoder` is the reference table decoder (internals section 2). It parses each datagram with
  :func:`parse` and walks the objects into rows of the ``_schema`` dtypes. The Cython decoder in
  ``_decode.pyx`` must produce exactly the same tables; the shared test suite checks that.

Decisions where section 2 leaves room (the Cython decoder follows the same ones):

* Counting is one pass in wire order: a sample dropped for ``record_overrun`` still counts the
  reasons (``record_too_short``, ``unknown_record``, ``table_full``) of the records met before the
  overrun, and the strings of its host_descr records are interned. ``status`` is the first
  error-kind reason in that order (agent interning comes first, ``trailing_bytes`` last).
* The sampled header writes only the columns it actually decodes (e.g. no ports for a non-first
  IPv4 fragment, no ``vlan`` when untagged); ``l4_ok`` is written (as 1) only when the L4 parse
  succeeded. A VLAN tag cut short ends the Ethernet parse with ``eth_type`` = the tag's TPID.
  ICMP type/code are read for protocol 1 or 58 whatever the IP version.
* sampled_ipv4 / sampled_ipv6 write ip_version (4/6), ip_protocol, ip_src, ip_dst, src_port,
  dst_port, tcp_flags, ip_tos (tos / priority), l4_ok = 1 and frame_length = length (not
  ip_length). sampled_ethernet writes eth_src, eth_dst, eth_type (type & 0xFFFF), frame_length.
* extended_router / extended_gateway with next-hop address type 0 write 16 zero bytes; an address
  type other than 0/1/2 is ``record_too_short``.
* A repeated counter record overwrites the columns it carries (a shorter host_cpu leaves an earlier
  tail in place).
* Integers wider than their column are truncated to the column width (``& mask``).
"""

from __future__ import annotations

import ipaddress
import struct
import uuid as _uuid
from collections.abc import Sequence
from typing import Any

import numpy as np

from fastflow._intern import keep_order
from fastflow._schema import (
    COUNTER_BIT_BY_FORMAT,
    COUNTER_DTYPE,
    COUNTER_RECORD_BY_FORMAT,
    DATAGRAM_DTYPE,
    FLOW_BIT_BY_FORMAT,
    FLOW_DTYPE,
    FLOW_RECORDS,
    IPV4_MAPPED_PREFIX,
    MAX_INTERNED,
    N_REASONS,
    REASON_CODE,
    REASON_NAMES,
    REASONS,
    split_counters,
)

__all__ = ["ColumnDecoder", "DecodeError", "Decoder", "parse"]

_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_KIND = {name: kind for name, kind, _ in REASONS}
_VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
_IPV6_EXT = (0, 43, 60)
_MIN_CAPACITY = 4096


class DecodeError(ValueError):
    """A datagram rejected outright (bad header); ``reason`` is a name from ``_schema.REASONS``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason, self.message))


class _Bad(Exception):
    """Internal: a record runs past its end or holds a bad length (-> record_too_short)."""


def _u32(b: bytes, off: int) -> int:
    if off + 4 > len(b):
        raise _Bad
    return int(_U32.unpack_from(b, off)[0])


def _pad4(n: int) -> int:
    return (n + 3) & ~3


def _fmt(word: int) -> str:
    return f"{word >> 12}:{word & 0xFFF}"


def _addr_text(af: int, raw: bytes) -> str:
    if af == 1:
        return str(ipaddress.IPv4Address(raw))
    if af == 2:
        return str(ipaddress.IPv6Address(raw))
    return "unknown"


def _read_address(b: bytes, off: int) -> tuple[int, str, int]:
    """XDR ``address`` at ``off``: (type, text, next offset); bad type or overrun -> _Bad."""
    af = _u32(b, off)
    size = {0: 0, 1: 4, 2: 16}.get(af)
    if size is None or off + 4 + size > len(b):
        raise _Bad
    return af, _addr_text(af, b[off + 4 : off + 4 + size]), off + 4 + size


# --------------------------------------------------------------------------------------------------
# Sampled header -> column values
# --------------------------------------------------------------------------------------------------
def _parse_l4(h: bytes, off: int, proto: int, out: dict[str, Any]) -> None:
    left = len(h) - off
    if proto == 6 and left >= 14:
        out["src_port"], out["dst_port"] = struct.unpack_from(">HH", h, off)
        out["tcp_flags"] = h[off + 13]
        out["l4_ok"] = 1
    elif proto == 17 and left >= 4:
        out["src_port"], out["dst_port"] = struct.unpack_from(">HH", h, off)
        out["l4_ok"] = 1
    elif proto in (1, 58) and left >= 2:
        out["icmp_type"], out["icmp_code"] = h[off], h[off + 1]
        out["l4_ok"] = 1


def _parse_ipv4(h: bytes, off: int, out: dict[str, Any]) -> None:
    if len(h) - off < 20:
        return
    vihl = h[off]
    ihl = vihl & 0x0F
    if vihl >> 4 != 4 or ihl < 5:
        return
    out["ip_version"] = 4
    out["ip_tos"] = h[off + 1]
    out["ip_length"] = _U16.unpack_from(h, off + 2)[0]
    frag = _U16.unpack_from(h, off + 6)[0] & 0x1FFF
    out["ip_ttl"] = h[off + 8]
    proto = h[off + 9]
    out["ip_protocol"] = proto
    out["ip_src"] = str(ipaddress.IPv4Address(h[off + 12 : off + 16]))
    out["ip_dst"] = str(ipaddress.IPv4Address(h[off + 16 : off + 20]))
    if frag == 0:
        _parse_l4(h, off + ihl * 4, proto, out)


def _parse_ipv6(h: bytes, off: int, out: dict[str, Any]) -> None:
    if len(h) - off < 40:
        return
    first = _U32.unpack_from(h, off)[0]
    out["ip_version"] = 6
    out["ip_tos"] = (first >> 20) & 0xFF
    out["ip_length"] = (_U16.unpack_from(h, off + 4)[0] + 40) & 0xFFFF
    nh = h[off + 6]
    out["ip_ttl"] = h[off + 7]
    out["ip_src"] = str(ipaddress.IPv6Address(h[off + 8 : off + 24]))
    out["ip_dst"] = str(ipaddress.IPv6Address(h[off + 24 : off + 40]))
    p = off + 40
    l4 = True
    while nh in _IPV6_EXT or nh == 44:
        if len(h) - p < 8:  # every extension header is at least 8 bytes
            l4 = False
            break
        if nh == 44:
            if _U16.unpack_from(h, p + 2)[0] >> 3:
                l4 = False
            nh, p = h[p], p + 8
        else:
            nh, p = h[p], p + (h[p + 1] + 1) * 8
    out["ip_protocol"] = nh
    if l4 and p <= len(h):
        _parse_l4(h, p, nh, out)


def decode_header(protocol: int, h: bytes) -> dict[str, Any]:
    """Decode a sampled header's bytes into the flow-table columns it determines (text values)."""
    out: dict[str, Any] = {}
    if protocol == 1:
        if len(h) < 14:
            return out
        out["eth_dst"] = h[0:6].hex()
        out["eth_src"] = h[6:12].hex()
        p = 12
        etype = _U16.unpack_from(h, p)[0]
        ntags = 0
        while etype in _VLAN_TPIDS:
            if p + 6 > len(h):
                break
            vid = _U16.unpack_from(h, p + 2)[0] & 0x0FFF
            if ntags == 0:
                out["vlan"] = vid
            elif ntags == 1:
                out["inner_vlan"] = vid
            ntags += 1
            etype = _U16.unpack_from(h, p + 4)[0]
            p += 4
        out["eth_type"] = etype
        if etype == 0x0800:
            _parse_ipv4(h, p + 2, out)
        elif etype == 0x86DD:
            _parse_ipv6(h, p + 2, out)
    elif protocol == 11:
        _parse_ipv4(h, 0, out)
    elif protocol == 12:
        _parse_ipv6(h, 0, out)
    return out


# --------------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------------
def _string(rec: bytes, off: int, maxlen: int, name: str, out: dict[str, Any]) -> int:
    n = _u32(rec, off)
    if n > maxlen or off + 4 + _pad4(n) > len(rec):
        raise _Bad
    raw = rec[off + 4 : off + 4 + n]
    try:
        out[name] = raw.decode("utf-8")
    except UnicodeDecodeError:
        out[name] = raw.decode("utf-8", "replace")
        out[name + "_raw"] = raw.hex()  # exact bytes: interning and re-encoding use these
    _keep_pad(rec[off + 4 + n : off + 4 + _pad4(n)], name + "_pad", out)
    return off + 4 + _pad4(n)


def _keep_pad(pad: bytes, key: str, out: dict[str, Any]) -> None:
    """Record XDR padding that was not zero on the wire (so re-encoding gives the same bytes)."""
    if pad.strip(b"\0"):
        out[key] = pad.hex()


def _counter_record(fmt: int, rec: bytes) -> dict[str, Any]:
    layout = COUNTER_RECORD_BY_FORMAT[fmt]
    _f, name, minlen, fields = layout
    out: dict[str, Any] = {"format": f"0:{fmt}", "name": name}
    if len(rec) < minlen:
        raise _Bad
    if fmt == 1005:
        off = _string(rec, 0, 255, "if_name", out)
    elif fmt == 2000:
        off = _string(rec, 0, 64, "hostname", out)
        if off + 16 + 8 > len(rec):
            raise _Bad
        out["uuid"] = str(_uuid.UUID(bytes=rec[off : off + 16]))
        out["machine_type"], out["os_name"] = struct.unpack_from(">II", rec, off + 16)
        off = _string(rec, off + 24, 32, "os_release", out)
    elif fmt == 2001:
        count = _u32(rec, 0)
        off = 4
        adapters = []
        for _ in range(count):
            if_index, n = _u32(rec, off), _u32(rec, off + 4)
            off += 8
            if n * 8 > len(rec) - off:
                raise _Bad
            adapter: dict[str, Any] = {
                "if_index": if_index,
                "macs": [rec[off + 8 * m : off + 8 * m + 6].hex() for m in range(n)]}
            pads = [rec[off + 8 * m + 6 : off + 8 * m + 8] for m in range(n)]
            if any(p.strip(b"\0") for p in pads):
                adapter["mac_pads"] = [p.hex() for p in pads]
            adapters.append(adapter)
            off += 8 * n
        out["adapters"] = adapters
    else:
        off = 0
        for json_name, _col, wire_off, typ in fields:
            assert wire_off is not None
            size = 8 if typ == "u64" else 4
            if wire_off + size > len(rec):
                continue
            code = {"u32": ">I", "u64": ">Q", "i32": ">i", "f32": ">f"}[typ]
            out[json_name] = struct.unpack_from(code, rec, wire_off)[0]
            off = max(off, wire_off + size)
        off = max(off, minlen)
    if off < len(rec):
        out["extra"] = rec[off:].hex()
    return out


def _flow_record(fmt: int, rec: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {"format": f"0:{fmt}", "name": FLOW_RECORDS[fmt]}
    n = len(rec)
    if fmt == 1:
        if n < 16:
            raise _Bad
        proto, flen, stripped, hlen = struct.unpack_from(">IIII", rec, 0)
        if 16 + _pad4(hlen) > n:
            raise _Bad
        header = rec[16 : 16 + hlen]
        out.update(header_protocol=proto, frame_length=flen, stripped=stripped,
                   header_length=hlen, header=header.hex(),
                   decoded=decode_header(proto, header))
        _keep_pad(rec[16 + hlen : 16 + _pad4(hlen)], "header_pad", out)
        off = 16 + _pad4(hlen)
    elif fmt == 2:
        if n < 24:
            raise _Bad
        out["length"] = _u32(rec, 0)
        out["src_mac"] = rec[4:10].hex()
        out["dst_mac"] = rec[12:18].hex()
        out["type"] = _u32(rec, 20)
        _keep_pad(rec[10:12], "src_mac_pad", out)
        _keep_pad(rec[18:20], "dst_mac_pad", out)
        off = 24
    elif fmt == 3:
        if n < 32:
            raise _Bad
        length, proto = struct.unpack_from(">II", rec, 0)
        sp, dp, flags, tos = struct.unpack_from(">IIII", rec, 16)
        out.update(length=length, protocol=proto,
                   src_ip=str(ipaddress.IPv4Address(rec[8:12])),
                   dst_ip=str(ipaddress.IPv4Address(rec[12:16])),
                   src_port=sp, dst_port=dp, tcp_flags=flags, tos=tos)
        off = 32
    elif fmt == 4:
        if n < 56:
            raise _Bad
        length, proto = struct.unpack_from(">II", rec, 0)
        sp, dp, flags, prio = struct.unpack_from(">IIII", rec, 40)
        out.update(length=length, protocol=proto,
                   src_ip=str(ipaddress.IPv6Address(rec[8:24])),
                   dst_ip=str(ipaddress.IPv6Address(rec[24:40])),
                   src_port=sp, dst_port=dp, tcp_flags=flags, priority=prio)
        off = 56
    elif fmt == 1001:
        if n < 16:
            raise _Bad
        (out["src_vlan"], out["src_priority"], out["dst_vlan"],
         out["dst_priority"]) = struct.unpack_from(">IIII", rec, 0)
        off = 16
    elif fmt == 1002:
        af, text, off = _read_address(rec, 0)
        out["nexthop_type"] = af
        out["nexthop"] = text
        out["src_mask_len"], out["dst_mask_len"] = _u32(rec, off), _u32(rec, off + 4)
        off += 8
    else:  # 1003 extended_gateway
        af, text, off = _read_address(rec, 0)
        out["nexthop_type"] = af
        out["nexthop"] = text
        out["as"], out["src_as"], out["src_peer_as"] = (
            _u32(rec, off), _u32(rec, off + 4), _u32(rec, off + 8))
        off += 12
        nseg = _u32(rec, off)
        off += 4
        path = []
        for _ in range(nseg):
            stype, cnt = _u32(rec, off), _u32(rec, off + 4)
            off += 8
            if cnt * 4 > n - off:
                raise _Bad
            path.append({"type": stype, "as": list(struct.unpack_from(f">{cnt}I", rec, off))})
            off += 4 * cnt
        out["dst_as_path"] = path
        ncomm = _u32(rec, off)
        off += 4
        if ncomm * 4 > n - off:
            raise _Bad
        out["communities"] = list(struct.unpack_from(f">{ncomm}I", rec, off))
        off += 4 * ncomm
        out["local_pref"] = _u32(rec, off)
        off += 4
    if off < n:
        out["extra"] = rec[off:].hex()
    return out


def _record(word: int, rec: bytes, table: dict[int, Any], parser: Any,
            errors: list[str]) -> dict[str, Any]:
    ent, fmt = word >> 12, word & 0xFFF
    if ent != 0 or fmt not in table:
        return {"format": _fmt(word), "name": "unknown", "data": rec.hex()}
    try:
        return parser(fmt, rec)  # type: ignore[no-any-return]
    except (_Bad, struct.error):
        errors.append("record_too_short")
        name = table[fmt] if isinstance(table[fmt], str) else table[fmt][1]
        return {"format": _fmt(word), "name": name, "error": "record_too_short", "data": rec.hex()}


# --------------------------------------------------------------------------------------------------
# Samples and datagrams
# --------------------------------------------------------------------------------------------------
_SAMPLE_KIND = {1: ("flow", False, 32), 2: ("counters", False, 12),
                3: ("flow", True, 44), 4: ("counters", True, 16), 5: ("discard", True, 32)}


def _sample(word: int, body: bytes, errors: list[str]) -> dict[str, Any]:
    ent, fmt = word >> 12, word & 0xFFF
    if ent != 0 or fmt not in _SAMPLE_KIND:
        return {"type": "unknown", "format": _fmt(word), "data": body.hex()}
    kind, expanded, fixed = _SAMPLE_KIND[fmt]
    head: dict[str, Any] = {"type": kind, "format": _fmt(word)}
    if kind != "discard":  # a 0:5 event always carries the expanded source form
        head["expanded"] = expanded
    n = len(body)
    if n < fixed:
        errors.append("sample_too_short")
        return {**head, "error": "sample_too_short", "data": body.hex()}
    w = struct.unpack_from(f">{fixed // 4}I", body, 0)
    out = dict(head)
    out["sequence_number"] = w[0]
    if expanded:
        stype, sidx = w[1], w[2]
    else:
        stype, sidx = w[1] >> 24, w[1] & 0xFFFFFF
    out.update(source_id=f"{stype}:{sidx}", source_id_type=stype, source_id_index=sidx)
    if kind == "flow":
        if expanded:
            rate, pool, drops, ifmt, ival, ofmt, oval, nrec = w[3:11]
        else:
            rate, pool, drops, iw, ow, nrec = w[2:8]
            ifmt, ival, ofmt, oval = iw >> 30, iw & 0x3FFFFFFF, ow >> 30, ow & 0x3FFFFFFF
        out.update(sampling_rate=rate, sample_pool=pool, drops=drops, input=ival, output=oval,
                   input_format=ifmt, output_format=ofmt)
        table: dict[int, Any] = FLOW_RECORDS
        parser: Any = _flow_record
    elif kind == "discard":  # sflow_drops.txt: drops, input, output (ifIndex words), reason
        out.update(drops=w[3], input=w[4], output=w[5], reason=w[6])
        nrec = w[7]
        table = FLOW_RECORDS
        parser = _flow_record
    else:
        nrec = w[-1]
        table = COUNTER_RECORD_BY_FORMAT
        parser = _counter_record
    records: list[dict[str, Any]] = []
    out["records"] = records
    off = fixed
    for _ in range(nrec):
        if n - off < 8:
            break
        rword, rlen = struct.unpack_from(">II", body, off)
        if rlen > n - off - 8:
            break
        records.append(_record(rword, body[off + 8 : off + 8 + rlen], table, parser, errors))
        off += 8 + rlen
    else:
        if off < n:
            out["padding"] = body[off:].hex()
        return out
    errors.append("record_overrun")
    return {**head, "error": "record_overrun", "records": records, "data": body.hex()}


def parse(data: bytes, ts: float = 0.0) -> dict[str, Any]:
    """Decode one sFlow v5 datagram into the object of docs/internals.md section 3.

    Raises :class:`DecodeError` for a datagram rejected outright (bad or truncated header).
    ``errors`` lists every error-kind reason met, in wire order.
    """
    data = bytes(data)
    n = len(data)
    if n < 4:
        raise DecodeError("truncated_header", f"datagram of {n} bytes is shorter than its header")
    version = _U32.unpack_from(data, 0)[0]
    if version != 5:
        raise DecodeError("bad_version", f"sFlow version {version}, expected 5")
    if n < 8:
        raise DecodeError("truncated_header", f"datagram of {n} bytes is shorter than its header")
    af = _U32.unpack_from(data, 4)[0]
    if af not in (0, 1, 2):
        raise DecodeError("bad_agent_address", f"agent address type {af} is not 0, 1 or 2")
    alen = (0, 4, 16)[af]
    hlen = 8 + alen + 16
    if hlen > n:
        raise DecodeError("truncated_header",
                          f"datagram of {n} bytes is shorter than its {hlen}-byte header")
    sub, seq, up, nsamples = struct.unpack_from(">IIII", data, 8 + alen)
    errors: list[str] = []
    samples: list[dict[str, Any]] = []
    obj: dict[str, Any] = {
        "agent": _addr_text(af, data[8 : 8 + alen]), "agent_address_type": af,
        "sub_agent_id": sub, "sequence_number": seq, "uptime": up, "timestamp": ts,
        "num_samples": nsamples, "length": n, "samples": samples, "errors": errors,
    }
    off = hlen
    for _ in range(nsamples):
        if n - off < 8:
            errors.append("sample_overrun")
            samples.append({"error": "sample_overrun", "data": data[off:].hex()})
            off = n
            break
        word, slen = struct.unpack_from(">II", data, off)
        if slen > n - off - 8:
            errors.append("sample_overrun")
            samples.append({"format": _fmt(word), "length": slen, "error": "sample_overrun",
                            "data": data[off + 8 :].hex()})
            off = n
            break
        samples.append(_sample(word, data[off + 8 : off + 8 + slen], errors))
        off += 8 + slen
    else:
        if off < n:
            errors.append("trailing_bytes")
            obj["trailing"] = data[off:].hex()
    return obj


# --------------------------------------------------------------------------------------------------
# Reference table decoder
# --------------------------------------------------------------------------------------------------
def _ip16(text: str) -> bytes:
    ip = ipaddress.ip_address(text)
    return IPV4_MAPPED_PREFIX + ip.packed if ip.version == 4 else ip.packed


def _addr16(af: int, text: str) -> bytes:
    return b"\x00" * 16 if af == 0 else _ip16(text)


def _raw_string(rec: dict[str, Any], name: str) -> bytes:
    raw = rec.get(name + "_raw")
    return bytes.fromhex(raw) if raw is not None else str(rec[name]).encode("utf-8")


_COUNTER_COLS = {
    fmt: [(json_name, col, typ) for json_name, col, _off, typ in fields]
    for fmt, _name, _min, fields in COUNTER_RECORD_BY_FORMAT.values()
}
_HEADER_COLS = ("eth_type", "vlan", "inner_vlan", "ip_version", "ip_protocol", "ip_tos",
                "ip_ttl", "ip_length", "src_port", "dst_port", "tcp_flags", "icmp_type",
                "icmp_code", "l4_ok")


class Decoder:
    """Reference table decoder: the same API and rules as the Cython ``fastflow._decode.Decoder``.

    Slow (it builds the object form of every datagram first) but simple; used when the extension
    is missing or ``FASTFLOW_PURE_PYTHON=1``, and as the oracle of the differential tests.
    """

    _max_interned: int = MAX_INTERNED  # class attribute so tests can exercise ``table_full``

    def __init__(self, datagram_capacity: int = 4096, counter_capacity: int = 8192,
                 flow_capacity: int = 8192) -> None:
        for name, cap in (("datagram_capacity", datagram_capacity),
                          ("counter_capacity", counter_capacity),
                          ("flow_capacity", flow_capacity)):
            if int(cap) < _MIN_CAPACITY:
                raise ValueError(f"{name} must be >= {_MIN_CAPACITY}, got {cap}")
        self._dg = np.zeros(int(datagram_capacity), DATAGRAM_DTYPE)
        self._ct = np.zeros(int(counter_capacity), COUNTER_DTYPE)
        self._fl = np.zeros(int(flow_capacity), FLOW_DTYPE)
        self.n_datagrams = 0
        self.n_counters = 0
        self.n_flows = 0
        self._errors = np.zeros(N_REASONS, np.uint64)
        self._strings: list[bytes] = [b""]
        self._string_index: dict[bytes, int] = {b"": 0}
        self._agents: list[tuple[int, bytes]] = [(-1, b"")]
        self._agent_index: dict[tuple[int, bytes], int] = {}

    # -- public API -------------------------------------------------------------------------------
    @property
    def datagrams(self) -> np.ndarray:
        """View of the filled datagram rows (valid until the next feed/clear)."""
        return self._dg[: self.n_datagrams]

    @property
    def counters(self) -> np.ndarray:
        """View of the filled counter-sample rows."""
        return self._ct[: self.n_counters]

    @property
    def flows(self) -> np.ndarray:
        """View of the filled flow-sample rows."""
        return self._fl[: self.n_flows]

    @property
    def errors(self) -> np.ndarray:
        """Cumulative count of every reason (index = ``REASON_CODE``), a copy."""
        return self._errors.copy()

    def error_counts(self) -> dict[str, int]:
        """Non-zero reasons by name."""
        return {REASON_NAMES[i]: int(c) for i, c in enumerate(self._errors) if c}

    def strings(self) -> list[str]:
        """The string intern table as text; index 0 is the empty string."""
        return [s.decode("utf-8", "replace") for s in self._strings]

    def agents(self) -> list[str]:
        """The agent table as text; index 0 is reserved ("")."""
        return [""] + [_addr_text(af, raw) for af, raw in self._agents[1:]]

    def compact_interned(self, keep_strings: Any, keep_agents: Any) -> tuple[np.ndarray, np.ndarray]:
        """Keep only the string and agent entries whose indices are in ``keep_strings`` /
        ``keep_agents`` (index 0 always stays), renumbered in their old order. Returns
        ``(string_map, agent_map)``: uint32 arrays, old index -> new index (0 for an entry
        dropped). Only with no rows held (call :meth:`clear` first)."""
        if self.n_datagrams or self.n_counters or self.n_flows:
            raise RuntimeError("compact_interned: the decoder holds rows; clear() first")
        smap, sorder = keep_order(keep_strings, len(self._strings))
        amap, aorder = keep_order(keep_agents, len(self._agents))
        self._strings = [self._strings[i] for i in sorder.tolist()]
        self._string_index = {raw: i for i, raw in enumerate(self._strings)}
        self._agents = [self._agents[i] for i in aorder.tolist()]
        self._agent_index = {key: i for i, key in enumerate(self._agents) if i}
        return smap, amap

    @property
    def max_interned(self) -> int:
        """Entries each intern table may hold (``table_full`` beyond)."""
        return self._max_interned

    @property
    def n_strings(self) -> int:
        """Entries in the string table (index 0, "", included)."""
        return len(self._strings)

    @property
    def n_agents(self) -> int:
        """Entries in the agent table (reserved index 0 included)."""
        return len(self._agents)

    def clear(self) -> None:
        """Row counts back to 0 (intern tables and error counts are kept)."""
        self.n_datagrams = self.n_counters = self.n_flows = 0

    def feed_list(self, datagrams: Sequence[bytes], ts: Any = None) -> int:
        """Convenience: feed a list of datagrams (bytes)."""
        blobs = [bytes(d) for d in datagrams]
        lengths = np.array([len(b) for b in blobs], np.int64)
        offsets = np.zeros(len(blobs), np.int64)
        if len(blobs) > 1:
            offsets[1:] = np.cumsum(lengths)[:-1]
        return self.feed(b"".join(blobs), offsets, lengths, ts)

    def feed(self, buf: Any, offsets: Any, lengths: Any, ts: Any = None) -> int:
        """Decode datagrams ``buf[offsets[i]:offsets[i]+lengths[i]]``; returns how many were taken."""
        mv = memoryview(buf)
        if not mv.c_contiguous:
            raise ValueError("buf must be a contiguous byte buffer")
        mv = mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv
        offs = np.ascontiguousarray(offsets, np.int64).reshape(-1)
        lens = np.ascontiguousarray(lengths, np.int64).reshape(-1)
        if offs.shape != lens.shape:
            raise ValueError(f"offsets ({offs.size}) and lengths ({lens.size}) differ in size")
        n = int(offs.size)
        size = len(mv)
        if n and (offs.min() < 0 or lens.min() < 0 or int((offs + lens).max()) > size):
            raise ValueError(f"an offset/length pair lies outside the {size}-byte buffer")
        if ts is None:
            tss = np.zeros(n, np.float64)
        elif np.ndim(ts) == 0:
            tss = np.full(n, float(ts), np.float64)
        else:
            tss = np.ascontiguousarray(ts, np.float64).reshape(-1)
            if tss.size != n:
                raise ValueError(f"ts has {tss.size} entries for {n} datagrams")
        for i in range(n):
            o, ln = int(offs[i]), int(lens[i])
            if not self._feed_one(bytes(mv[o : o + ln]), float(tss[i])):
                return i
        return n

    # -- internals --------------------------------------------------------------------------------
    def _count(self, reason: str) -> None:
        self._errors[REASON_CODE[reason]] += 1

    def _intern_string(self, raw: bytes, note: Any) -> int:
        idx = self._string_index.get(raw)
        if idx is not None:
            return idx
        if len(self._strings) >= self._max_interned:
            note("table_full")
            return 0
        idx = len(self._strings)
        self._strings.append(raw)
        self._string_index[raw] = idx
        return idx

    def _intern_agent(self, af: int, raw: bytes, note: Any) -> int:
        key = (af, raw)
        idx = self._agent_index.get(key)
        if idx is not None:
            return idx
        if len(self._agents) >= self._max_interned:
            note("table_full")
            return 0
        idx = len(self._agents)
        self._agents.append(key)
        self._agent_index[key] = idx
        return idx

    def _feed_one(self, data: bytes, ts: float) -> bool:
        try:
            obj = parse(data, ts)
        except DecodeError as e:
            self._count(e.reason)
            return True
        samples = obj["samples"]
        nc = sum(1 for s in samples if s.get("type") == "counters" and "error" not in s)
        nf = sum(1 for s in samples if s.get("type") in ("flow", "discard") and "error" not in s)
        if (self.n_datagrams + 1 > len(self._dg) or self.n_counters + nc > len(self._ct)
                or self.n_flows + nf > len(self._fl)):
            return False  # nothing written: the caller flushes and feeds the rest

        status = 0

        def note(reason: str) -> None:
            nonlocal status
            self._errors[REASON_CODE[reason]] += 1
            if status == 0 and _KIND[reason] == "error":
                status = REASON_CODE[reason]

        af = obj["agent_address_type"]
        raw_agent = b"" if af == 0 else ipaddress.ip_address(obj["agent"]).packed
        agent = self._intern_agent(af, raw_agent, note)
        drow = self.n_datagrams
        common = {"ts": ts, "agent": agent, "sub_agent_id": obj["sub_agent_id"],
                  "uptime": obj["uptime"], "dgram": drow}
        n_counters = n_flows = 0
        for s in samples:
            kind = s.get("type")
            if kind == "unknown":
                note("unknown_sample")
                continue
            err = s.get("error")
            if err is not None and kind is None:  # sample_overrun
                note(err)
                continue
            if kind == "counters":
                row = self._ct[self.n_counters, ...] if err is None else np.zeros((), COUNTER_DTYPE)
                if err is None:
                    row[...] = 0
                self._fill_sample(row, s, common)
                self._fill_counters(row, s.get("records", ()), note)
                if err is None:
                    self.n_counters += 1
                    n_counters += 1
            else:
                row = self._fl[self.n_flows, ...] if err is None else np.zeros((), FLOW_DTYPE)
                if err is None:
                    row[...] = 0
                self._fill_sample(row, s, common)
                self._fill_flows(row, s.get("records", ()), note)
                if err is None:
                    self.n_flows += 1
                    n_flows += 1
            if err is not None:
                note(err)
        if "trailing" in obj:
            note("trailing_bytes")
        d = self._dg[drow, ...]
        d[...] = 0
        d["ts"] = ts
        d["agent"] = agent
        d["sub_agent_id"] = obj["sub_agent_id"]
        d["sequence_number"] = obj["sequence_number"]
        d["uptime"] = obj["uptime"]
        d["num_samples"] = obj["num_samples"]
        d["n_counters"] = n_counters
        d["n_flows"] = n_flows
        d["length"] = obj["length"]
        d["status"] = status
        d["agent_af"] = (0, 4, 6)[af]
        self.n_datagrams += 1
        return True

    @staticmethod
    def _fill_sample(row: Any, s: dict[str, Any], common: dict[str, Any]) -> None:
        for k, v in common.items():
            row[k] = v
        if "sequence_number" not in s:  # dropped sample (sample_too_short / record_overrun)
            return
        stype, sidx = s["source_id_type"], s["source_id_index"]
        row["sequence_number"] = s["sequence_number"]
        row["source_id"] = (stype & 0xFF) << 24 | (sidx & 0xFFFFFF)
        row["source_id_type"] = stype
        row["source_id_index"] = sidx
        row["expanded"] = 1 if s.get("expanded") else 0
        if s["type"] == "discard":
            row["sampling_rate"] = 1
            row["drops"] = s["drops"]
            row["input"] = s["input"]
            row["output"] = s["output"]
            row["discard"] = 1
            row["discard_reason"] = s["reason"]
        elif s["type"] == "flow":
            row["sampling_rate"] = s["sampling_rate"]
            row["sample_pool"] = s["sample_pool"]
            row["drops"] = s["drops"]
            row["input"] = ((s["input_format"] << 30) | (s["input"] & 0x3FFFFFFF)) & 0xFFFFFFFF
            row["output"] = ((s["output_format"] << 30) | (s["output"] & 0x3FFFFFFF)) & 0xFFFFFFFF

    def _fill_counters(self, row: Any, records: Any, note: Any) -> None:
        mask = 0
        for r in records:
            if r.get("name") == "unknown":
                note("unknown_record")
                continue
            if "error" in r:
                note(r["error"])
                continue
            fmt = int(r["format"].split(":")[1])
            mask |= 1 << COUNTER_BIT_BY_FORMAT[fmt]
            for json_name, col, typ in _COUNTER_COLS[fmt]:
                if json_name not in r:
                    # an optional tail field the record did not carry: 0, also when a repeated
                    # record overwrites a longer earlier one (as the Cython decoder does)
                    row[col] = 0
                    continue
                v = r[json_name]
                if typ == "str":
                    row[col] = self._intern_string(_raw_string(r, json_name), note)
                elif typ == "uuid16":
                    row[col] = np.frombuffer(_uuid.UUID(v).bytes, np.uint8)
                elif typ == "count":
                    row[col] = len(v)
                elif typ == "f32":
                    row[col] = np.float32(v)
                else:
                    row[col] = v
        row["mask"] = mask

    def _fill_flows(self, row: Any, records: Any, note: Any) -> None:
        mask = 0
        seen_header = seen_router = False
        for r in records:
            if r.get("name") == "unknown":
                note("unknown_record")
                continue
            if "error" in r:
                note(r["error"])
                continue
            fmt = int(r["format"].split(":")[1])
            mask |= 1 << FLOW_BIT_BY_FORMAT[fmt]
            if fmt == 1:
                if seen_header:
                    continue
                seen_header = True
                for k in ("header_protocol", "frame_length", "stripped", "header_length"):
                    row[k] = r[k]
                dec = r["decoded"]
                for k in ("eth_src", "eth_dst"):
                    if k in dec:
                        row[k] = int(dec[k], 16)
                for k in ("ip_src", "ip_dst"):
                    if k in dec:
                        row[k] = np.frombuffer(_ip16(dec[k]), np.uint8)
                for k in _HEADER_COLS:
                    if k in dec:
                        row[k] = dec[k]
            elif fmt == 2:
                if seen_header:
                    continue
                row["frame_length"] = r["length"]
                row["eth_src"] = int(r["src_mac"], 16)
                row["eth_dst"] = int(r["dst_mac"], 16)
                row["eth_type"] = r["type"] & 0xFFFF
            elif fmt in (3, 4):
                if seen_header:
                    continue
                row["frame_length"] = r["length"]
                row["ip_version"] = 4 if fmt == 3 else 6
                row["ip_protocol"] = r["protocol"] & 0xFF
                row["ip_src"] = np.frombuffer(_ip16(r["src_ip"]), np.uint8)
                row["ip_dst"] = np.frombuffer(_ip16(r["dst_ip"]), np.uint8)
                row["src_port"] = r["src_port"] & 0xFFFF
                row["dst_port"] = r["dst_port"] & 0xFFFF
                row["tcp_flags"] = r["tcp_flags"] & 0xFF
                row["ip_tos"] = (r["tos"] if fmt == 3 else r["priority"]) & 0xFF
                row["l4_ok"] = 1
            elif fmt == 1001:
                for k in ("src_vlan", "src_priority", "dst_vlan", "dst_priority"):
                    row[k] = r[k]
            elif fmt == 1002:
                seen_router = True
                row["nexthop"] = np.frombuffer(_addr16(r["nexthop_type"], r["nexthop"]), np.uint8)
                row["src_mask_len"] = r["src_mask_len"] & 0xFF
                row["dst_mask_len"] = r["dst_mask_len"] & 0xFF
            else:  # 1003
                if not seen_router:
                    row["nexthop"] = np.frombuffer(_addr16(r["nexthop_type"], r["nexthop"]),
                                                   np.uint8)
                row["as_number"] = r["as"]
                row["src_as"] = r["src_as"]
                row["src_peer_as"] = r["src_peer_as"]
                path = r["dst_as_path"]
                row["dst_as"] = path[-1]["as"][-1] if path and path[-1]["as"] else 0
                row["dst_peer_as"] = path[0]["as"][0] if path and path[0]["as"] else 0
                row["local_pref"] = r["local_pref"]
        row["mask"] = mask


class ColumnDecoder(Decoder):
    """Reference of the Cython ``ColumnDecoder``: the same walk (this module's :class:`Decoder`),
    its wide rows split into the columnar tables with ``_schema.split_counters``; tables grow
    instead of filling up, and :meth:`take` hands them over."""

    def __init__(self, datagram_capacity: int = 4096, sample_capacity: int = 8192,
                 flow_capacity: int = 4096) -> None:
        super().__init__(_MIN_CAPACITY, _MIN_CAPACITY, _MIN_CAPACITY)
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._held = [0, 0, 0]

    @property
    def datagrams(self) -> np.ndarray:
        raise TypeError("ColumnDecoder keeps its tables until take(); use take()")

    counters = flows = datagrams

    @property
    def n_samples(self) -> int:
        """Counter-sample rows held."""
        return self._held[1] + self.n_counters

    def record_counts(self) -> dict[str, int]:
        """Rows held per record table (types present only)."""
        held = [p[1] for p in self._parts] + [self._ct[: self.n_counters]]
        mask = np.concatenate([h["mask"] for h in held])
        out = {}
        for _fmt, name, _m, _f in COUNTER_RECORD_BY_FORMAT.values():
            n = int(np.count_nonzero(mask & np.uint32(1 << COUNTER_BIT_BY_FORMAT[_fmt])))
            if n:
                out[name] = n
        return out

    def _flush(self) -> None:
        if self.n_datagrams:
            self._parts.append((self._dg[: self.n_datagrams].copy(),
                                self._ct[: self.n_counters].copy(), self._fl[: self.n_flows].copy()))
            for i, n in enumerate((self.n_datagrams, self.n_counters, self.n_flows)):
                self._held[i] += n
        super().clear()

    def feed(self, buf: Any, offsets: Any, lengths: Any, ts: Any = None) -> int:
        """Decode every datagram (the tables grow); returns how many were given."""
        offs = np.ascontiguousarray(offsets, np.int64).reshape(-1)
        lens = np.ascontiguousarray(lengths, np.int64).reshape(-1)
        tss = ts if ts is None or np.ndim(ts) == 0 else np.ascontiguousarray(ts, np.float64)
        start, n = 0, int(offs.size)
        while True:
            part = tss[start:] if isinstance(tss, np.ndarray) else tss
            k = super().feed(buf, offs[start:], lens[start:], part)
            start += k
            if start >= n:
                return n
            self._flush()

    def clear(self) -> None:
        """Drop every row held (intern tables and error counts are kept)."""
        super().clear()
        self._parts = []
        self._held = [0, 0, 0]

    def take(self) -> dict[str, Any]:
        """The tables as in the Cython ``ColumnDecoder.take``; starts empty ones."""
        self._flush()
        parts = self._parts
        base = 0
        for p in parts:  # each part numbered its datagram rows from 0: renumber the links
            p[1]["dgram"] += base
            p[2]["dgram"] += base
            base += len(p[0])
        dg = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, DATAGRAM_DTYPE)
        wide = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, COUNTER_DTYPE)
        fl = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, FLOW_DTYPE)
        samples, records = split_counters(wide)
        self.clear()
        return {"datagrams": dg, "samples": samples, "flows": fl, "records": records}

