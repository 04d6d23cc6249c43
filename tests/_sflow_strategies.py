"""Hypothesis strategies for sFlow datagram objects in the exact shape ``fastflow.decode.decode()``
returns (docs/internals.md section 3), for round-trip tests of encoder and decoders.

``datagrams()`` draws an object ``x`` without the decoder's outputs (num_samples, length, errors,
timestamp); ``expected(x, wire)`` adds them, so ``decode(encode_datagram(x)) == expected(x, wire)``
(with sampled_header's ``decoded`` removed from the decoder's answer: ``strip_decoded``).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import strategies as st

from fastflow._schema import COUNTER_RECORDS, FLOW_RECORDS

U32 = st.integers(0, 2**32 - 1)
U64 = st.integers(0, 2**64 - 1)
I32 = st.integers(-(2**31), 2**31 - 1)
F32 = st.floats(width=32, allow_nan=False, allow_infinity=True)
_WIRE = {"u32": U32, "u64": U64, "i32": I32, "f32": F32}


def _hexbytes(min_size: int = 0, max_size: int = 16) -> st.SearchStrategy[str]:
    return st.binary(min_size=min_size, max_size=max_size).map(bytes.hex)


def _xdr_text(maxlen: int) -> st.SearchStrategy[str]:
    return st.text(max_size=maxlen).filter(lambda t: len(t.encode()) <= maxlen)


MAC = st.binary(min_size=6, max_size=6).map(bytes.hex)
IPV4 = st.integers(0, 2**32 - 1).map(lambda i: str(ipaddress.IPv4Address(i)))
IPV6 = st.integers(0, 2**128 - 1).map(lambda i: str(ipaddress.IPv6Address(i)))


@st.composite
def fixed_counter_record(draw: st.DrawFn, rec: tuple) -> dict[str, Any]:
    fmt, name, min_len, fields = rec
    out: dict[str, Any] = {"format": f"0:{fmt}", "name": name}
    tail = draw(st.booleans())
    has_tail = False
    for json_name, _col, off, typ in fields:
        if off >= min_len and not tail:
            continue
        has_tail |= off >= min_len
        out[json_name] = draw(_WIRE[typ])
    # extra bytes past the layout; not for host_cpu without its tail (they would be read as tail)
    if has_tail or not any(f[2] >= min_len for f in fields):
        if draw(st.booleans()):
            out["extra"] = draw(_hexbytes(1, 12))
    return out


@st.composite
def host_descr(draw: st.DrawFn) -> dict[str, Any]:
    out = {"format": "0:2000", "name": "host_descr", "hostname": draw(_xdr_text(64)),
           "uuid": str(draw(st.uuids())), "machine_type": draw(U32), "os_name": draw(U32),
           "os_release": draw(_xdr_text(32))}
    if draw(st.booleans()):
        out["extra"] = draw(_hexbytes(1, 8))
    return out


@st.composite
def host_adapters(draw: st.DrawFn) -> dict[str, Any]:
    adapters = draw(st.lists(st.fixed_dictionaries({"if_index": U32, "macs": st.lists(MAC, max_size=3)}),
                             max_size=4))
    return {"format": "0:2001", "name": "host_adapters", "adapters": adapters}


def _unknown_record(known: set[int]) -> st.SearchStrategy[dict[str, Any]]:
    fmt = st.one_of(
        st.tuples(st.integers(1, 2**20 - 1), st.integers(0, 4095)),
        st.tuples(st.just(0), st.integers(0, 4095).filter(lambda f: f not in known)))
    return st.builds(lambda f, d: {"format": f"{f[0]}:{f[1]}", "name": "unknown", "data": d},
                     fmt, _hexbytes(0, 24))


@st.composite
def if_name(draw: st.DrawFn) -> dict[str, Any]:
    return {"format": "0:1005", "name": "if_name", "if_name": draw(_xdr_text(255))}


_FIXED = [r for r in COUNTER_RECORDS if r[0] not in (1005, 2000, 2001)]
COUNTER_RECORD = st.one_of(
    *[fixed_counter_record(r) for r in _FIXED], host_descr(), host_adapters(), if_name(),
    _unknown_record({r[0] for r in COUNTER_RECORDS}))


@st.composite
def _flow_record(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(FLOW_RECORDS)))
    name = FLOW_RECORDS[kind]
    out: dict[str, Any] = {"format": f"0:{kind}", "name": name}
    if kind == 1:
        header = draw(st.binary(max_size=80))
        out.update(header_protocol=draw(st.sampled_from([1, 11, 12, 7, 2**32 - 1])),
                   frame_length=draw(U32), stripped=draw(U32), header_length=len(header),
                   header=header.hex())
    elif kind == 2:
        out.update(length=draw(U32), src_mac=draw(MAC), dst_mac=draw(MAC), type=draw(U32))
    elif kind in (3, 4):
        ip = IPV4 if kind == 3 else IPV6
        out.update(length=draw(U32), protocol=draw(U32), src_ip=draw(ip), dst_ip=draw(ip),
                   src_port=draw(U32), dst_port=draw(U32), tcp_flags=draw(U32))
        out["tos" if kind == 3 else "priority"] = draw(U32)
    elif kind == 1001:
        for k in ("src_vlan", "src_priority", "dst_vlan", "dst_priority"):
            out[k] = draw(U32)
    else:
        af = draw(st.sampled_from([0, 1, 2]))
        out["nexthop_type"] = af
        out["nexthop"] = "unknown" if af == 0 else draw(IPV4 if af == 1 else IPV6)
        if kind == 1002:
            out.update(src_mask_len=draw(U32), dst_mask_len=draw(U32))
        else:
            out.update({"as": draw(U32), "src_as": draw(U32), "src_peer_as": draw(U32),
                        "dst_as_path": draw(st.lists(st.fixed_dictionaries(
                            {"type": st.sampled_from([1, 2]), "as": st.lists(U32, max_size=4)}),
                            max_size=3)),
                        "communities": draw(st.lists(U32, max_size=3)), "local_pref": draw(U32)})
    if draw(st.integers(0, 4)) == 0:
        out["extra"] = draw(_hexbytes(1, 8))
    return out


FLOW_RECORD = st.one_of(_flow_record(), _unknown_record(set(FLOW_RECORDS)))


def _source(stype: int, sidx: int) -> dict[str, Any]:
    return {"source_id": f"{stype}:{sidx}", "source_id_type": stype, "source_id_index": sidx}


@st.composite
def sample(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["counters", "flow", "unknown", "discard"]))
    if kind == "discard":  # 0:5: always the expanded source form, interface words as sent
        return {"type": "discard", "format": "0:5", "sequence_number": draw(U32),
                **_source(draw(U32), draw(U32)), "drops": draw(U32), "input": draw(U32),
                "output": draw(U32), "reason": draw(U32),
                "records": draw(st.lists(FLOW_RECORD, max_size=3))}
    if kind == "unknown":
        f = draw(st.one_of(st.tuples(st.just(0), st.integers(6, 4095)),
                           st.tuples(st.integers(1, 2**20 - 1), st.integers(0, 4095))))
        return {"type": "unknown", "format": f"{f[0]}:{f[1]}", "data": draw(_hexbytes(0, 32))}
    expanded = draw(st.booleans())
    if expanded:
        stype, sidx = draw(U32), draw(U32)
    else:
        stype, sidx = draw(st.integers(0, 255)), draw(st.integers(0, 2**24 - 1))
    fmt = {("counters", False): "0:2", ("counters", True): "0:4", ("flow", False): "0:1",
           ("flow", True): "0:3"}[(kind, expanded)]
    out: dict[str, Any] = {"type": kind, "expanded": expanded, "format": fmt,
                           "sequence_number": draw(U32), "source_id": f"{stype}:{sidx}",
                           "source_id_type": stype, "source_id_index": sidx}
    if kind == "flow":
        iface = U32 if expanded else st.integers(0, 2**30 - 1)
        ifmt = U32 if expanded else st.integers(0, 3)
        out.update(sampling_rate=draw(U32), sample_pool=draw(U32), drops=draw(U32),
                   input=draw(iface), output=draw(iface), input_format=draw(ifmt),
                   output_format=draw(ifmt))
        out["records"] = draw(st.lists(FLOW_RECORD, max_size=4))
    else:
        out["records"] = draw(st.lists(COUNTER_RECORD, max_size=5))
    if draw(st.integers(0, 5)) == 0:
        out["padding"] = draw(_hexbytes(1, 8))
    return out


@st.composite
def datagrams(draw: st.DrawFn) -> dict[str, Any]:
    af = draw(st.sampled_from([0, 1, 2]))
    agent = "unknown" if af == 0 else draw(IPV4 if af == 1 else IPV6)
    out = {"agent": agent, "agent_address_type": af, "sub_agent_id": draw(U32),
           "sequence_number": draw(U32), "uptime": draw(U32),
           "samples": draw(st.lists(sample(), max_size=4))}
    if draw(st.integers(0, 5)) == 0:
        out["trailing"] = draw(_hexbytes(1, 12))
    return out


def expected(x: dict[str, Any], wire: bytes) -> dict[str, Any]:
    """x with the decoder's own outputs added."""
    return {**x, "timestamp": 0.0, "num_samples": len(x["samples"]), "length": len(wire),
            "errors": ["trailing_bytes"] if "trailing" in x else []}


def strip_decoded(obj: dict[str, Any]) -> dict[str, Any]:
    """decode()'s answer without sampled_header's ``decoded`` (derived from the header bytes)."""
    for s in obj.get("samples", []):
        for r in s.get("records", []) or []:
            r.pop("decoded", None)
    return obj
