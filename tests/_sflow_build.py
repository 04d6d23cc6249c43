"""A tiny sFlow v5 / packet builder for hand-made test datagrams (independent of fastflow.encode)."""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Mapping, Sequence

from fastflow._schema import COUNTER_RECORD_BY_NAME


def u32(*vals: int) -> bytes:
    return b"".join(struct.pack(">I", v & 0xFFFFFFFF) for v in vals)


def u64(v: int) -> bytes:
    return struct.pack(">Q", v)


def pad4(b: bytes) -> bytes:
    return b + b"\x00" * (-len(b) % 4)


def xdr_string(b: bytes | str) -> bytes:
    raw = b.encode() if isinstance(b, str) else b
    return u32(len(raw)) + pad4(raw)


def address(text: str | None) -> bytes:
    if text is None:
        return u32(0)
    ip = ipaddress.ip_address(text)
    return u32(1 if ip.version == 4 else 2) + ip.packed


def fmt(enterprise: int, number: int) -> int:
    return enterprise << 12 | number


def record(number: int, body: bytes, enterprise: int = 0) -> bytes:
    return u32(fmt(enterprise, number), len(body)) + body


def datagram(samples: Sequence[bytes] = (), agent: str | None = "192.0.2.1", sub: int = 0,
             seq: int = 1, uptime: int = 1000, num_samples: int | None = None,
             trailing: bytes = b"", version: int = 5) -> bytes:
    n = len(samples) if num_samples is None else num_samples
    return (u32(version) + address(agent) + u32(sub, seq, uptime, n) + b"".join(samples)
            + trailing)


def sample(number: int, body: bytes, enterprise: int = 0, length: int | None = None) -> bytes:
    return u32(fmt(enterprise, number), len(body) if length is None else length) + body


def counters_sample(records: Sequence[bytes], seq: int = 1, sid: int = 1,
                    expanded: bool = False, sid_type: int = 0, sid_index: int = 1,
                    num_records: int | None = None, padding: bytes = b"") -> bytes:
    n = len(records) if num_records is None else num_records
    if expanded:
        body = u32(seq, sid_type, sid_index, n)
    else:
        body = u32(seq, sid, n)
    return sample(4 if expanded else 2, body + b"".join(records) + padding)


def flow_sample(records: Sequence[bytes], seq: int = 1, sid: int = 1, rate: int = 100,
                pool: int = 1000, drops: int = 0, inp: int = 1, out: int = 2,
                expanded: bool = False, sid_type: int = 0, sid_index: int = 1,
                in_fmt: int = 0, out_fmt: int = 0, num_records: int | None = None,
                padding: bytes = b"") -> bytes:
    n = len(records) if num_records is None else num_records
    if expanded:
        body = u32(seq, sid_type, sid_index, rate, pool, drops, in_fmt, inp, out_fmt, out, n)
    else:
        body = u32(seq, sid, rate, pool, drops, inp, out, n)
    return sample(3 if expanded else 1, body + b"".join(records) + padding)


def discard_sample(records: Sequence[bytes], seq: int = 1, sid_type: int = 0, sid_index: int = 1,
                   drops: int = 0, inp: int = 1, out: int = 2, reason: int = 258,
                   num_records: int | None = None) -> bytes:
    """A 0:5 discarded-packet event (sflow_drops.txt): expanded source, drops, input, output,
    reason, then flow records."""
    n = len(records) if num_records is None else num_records
    body = u32(seq, sid_type, sid_index, drops, inp, out, reason, n)
    return sample(5, body + b"".join(records))


def if_name(name: bytes | str) -> bytes:
    """A 0:1005 if_name counter record (string if_name<255>)."""
    return record(1005, xdr_string(name))


# ---- counter record bodies -----------------------------------------------------------------------
def fixed_counter(name: str, values: Mapping[str, int | float] | None = None,
                  length: int | None = None) -> bytes:
    """Body of a fixed-layout counter record: fields by json_name, others 0."""
    _f, _n, minlen, fields = COUNTER_RECORD_BY_NAME[name]
    size = minlen if length is None else length
    buf = bytearray(max(size, minlen) + 16)
    for json_name, _col, off, typ in fields:
        assert off is not None
        v = (values or {}).get(json_name, 0)
        code = {"u32": ">I", "u64": ">Q", "i32": ">i", "f32": ">f"}[typ]
        struct.pack_into(code, buf, off, v)
    return bytes(buf[:size])


def host_descr(hostname: bytes | str = "h1", uuid16: bytes = bytes(range(16)),
               machine_type: int = 3, os_name: int = 2, os_release: bytes | str = "6.1.0") -> bytes:
    return xdr_string(hostname) + uuid16 + u32(machine_type, os_name) + xdr_string(os_release)


def host_adapters(adapters: Iterable[tuple[int, Sequence[bytes]]]) -> bytes:
    items = list(adapters)
    out = u32(len(items))
    for if_index, macs in items:
        out += u32(if_index, len(macs)) + b"".join(m + b"\x00\x00" for m in macs)
    return out


# ---- flow record bodies --------------------------------------------------------------------------
def sampled_header(header: bytes, protocol: int = 1, frame_length: int | None = None,
                   stripped: int = 4) -> bytes:
    fl = len(header) + stripped if frame_length is None else frame_length
    return u32(protocol, fl, stripped, len(header)) + pad4(header)


def sampled_ethernet(length: int, src: bytes, dst: bytes, etype: int) -> bytes:
    return u32(length) + src + b"\0\0" + dst + b"\0\0" + u32(etype)


def sampled_ipv4(length: int, proto: int, src: str, dst: str, sp: int, dp: int,
                 flags: int = 0, tos: int = 0) -> bytes:
    return (u32(length, proto) + ipaddress.IPv4Address(src).packed
            + ipaddress.IPv4Address(dst).packed + u32(sp, dp, flags, tos))


def sampled_ipv6(length: int, proto: int, src: str, dst: str, sp: int, dp: int,
                 flags: int = 0, prio: int = 0) -> bytes:
    return (u32(length, proto) + ipaddress.IPv6Address(src).packed
            + ipaddress.IPv6Address(dst).packed + u32(sp, dp, flags, prio))


def extended_switch(sv: int, sp: int, dv: int, dp: int) -> bytes:
    return u32(sv, sp, dv, dp)


def extended_router(nexthop: str | None, src_mask: int, dst_mask: int) -> bytes:
    return address(nexthop) + u32(src_mask, dst_mask)


def extended_gateway(nexthop: str | None, as_: int, src_as: int, src_peer_as: int,
                     path: Sequence[tuple[int, Sequence[int]]], communities: Sequence[int],
                     local_pref: int) -> bytes:
    out = address(nexthop) + u32(as_, src_as, src_peer_as, len(path))
    for seg_type, ases in path:
        out += u32(seg_type, len(ases), *ases)
    return out + u32(len(communities), *communities) + u32(local_pref)


# ---- packets -------------------------------------------------------------------------------------
MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")


def eth(payload: bytes, etype: int = 0x0800, vlans: Sequence[tuple[int, int]] = (),
        dst: bytes = MAC_B, src: bytes = MAC_A) -> bytes:
    out = dst + src
    for tpid, vid in vlans:
        out += struct.pack(">HH", tpid, vid)
    return out + struct.pack(">H", etype) + payload


def ipv4(payload: bytes, proto: int = 6, src: str = "10.0.0.1", dst: str = "10.0.0.2",
         tos: int = 0, ttl: int = 64, frag: int = 0, ihl: int = 5,
         total: int | None = None) -> bytes:
    opts = b"\x00" * ((ihl - 5) * 4) if ihl >= 5 else b""
    tl = 20 + len(opts) + len(payload) if total is None else total
    hdr = struct.pack(">BBHHHBBH", 0x40 | ihl, tos, tl, 1, frag, ttl, proto, 0)
    return hdr + ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed + opts \
        + payload


def ipv6(payload: bytes, nh: int = 6, src: str = "2001:db8::1", dst: str = "2001:db8::2",
         tc: int = 0, hlim: int = 64, plen: int | None = None) -> bytes:
    first = 6 << 28 | tc << 20
    pl = len(payload) if plen is None else plen
    return (struct.pack(">IHBB", first, pl, nh, hlim) + ipaddress.IPv6Address(src).packed
            + ipaddress.IPv6Address(dst).packed + payload)


def ext_header(nh: int, length_units: int = 0) -> bytes:
    """Generic IPv6 extension header (hop-by-hop/routing/destination): (n+1)*8 bytes."""
    return bytes([nh, length_units]) + b"\x00" * (6 + 8 * length_units)


def frag_header(nh: int, offset: int = 0, more: bool = False) -> bytes:
    return bytes([nh, 0]) + struct.pack(">HI", offset << 3 | int(more), 0x1234)


def tcp(sp: int = 1234, dp: int = 80, flags: int = 0x18) -> bytes:
    return struct.pack(">HHIIBBHHH", sp, dp, 1, 2, 0x50, flags, 1024, 0, 0)


def udp(sp: int = 5353, dp: int = 53, payload: bytes = b"") -> bytes:
    return struct.pack(">HHHH", sp, dp, 8 + len(payload), 0) + payload


def icmp(t: int = 8, c: int = 0) -> bytes:
    return bytes([t, c]) + b"\x00\x00" + b"\x00" * 4
