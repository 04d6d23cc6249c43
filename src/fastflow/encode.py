"""Encode sFlow v5 datagrams from the object shape of ``fastflow.decode.decode()``.

This is the inverse of the object decoder (docs/internals.md section 3): ``encode_datagram(obj)``
turns the dict ``decode()`` returns back into wire bytes, so that tests, the simulator and the
replay tools can build exactly the datagrams they need, and so that ``decode(encode(x)) == x``.
Byte identity with real captures is kept by honouring the object's ``"extra"`` (bytes past a known
record's layout), ``"padding"`` (bytes after a sample's records), ``"trailing"`` (bytes after the
datagram's samples) and ``"data"`` (the raw body of unknown / discard / rejected samples and
records) hex strings.

The builders (``datagram``, ``counter_sample``, ``flow_sample``, ``host_descr``, ``virt_cpu``,
``sampled_header``, ``packet_header``...) return the same dicts with defaults filled in, so code can
write ``encode_datagram(datagram("10.0.0.1", [counter_sample("3:7", [virt_cpu(cpu_time=5)])]))``.

Unknown fields in an object are ignored; missing numeric fields are encoded as 0. Values that do not
fit their wire type raise ``EncodeError`` (a ``ValueError``) naming the field.
"""

from __future__ import annotations

import ipaddress
import struct
import uuid as uuid_mod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fastflow._schema import COUNTER_RECORD_BY_FORMAT, COUNTER_RECORD_BY_NAME, FLOW_RECORDS

__all__ = [
    "EncodeError", "encode_datagram", "encode_sample", "encode_counter_record", "encode_flow_record",
    "datagram", "counter_sample", "flow_sample", "discard_sample", "unknown_sample", "counter_record",
    "raw_record", "if_name",
    "if_counters", "ethernet_counters", "host_descr", "host_adapters", "host_parent", "host_cpu",
    "host_memory", "host_disk_io", "host_net_io", "virt_node", "virt_cpu", "virt_memory",
    "virt_disk_io", "virt_net_io", "sampled_header", "sampled_ethernet", "sampled_ipv4",
    "sampled_ipv6", "extended_switch", "extended_router", "extended_gateway", "packet_header",
    "parse_format", "format_str",
]

Obj = dict[str, Any]

FLOW_FORMAT_BY_NAME: dict[str, int] = {name: fmt for fmt, name in FLOW_RECORDS.items()}


class EncodeError(ValueError):
    """An object cannot be encoded (bad value, unknown record name, malformed hex...)."""


# --------------------------------------------------------------------------------------------------
# primitives
# --------------------------------------------------------------------------------------------------
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_I32 = struct.Struct(">i")
_F32 = struct.Struct(">f")


def parse_format(fmt: str | int | Sequence[int]) -> int:
    """``"e:f"`` (or an int data_format, or an (enterprise, format) pair) -> the u32 data_format."""
    if isinstance(fmt, int):
        return fmt
    if isinstance(fmt, str):
        try:
            ent_s, _, num_s = fmt.partition(":")
            ent, num = (int(ent_s), int(num_s)) if num_s else (0, int(ent_s))
        except ValueError:
            raise EncodeError(f"bad format {fmt!r}: expected 'enterprise:format'") from None
    else:
        ent, num = int(fmt[0]), int(fmt[1])
    if not (0 <= ent < 1 << 20 and 0 <= num < 1 << 12):
        raise EncodeError(f"format {fmt!r} out of range")
    return ent << 12 | num


def format_str(data_format: int) -> str:
    """The u32 data_format -> ``"e:f"``."""
    return f"{data_format >> 12}:{data_format & 0xFFF}"


def _u32(v: Any, name: str = "value") -> bytes:
    try:
        return _U32.pack(int(v))
    except (struct.error, TypeError, ValueError):
        raise EncodeError(f"{name}={v!r} does not fit u32") from None


def _u64(v: Any, name: str = "value") -> bytes:
    try:
        return _U64.pack(int(v))
    except (struct.error, TypeError, ValueError):
        raise EncodeError(f"{name}={v!r} does not fit u64") from None


def _i32(v: Any, name: str = "value") -> bytes:
    try:
        return _I32.pack(int(v))
    except (struct.error, TypeError, ValueError):
        raise EncodeError(f"{name}={v!r} does not fit i32") from None


def _f32(v: Any, name: str = "value") -> bytes:
    try:
        return _F32.pack(float(v))
    except (struct.error, TypeError, ValueError, OverflowError):
        raise EncodeError(f"{name}={v!r} is not a float") from None


_PACK = {"u32": _u32, "u64": _u64, "i32": _i32, "f32": _f32}
_SIZE = {"u32": 4, "u64": 8, "i32": 4, "f32": 4}


def _pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def _hex(v: Any, name: str) -> bytes:
    if v is None:
        return b""
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    try:
        return bytes.fromhex(str(v))
    except ValueError:
        raise EncodeError(f"{name}: not a hex string: {str(v)[:40]!r}") from None


def _xdr_string(v: Any, name: str, maxlen: int | None = None, pad: Any = None) -> bytes:
    raw = v if isinstance(v, (bytes, bytearray)) else str(v if v is not None else "").encode()
    if maxlen is not None and len(raw) > maxlen:
        raise EncodeError(f"{name}: {len(raw)} bytes, at most {maxlen}")
    return _opaque(bytes(raw), pad)


def _opaque(raw: bytes, pad: Any = None) -> bytes:
    """XDR opaque<>; ``pad`` (hex) gives the padding bytes when they were not zero on the wire
    (real agents leave garbage there: hsflowd's sampled_header)."""
    if pad is None:
        return _u32(len(raw)) + _pad4(raw)
    padb = _hex(pad, "pad")
    if len(padb) != -len(raw) % 4:
        raise EncodeError(f"pad of {len(padb)} bytes for an opaque of {len(raw)}")
    return _u32(len(raw)) + raw + padb


def _mac(v: Any, name: str, pad: Any = None) -> bytes:
    """A MAC as 12 hex digits (":" / "-" allowed), 6 bytes or an int -> 8 bytes on the wire
    (the 2 pad bytes are ``pad`` (hex) when given, else zero)."""
    if isinstance(v, int):
        raw = v.to_bytes(6, "big")
    elif isinstance(v, (bytes, bytearray)):
        raw = bytes(v)
    else:
        raw = _hex(str(v).replace(":", "").replace("-", ""), name)
    if len(raw) != 6:
        raise EncodeError(f"{name}: a MAC is 6 bytes, got {len(raw)}")
    padb = b"\0\0" if pad is None else _hex(pad, f"{name} pad")
    if len(padb) != 2:
        raise EncodeError(f"{name}: MAC pad is 2 bytes")
    return raw + padb


def _address(v: Any, name: str, af: int | None = None) -> bytes:
    """An sFlow ``address``: type word + 0/4/16 bytes, from text ("unknown"/"" -> type 0)."""
    if af == 0 or v is None or v == "" or v == "unknown":
        if af not in (None, 0):
            raise EncodeError(f"{name}: address type {af} needs an address")
        return _u32(0)
    try:
        ip = ipaddress.ip_address(v)
    except ValueError:
        raise EncodeError(f"{name}: not an IP address: {v!r}") from None
    if ip.version == 4:
        if af not in (None, 1):
            raise EncodeError(f"{name}: {v} is IPv4 but address type is {af}")
        return _u32(1) + ip.packed
    if af not in (None, 2):
        raise EncodeError(f"{name}: {v} is IPv6 but address type is {af}")
    return _u32(2) + ip.packed


def _ip_bytes(v: Any, name: str, version: int) -> bytes:
    try:
        ip = ipaddress.ip_address(v if v not in (None, "") else ("0.0.0.0" if version == 4 else "::"))
    except ValueError:
        raise EncodeError(f"{name}: not an IP address: {v!r}") from None
    if ip.version != version:
        raise EncodeError(f"{name}: expected IPv{version}, got {v!r}")
    return ip.packed


def _uuid_bytes(v: Any) -> bytes:
    if v is None or v == "":
        return b"\0" * 16
    if isinstance(v, (bytes, bytearray)):
        raw = bytes(v)
    else:
        try:
            raw = uuid_mod.UUID(str(v)).bytes
        except ValueError:
            raise EncodeError(f"uuid: not a UUID: {v!r}") from None
    if len(raw) != 16:
        raise EncodeError("uuid: 16 bytes expected")
    return raw


def _record(fmt: int, body: bytes) -> bytes:
    return _u32(fmt) + _u32(len(body)) + body


# --------------------------------------------------------------------------------------------------
# counter records
# --------------------------------------------------------------------------------------------------
def _raw_body(rec: Mapping[str, Any], what: str) -> bytes | None:
    """Body for records/samples carried as raw data (unknown, discard, rejected)."""
    if "error" in rec or rec.get("name") == "unknown" or rec.get("type") in ("unknown", "discard"):
        return _hex(rec.get("data", ""), f"{what} data")
    return None


def _fmt_of(rec: Mapping[str, Any], by_name: Mapping[str, int], what: str) -> int:
    if "format" in rec:
        return parse_format(rec["format"])
    name = rec.get("name")
    if name in by_name:
        return by_name[name]  # type: ignore[index]
    raise EncodeError(f"{what} has neither 'format' nor a known 'name': {name!r}")


_COUNTER_FORMAT_BY_NAME = {name: fmt for name, (fmt, *_rest) in COUNTER_RECORD_BY_NAME.items()}


def encode_counter_record(rec: Mapping[str, Any]) -> bytes:
    """One counter record (data_format + length + body) from its object form."""
    fmt = _fmt_of(rec, _COUNTER_FORMAT_BY_NAME, "counter record")
    raw = _raw_body(rec, "counter record")
    if raw is not None:
        return _record(fmt, raw)
    if fmt >> 12 != 0 or (fmt & 0xFFF) not in COUNTER_RECORD_BY_FORMAT:
        raise EncodeError(f"counter record {format_str(fmt)}: unknown format needs 'name': "
                          "'unknown' and 'data'")
    num = fmt & 0xFFF
    _f, name, min_len, fields = COUNTER_RECORD_BY_FORMAT[num]
    if num == 1005:
        ifname = _hex(rec["if_name_raw"], "if_name_raw") if "if_name_raw" in rec \
            else rec.get("if_name", "")
        body = _xdr_string(ifname, "if_name", 255, rec.get("if_name_pad"))
    elif num == 2000:
        hostname = _hex(rec["hostname_raw"], "hostname_raw") if "hostname_raw" in rec \
            else rec.get("hostname", "")
        release = _hex(rec["os_release_raw"], "os_release_raw") if "os_release_raw" in rec \
            else rec.get("os_release", "")
        body = (_xdr_string(hostname, "hostname", 64, rec.get("hostname_pad"))
                + _uuid_bytes(rec.get("uuid"))
                + _u32(rec.get("machine_type", 0), "machine_type") + _u32(rec.get("os_name", 0), "os_name")
                + _xdr_string(release, "os_release", 32, rec.get("os_release_pad")))
    elif num == 2001:
        parts = []
        adapters = rec.get("adapters", [])
        if isinstance(adapters, int):  # a bare count (table form): adapters without MACs
            adapters = [{"if_index": 0, "macs": []}] * adapters
        for a in adapters:
            macs = a.get("macs", [])
            # hsflowd sends uninitialised pad bytes (often ffff) after each 6-byte MAC; a decoder
            # that keeps them gives "mac_pads" (hex, one per MAC) so the bytes come back the same
            pads = a.get("mac_pads") or [None] * len(macs)
            if len(pads) != len(macs):
                raise EncodeError("host_adapters: mac_pads and macs differ in length")
            parts.append(_u32(a.get("if_index", 0), "if_index") + _u32(len(macs))
                         + b"".join(_mac(m, "mac", pad) for m, pad in zip(macs, pads, strict=True)))
        body = _u32(len(parts)) + b"".join(parts)
    else:
        end = min_len
        for json_name, _col, off, typ in fields:
            if json_name in rec and off is not None:
                end = max(end, off + _SIZE[typ])
        buf = bytearray(end)
        for json_name, _col, off, typ in fields:
            assert off is not None
            if off + _SIZE[typ] > end:
                continue
            v = rec.get(json_name, 0)
            buf[off:off + _SIZE[typ]] = _PACK[typ](v, f"{name}.{json_name}")
        body = bytes(buf)
    body += _hex(rec.get("extra"), f"{name} extra")
    return _record(fmt, body)


# --------------------------------------------------------------------------------------------------
# flow records
# --------------------------------------------------------------------------------------------------
def encode_flow_record(rec: Mapping[str, Any]) -> bytes:
    """One flow record (data_format + length + body) from its object form."""
    fmt = _fmt_of(rec, FLOW_FORMAT_BY_NAME, "flow record")
    raw = _raw_body(rec, "flow record")
    if raw is not None:
        return _record(fmt, raw)
    num = fmt & 0xFFF if fmt >> 12 == 0 else -1
    g = rec.get
    if num == 1:
        header = _hex(g("header", ""), "sampled_header.header")
        hlen = g("header_length", len(header))
        if hlen != len(header):
            raise EncodeError(f"sampled_header: header_length {hlen} != {len(header)} header bytes")
        body = (_u32(g("header_protocol", 1), "header_protocol")
                + _u32(g("frame_length", len(header)), "frame_length")
                + _u32(g("stripped", 0), "stripped") + _opaque(header, g("header_pad")))
    elif num == 2:
        body = (_u32(g("length", 0), "length") + _mac(g("src_mac", 0), "src_mac", g("src_mac_pad"))
                + _mac(g("dst_mac", 0), "dst_mac", g("dst_mac_pad"))
                + _u32(g("type", g("eth_type", 0)), "type"))
    elif num in (3, 4):
        ver = 4 if num == 3 else 6
        body = (_u32(g("length", 0), "length") + _u32(g("protocol", 0), "protocol")
                + _ip_bytes(g("src_ip"), "src_ip", ver) + _ip_bytes(g("dst_ip"), "dst_ip", ver)
                + _u32(g("src_port", 0), "src_port") + _u32(g("dst_port", 0), "dst_port")
                + _u32(g("tcp_flags", 0), "tcp_flags")
                + _u32(g("tos", 0) if ver == 4 else g("priority", 0), "tos/priority"))
    elif num == 1001:
        body = b"".join(_u32(g(k, 0), k) for k in ("src_vlan", "src_priority", "dst_vlan",
                                                    "dst_priority"))
    elif num == 1002:
        body = (_address(g("nexthop"), "nexthop", g("nexthop_type"))
                + _u32(g("src_mask_len", 0), "src_mask_len") + _u32(g("dst_mask_len", 0), "dst_mask_len"))
    elif num == 1003:
        segs = []
        for seg in g("dst_as_path", []):
            ases = seg.get("as", [])
            segs.append(_u32(seg.get("type", 2), "segment type") + _u32(len(ases))
                        + b"".join(_u32(a, "as") for a in ases))
        comms = g("communities", [])
        body = (_address(g("nexthop"), "nexthop", g("nexthop_type")) + _u32(g("as", 0), "as")
                + _u32(g("src_as", 0), "src_as") + _u32(g("src_peer_as", 0), "src_peer_as")
                + _u32(len(segs)) + b"".join(segs)
                + _u32(len(comms)) + b"".join(_u32(c, "community") for c in comms)
                + _u32(g("local_pref", 0), "local_pref"))
    else:
        raise EncodeError(f"flow record {format_str(fmt)}: unknown format needs 'name': 'unknown' "
                          "and 'data'")
    body += _hex(g("extra"), "flow record extra")
    return _record(fmt, body)


# --------------------------------------------------------------------------------------------------
# samples and datagrams
# --------------------------------------------------------------------------------------------------
def _source(s: Mapping[str, Any]) -> tuple[int, int]:
    if "source_id_type" in s and "source_id_index" in s:
        return int(s["source_id_type"]), int(s["source_id_index"])
    sid = s.get("source_id", "0:0")
    if isinstance(sid, int):
        return sid >> 24, sid & 0xFFFFFF
    if isinstance(sid, (tuple, list)):
        return int(sid[0]), int(sid[1])
    try:
        t, _, i = str(sid).partition(":")
        return int(t), int(i)
    except ValueError:
        raise EncodeError(f"bad source_id {sid!r}: expected 'type:index'") from None


def _iface_compact(s: Mapping[str, Any], key: str) -> bytes:
    v = int(s.get(key, 0))
    fmt = s.get(f"{key}_format")
    if fmt is None or v > 0x3FFFFFFF:
        return _u32(v, key)
    return _u32(int(fmt) << 30 | v, key)


_SAMPLE_FORMATS = {("counters", False): 2, ("counters", True): 4, ("flow", False): 1,
                   ("flow", True): 3}


def encode_sample(s: Mapping[str, Any]) -> bytes:
    """One sample record (data_format + length + body) from its object form."""
    typ = s.get("type")
    if s.get("error") == "sample_overrun":
        # as decoded: the rest of the datagram, after the sample's (format, declared length) if
        # those fitted; encoded as it was so that malformed captures come back byte for byte
        data = _hex(s.get("data", ""), "sample data")
        if "format" not in s:
            return data
        return _u32(parse_format(s["format"])) + _u32(s.get("length", len(data)), "length") + data
    if typ == "unknown" or "error" in s or (typ == "discard" and "data" in s):
        if "format" not in s:
            raise EncodeError(f"{typ or 'rejected'} sample needs 'format'")
        return _record(parse_format(s["format"]), _hex(s.get("data", ""), "sample data"))
    if typ == "discard":  # 0:5 (sflow_drops.txt): expanded source, drops, input, output, reason
        st, si = _source(s)
        recs = s.get("records", [])
        body = (_u32(s.get("sequence_number", 0), "sequence_number")
                + _u32(st, "source_id_type") + _u32(si, "source_id_index")
                + _u32(s.get("drops", 0), "drops") + _u32(s.get("input", 0), "input")
                + _u32(s.get("output", 0), "output") + _u32(s.get("reason", 0), "reason")
                + _u32(len(recs)) + b"".join(encode_flow_record(r) for r in recs)
                + _hex(s.get("padding"), "sample padding"))
        return _record(parse_format(s.get("format", "0:5")), body)
    if typ not in ("counters", "flow"):
        raise EncodeError(f"sample type {typ!r}: expected counters, flow, unknown or discard")
    if "format" in s:
        fmt = parse_format(s["format"])
        expanded = fmt == 4 if typ == "counters" else fmt == 3
    else:
        expanded = bool(s.get("expanded", False))
        fmt = _SAMPLE_FORMATS[(typ, expanded)]
    st, si = _source(s)
    seq = _u32(s.get("sequence_number", 0), "sequence_number")
    recs = s.get("records", [])
    if typ == "counters":
        body_recs = b"".join(encode_counter_record(r) for r in recs)
        if expanded:
            head = seq + _u32(st, "source_id_type") + _u32(si, "source_id_index")
        else:
            if st > 0xFF or si > 0xFFFFFF:
                raise EncodeError(f"source {st}:{si} does not fit a compact sample")
            head = seq + _u32(st << 24 | si)
    else:
        body_recs = b"".join(encode_flow_record(r) for r in recs)
        common = (_u32(s.get("sampling_rate", 1), "sampling_rate")
                  + _u32(s.get("sample_pool", 0), "sample_pool") + _u32(s.get("drops", 0), "drops"))
        if expanded:
            head = (seq + _u32(st, "source_id_type") + _u32(si, "source_id_index") + common
                    + _u32(s.get("input_format", 0), "input_format") + _u32(s.get("input", 0), "input")
                    + _u32(s.get("output_format", 0), "output_format")
                    + _u32(s.get("output", 0), "output"))
        else:
            if st > 0xFF or si > 0xFFFFFF:
                raise EncodeError(f"source {st}:{si} does not fit a compact sample")
            head = (seq + _u32(st << 24 | si) + common + _iface_compact(s, "input")
                    + _iface_compact(s, "output"))
    body = head + _u32(len(recs)) + body_recs + _hex(s.get("padding"), "sample padding")
    return _record(fmt, body)


def encode_datagram(obj: Mapping[str, Any]) -> bytes:
    """A whole sFlow v5 datagram from the object shape ``fastflow.decode.decode()`` returns.

    ``num_samples`` is the number of samples given (the object's own ``num_samples``/``length``
    are outputs of the decoder and ignored, except that a datagram whose ``errors`` include
    ``sample_overrun`` keeps its declared ``num_samples``); ``version`` defaults to 5.
    Non-zero XDR padding (which real agents send) comes back when the object carries it:
    ``header_pad`` (sampled_header), ``src_mac_pad``/``dst_mac_pad`` (sampled_ethernet),
    ``mac_pads`` (per host_adapters adapter), ``hostname_pad``/``os_release_pad`` (host_descr);
    strings that were not UTF-8 come back from ``hostname_raw``/``os_release_raw`` (hex).
    """
    samples = obj.get("samples", [])
    num = len(samples)
    if "sample_overrun" in obj.get("errors", ()) and "num_samples" in obj:
        num = int(obj["num_samples"])  # a malformed datagram: keep the count it declared
    af = obj.get("agent_address_type")
    head = (_u32(obj.get("version", 5), "version")
            + _address(obj.get("agent", "unknown"), "agent", None if af is None else int(af))
            + _u32(obj.get("sub_agent_id", 0), "sub_agent_id")
            + _u32(obj.get("sequence_number", 0), "sequence_number")
            + _u32(obj.get("uptime", 0), "uptime") + _u32(num, "num_samples"))
    return head + b"".join(encode_sample(s) for s in samples) + _hex(obj.get("trailing"), "trailing")


# --------------------------------------------------------------------------------------------------
# builders
# --------------------------------------------------------------------------------------------------
def datagram(agent: str, samples: Iterable[Obj], sequence_number: int = 1, uptime: int = 0,
             sub_agent_id: int = 0) -> Obj:
    """A datagram object (agent: IPv4/IPv6 text, or "unknown")."""
    out: Obj = {"agent": agent, "sub_agent_id": sub_agent_id, "sequence_number": sequence_number,
                "uptime": uptime, "samples": list(samples)}
    if agent not in ("", "unknown"):
        out["agent_address_type"] = 1 if ipaddress.ip_address(agent).version == 4 else 2
    else:
        out["agent_address_type"] = 0
    return out


def _sid_obj(source_id: str | tuple[int, int]) -> Obj:
    t, i = _source({"source_id": source_id})
    return {"source_id": f"{t}:{i}", "source_id_type": t, "source_id_index": i}


def counter_sample(source_id: str | tuple[int, int], records: Iterable[Obj], sequence_number: int = 1,
                   expanded: bool = False) -> Obj:
    """A counters sample (0:2, or 0:4 when ``expanded``); source_id ``"type:index"``."""
    return {"type": "counters", "expanded": expanded, "format": "0:4" if expanded else "0:2",
            "sequence_number": sequence_number, **_sid_obj(source_id), "records": list(records)}


def flow_sample(source_id: str | tuple[int, int], records: Iterable[Obj], sequence_number: int = 1,
                sampling_rate: int = 1, sample_pool: int = 0, drops: int = 0, input: int = 0,
                output: int = 0, input_format: int = 0, output_format: int = 0,
                expanded: bool = False) -> Obj:
    """A flow sample (0:1, or 0:3 when ``expanded``)."""
    return {"type": "flow", "expanded": expanded, "format": "0:3" if expanded else "0:1",
            "sequence_number": sequence_number, **_sid_obj(source_id),
            "sampling_rate": sampling_rate, "sample_pool": sample_pool, "drops": drops,
            "input": input, "output": output, "input_format": input_format,
            "output_format": output_format, "records": list(records)}


def discard_sample(source_id: str | tuple[int, int], records: Iterable[Obj],
                   sequence_number: int = 1, drops: int = 0, input: int = 0, output: int = 0,
                   reason: int = 0) -> Obj:
    """A 0:5 discarded-packet event (sflow_drops.txt): the flow records describe the dropped
    packet; ``reason`` is the drop reason code (e.g. 258 acl), input/output ifIndex words."""
    return {"type": "discard", "format": "0:5", "sequence_number": sequence_number,
            **_sid_obj(source_id), "drops": drops, "input": input, "output": output,
            "reason": reason, "records": list(records)}


def unknown_sample(fmt: str, data: bytes) -> Obj:
    """A sample fastflow does not decode, carried as raw bytes (a ``"0:5"`` one stays a raw
    discard sample: its body is not parsed)."""
    return {"type": "discard" if fmt == "0:5" else "unknown", "format": fmt, "data": data.hex()}


def raw_record(fmt: str, data: bytes) -> Obj:
    """A record carried as raw bytes (unknown to the decoder, e.g. ``"0:1006"``)."""
    return {"format": fmt, "name": "unknown", "data": data.hex()}


def counter_record(name: str, **fields: Any) -> Obj:
    """Any counter record of ``_schema.COUNTER_RECORDS`` by name, every fixed field defaulting to 0.

    host_cpu's optional tail (cpu_steal, cpu_guest, cpu_guest_nice) is included (whole) only when
    one of its fields is given.
    """
    if name not in COUNTER_RECORD_BY_NAME:
        raise EncodeError(f"unknown counter record {name!r}")
    fmt, _n, min_len, flds = COUNTER_RECORD_BY_NAME[name]
    rec: Obj = {"format": f"0:{fmt}", "name": name}
    known = {f[0] for f in flds}
    bad = set(fields) - known - {"extra"}
    if bad:
        raise EncodeError(f"{name}: unknown fields {sorted(bad)}")
    tail = any(f[0] in fields for f in flds if f[2] is not None and f[2] >= min_len)
    for json_name, _col, off, typ in flds:
        if json_name in fields:
            rec[json_name] = fields[json_name]
        elif off is not None and (off < min_len or tail):
            rec[json_name] = 0.0 if typ == "f32" else 0
    if "extra" in fields:
        rec["extra"] = fields["extra"]
    return rec


def if_counters(**f: Any) -> Obj:
    """0:1 generic interface counters."""
    return counter_record("if_counters", **f)


def if_name(name: str) -> Obj:
    """0:1005 port name (hsflowd sends it with every interface's counters)."""
    return {"format": "0:1005", "name": "if_name", "if_name": name}


def ethernet_counters(**f: Any) -> Obj:
    """0:2 Ethernet interface counters."""
    return counter_record("ethernet_counters", **f)


def host_descr(hostname: str = "", uuid: str = "00000000-0000-0000-0000-000000000000",
               machine_type: int = 3, os_name: int = 2, os_release: str = "") -> Obj:
    """0:2000 host description (hostname: for a container, its name, e.g. ``apache.1.x``)."""
    return {"format": "0:2000", "name": "host_descr", "hostname": hostname, "uuid": uuid,
            "machine_type": machine_type, "os_name": os_name, "os_release": os_release}


def host_adapters(adapters: Iterable[tuple[int, Sequence[str]]] = ()) -> Obj:
    """0:2001 adapters: ``[(if_index, ["02fc00000001", ...]), ...]``."""
    return {"format": "0:2001", "name": "host_adapters",
            "adapters": [{"if_index": i, "macs": list(m)} for i, m in adapters]}


def host_parent(container_type: int = 2, container_index: int = 1) -> Obj:
    """0:2002 parent (for a container: the host's data source, 2:1)."""
    return counter_record("host_parent", container_type=container_type,
                          container_index=container_index)


def host_cpu(**f: Any) -> Obj:
    """0:2003 host CPU (68 B, or 80 B when cpu_steal/cpu_guest/cpu_guest_nice are given)."""
    return counter_record("host_cpu", **f)


def host_memory(**f: Any) -> Obj:
    """0:2004 host memory."""
    return counter_record("host_memory", **f)


def host_disk_io(**f: Any) -> Obj:
    """0:2005 host disk I/O."""
    return counter_record("host_disk_io", **f)


def host_net_io(**f: Any) -> Obj:
    """0:2006 host network I/O."""
    return counter_record("host_net_io", **f)


def virt_node(**f: Any) -> Obj:
    """0:2100 virtual node (the host of containers/VMs)."""
    return counter_record("virt_node", **f)


def virt_cpu(state: int = 1, cpu_time: int = 0, nr_virt_cpu: int = 1) -> Obj:
    """0:2101 container CPU: cpu_time in ms (cumulative, u32 wrap)."""
    return counter_record("virt_cpu", state=state, cpu_time=cpu_time & 0xFFFFFFFF,
                          nr_virt_cpu=nr_virt_cpu)


def virt_memory(memory: int = 0, max_memory: int = 0) -> Obj:
    """0:2102 container memory (bytes used / allowed)."""
    return counter_record("virt_memory", memory=memory, max_memory=max_memory)


def virt_disk_io(**f: Any) -> Obj:
    """0:2103 container block I/O."""
    return counter_record("virt_disk_io", **f)


def virt_net_io(**f: Any) -> Obj:
    """0:2104 container network I/O."""
    return counter_record("virt_net_io", **f)


def sampled_header(header: bytes, header_protocol: int = 1, frame_length: int | None = None,
                   stripped: int = 0) -> Obj:
    """0:1 sampled header (header_protocol 1 Ethernet, 11 IPv4, 12 IPv6)."""
    return {"format": "0:1", "name": "sampled_header", "header_protocol": header_protocol,
            "frame_length": len(header) if frame_length is None else frame_length,
            "stripped": stripped, "header_length": len(header), "header": header.hex()}


def sampled_ethernet(length: int, src_mac: str, dst_mac: str, type: int = 0x0800) -> Obj:
    """0:2 sampled Ethernet."""
    return {"format": "0:2", "name": "sampled_ethernet", "length": length, "src_mac": src_mac,
            "dst_mac": dst_mac, "type": type}


def sampled_ipv4(length: int = 0, protocol: int = 6, src_ip: str = "0.0.0.0", dst_ip: str = "0.0.0.0",
                 src_port: int = 0, dst_port: int = 0, tcp_flags: int = 0, tos: int = 0) -> Obj:
    """0:3 sampled IPv4."""
    return {"format": "0:3", "name": "sampled_ipv4", "length": length, "protocol": protocol,
            "src_ip": src_ip, "dst_ip": dst_ip, "src_port": src_port, "dst_port": dst_port,
            "tcp_flags": tcp_flags, "tos": tos}


def sampled_ipv6(length: int = 0, protocol: int = 6, src_ip: str = "::", dst_ip: str = "::",
                 src_port: int = 0, dst_port: int = 0, tcp_flags: int = 0, priority: int = 0) -> Obj:
    """0:4 sampled IPv6."""
    return {"format": "0:4", "name": "sampled_ipv6", "length": length, "protocol": protocol,
            "src_ip": src_ip, "dst_ip": dst_ip, "src_port": src_port, "dst_port": dst_port,
            "tcp_flags": tcp_flags, "priority": priority}


def extended_switch(src_vlan: int = 0, src_priority: int = 0, dst_vlan: int = 0,
                    dst_priority: int = 0) -> Obj:
    """0:1001 extended switch."""
    return {"format": "0:1001", "name": "extended_switch", "src_vlan": src_vlan,
            "src_priority": src_priority, "dst_vlan": dst_vlan, "dst_priority": dst_priority}


def extended_router(nexthop: str, src_mask_len: int = 0, dst_mask_len: int = 0) -> Obj:
    """0:1002 extended router."""
    return {"format": "0:1002", "name": "extended_router", "nexthop": nexthop,
            "src_mask_len": src_mask_len, "dst_mask_len": dst_mask_len}


def extended_gateway(nexthop: str, as_: int = 0, src_as: int = 0, src_peer_as: int = 0,
                     dst_as_path: Iterable[tuple[int, Sequence[int]]] = (),
                     communities: Sequence[int] = (), local_pref: int = 0) -> Obj:
    """0:1003 extended gateway; dst_as_path as ``[(segment_type, [as, ...]), ...]``."""
    return {"format": "0:1003", "name": "extended_gateway", "nexthop": nexthop, "as": as_,
            "src_as": src_as, "src_peer_as": src_peer_as,
            "dst_as_path": [{"type": t, "as": list(a)} for t, a in dst_as_path],
            "communities": list(communities), "local_pref": local_pref}


def _csum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f">{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def packet_header(src_ip: str = "10.0.0.1", dst_ip: str = "10.0.0.2", protocol: int = 6,
                  src_port: int = 12345, dst_port: int = 80, tcp_flags: int = 0x18,
                  payload_len: int = 0, ttl: int = 64, tos: int = 0,
                  src_mac: str = "020000000001", dst_mac: str = "020000000002",
                  vlan: int | None = None, icmp_type: int = 8, icmp_code: int = 0,
                  ethernet: bool = True) -> bytes:
    """The first bytes of a packet (Ethernet [802.1Q] + IPv4/IPv6 + TCP/UDP/ICMP header), as an
    agent would put in a sampled_header record. ``payload_len`` sets the IP length fields only."""
    v6 = ipaddress.ip_address(src_ip).version == 6
    if protocol == 6:
        l4 = struct.pack(">HHIIBBHHH", src_port, dst_port, 1, 0, 5 << 4, tcp_flags, 65535, 0, 0)
    elif protocol == 17:
        l4 = struct.pack(">HHHH", src_port, dst_port, 8 + payload_len, 0)
    elif protocol in (1, 58):
        l4 = struct.pack(">BBHI", icmp_type, icmp_code, 0, 0)
    else:
        l4 = b""
    plen = len(l4) + payload_len
    if v6:
        ip = (struct.pack(">IHBB", 6 << 28 | tos << 20, plen, protocol, ttl)
              + _ip_bytes(src_ip, "src_ip", 6) + _ip_bytes(dst_ip, "dst_ip", 6))
        etype = 0x86DD
    else:
        h = struct.pack(">BBHHHBBH4s4s", 0x45, tos, 20 + plen, 0, 0x4000, ttl, protocol, 0,
                        _ip_bytes(src_ip, "src_ip", 4), _ip_bytes(dst_ip, "dst_ip", 4))
        ip = h[:10] + struct.pack(">H", _csum(h)) + h[12:]
        etype = 0x0800
    if not ethernet:
        return ip + l4
    eth = _mac(dst_mac, "dst_mac")[:6] + _mac(src_mac, "src_mac")[:6]
    if vlan is not None:
        eth += struct.pack(">HH", 0x8100, vlan & 0xFFF)
    return eth + struct.pack(">H", etype) + ip + l4
