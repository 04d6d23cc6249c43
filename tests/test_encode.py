"""fastflow.encode: decode(encode(x)) == x, and byte identity with real captures."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from _sflow_strategies import datagrams, expected, strip_decoded
from fastflow import encode as E
from fastflow import pcap
from fastflow.decode import decode


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datagrams())
def test_roundtrip_generated(x: dict) -> None:
    wire = E.encode_datagram(x)
    assert strip_decoded(decode(wire)) == expected(x, wire)
    assert E.encode_datagram(decode(wire)) == wire


def _pad_positions_only(orig: bytes, enc: bytes) -> bool:
    """True when enc differs from orig only in short runs of zero bytes (XDR / MAC padding)."""
    if len(orig) != len(enc):
        return False
    diff = [i for i in range(len(orig)) if orig[i] != enc[i]]
    if any(enc[i] != 0 for i in diff):
        return False
    runs, start = [], None
    for a, b in zip([None, *diff], [*diff, None], strict=True):
        if a is None or b is None or b != a + 1:
            if a is not None and start is not None:
                runs.append(a - start + 1)
            start = b
    return all(r <= 3 for r in runs)


def test_swarm_capture_roundtrip(swarm_pcap: Path) -> None:
    cap = pcap.read(swarm_pcap)
    assert len(cap) == 124
    identical = 0
    for i, d in enumerate(cap.datagrams()):
        obj = decode(d)
        enc = E.encode_datagram(obj)
        assert len(enc) == len(d), i
        # hsflowd leaves garbage in XDR padding (sampled_header) and MAC pad bytes; everything
        # else must come back byte for byte
        assert enc == d or _pad_positions_only(d, enc), i
        identical += enc == d
        assert strip_decoded(decode(enc)) == strip_decoded(decode(d)) | {"length": len(enc)}
    assert identical >= 60  # 60 of 124 as of writing: the rest carry garbage pad bytes


def _decoder_keeps_pads(obj: dict) -> bool:
    for s in obj["samples"]:
        for r in s.get("records", []):
            if "header_pad" in r or any("mac_pads" in a for a in r.get("adapters", [])):
                return True
    return False


def test_swarm_capture_byte_identical_with_pads(swarm_pcap: Path) -> None:
    cap = pcap.read(swarm_pcap)
    d9 = cap.datagram(9)  # its sampled_header padding holds non-zero bytes
    if not _decoder_keeps_pads(decode(d9)):
        pytest.xfail("decode() does not report non-zero XDR pad bytes (header_pad, mac_pads); "
                     "encode() honours them once it does")
    for d in cap.datagrams():
        assert E.encode_datagram(decode(d)) == d


# files of the public corpus that come back byte for byte (the others only differ in garbage
# padding bytes, or are malformed)
PUBLIC_IDENTICAL = [
    "cistern-sflow/counter_sample.bin", "cistern-sflow/event_discarded_packet.bin",
    "cistern-sflow/flow_sample.bin", "cistern-sflow/flow_samples_2-dgram2.bin",
    "cistern-sflow/host_sample.bin", "cloudflare-goflow/cfgoflow-utils-getExpandedSFlowDecode-mangled.bin",
    "goflow2/goflow2-TestExpandedSFlowDecode.bin", "goflow2/goflow2-TestSFlowDecode.bin",
    "goflow2/goflow2-TestSFlowDecodeDropEgressQueue.bin",
    "goflow2/goflow2-TestSFlowDecodeDropExtendedACL.bin",
    "goflow2/goflow2-TestSFlowDecodeDropExtendedFunction.bin",
    "gopacket/gopacket-SFlowEthernetFramePacket.bin", "gopacket/gopacket-SFlowTestPacket1.pcap",
    "gopacket/gopacket-SFlowTestPacket10.bin", "gopacket/gopacket-SFlowTestPacket12.bin",
    "gopacket/gopacket-SFlowTestPacket13.bin", "gopacket/gopacket-SFlowTestPacket3.bin",
    "gopacket/gopacket-SFlowTestPacket4.bin", "gopacket/gopacket-SFlowTestPacket5.bin",
    "gopacket/gopacket-SFlowTestPacket6.bin", "gopacket/gopacket-SFlowTestPacket7.bin",
    "gopacket/gopacket-SFlowTestPacket8.bin", "gopacket/gopacket-SFlowTestPacket9.bin",
    "logstash-codec-sflow/sflow_1_counters_sample.dat",
    "logstash-codec-sflow/sflow_counters_sample.dat",
    "logstash-codec-sflow/sflow_flow_sample_eth_vlan.dat", "nxthdr-sflow-parser/sflow.pcap",
    "tcpdump/sflow-print-v6.pcap", "telegraf/netflow-sflow_issue_15918-message.bin",
    "telegraf/netflow-sflow_issue_18876-message.bin", "telegraf/netflow-sflow_v5_example-sflow_v5.bin",
    "telegraf/sflowplugin-TestFlowExpandCounter.bin", "telegraf/sflowplugin-TestIPv4SW.bin",
    "telegraf/sflowplugin-TestIPv4SWRT.bin", "telegraf/sflowplugin-TestIPv6SW.bin",
    "vflow/vflow-TestsFlowRawPacket.bin", "vflow/vflow-TestsFlowRawPacketWithPaddingAfterSample.bin",
    "vflow/vflow-hammer-sample0.bin", "vflow/vflow-hammer-sample1.bin",
    "vflow/vflow-hammer-sample2.bin", "vflow/vflow-hammer-sample3.bin",
]
PUBLIC_PAD_ONLY = [
    "cistern-sflow/flow_sample_3.bin", "cistern-sflow/flow_samples_2-dgram1.bin",
    "gopacket/gopacket-SFlowTestPacket2.pcap", "logstash-codec-sflow/sflow_flow_sample.dat",
    "logstash-codec-sflow/sflow_with_lag_counters.dat", "tcpdump/sflow_expanded.pcap",
    "telegraf/sflowplugin-TestExpandFlow.bin",
]


def _datagrams(path: Path) -> list[bytes]:
    if path.suffix == ".pcap":
        return pcap.read(path, port=None).datagrams()
    return [path.read_bytes()]


@pytest.mark.parametrize("name", PUBLIC_IDENTICAL + PUBLIC_PAD_ONLY)
def test_public_corpus_roundtrip(corpus: Path, name: str) -> None:
    path = corpus / "public" / name
    if not path.exists():
        pytest.skip(f"{name} not in this corpus")
    for d in _datagrams(path):
        enc = E.encode_datagram(decode(d))
        if name in PUBLIC_IDENTICAL:
            assert enc == d
        else:
            assert _pad_positions_only(d, enc)


def test_builders_hsflowd_container_sample() -> None:
    x = E.datagram("192.0.2.2", [E.counter_sample("3:100550", [
        E.host_descr("apache.1.abc", uuid="26924321-38a3-3eb6-87c5-5b22754c7971", os_release="6.1"),
        E.host_adapters(), E.host_parent(2, 1), E.virt_cpu(1, 2**32 + 7, 2),
        E.virt_memory(1384448, 25276063744), E.virt_disk_io(rd_bytes=5), E.virt_net_io(rx_bytes=376),
    ], sequence_number=9, expanded=True)], sequence_number=3, uptime=632, sub_agent_id=100000)
    o = decode(E.encode_datagram(x))
    assert o["errors"] == [] and o["agent"] == "192.0.2.2" and o["sub_agent_id"] == 100000
    recs = {r["name"]: r for r in o["samples"][0]["records"]}
    assert recs["host_descr"]["hostname"] == "apache.1.abc"
    assert recs["virt_cpu"]["cpu_time"] == 7          # u32 wrap
    assert recs["host_parent"] == {"format": "0:2002", "name": "host_parent", "container_type": 2,
                                   "container_index": 1}
    assert o["samples"][0]["source_id"] == "3:100550"


def test_builders_flow_sample_and_packet_header() -> None:
    hdr = E.packet_header("10.1.2.3", "10.4.5.6", 6, 40000, 443, vlan=7, payload_len=1000)
    x = E.datagram("2001:db8::1", [E.flow_sample("0:3", [
        E.sampled_header(hdr, frame_length=1100, stripped=4), E.extended_switch(7, 0, 7, 0),
        E.extended_router("10.0.0.254", 24, 16),
        E.extended_gateway("10.0.0.254", 65000, 1, 2, [(2, [3, 4])], [100], 5)],
        sampling_rate=100, sample_pool=1000, input=3, output=0x3FFFFFFF)])
    o = decode(E.encode_datagram(x))
    assert o["errors"] == [] and o["agent_address_type"] == 2
    s = o["samples"][0]
    assert (s["sampling_rate"], s["input"], s["output"]) == (100, 3, 0x3FFFFFFF)
    dec = s["records"][0]["decoded"]
    assert dec["ip_src"] == "10.1.2.3" and dec["dst_port"] == 443 and dec["vlan"] == 7
    assert dec["ip_protocol"] == 6 and dec["l4_ok"] == 1
    v6 = E.packet_header("2001:db8::1", "2001:db8::2", 17, 53, 5353)
    o = decode(E.encode_datagram(E.datagram("10.0.0.1", [E.flow_sample("0:1", [
        E.sampled_header(v6)])])))
    dec = o["samples"][0]["records"][0]["decoded"]
    assert dec["ip_version"] == 6 and dec["src_port"] == 53


def test_host_cpu_tail_only_when_given() -> None:
    short = E.encode_counter_record(E.host_cpu(cpu_user=5))
    long = E.encode_counter_record(E.host_cpu(cpu_user=5, cpu_steal=1))
    assert struct.unpack(">II", short[:8]) == (2003, 68) and len(short) == 76
    assert struct.unpack(">II", long[:8]) == (2003, 80) and len(long) == 88


def test_unknown_samples_and_raw_records() -> None:
    x = E.datagram("10.0.0.1", [E.unknown_sample("7:9", b"abcd"),
                                E.counter_sample("0:1", [E.raw_record("0:1006", b"\0\0\0\1x\0\0\0")])])
    o = decode(E.encode_datagram(x))
    assert [s["type"] for s in o["samples"]] == ["unknown", "counters"]
    assert o["samples"][1]["records"][0]["data"] == "0000000178000000"


def test_discard_sample_and_if_name_round_trip() -> None:
    hdr = E.sampled_header(bytes.fromhex("02000000000202000000000108004500"), frame_length=60)
    x = E.datagram("10.0.0.1", [
        E.discard_sample("0:7", [hdr], sequence_number=4, drops=3, input=2, output=0,
                         reason=258),
        E.counter_sample("0:5", [E.if_name("docker0"), E.if_counters(if_index=5)])])
    raw = E.encode_datagram(x)
    o = decode(raw)
    ev, ctr = o["samples"]
    assert (ev["type"], ev["format"], ev["source_id"], ev["sequence_number"], ev["drops"],
            ev["input"], ev["output"], ev["reason"]) == ("discard", "0:5", "0:7", 4, 3, 2, 0, 258)
    assert ev["records"][0]["frame_length"] == 60
    assert ctr["records"][0] == {"format": "0:1005", "name": "if_name", "if_name": "docker0"}
    assert E.encode_datagram(o) == raw  # decoded object -> the same bytes


@pytest.mark.parametrize("bad", [
    {"samples": [{"type": "counters", "records": [{"name": "nope"}]}]},
    {"samples": [{"type": "weird"}]},
    {"agent": "not-an-ip", "samples": []},
    {"agent": "10.0.0.1", "agent_address_type": 2, "samples": []},
    {"samples": [{"type": "counters", "source_id": "3:x", "records": []}]},
    {"samples": [{"type": "counters", "source_id": "300:1", "records": []}]},
    {"samples": [{"type": "counters", "records": [{"name": "virt_cpu", "state": -1}]}]},
    {"samples": [{"type": "counters", "records": [{"name": "host_descr", "hostname": "x" * 65}]}]},
    {"samples": [{"type": "unknown", "format": "0:9", "data": "zz"}]},
    {"samples": [{"type": "flow", "records": [{"name": "sampled_ipv4", "src_ip": "::1"}]}]},
])
def test_bad_objects_raise_encode_error(bad: dict) -> None:
    with pytest.raises(E.EncodeError):
        E.encode_datagram(bad)
    with pytest.raises(ValueError):  # EncodeError is a ValueError
        E.encode_datagram(bad)


def test_counter_record_rejects_unknown_fields() -> None:
    with pytest.raises(E.EncodeError):
        E.counter_record("virt_cpu", bogus=1)
    with pytest.raises(E.EncodeError):
        E.counter_record("nope")
