"""Decoders against real data: the hsflowd swarm capture checked field by field against sflowtool's
dump (an independent oracle), and the public test vectors with values from their sources (tshark,
the MANIFEST, the originating test suites). Both table decoders run through ``decoder_cls``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import fastflow.decode as fd
from fastflow import pcap
from fastflow._schema import COUNTER_BIT, COUNTER_RECORD_BY_FORMAT, FLOW_BIT, REASON_CODE


def datagrams_of(path: Path) -> list[tuple[float, bytes]]:
    """(ts, payload) of every datagram: captures through fastflow.pcap, .bin/.dat as one datagram."""
    if path.suffix in (".bin", ".dat"):
        return [(0.0, path.read_bytes())]
    cap = pcap.read(path)
    return [(float(cap.ts[i]), cap.datagram(i)) for i in range(len(cap))]


def feed(cls: type, dgs: list[tuple[float, bytes]]) -> Any:
    d = cls()
    assert d.feed_list([b for _, b in dgs], ts=np.array([t for t, _ in dgs])) == len(dgs)
    return d


# ---- sflowtool oracle --------------------------------------------------------------------------
def parse_sflowtool(path: Path) -> list[dict[str, Any]]:
    """sflowtool's line dump -> [{header keys..., "samples": [{keys..., "blocks": [(tag, {})]}]}]."""
    out: list[dict[str, Any]] = []
    dg: dict[str, Any] | None = None
    smp: dict[str, Any] | None = None
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        value = value.strip()
        if key == "startDatagram":
            dg = {"samples": []}
        elif key == "endDatagram":
            assert dg is not None
            out.append(dg)
            dg = None
        elif key == "startSample":
            smp = {"blocks": []}
        elif key == "endSample":
            assert dg is not None and smp is not None
            dg["samples"].append(smp)
            smp = None
        elif key in ("counterBlock_tag", "flowBlock_tag"):
            assert smp is not None
            smp["blocks"].append((value, {}))
        elif smp is not None:
            if smp["blocks"]:
                smp["blocks"][-1][1][key] = value
            else:
                smp[key] = value
        elif dg is not None:
            dg[key] = value
    return out


def _norm(s: str) -> str:
    return s.replace("_", "").lower()


_PREFIXES = ("cpu", "disk", "nio", "vnode", "vcpu", "vmem", "vdsk", "vnio")
_SPECIAL = {
    "networkType": "if_type", "disk_partition_max_used": "part_max_used",
    "nio_pkts_out": "packets_out", "vcpu_cpu_mS": "cpu_time", "vcpu_cpuCount": "nr_virt_cpu",
    "vnio_bytes_in": "rx_bytes", "vnio_pkts_in": "rx_packets", "vnio_errs_in": "rx_errs",
    "vnio_drops_in": "rx_drop", "vnio_bytes_out": "tx_bytes", "vnio_pkts_out": "tx_packets",
    "vnio_errs_out": "tx_errs", "vnio_drops_out": "tx_drop", "UUID": "uuid",
    "parent_dsClass": "container_type", "parent_dsIndex": "container_index",
}


def oracle_field(record: str, key: str) -> str | None:
    """Map an sflowtool counter key to our json_name within ``record`` (None: not ours)."""
    names = {_norm(f[0]): f[0] for f in COUNTER_RECORD_BY_NAME_FIELDS[record]}
    if key in _SPECIAL:
        return _SPECIAL[key]
    n = _norm(key)
    if n in names:
        return names[n]
    for p in _PREFIXES:
        if n.startswith(p) and n[len(p):] in names:
            return names[n[len(p):]]
    return None


COUNTER_RECORD_BY_NAME_FIELDS = {r[1]: r[3] for r in COUNTER_RECORD_BY_FORMAT.values()}


def same(ours: Any, theirs: str, key: str) -> bool:
    if key == "disk_partition_max_used":
        return f"{ours / 100:.2f}" == theirs
    if isinstance(ours, float):
        return f"{ours:.3f}" == theirs
    return str(ours) == theirs


@pytest.fixture(scope="module")
def swarm(corpus: Path) -> tuple[list[tuple[float, bytes]], list[dict[str, Any]]]:
    dgs = datagrams_of(corpus / "hsflowd" / "docker-swarm.pcap")
    oracle = parse_sflowtool(corpus / "hsflowd" / "docker-swarm.sflowtool.txt")
    assert len(dgs) == len(oracle) == 124
    return dgs, oracle


def test_swarm_objects_match_sflowtool(swarm: Any) -> None:
    """Every datagram, sample and counter/flow field sflowtool prints, through decode()."""
    dgs, oracle = swarm
    compared = 0
    for (ts, data), want in zip(dgs, oracle, strict=True):
        o = fd.decode(data, ts)
        assert o["errors"] == []
        assert str(o["length"]) == want["datagramSize"]
        assert o["agent"] == want["agent"]
        assert str(o["sub_agent_id"]) == want["agentSubId"]
        assert str(o["sequence_number"]) == want["packetSequenceNo"]
        assert str(o["uptime"]) == want["sysUpTime"]
        assert str(o["num_samples"]) == want["samplesInPacket"]
        assert int(round(ts % 1 * 1e6)) == int(want["pcapTimestamp_uS"])
        assert len(o["samples"]) == len(want["samples"])
        for s, ws in zip(o["samples"], want["samples"], strict=True):
            assert s["format"] == ws["sampleType_tag"]
            assert str(s["sequence_number"]) == ws["sampleSequenceNo"]
            assert s["source_id"] == ws["sourceId"]
            if s["type"] == "flow":
                assert ws["sampleType"] == "FLOWSAMPLE"
                for k, ok in (("meanSkipCount", "sampling_rate"), ("samplePool", "sample_pool"),
                              ("dropEvents", "drops"), ("inputPort", "input"),
                              ("outputPort", "output")):
                    assert str(s[ok]) == ws[k]
            else:
                assert ws["sampleType"] == "COUNTERSSAMPLE"
            assert [r["format"] for r in s["records"]] == [t for t, _ in ws["blocks"]]
            for r, (_tag, fields) in zip(s["records"], ws["blocks"], strict=True):
                compared += check_record(r, fields)
    assert compared > 11000  # every printed field (11896), not a sample of them


def check_record(r: dict[str, Any], fields: dict[str, str]) -> int:
    n = 0
    name = r["name"]
    if name == "unknown":
        return 0  # 0:1043 (hsflowd's flow timestamp): not decoded by fastflow (skipped)
    if name == "sampled_header":
        d = r["decoded"]
        pairs = [("headerProtocol", r["header_protocol"]), ("sampledPacketSize", r["frame_length"]),
                 ("strippedBytes", r["stripped"]), ("headerLen", r["header_length"]),
                 ("headerBytes", "-".join(re.findall("..", r["header"].upper()))),
                 ("IPSize", d.get("ip_length")), ("srcIP", d.get("ip_src")),
                 ("dstIP", d.get("ip_dst")), ("IPProtocol", d.get("ip_protocol")),
                 ("IPTOS", d.get("ip_tos")), ("IPTTL", d.get("ip_ttl")),
                 ("UDPSrcPort", d.get("src_port")), ("UDPDstPort", d.get("dst_port")),
                 ("TCPSrcPort", d.get("src_port")), ("TCPDstPort", d.get("dst_port")),
                 ("ICMPType", d.get("icmp_type")), ("ICMPCode", d.get("icmp_code"))]
        for key, ours in pairs:
            if key in fields:
                assert str(ours) == fields[key], key
                n += 1
        return n
    if name == "host_adapters":
        for i, a in enumerate(r["adapters"]):
            assert str(a["if_index"]) == fields[f"adaptor_{i}_ifIndex"]
            assert str(len(a["macs"])) == fields[f"adaptor_{i}_MACs"]
            for j, m in enumerate(a["macs"]):
                assert m == fields[f"adaptor_{i}_MAC_{j}"]
                n += 1
            n += 2
        assert not any(k.startswith(f"adaptor_{len(r['adapters'])}_") for k in fields)
        return n
    for key, theirs in fields.items():
        if key == "ifName":  # 0:1005 port name
            assert name == "if_name" and r["if_name"] == theirs
            n += 1
            continue
        ours_key = oracle_field(name, key)
        assert ours_key is not None, f"sflowtool field {key} of {name} has no fastflow field"
        assert same(r[ours_key], theirs, key), (name, key, r[ours_key], theirs)
        n += 1
    return n


def test_swarm_tables_match_sflowtool(decoder_cls: type, swarm: Any) -> None:
    """The same comparison on the table columns, for both table decoders."""
    dgs, oracle = swarm
    d = feed(decoder_cls, dgs)
    # 98 if_name (0:1005) records decode now; what is left is hsflowd's 25 0:1043 flow records
    assert d.error_counts() == {"unknown_record": 25}
    assert d.n_datagrams == 124
    agents, strings = d.agents(), d.strings()
    ci = fi = ifnames = 0
    for row, want in zip(d.datagrams, oracle, strict=True):
        assert agents[row["agent"]] == want["agent"] and row["status"] == 0
        assert (str(row["sequence_number"]), str(row["uptime"]), str(row["length"])) == \
            (want["packetSequenceNo"], want["sysUpTime"], want["datagramSize"])
        for ws in want["samples"]:
            cls_, idx = map(int, ws["sourceId"].split(":"))
            if ws["sampleType"] == "FLOWSAMPLE":
                f = d.flows[fi]
                fi += 1
                assert (f["source_id_type"], f["source_id_index"]) == (cls_, idx)
                assert str(f["sampling_rate"]) == ws["meanSkipCount"]
                assert str(f["sample_pool"]) == ws["samplePool"]
                assert str(f["input"]) == ws["inputPort"]
                hdr = dict(ws["blocks"])["0:1"]
                assert str(f["frame_length"]) == hdr["sampledPacketSize"]
                assert str(f["ip_length"]) == hdr["IPSize"] and str(f["ip_ttl"]) == hdr["IPTTL"]
                assert str(f["ip_protocol"]) == hdr["IPProtocol"]
                assert f["mask"] == 1 << FLOW_BIT["sampled_header"]
                if "UDPSrcPort" in hdr:
                    assert (str(f["src_port"]), str(f["dst_port"])) == \
                        (hdr["UDPSrcPort"], hdr["UDPDstPort"])
                if "ICMPType" in hdr:
                    assert str(f["icmp_type"]) == hdr["ICMPType"]
                continue
            c = d.counters[ci]
            ci += 1
            assert (c["source_id_type"], c["source_id_index"]) == (cls_, idx)
            assert str(c["sequence_number"]) == ws["sampleSequenceNo"]
            mask = 0
            for tag, fields in ws["blocks"]:
                fmt = int(tag.split(":")[1])
                if tag.startswith("0:") and fmt in COUNTER_RECORD_BY_FORMAT:
                    rec = COUNTER_RECORD_BY_FORMAT[fmt]
                    mask |= 1 << COUNTER_BIT[rec[1]]
                    check_columns(c, rec, fields, strings)
                    ifnames += "ifName" in fields
            assert c["mask"] == mask
    assert (ci, fi) == (d.n_counters, d.n_flows) == (261, 25)
    assert ifnames == 98  # every ifName line of the sflowtool dump, compared in check_columns


def check_columns(c: Any, rec: Any, fields: dict[str, str], strings: list[str]) -> None:
    cols = {f[0]: f[1] for f in rec[3]}
    if rec[1] == "host_adapters":
        n = sum(1 for k in fields if re.fullmatch(r"adaptor_\d+_ifIndex", k))
        assert c["adapters"] == n
        return
    for key, theirs in fields.items():
        if key == "ifName":
            assert rec[1] == "if_name" and strings[c["ifname"]] == theirs
            continue
        j = oracle_field(rec[1], key)
        assert j is not None
        v = c[cols[j]]
        if j in ("hostname", "os_release"):
            assert strings[v] == theirs
        elif j == "uuid":
            import uuid as _u
            assert str(_u.UUID(bytes=bytes(v))) == theirs
        else:
            assert same(v.item(), theirs, key), (rec[1], key, v, theirs)


# ---- every file in the corpus ------------------------------------------------------------------
def corpus_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix in (".pcap", ".pcapng", ".bin", ".dat"))


def test_every_corpus_file_decodes(decoder_cls: type, corpus: Path) -> None:
    files = corpus_files(corpus)
    assert len(files) >= 50
    for p in files:
        dgs = datagrams_of(p)
        assert dgs, p
        d = feed(decoder_cls, dgs)
        for _ts, data in dgs:  # the object parser agrees on what is rejected
            try:
                fd.decode(data)
            except fd.DecodeError as e:
                assert d.error_counts().get(e.reason), (p, e.reason)
        assert d.n_datagrams + sum(d.error_counts().get(r, 0) for r in (
            "truncated_header", "bad_version", "bad_agent_address")) == len(dgs), p


# (file, expected error counts): the malformed vectors are trimmed with the named reason
EXPECTED_REASONS = {
    "hsflowd/docker-swarm.pcap": {"unknown_record": 25},  # hsflowd's 0:1043 flow records
    "public/tcpdump/sflow_print-segv.pcap": {"truncated_header": 1},  # UDP length says 8 bytes
    "public/tcpdump/sflow_multiple_counter_30_pdus.pcap": {"bad_version": 5},  # non-sFlow UDP
    "public/cloudflare-goflow/cfgoflow-utils-getExpandedSFlowDecode-mangled.bin": {
        "record_overrun": 6, "record_too_short": 6, "trailing_bytes": 1},
    "public/goflow2/goflow2-TestExpandedSFlowDecode.bin": {"trailing_bytes": 1},
    "public/gopacket/gopacket-SFlowTestPacket5.bin": {"record_overrun": 1, "trailing_bytes": 1},
    "public/gopacket/gopacket-SFlowTestPacket8.bin": {"record_overrun": 1, "trailing_bytes": 1},
    "public/gopacket/gopacket-SFlowTestPacket11.bin": {"sample_overrun": 1},
    # 0:5 events decode into flow rows; their 0:1042/0:1038/0:1043 records are not decoded
    "public/goflow2/goflow2-TestSFlowDecodeDropEgressQueue.bin": {"unknown_record": 1},
    "public/cistern-sflow/event_discarded_packet.bin": {"unknown_record": 2},
    "public/nxthdr-sflow-parser/sflow.pcap": {},
    "public/tcpdump/sflow-print-v6.pcap": {},
    "public/vflow/vflow-TestsFlowRawPacketWithPaddingAfterSample.bin": {},
}


@pytest.mark.parametrize("rel", sorted(EXPECTED_REASONS))
def test_named_reasons(decoder_cls: type, corpus: Path, rel: str) -> None:
    d = feed(decoder_cls, datagrams_of(corpus / rel))
    assert d.error_counts() == EXPECTED_REASONS[rel]


def test_segv_capture_full_ip_payload_is_trimmed(corpus: Path) -> None:
    """Decoded from the IP length instead of the (short) UDP length, the CVE input is trimmed."""
    raw = (corpus / "public/tcpdump/sflow_print-segv.pcap").read_bytes()
    frame = raw[24 + 16:]
    payload = frame[14 + 20 + 8: 14 + 896]
    o = fd.decode(payload)
    assert o["errors"] and o["errors"][0] in ("sample_overrun", "record_overrun")


def test_mangled_goflow_samples_dropped(decoder_cls: type, corpus: Path) -> None:
    p = corpus / "public/cloudflare-goflow/cfgoflow-utils-getExpandedSFlowDecode-mangled.bin"
    o = fd.decode(p.read_bytes())
    assert [s.get("error") for s in o["samples"]].count("record_overrun") == 6
    d = feed(decoder_cls, datagrams_of(p))
    assert d.datagrams[0]["status"] == REASON_CODE["record_too_short"]


def test_tcpdump_expanded_router_gateway(decoder_cls: type, corpus: Path) -> None:
    """Values from tshark 4.0 on tcpdump/sflow_expanded.pcap."""
    d = feed(decoder_cls, datagrams_of(corpus / "public/tcpdump/sflow_expanded.pcap"))
    dg, f = d.datagrams[0], d.flows[0]
    assert d.agents()[dg["agent"]] == "49.49.49.49"
    assert (dg["sequence_number"], dg["uptime"]) == (115694180, 3465002224)
    assert (f["sequence_number"], f["source_id_index"], f["sampling_rate"], f["sample_pool"]) == \
        (2170480284, 11001, 1000, 1521799520)
    # output value 1285816721 > 2**30: the table folds format << 30 | value & 0x3FFFFFFF
    assert (f["input"], f["output"], f["expanded"]) == (29001, 1285816721 & 0x3FFFFFFF, 1)
    s = fd.decode(datagrams_of(corpus / "public/tcpdump/sflow_expanded.pcap")[0][1])["samples"][0]
    assert (s["output"], s["output_format"]) == (1285816721, 0)
    assert (f["frame_length"], f["stripped"], f["header_length"]) == (126, 4, 122)
    assert (f["eth_dst"], f["eth_src"], f["vlan"], f["eth_type"]) == \
        (0x22421F4A9FCD, 0x948ED30A713B, 809, 0x0800)
    assert bytes(f["ip_src"][12:]) == bytes([52] * 4) and bytes(f["ip_dst"][12:]) == bytes([53] * 4)
    assert (f["ip_protocol"], f["ip_ttl"], f["ip_length"], f["ip_tos"]) == (6, 61, 104, 8)
    assert (f["src_port"], f["dst_port"], f["tcp_flags"], f["l4_ok"]) == (22, 52237, 0x18, 1)
    assert bytes(f["nexthop"][12:]) == bytes([54] * 4)
    assert (f["src_mask_len"], f["dst_mask_len"]) == (32, 22)
    assert (f["as_number"], f["src_as"], f["src_peer_as"], f["dst_peer_as"], f["dst_as"],
            f["local_pref"]) == (28976, 203476, 203476, 8218, 203361, 100)
    assert f["mask"] == sum(1 << FLOW_BIT[n] for n in ("sampled_header", "extended_router",
                                                       "extended_gateway"))


def test_nxthdr_sampled_ipv4(decoder_cls: type, corpus: Path) -> None:
    """tshark 4.0: a lone 0:3 sampled_ipv4 record, agent 1.1.1.1."""
    d = feed(decoder_cls, datagrams_of(corpus / "public/nxthdr-sflow-parser/sflow.pcap"))
    f = d.flows[0]
    assert d.agents()[1] == "1.1.1.1" and d.datagrams[0]["sequence_number"] == 264476700
    assert (f["frame_length"], f["ip_version"], f["ip_protocol"], f["src_port"], f["dst_port"]) \
        == (40, 4, 6, 53032, 25562)
    assert bytes(f["ip_src"][12:]) == bytes([3] * 4) and bytes(f["ip_dst"][12:]) == bytes([4] * 4)
    assert f["mask"] == 1 << FLOW_BIT["sampled_ipv4"] and f["l4_ok"] == 1


def test_tcpdump_ipv6_agent(decoder_cls: type, corpus: Path) -> None:
    d = feed(decoder_cls, datagrams_of(corpus / "public/tcpdump/sflow-print-v6.pcap"))
    assert d.agents()[1:] == ["30::1:1:1"] and set(d.datagrams["agent_af"]) == {6}
    assert (d.n_datagrams, d.n_counters, d.n_flows) == (25, 48, 13)
    both = (1 << COUNTER_BIT["if_counters"]) | (1 << COUNTER_BIT["ethernet_counters"])
    assert set(d.counters["mask"]) == {both}
    assert set(d.flows["mask"]) == {(1 << FLOW_BIT["sampled_header"])
                                    | (1 << FLOW_BIT["extended_switch"])}


def test_tcpdump_hsflowd_hosts(decoder_cls: type, corpus: Path) -> None:
    """MANIFEST: two hsflowd host-counter samples (68-byte host_cpu) among HP switch counters."""
    d = feed(decoder_cls, datagrams_of(
        corpus / "public/tcpdump/sflow_multiple_counter_30_pdus.pcap"))
    assert d.n_datagrams == 25 and d.n_counters == 144
    hosts = d.counters[d.counters["hostname"] != 0]
    assert sorted(d.strings()[i] for i in hosts["hostname"]) == ["proxy-use03147k2", "use03710ff"]
    assert set(hosts["source_id"]) == {(2 << 24) | 1}
    assert set(hosts["cpu_steal"]) == {0} and all(hosts["cpu_num"] > 0)
    assert set(d.datagrams["sub_agent_id"]) == {1, 2, 6, 100}
    assert sorted(d.agents()[1:]) == sorted([  # tshark 4.0 (the 7th source sends non-sFlow)
        "15.184.8.4", "15.184.1.195", "15.184.1.194", "15.184.4.165", "15.184.1.129",
        "15.184.13.52"])


def test_cistern_host_sample(decoder_cls: type, corpus: Path) -> None:
    p = corpus / "public/cistern-sflow/host_sample.bin"
    o = fd.decode(p.read_bytes())
    s = o["samples"][0]
    assert s["source_id"] == "2:1"
    assert [r["format"] for r in s["records"]] == ["0:2001", "0:2005", "0:2004", "0:2003",
                                                   "0:2006", "0:2000"]
    assert s["records"][-1]["hostname"] == "fractal"
    d = feed(decoder_cls, datagrams_of(p))
    assert d.strings()[d.counters[0]["hostname"]] == "fractal"


def test_vflow_sample_padding(corpus: Path) -> None:
    p = corpus / "public/vflow/vflow-TestsFlowRawPacketWithPaddingAfterSample.bin"
    o = fd.decode(p.read_bytes())  # MANIFEST: samples 1, 3 and 4 (0-based) carry 4 bytes
    assert [s.get("padding") for s in o["samples"] if "padding" in s] == ["00000000"] * 3
    assert [("padding" in s) for s in o["samples"]] == [False, True, False, True, True]


def test_goflow2_trailing_and_vlan(decoder_cls: type, corpus: Path) -> None:
    o = fd.decode((corpus / "public/goflow2/goflow2-TestExpandedSFlowDecode.bin").read_bytes())
    assert len(o["samples"]) == 5 and len(bytes.fromhex(o["trailing"])) == 332
    d = feed(decoder_cls, datagrams_of(corpus / "public/goflow2/goflow2-TestSFlowDecode.bin"))
    f = d.flows[0]
    assert f["vlan"] != 0 and f["ip_protocol"] == 1 and f["l4_ok"] == 1


def test_gopacket_sampled_ethernet(decoder_cls: type, corpus: Path) -> None:
    d = feed(decoder_cls, datagrams_of(
        corpus / "public/gopacket/gopacket-SFlowEthernetFramePacket.bin"))
    assert d.n_flows == 7
    assert all(m >> FLOW_BIT["sampled_ethernet"] & 1 for m in d.flows["mask"])


def test_read_pcap_notebook_api(corpus: Path) -> None:
    t = fd.read_pcap(corpus / "hsflowd" / "docker-swarm.pcap")
    assert (len(t.datagrams), len(t.samples), len(t.flows)) == (124, 261, 25)
    assert t.errors == {"unknown_record": 25} and t.agents[1] == "192.0.2.2"
    assert "vm" in t.strings
    assert t.datagrams["ts"][0] > 1.7e9
    # one table per record type present, each row linked to its sample
    assert {k: len(v) for k, v in t.records.items() if k.startswith("virt")} == {
        "virt_node": 49, "virt_cpu": 114, "virt_memory": 114, "virt_disk_io": 114,
        "virt_net_io": 114}
    assert sorted(set(t.text(t.if_name["ifname"]))) == ["docker0", "lo"]
    s = t.samples[t.virt_cpu["sample"]]
    assert np.all(s["mask"] & (1 << COUNTER_BIT["virt_cpu"]))
    assert np.all(s["source_id_type"] == 3)  # hsflowd: containers are data source class 3
    # the tables cost what the data costs: well under the capture's sFlow payload
    nbytes = sum(a.nbytes for a in (t.datagrams, t.samples, t.flows, *t.records.values()))
    assert nbytes < sum(int(n) for n in t.datagrams["length"])
    pd = pytest.importorskip("pandas")
    frames = t.to_pandas()
    assert isinstance(frames["samples"], pd.DataFrame)
    c = frames["samples"]
    assert set(c["agent"]) == {"192.0.2.2"}
    assert c["records"].str.contains("host_cpu").any()
    hd = frames["host_descr"]
    assert "vm" in set(hd["hostname"]) and set(hd["agent"]) == {"192.0.2.2"}
    assert set(frames["if_name"]["ifname"]) == {"docker0", "lo"}
    assert set(frames["flows"]["ip_src"]) == {"127.0.0.1"}


def test_read_pcap_to_arrow_and_parquet(corpus: Path, tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    t = fd.read_pcap(corpus / "hsflowd" / "docker-swarm.pcap")
    tabs = t.to_arrow()
    assert list(tabs) == t.table_names()
    vc = tabs["virt_cpu"]
    assert vc.num_rows == 114 and vc.column("vcpu_cpu_time").type == pa.uint32()
    assert vc.column("agent").type == pa.dictionary(pa.int32(), pa.string())
    assert set(vc.column("agent").to_pylist()) == {"192.0.2.2"}
    hd = tabs["host_descr"]
    assert "vm" in set(hd.column("hostname").to_pylist())
    assert hd.column("uuid").type == pa.binary(16)
    assert tabs["flows"].column("ip_src").type == pa.binary(16)
    paths = t.to_parquet(tmp_path)
    assert sorted(p.name for p in paths) == sorted(f"{n}.parquet" for n in t.table_names())
    back = pq.read_table(tmp_path / "virt_cpu.parquet")
    assert back.column("vcpu_cpu_time").to_pylist() == list(t.virt_cpu["vcpu_cpu_time"])


def test_objects_reencode_byte_identical(corpus: Path) -> None:
    """decode() keeps everything (extra, padding, trailing, non-zero XDR pads, dropped parts'
    data): fastflow.encode gives back the exact bytes of every accepted corpus datagram."""
    import fastflow.encode as enc
    n = 0
    for p in corpus_files(corpus):
        for _ts, data in datagrams_of(p):
            try:
                o = fd.decode(data)
            except fd.DecodeError:
                continue
            assert enc.encode_datagram(o) == data, p
            n += 1
    assert n >= 200
