"""Table decoders (Cython and reference) on hand-built datagrams: every rule of internals §2.

Every test runs for both implementations through the ``decoder_cls`` fixture. Expected values come
from the builder's inputs, never from either decoder.
"""

from __future__ import annotations

import importlib
import ipaddress
import os
import struct
import uuid
from typing import Any

import numpy as np
import pytest

import fastflow.decode as fd
from _sflow_build import (
    MAC_A,
    MAC_B,
    counters_sample,
    datagram,
    discard_sample,
    eth,
    ext_header,
    extended_gateway,
    extended_router,
    extended_switch,
    fixed_counter,
    flow_sample,
    frag_header,
    host_adapters,
    host_descr,
    icmp,
    if_name,
    ipv4,
    ipv6,
    record,
    sample,
    sampled_ethernet,
    sampled_header,
    sampled_ipv4,
    sampled_ipv6,
    tcp,
    u32,
    udp,
)
from fastflow._schema import (
    COUNTER_BIT,
    COUNTER_DTYPE,
    COUNTER_RECORDS,
    DATAGRAM_DTYPE,
    FLOW_BIT,
    FLOW_DTYPE,
    N_REASONS,
    REASON_CODE,
    RECORD_DTYPES,
    SAMPLE_DTYPE,
    split_counters,
)


def run(cls: type, *dgrams: bytes, ts: object = None, **kw: int):
    d = cls(**kw)
    assert d.feed_list(list(dgrams), ts=ts) == len(dgrams)
    check_columnar(cls, d, list(dgrams), ts)
    return d


def column_cls(cls: type) -> type:
    """The columnar decoder of the same implementation as the row decoder ``cls``."""
    return importlib.import_module(cls.__module__).ColumnDecoder  # type: ignore[no-any-return]


def check_columnar(cls: type, d: Any, dgrams: list[bytes], ts: object = None) -> None:
    """Every test of this suite holds the columnar decoder (read_pcap's) to the row decoder's
    answer: the same datagrams and flows, and the counter rows split by record type."""
    c = column_cls(cls)(16, 16, 16)
    assert c.feed_list(dgrams, ts=ts) == len(dgrams)
    counts = c.record_counts()
    t = c.take()
    assert counts == {k: len(v) for k, v in t["records"].items()}
    samples, records = split_counters(d.counters)
    assert t["datagrams"].tobytes() == d.datagrams.tobytes()
    assert t["flows"].tobytes() == d.flows.tobytes()
    assert t["samples"].tobytes() == samples.tobytes()
    assert sorted(t["records"]) == sorted(records)
    for name, rows in records.items():
        assert t["records"][name].dtype == RECORD_DTYPES[name]
        assert t["records"][name].tobytes() == rows.tobytes(), name
    assert c.strings() == d.strings() and c.agents() == d.agents()
    assert c.error_counts() == d.error_counts()


def ip16(text: str) -> list[int]:
    ip = ipaddress.ip_address(text)
    raw = (b"\0" * 10 + b"\xff\xff" + ip.packed) if ip.version == 4 else ip.packed
    return list(raw)


def one_flow(cls: type, *records: bytes, **kw: Any):
    d = run(cls, datagram([flow_sample(list(records), **kw)]))
    assert d.n_flows == 1, d.error_counts()
    return d, d.flows[0]


def one_counter(cls: type, *records: bytes, **kw: Any):
    d = run(cls, datagram([counters_sample(list(records), **kw)]))
    assert d.n_counters == 1, d.error_counts()
    return d, d.counters[0]


# ---- construction, API -------------------------------------------------------------------------
def test_capacity_minimum(decoder_cls: type) -> None:
    for kw in ({"datagram_capacity": 4095}, {"counter_capacity": 100}, {"flow_capacity": 0}):
        with pytest.raises(ValueError):
            decoder_cls(**kw)
    d = decoder_cls(4096, 4096, 4096)
    assert d.n_datagrams == d.n_counters == d.n_flows == 0
    assert d.datagrams.dtype == DATAGRAM_DTYPE and d.counters.dtype == COUNTER_DTYPE
    assert d.flows.dtype == FLOW_DTYPE
    assert d.errors.dtype == np.uint64 and d.errors.shape == (N_REASONS,)
    assert d.strings() == [""] and d.agents()[0] == ""


def test_feed_buffer_kinds_and_ts(decoder_cls: type) -> None:
    a, b = datagram(seq=7), datagram(seq=8, agent="192.0.2.9")
    buf = a + b"\xaa" * 3 + b
    offs, lens = [0, len(a) + 3], [len(a), len(b)]
    for kind in (bytes, bytearray, memoryview, lambda x: np.frombuffer(x, np.uint8)):
        d = decoder_cls()
        assert d.feed(kind(buf), offs, lens, ts=np.array([1.5, 2.5])) == 2
        assert list(d.datagrams["sequence_number"]) == [7, 8]
        assert list(d.datagrams["ts"]) == [1.5, 2.5]
        assert d.agents()[1:] == ["192.0.2.1", "192.0.2.9"]
    d = decoder_cls()
    d.feed(buf, np.array(offs, np.int32), np.array(lens, np.uint16), ts=3.0)
    assert list(d.datagrams["ts"]) == [3.0, 3.0]
    d = decoder_cls()
    d.feed(buf, offs, lens)
    assert list(d.datagrams["ts"]) == [0.0, 0.0]


def test_feed_out_of_range_raises_before_decoding(decoder_cls: type) -> None:
    a = datagram()
    d = decoder_cls()
    with pytest.raises(ValueError):
        d.feed(a + a, [0, len(a) + 1], [len(a), len(a)])
    with pytest.raises(ValueError):
        d.feed(a, [-1], [4])
    assert d.n_datagrams == 0


def test_clear_keeps_interning_and_errors(decoder_cls: type) -> None:
    d = run(decoder_cls, datagram([counters_sample([record(2000, host_descr("x"))])]), b"\0\0")
    assert d.error_counts() == {"truncated_header": 1}
    d.clear()
    assert d.n_datagrams == d.n_counters == 0 and len(d.counters) == 0
    d.feed_list([datagram([counters_sample([record(2000, host_descr("x"))])], agent="192.0.2.1")])
    assert d.counters[0]["hostname"] == d.strings().index("x")
    assert d.datagrams[0]["agent"] == 1 and d.counters[0]["dgram"] == 0
    assert d.error_counts() == {"truncated_header": 1}


# ---- datagram header ---------------------------------------------------------------------------
@pytest.mark.parametrize("data,reason", [
    (b"", "truncated_header"),
    (b"\0\0\0", "truncated_header"),
    (u32(4), "bad_version"),
    (u32(2) + b"\0", "bad_version"),
    (u32(5) + b"\0\0", "truncated_header"),
    (u32(5, 3) + b"\0" * 40, "bad_agent_address"),
    (datagram()[:27], "truncated_header"),
    (datagram(agent="2001:db8::1")[:39], "truncated_header"),
    (datagram(agent=None)[:23], "truncated_header"),
])
def test_header_rejections(decoder_cls: type, data: bytes, reason: str) -> None:
    d = run(decoder_cls, data, datagram())
    assert d.n_datagrams == 1  # only the good one
    assert d.error_counts() == {reason: 1}
    assert d.errors[REASON_CODE[reason]] == 1
    with pytest.raises(fd.DecodeError) as e:
        fd.decode(data)
    assert e.value.reason == reason


def test_datagram_row(decoder_cls: type) -> None:
    d = run(decoder_cls, datagram(agent="192.0.2.2", sub=100000, seq=5, uptime=632),
            datagram(agent="2001:db8::7", sub=1, seq=6, uptime=9, num_samples=0),
            datagram(agent=None, seq=7), ts=np.array([1.0, 2.0, 3.0]))
    r = d.datagrams
    assert list(r["agent_af"]) == [4, 6, 0]
    assert d.agents() == ["", "192.0.2.2", "2001:db8::7", "unknown"]
    assert list(r["agent"]) == [1, 2, 3]
    assert list(r["sub_agent_id"]) == [100000, 1, 0]
    assert list(r["sequence_number"]) == [5, 6, 7]
    assert list(r["uptime"]) == [632, 9, 1000]
    assert list(r["length"]) == [28, 40, 24]
    assert list(r["status"]) == [0, 0, 0]
    assert d.error_counts() == {}


def test_agent_interned_once(decoder_cls: type) -> None:
    d = run(decoder_cls, *[datagram(agent=a) for a in ("10.0.0.1", "10.0.0.2", "10.0.0.1")])
    assert list(d.datagrams["agent"]) == [1, 2, 1]


def test_sample_overrun_keeps_earlier(decoder_cls: type) -> None:
    good = counters_sample([record(2101, fixed_counter("virt_cpu", {"state": 1}))])
    bad = sample(2, u32(1, 1, 0), length=400)
    d = run(decoder_cls, datagram([good, bad]), datagram([good], num_samples=3))
    assert d.n_counters == 2
    assert list(d.datagrams["status"]) == [REASON_CODE["sample_overrun"]] * 2
    assert list(d.datagrams["n_counters"]) == [1, 1]
    assert d.error_counts() == {"sample_overrun": 2}


def test_trailing_bytes(decoder_cls: type) -> None:
    d = run(decoder_cls, datagram([counters_sample([])], trailing=b"\0" * 12))
    assert d.n_counters == 1
    assert d.datagrams[0]["status"] == REASON_CODE["trailing_bytes"]
    assert d.error_counts() == {"trailing_bytes": 1}


def test_unknown_samples_skipped(decoder_cls: type) -> None:
    d = run(decoder_cls, datagram([sample(9, b"\1" * 8), sample(1, b"", enterprise=4300),
                                   counters_sample([], seq=3)]))
    assert d.n_counters == 1 and d.n_flows == 0
    assert d.datagrams[0]["status"] == 0  # skips do not set status
    assert d.error_counts() == {"unknown_sample": 2}


def test_discard_event_is_a_flow_row(decoder_cls: type) -> None:
    hdr = record(1, sampled_header(eth(ipv4(udp(53, 1053), proto=17)), frame_length=90))
    d = run(decoder_cls, datagram([
        discard_sample([hdr, record(1042, u32(7)), record(1001, extended_switch(5, 1, 6, 2))],
                       seq=77,
                       sid_type=0, sid_index=0x1234567, drops=9, inp=3, out=0x40000102,
                       reason=258),
        flow_sample([hdr], seq=5)]))
    assert d.n_flows == 2 and d.n_counters == 0
    ev, fl = d.flows[0], d.flows[1]
    assert ev["discard"] == 1 and ev["discard_reason"] == 258
    assert (ev["sequence_number"], ev["source_id_type"], ev["source_id_index"]) == (77, 0, 0x1234567)
    assert ev["source_id"] == 0x234567  # index folded to 24 bits as for expanded flow samples
    assert (ev["drops"], ev["input"], ev["output"]) == (9, 3, 0x40000102)  # words as sent
    assert (ev["sampling_rate"], ev["sample_pool"], ev["expanded"]) == (1, 0, 0)
    # records decode exactly as in a flow sample
    assert (ev["src_port"], ev["dst_port"], ev["frame_length"], ev["src_vlan"]) == (53, 1053, 90, 5)
    assert ev["mask"] == (1 << FLOW_BIT["sampled_header"]) | (1 << FLOW_BIT["extended_switch"])
    assert fl["discard"] == 0 and fl["discard_reason"] == 0 and fl["sampling_rate"] == 100
    assert d.datagrams[0]["n_flows"] == 2 and d.datagrams[0]["status"] == 0
    assert d.error_counts() == {"unknown_record": 1}  # 0:1042 is not decoded; no discard_event


def test_discard_event_too_short(decoder_cls: type) -> None:
    d = run(decoder_cls, datagram([sample(5, b"\0" * 28), counters_sample([])]))
    assert d.n_flows == 0 and d.n_counters == 1
    assert d.error_counts() == {"sample_too_short": 1}


def test_if_name_interned(decoder_cls: type) -> None:
    ifc = record(1, fixed_counter("if_counters", {"if_index": 5}))
    d = run(decoder_cls, datagram([counters_sample([if_name("docker0"), ifc], sid=5),
                                   counters_sample([if_name("lo"), ifc], sid=1),
                                   counters_sample([if_name("docker0")], sid=5),
                                   counters_sample([if_name(""), ifc], sid=7),
                                   counters_sample([record(1005, u32(300) + b"x" * 300)])]))
    strings = d.strings()
    c = d.counters
    assert [strings[i] for i in c["ifname"]] == ["docker0", "lo", "docker0", "", ""]
    bit = 1 << COUNTER_BIT["if_name"]
    assert [int(m) & bit != 0 for m in c["mask"]] == [True, True, True, True, False]
    assert d.error_counts() == {"record_too_short": 1}  # longer than if_name<255>


@pytest.mark.parametrize("number,fixed", [(1, 32), (2, 12), (3, 44), (4, 16), (5, 32)])
def test_sample_too_short(decoder_cls: type, number: int, fixed: int) -> None:
    d = run(decoder_cls, datagram([sample(number, b"\0" * (fixed - 4)), counters_sample([])]))
    assert d.n_counters == 1 and d.n_flows == 0
    assert d.datagrams[0]["status"] == REASON_CODE["sample_too_short"]
    assert d.error_counts() == {"sample_too_short": 1}


# ---- records -----------------------------------------------------------------------------------
def test_record_overrun_drops_sample(decoder_cls: type) -> None:
    rec = record(2101, fixed_counter("virt_cpu"))
    too_many = counters_sample([rec], num_records=2)
    past_end = counters_sample([u32(2101, 100) + b"\0" * 12])
    flow_past = flow_sample([u32(1, 64) + b"\0" * 16])
    d = run(decoder_cls, datagram([too_many, past_end, flow_past, counters_sample([rec])]))
    assert d.n_counters == 1 and d.n_flows == 0
    assert d.datagrams[0]["n_counters"] == 1
    assert d.datagrams[0]["status"] == REASON_CODE["record_overrun"]
    assert d.error_counts() == {"record_overrun": 3}


def test_record_too_short_keeps_rest(decoder_cls: type) -> None:
    recs = [
        record(1, fixed_counter("if_counters", length=84)),
        record(2000, host_descr("x" * 65)),                     # hostname > 64
        record(2000, host_descr(os_release="r" * 33)),          # os_release > 32
        record(2000, host_descr("abc")[:-4]),                   # os_release overruns
        record(2001, host_adapters([(1, [MAC_A, MAC_B])])[:-8]),  # adapter does not fit
        record(2003, fixed_counter("host_cpu", length=64)),
        record(2102, fixed_counter("virt_memory", {"memory": 5, "max_memory": 6})),
    ]
    d, r = one_counter(decoder_cls, *recs)
    assert r["mask"] == 1 << COUNTER_BIT["virt_memory"]
    assert r["vmem_memory"] == 5 and r["vmem_max_memory"] == 6
    assert r["hostname"] == 0 and r["adapters"] == 0 and r["if_index"] == 0
    assert d.error_counts() == {"record_too_short": 6}
    assert d.datagrams[0]["status"] == REASON_CODE["record_too_short"]
    assert d.strings() == [""]


def test_flow_record_too_short(decoder_cls: type) -> None:
    recs = [
        record(1, u32(1, 100, 4, 40) + b"\0" * 36),  # header_length 40 but 36 bytes
        record(2, b"\0" * 20),
        record(3, b"\0" * 28),
        record(4, b"\0" * 52),
        record(1001, b"\0" * 12),
        record(1002, u32(1) + b"\0" * 8),  # address + 1 mask only
        record(1002, u32(7) + b"\0" * 12),  # bad address type
        record(1003, extended_gateway("10.0.0.1", 1, 2, 3, [(2, [4, 5])], [6], 7)[:-4]),
        record(1003, extended_gateway(None, 1, 2, 3, [(2, [4, 5])], [6], 7)[:-12]),
        record(1001, extended_switch(10, 1, 20, 2)),
    ]
    d, r = one_flow(decoder_cls, *recs)
    assert r["mask"] == 1 << FLOW_BIT["extended_switch"]
    assert (r["src_vlan"], r["dst_vlan"]) == (10, 20)
    assert d.error_counts() == {"record_too_short": 9}


def test_unknown_records_and_padding(decoder_cls: type) -> None:
    recs = [record(1006, b"\0" * 12), record(1, b"\0" * 8, enterprise=9),
            record(2101, fixed_counter("virt_cpu", {"state": 3}))]
    d = run(decoder_cls, datagram([counters_sample(recs, padding=b"\0" * 4)]))
    assert d.n_counters == 1 and d.counters[0]["vcpu_state"] == 3
    assert d.error_counts() == {"unknown_record": 2}
    assert d.datagrams[0]["status"] == 0


def _distinct_values() -> dict[str, dict[str, int | float]]:
    out: dict[str, dict[str, int | float]] = {}
    k = 1
    for _fmt, name, _min, fields in COUNTER_RECORDS:
        vals: dict[str, int | float] = {}
        for json_name, _col, off, typ in fields:
            if off is None:
                continue
            if typ == "f32":
                vals[json_name] = k + 0.25
            elif typ == "i32":
                vals[json_name] = -k
            elif typ == "u64":
                vals[json_name] = (k << 33) + k
            else:
                vals[json_name] = 0xFFFFFFFF - k
            k += 1
        out[name] = vals
    return out


def test_every_fixed_counter_record(decoder_cls: type) -> None:
    values = _distinct_values()
    recs = []
    for fmt, name, minlen, _fields in COUNTER_RECORDS:
        if fmt in (1005, 2000, 2001):
            continue
        length = 80 if name == "host_cpu" else minlen
        recs.append(record(fmt, fixed_counter(name, values[name], length=length)))
    _d, r = one_counter(decoder_cls, *recs)
    for fmt, name, _minlen, fields in COUNTER_RECORDS:
        if fmt in (1005, 2000, 2001):
            continue
        assert r["mask"] >> COUNTER_BIT[name] & 1, name
        for json_name, col, _off, typ in fields:
            want = values[name][json_name]
            got = r[col]
            assert (float(got) if typ == "f32" else int(got)) == want, (name, json_name)


def test_host_cpu_optional_tail(decoder_cls: type) -> None:
    vals = {"cpu_user": 5, "contexts": 9, "cpu_steal": 77, "cpu_guest": 88, "cpu_guest_nice": 99}
    _d, r68 = one_counter(decoder_cls, record(2003, fixed_counter("host_cpu", vals, length=68)))
    assert (r68["cpu_user"], r68["contexts"], r68["cpu_steal"], r68["cpu_guest_nice"]) == \
        (5, 9, 0, 0)
    _d, r72 = one_counter(decoder_cls, record(2003, fixed_counter("host_cpu", vals, length=72)))
    assert (r72["cpu_steal"], r72["cpu_guest"]) == (77, 0)
    _d, r84 = one_counter(decoder_cls, record(2003, fixed_counter("host_cpu", vals, length=84)))
    assert (r84["cpu_steal"], r84["cpu_guest"], r84["cpu_guest_nice"]) == (77, 88, 99)


def test_host_descr_and_interning(decoder_cls: type) -> None:
    u = bytes(range(0x10, 0x20))
    recs1 = [record(2000, host_descr("web.1", u, 3, 2, "6.1.0"))]
    recs2 = [record(2000, host_descr("web.2", u, 3, 2, "6.1.0"))]
    bad = [record(2000, host_descr(b"\xff\xfe", u, 1, 1, b""))]
    bad2 = [record(2000, host_descr(b"\xff\xfd", u, 1, 1, b""))]
    d = run(decoder_cls, datagram([counters_sample(recs1), counters_sample(recs2, sid=2)]),
            datagram([counters_sample(recs1), counters_sample(bad), counters_sample(bad2)]))
    s = d.strings()
    assert s[:4] == ["", "web.1", "6.1.0", "web.2"]
    c = d.counters
    assert [s[i] for i in c["hostname"]] == ["web.1", "web.2", "web.1", s[4], s[5]]
    assert c["hostname"][3] != c["hostname"][4]  # interned by raw bytes, not by text
    assert s[4] == "\ufffd\ufffd"
    assert list(c["os_release"][:3]) == [2, 2, 2] and list(c["os_release"][3:]) == [0, 0]
    assert bytes(c["uuid"][0]) == u and c["machine_type"][0] == 3 and c["os_name"][0] == 2
    assert all(m == 1 << COUNTER_BIT["host_descr"] for m in c["mask"])


def test_host_adapters_count(decoder_cls: type) -> None:
    ad = host_adapters([(4, [MAC_A]), (5, [MAC_A, MAC_B]), (6, [])])
    _d, r = one_counter(decoder_cls, record(2001, ad))
    assert r["adapters"] == 3 and r["mask"] == 1 << COUNTER_BIT["host_adapters"]
    _d, r = one_counter(decoder_cls, record(2001, host_adapters([])))
    assert r["adapters"] == 0 and r["mask"] == 1 << COUNTER_BIT["host_adapters"]


def test_repeated_counter_record_overwrites(decoder_cls: type) -> None:
    _d, r = one_counter(decoder_cls, record(2101, fixed_counter("virt_cpu", {"state": 1})),
                        record(2101, fixed_counter("virt_cpu", {"state": 4})))
    assert r["vcpu_state"] == 4


def test_source_ids(decoder_cls: type) -> None:
    d = run(decoder_cls, datagram([
        counters_sample([], sid=(3 << 24) | 0x123456),
        counters_sample([], expanded=True, sid_type=0x103, sid_index=0x1234567),
        flow_sample([], sid=(2 << 24) | 7, inp=0x80000005, out=0x3FFFFFFF),
        flow_sample([], expanded=True, sid_type=0, sid_index=0x2000001, in_fmt=1, inp=0x40000101,
                    out_fmt=2, out=3),
    ]))
    c, f = d.counters, d.flows
    assert list(c["source_id"]) == [(3 << 24) | 0x123456, (3 << 24) | 0x234567]
    assert list(c["source_id_type"]) == [3, 0x103]
    assert list(c["source_id_index"]) == [0x123456, 0x1234567]
    assert list(c["expanded"]) == [0, 1]
    assert list(f["source_id"]) == [(2 << 24) | 7, 1]
    assert list(f["source_id_index"]) == [7, 0x2000001]
    assert list(f["input"]) == [0x80000005, (1 << 30) | 0x101]
    assert list(f["output"]) == [0x3FFFFFFF, (2 << 30) | 3]
    assert list(f["expanded"]) == [0, 1]
    assert list(f["sampling_rate"]) == [100, 100] and list(f["sample_pool"]) == [1000, 1000]
    assert list(d.datagrams[0][["n_counters", "n_flows"]]) == [2, 2]
    assert list(c["dgram"]) == [0, 0] and list(c["uptime"]) == [1000, 1000]


# ---- sampled header ----------------------------------------------------------------------------
def test_header_ethernet_ipv4_tcp(decoder_cls: type) -> None:
    pkt = eth(ipv4(tcp(40000, 443, 0x12), proto=6, src="10.1.2.3", dst="10.4.5.6", tos=0x28,
                   ttl=61))
    _d, r = one_flow(decoder_cls, record(1, sampled_header(pkt, frame_length=1518, stripped=4)))
    assert (r["header_protocol"], r["frame_length"], r["stripped"], r["header_length"]) == \
        (1, 1518, 4, len(pkt))
    assert r["eth_src"] == int(MAC_A.hex(), 16) and r["eth_dst"] == int(MAC_B.hex(), 16)
    assert (r["eth_type"], r["vlan"], r["inner_vlan"]) == (0x0800, 0, 0)
    assert (r["ip_version"], r["ip_protocol"], r["ip_tos"], r["ip_ttl"]) == (4, 6, 0x28, 61)
    assert r["ip_length"] == 40
    assert list(r["ip_src"]) == ip16("10.1.2.3") and list(r["ip_dst"]) == ip16("10.4.5.6")
    assert (r["src_port"], r["dst_port"], r["tcp_flags"], r["l4_ok"]) == (40000, 443, 0x12, 1)
    assert r["mask"] == 1 << FLOW_BIT["sampled_header"]


def test_header_udp_icmp_and_short_l4(decoder_cls: type) -> None:
    _d, r = one_flow(decoder_cls, record(1, sampled_header(eth(ipv4(udp(1, 2), proto=17)))))
    assert (r["src_port"], r["dst_port"], r["l4_ok"], r["tcp_flags"]) == (1, 2, 1, 0)
    _d, r = one_flow(decoder_cls, record(1, sampled_header(eth(ipv4(icmp(3, 13), proto=1)))))
    assert (r["icmp_type"], r["icmp_code"], r["l4_ok"]) == (3, 13, 1)
    _d, r = one_flow(decoder_cls, record(1, sampled_header(eth(ipv4(tcp()[:13], proto=6)))))
    assert (r["ip_protocol"], r["src_port"], r["l4_ok"]) == (6, 0, 0)
    _d, r = one_flow(decoder_cls, record(1, sampled_header(eth(ipv4(b"", proto=6))[:30])))
    assert (r["eth_type"], r["ip_version"]) == (0x0800, 0)
    _d, r = one_flow(decoder_cls, record(1, sampled_header(eth(ipv4(tcp(), ihl=6)))))
    assert (r["src_port"], r["dst_port"], r["l4_ok"]) == (1234, 80, 1)


def test_header_vlan_and_qinq(decoder_cls: type) -> None:
    p = ipv4(udp(7, 8), proto=17)
    _d, r = one_flow(decoder_cls, record(1, sampled_header(eth(p, vlans=[(0x8100, 0x2064)]))))
    assert (r["vlan"], r["inner_vlan"], r["eth_type"], r["dst_port"]) == (100, 0, 0x0800, 8)
    qinq = eth(p, vlans=[(0x88A8, 200), (0x8100, 0xF00 | 30)])
    _d, r = one_flow(decoder_cls, record(1, sampled_header(qinq)))
    assert (r["vlan"], r["inner_vlan"], r["eth_type"], r["src_port"]) == (200, 0xF00 | 30, 0x0800, 7)
    three = eth(p, vlans=[(0x9100, 1), (0x8100, 2), (0x8100, 3)])
    _d, r = one_flow(decoder_cls, record(1, sampled_header(three)))
    assert (r["vlan"], r["inner_vlan"], r["eth_type"], r["l4_ok"]) == (1, 2, 0x0800, 1)
    _d, r = one_flow(decoder_cls, record(1, sampled_header(eth(b"\0" * 30, etype=0x0806))))
    assert (r["eth_type"], r["ip_version"], r["l4_ok"]) == (0x0806, 0, 0)


def test_header_ipv6_extension_headers(decoder_cls: type) -> None:
    chain = ext_header(43, 1) + ext_header(60, 0) + ext_header(6, 2) + tcp(22, 2222, 0x02)
    pkt = eth(ipv6(chain, nh=0, tc=0xB8, hlim=33, src="2001:db8::a", dst="fe80::1"),
              etype=0x86DD)
    _d, r = one_flow(decoder_cls, record(1, sampled_header(pkt)))
    assert (r["eth_type"], r["ip_version"], r["ip_tos"], r["ip_ttl"]) == (0x86DD, 6, 0xB8, 33)
    assert r["ip_length"] == len(chain) + 40
    assert list(r["ip_src"]) == ip16("2001:db8::a") and list(r["ip_dst"]) == ip16("fe80::1")
    assert (r["ip_protocol"], r["src_port"], r["dst_port"], r["tcp_flags"], r["l4_ok"]) == \
        (6, 22, 2222, 0x02, 1)
    # protocol 12: the header is the IPv6 packet itself; fragment header with offset 0
    _d, r = one_flow(decoder_cls, record(1, sampled_header(
        ipv6(frag_header(17, 0, more=True) + udp(9, 10), nh=44), protocol=12)))
    assert (r["ip_version"], r["ip_protocol"], r["src_port"], r["l4_ok"]) == (6, 17, 9, 1)
    assert r["eth_type"] == 0 and r["eth_src"] == 0
    # non-first fragment: protocol known, no L4
    _d, r = one_flow(decoder_cls, record(1, sampled_header(
        ipv6(frag_header(17, 100) + udp(9, 10), nh=44), protocol=12)))
    assert (r["ip_protocol"], r["src_port"], r["l4_ok"]) == (17, 0, 0)
    # ICMPv6
    _d, r = one_flow(decoder_cls, record(1, sampled_header(ipv6(icmp(128, 0), nh=58),
                                                           protocol=12)))
    assert (r["ip_protocol"], r["icmp_type"], r["l4_ok"]) == (58, 128, 1)


def test_header_ipv4_fragments(decoder_cls: type) -> None:
    first = ipv4(udp(1000, 2000), proto=17, frag=0x2000)  # MF set, offset 0: L4 parsed
    _d, r = one_flow(decoder_cls, record(1, sampled_header(first, protocol=11)))
    assert (r["ip_version"], r["src_port"], r["dst_port"], r["l4_ok"]) == (4, 1000, 2000, 1)
    later = ipv4(udp(1000, 2000), proto=17, frag=185)
    _d, r = one_flow(decoder_cls, record(1, sampled_header(later, protocol=11)))
    assert (r["ip_version"], r["ip_protocol"], r["src_port"], r["l4_ok"]) == (4, 17, 0, 0)


def test_header_unknown_protocol_and_bad_ip(decoder_cls: type) -> None:
    _d, r = one_flow(decoder_cls, record(1, sampled_header(ipv4(tcp()), protocol=7)))
    assert (r["header_protocol"], r["ip_version"], r["l4_ok"]) == (7, 0, 0)
    bad = bytearray(ipv4(tcp()))
    bad[0] = 0x44  # IHL 4
    _d, r = one_flow(decoder_cls, record(1, sampled_header(bytes(bad), protocol=11)))
    assert r["ip_version"] == 0
    _d, r = one_flow(decoder_cls, record(1, sampled_header(ipv6(b"")[:39], protocol=12)))
    assert r["ip_version"] == 0


# ---- precedence --------------------------------------------------------------------------------
def test_precedence_header_wins_over_ipv4(decoder_cls: type) -> None:
    hdr = record(1, sampled_header(eth(ipv4(tcp(1, 2), src="10.0.0.1")), frame_length=900))
    v4 = record(3, sampled_ipv4(500, 17, "192.0.2.1", "192.0.2.2", 53, 54, 0, 4))
    for recs in ([hdr, v4], [v4, hdr]):
        _d, r = one_flow(decoder_cls, *recs)
        assert r["frame_length"] == 900 and list(r["ip_src"]) == ip16("10.0.0.1")
        assert (r["ip_protocol"], r["src_port"]) == (6, 1)
        assert r["mask"] == (1 << FLOW_BIT["sampled_header"]) | (1 << FLOW_BIT["sampled_ipv4"])


def test_precedence_first_header_wins(decoder_cls: type) -> None:
    h1 = record(1, sampled_header(ipv4(udp(1, 1), proto=17), protocol=11, frame_length=100))
    h2 = record(1, sampled_header(eth(ipv4(tcp(2, 2))), frame_length=200))
    _d, r = one_flow(decoder_cls, h1, h2)
    assert (r["frame_length"], r["header_protocol"], r["ip_protocol"], r["eth_type"]) == \
        (100, 11, 17, 0)


def test_sampled_ipv4_ipv6_ethernet_alone(decoder_cls: type) -> None:
    _d, r = one_flow(decoder_cls, record(3, sampled_ipv4(1500, 6, "1.1.1.1", "2.2.2.2", 80, 81,
                                                         0x11, 0x20)))
    assert (r["frame_length"], r["ip_version"], r["ip_protocol"], r["src_port"], r["dst_port"],
            r["tcp_flags"], r["ip_tos"], r["l4_ok"]) == (1500, 4, 6, 80, 81, 0x11, 0x20, 1)
    assert list(r["ip_src"]) == ip16("1.1.1.1") and list(r["ip_dst"]) == ip16("2.2.2.2")
    assert r["mask"] == 1 << FLOW_BIT["sampled_ipv4"]
    _d, r = one_flow(decoder_cls, record(4, sampled_ipv6(99, 17, "::1", "2001:db8::5", 5, 6, 0,
                                                         3)))
    assert (r["frame_length"], r["ip_version"], r["ip_protocol"], r["ip_tos"], r["l4_ok"]) == \
        (99, 6, 17, 3, 1)
    assert list(r["ip_dst"]) == ip16("2001:db8::5")
    _d, r = one_flow(decoder_cls, record(2, sampled_ethernet(64, MAC_A, MAC_B, 0x86DD)))
    assert (r["frame_length"], r["eth_type"]) == (64, 0x86DD)
    assert r["eth_src"] == int(MAC_A.hex(), 16) and r["eth_dst"] == int(MAC_B.hex(), 16)
    assert r["mask"] == 1 << FLOW_BIT["sampled_ethernet"] and r["l4_ok"] == 0


def test_router_gateway_nexthop_precedence(decoder_cls: type) -> None:
    rt = record(1002, extended_router("10.9.9.9", 24, 16))
    gw = record(1003, extended_gateway("2001:db8::9", 65000, 65001, 65002,
                                       [(2, [1, 2, 3]), (1, [4, 5])], [100, 200], 300))
    for recs in ([rt, gw], [gw, rt]):
        _d, r = one_flow(decoder_cls, *recs)
        assert list(r["nexthop"]) == ip16("10.9.9.9")
        assert (r["src_mask_len"], r["dst_mask_len"]) == (24, 16)
        assert (r["as_number"], r["src_as"], r["src_peer_as"], r["dst_as"], r["dst_peer_as"],
                r["local_pref"]) == (65000, 65001, 65002, 5, 1, 300)
    _d, r = one_flow(decoder_cls, gw)
    assert list(r["nexthop"]) == ip16("2001:db8::9")
    _d, r = one_flow(decoder_cls, record(1003, extended_gateway("10.0.0.1", 1, 2, 3, [], [], 4)))
    assert (r["dst_as"], r["dst_peer_as"], r["local_pref"]) == (0, 0, 4)
    assert r["mask"] == 1 << FLOW_BIT["extended_gateway"]


# ---- batches -----------------------------------------------------------------------------------
def test_capacity_rollback(decoder_cls: type) -> None:
    """3000 counter samples per datagram: the second does not fit in 4096 rows; no partial rows."""
    big = datagram([counters_sample([], seq=i) for i in range(3000)])
    assert len(big) <= 65535
    small = datagram([counters_sample([], seq=1)], seq=99)
    d = decoder_cls(4096, 4096, 4096)
    buf = big + big + small
    offs = np.array([0, len(big), 2 * len(big)])
    lens = np.array([len(big), len(big), len(small)])
    k = d.feed(buf, offs, lens)
    assert k == 1 and d.n_datagrams == 1 and d.n_counters == 3000
    d.clear()
    k2 = d.feed(buf, offs[1:], lens[1:])
    assert k2 == 2 and d.n_datagrams == 2 and d.n_counters == 3001
    assert list(d.counters["dgram"][[0, 2999, 3000]]) == [0, 0, 1]
    assert d.error_counts() == {}
    t = fd.decode_buffers(buf, offs, lens)
    assert len(t.datagrams) == 3 and len(t.samples) == 6001
    assert list(t.samples["dgram"][[0, 3000, 6000]]) == [0, 1, 2]


def test_error_counts_accumulate(decoder_cls: type) -> None:
    d = decoder_cls()
    for _ in range(3):
        d.feed_list([u32(4), datagram(trailing=b"\0" * 4)])
        d.clear()
    assert d.error_counts() == {"bad_version": 3, "trailing_bytes": 3}
    e = d.errors
    e[:] = 0  # a copy
    assert d.error_counts()["bad_version"] == 3


def test_table_full_reference_only() -> None:
    """``table_full``: only the reference decoder lets a test shrink the intern tables."""
    from fastflow._pydecode import Decoder

    class Small(Decoder):
        _max_interned = 3

    d = Small()
    recs = [counters_sample([record(2000, host_descr(f"h{i}", os_release=""))]) for i in range(4)]
    d.feed_list([datagram(recs, agent=f"10.0.0.{i}") for i in range(3)])
    assert d.strings() == ["", "h0", "h1"]
    assert list(d.counters["hostname"][:4]) == [1, 2, 0, 0]
    assert list(d.datagrams["agent"]) == [1, 2, 0]
    assert d.datagrams[0]["status"] == REASON_CODE["table_full"]
    assert d.error_counts() == {"table_full": 2 + 2 + 2 + 1}  # 2 hostnames x 3 + 1 agent


# ---- object decoder ----------------------------------------------------------------------------
def test_decode_object_shape() -> None:
    u = uuid.UUID("12345678-1234-5678-9abc-def012345678")
    hdr = eth(ipv4(udp(38300, 6343), proto=17, src="127.0.0.1", dst="127.0.0.1"))
    cpu = fixed_counter("host_cpu", {"load_one": 0.5, "cpu_steal": 3}, length=84)
    dg = datagram([
        counters_sample([record(2000, host_descr("apache.1", u.bytes, 3, 2, "6.1.0")),
                         record(2001, host_adapters([(4, [bytes.fromhex("02fc00000001")])])),
                         record(2003, cpu), record(1006, b"\x01\x02\x03\x04")],
                        expanded=True, sid_type=3, sid_index=100550, padding=b"\0" * 4),
        flow_sample([record(1, sampled_header(hdr, frame_length=1102, stripped=18)),
                     record(1002, extended_router("10.0.0.254", 8, 16) + b"\xee" * 4),
                     record(2, b"\0" * 8)],
                    expanded=True, sid_type=0, sid_index=1, inp=0x3FFFFFFF, out=1),
        discard_sample([record(1, sampled_header(hdr))], seq=9, sid_index=3, drops=2, inp=4,
                       out=0, reason=257), sample(77, b""),
    ], agent="192.0.2.2", sub=100000, seq=1, uptime=632, trailing=b"\x00\x01")
    o = fd.decode(dg, 1795554174.37)
    assert {k: o[k] for k in ("agent", "agent_address_type", "sub_agent_id", "sequence_number",
                              "uptime", "timestamp", "num_samples", "length")} == {
        "agent": "192.0.2.2", "agent_address_type": 1, "sub_agent_id": 100000,
        "sequence_number": 1, "uptime": 632, "timestamp": 1795554174.37, "num_samples": 4,
        "length": len(dg)}
    assert o["trailing"] == "0001" and o["errors"] == ["record_too_short", "trailing_bytes"]
    c, f, disc, unk = o["samples"]
    assert (c["type"], c["expanded"], c["format"], c["source_id"], c["padding"]) == \
        ("counters", True, "0:4", "3:100550", "00000000")
    hd, ad, cp, un = c["records"]
    assert hd == {"format": "0:2000", "name": "host_descr", "hostname": "apache.1",
                  "uuid": str(u), "machine_type": 3, "os_name": 2, "os_release": "6.1.0"}
    assert ad == {"format": "0:2001", "name": "host_adapters",
                  "adapters": [{"if_index": 4, "macs": ["02fc00000001"]}]}
    assert cp["load_one"] == 0.5 and cp["cpu_steal"] == 3 and cp["cpu_guest_nice"] == 0
    assert cp["extra"] == "00000000"
    assert un == {"format": "0:1006", "name": "unknown", "data": "01020304"}
    assert (f["type"], f["format"], f["source_id"], f["sampling_rate"], f["sample_pool"],
            f["drops"], f["input"], f["output"], f["input_format"]) == \
        ("flow", "0:3", "0:1", 100, 1000, 0, 0x3FFFFFFF, 1, 0)
    sh, rt, bad = f["records"]
    assert (sh["name"], sh["header_protocol"], sh["frame_length"], sh["stripped"],
            sh["header_length"], sh["header"]) == ("sampled_header", 1, 1102, 18, len(hdr),
                                                   hdr.hex())
    dec = sh["decoded"]
    assert (dec["ip_version"], dec["ip_src"], dec["ip_dst"], dec["src_port"], dec["dst_port"],
            dec["eth_src"]) == (4, "127.0.0.1", "127.0.0.1", 38300, 6343, MAC_A.hex())
    assert (rt["nexthop"], rt["src_mask_len"], rt["dst_mask_len"], rt["extra"]) == \
        ("10.0.0.254", 8, 16, "eeeeeeee")
    assert bad == {"format": "0:2", "name": "sampled_ethernet", "error": "record_too_short",
                   "data": "00" * 8}
    assert {k: v for k, v in disc.items() if k != "records"} == {
        "type": "discard", "format": "0:5", "sequence_number": 9, "source_id": "0:3",
        "source_id_type": 0, "source_id_index": 3, "drops": 2, "input": 4, "output": 0,
        "reason": 257}
    assert [r["name"] for r in disc["records"]] == ["sampled_header"]
    assert disc["records"][0]["decoded"]["dst_port"] == 6343
    assert unk == {"type": "unknown", "format": "0:77", "data": ""}


def test_decode_object_dropped_samples() -> None:
    dg = datagram([sample(2, b"\0" * 8), counters_sample([], num_records=1),
                   sample(1, b"\0" * 4, length=99)])
    o = fd.decode(dg)
    a, b, c = o["samples"]
    assert a == {"type": "counters", "expanded": False, "format": "0:2",
                 "error": "sample_too_short", "data": "00" * 8}
    assert b["error"] == "record_overrun" and b["records"] == []
    assert b["data"] == "000000010000000100000001"
    assert c == {"format": "0:1", "length": 99, "error": "sample_overrun", "data": "00" * 4}
    assert o["errors"] == ["sample_too_short", "record_overrun", "sample_overrun"]
    o = fd.decode(datagram([], num_samples=1, trailing=b"\1\2"))
    assert o["samples"] == [{"error": "sample_overrun", "data": "0102"}]
    assert "trailing" not in o


def test_decode_gateway_object() -> None:
    o = fd.decode(datagram([flow_sample([record(1003, extended_gateway(
        "10.0.0.1", 1, 2, 3, [(2, [4, 5])], [6, 7], 8))])]))
    g = o["samples"][0]["records"][0]
    assert (g["nexthop"], g["as"], g["src_as"], g["src_peer_as"], g["dst_as_path"],
            g["communities"], g["local_pref"]) == \
        ("10.0.0.1", 1, 2, 3, [{"type": 2, "as": [4, 5]}], [6, 7], 8)
    assert "extra" not in g


def test_decode_error_is_value_error() -> None:
    with pytest.raises(ValueError) as e:
        fd.decode(b"\0\0\0\6\0\0\0\1")
    assert isinstance(e.value, fd.DecodeError) and e.value.reason == "bad_version"
    assert "version 6" in str(e.value)


def test_record_fields_are_big_endian() -> None:
    o = fd.decode(datagram([counters_sample([record(2102, struct.pack(">QQ", 1, 2))])]))
    assert o["samples"][0]["records"][0] == {"format": "0:2102", "name": "virt_memory",
                                             "memory": 1, "max_memory": 2}


# ---- public module helpers ---------------------------------------------------------------------
def test_iter_tables_chunks_and_decode_buffers_in_one_pass(decoder_cls: type) -> None:
    big = datagram([counters_sample([record(2101, fixed_counter("virt_cpu", {"state": i % 7}))],
                                    seq=i) for i in range(2500)])
    blobs = [big, datagram(seq=2), big, big]
    buf = b"".join(blobs)
    lens = np.array([len(b) for b in blobs])
    offs = np.concatenate([[0], np.cumsum(lens)[:-1]])
    dec = column_cls(decoder_cls)()
    parts = [(len(t.datagrams), len(t.samples), len(t.virt_cpu), t.errors) for t in
             fd.iter_tables(buf, offs, lens, ts=5.0, chunk=3, decoder=dec)]
    assert parts == [(3, 5000, 5000, {}), (1, 2500, 2500, {})]
    t = fd.decode_buffers(buf, offs, lens, ts=np.arange(4.0))
    assert len(t.datagrams) == 4 and len(t.samples) == 7500 and list(t.records) == ["virt_cpu"]
    assert list(t.datagrams["ts"]) == [0.0, 1.0, 2.0, 3.0]
    assert list(t.samples["dgram"][[0, 2500, 5000]]) == [0, 2, 3]
    assert list(t.virt_cpu["sample"][[0, 7499]]) == [0, 7499]
    assert list(t.virt_cpu["vcpu_state"][:8]) == [0, 1, 2, 3, 4, 5, 6, 0]
    assert t.records["virt_cpu"] is t.virt_cpu and len(t.host_cpu) == 0  # absent: empty
    # the wide form is the join of the two
    assert len(t.counters) == 7500 and list(t.counters["vcpu_state"][:3]) == [0, 1, 2]
    empty = fd.decode_buffers(b"", [], [])
    assert len(empty.datagrams) == 0 and empty.counters.dtype == COUNTER_DTYPE
    assert empty.samples.dtype == SAMPLE_DTYPE and empty.records == {}
    with pytest.raises(AttributeError):
        _ = t.not_a_record


def test_to_pandas_without_pandas(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    t = fd.decode_buffers(datagram(), [0], [28])
    monkeypatch.setitem(sys.modules, "pandas", None)  # fault injection: pandas not installed
    with pytest.raises(ImportError, match=r"fastflow\[pandas\]"):
        t.to_pandas()


def test_to_arrow_without_pyarrow(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    import sys

    t = fd.decode_buffers(datagram(), [0], [28])
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # fault injection: the extra not installed
    with pytest.raises(ImportError, match=r"fastflow\[arrow\]"):
        t.to_arrow()
    with pytest.raises(ImportError, match=r"fastflow\[arrow\]"):
        t.to_parquet(tmp_path)


def test_fallback_when_extension_missing() -> None:
    import subprocess
    import sys

    code = ("import sys; sys.modules['fastflow._decode'] = None\n"
            "import fastflow.decode as d, fastflow._pydecode as p\n"
            "assert d.Decoder is p.Decoder; print(d.IMPLEMENTATION)")
    # the fallback (not the FASTFLOW_PURE_PYTHON choice) is what is under test
    env = {k: v for k, v in os.environ.items() if k != "FASTFLOW_PURE_PYTHON"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "python" and "falling back to the pure-Python decoder" in r.stderr
