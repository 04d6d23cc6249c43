"""``fastflow decode`` as a real subprocess: text and JSON output, errors, implementation choice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _sflow_build import counters_sample, datagram, discard_sample, record, u32

REQUIRED = {"agent", "sub_agent_id", "sequence_number", "uptime", "timestamp", "samples"}


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = dict(os.environ)
    e.pop("FASTFLOW_PURE_PYTHON", None)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "fastflow", *args], capture_output=True,
                          text=True, timeout=120, env=e)


def test_json_lines(swarm_pcap: Path) -> None:
    r = cli("decode", str(swarm_pcap), "--format", "json")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == 124
    for o in lines:
        assert REQUIRED <= set(o), set(o)
        for s in o["samples"]:
            assert {"type", "sequence_number", "source_id", "records"} <= set(s)
            assert s["type"] in ("flow", "counters") and s["expanded"] is True
            for rec in s["records"]:
                assert {"format", "name"} <= set(rec) and ":" in rec["format"]
            if s["type"] == "flow":
                assert {"sampling_rate", "sample_pool", "drops", "input", "output"} <= set(s)
    first = lines[0]
    assert (first["agent"], first["sub_agent_id"], first["sequence_number"], first["uptime"]) == \
        ("192.0.2.2", 100000, 1, 632)
    assert abs(first["timestamp"] - 1795554174.373063) < 1e-5  # sflowtool: pcapTimestamp_uS 373063
    s = first["samples"][0]
    assert (s["type"], s["source_id"], s["records"][0]["name"], s["records"][0]["mhz"]) == \
        ("counters", "2:1", "virt_node", 2445)
    flows = [s for o in lines for s in o["samples"] if s["type"] == "flow"]
    assert len(flows) == 25
    f = flows[0]
    assert (f["sampling_rate"], f["sample_pool"], f["drops"], f["input"], f["output"]) == \
        (10, 10, 0, 1073741823, 1)
    hdr = next(r for r in f["records"] if r["name"] == "sampled_header")
    assert (hdr["frame_length"], hdr["decoded"]["dst_port"]) == (1102, 6343)
    assert "124 datagrams, 0 rejected" in r.stderr


def test_text_format(swarm_pcap: Path) -> None:
    r = cli("decode", str(swarm_pcap))
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out.count("startDatagram =================================") == 124
    assert sum(1 for x in out if x.startswith("endDatagram")) == 124
    assert sum(1 for x in out if x.startswith("startSample")) == 286
    assert "agent 192.0.2.2" in out and "sysUpTime 632" in out
    assert "sampleType COUNTERSSAMPLE" in out and "sampleType FLOWSAMPLE" in out
    assert "counterBlock_tag 0:2100" in out and "mhz 2445" in out and "hostname vm" in out


def test_text_if_name_matches_sflowtool(swarm_pcap: Path) -> None:
    """0:1005 records print as sflowtool does (``ifName docker0``), the same lines in order."""
    r = cli("decode", str(swarm_pcap))
    assert r.returncode == 0, r.stderr
    ours = [x for x in r.stdout.splitlines() if x.startswith("ifName ")]
    dump = swarm_pcap.with_name("docker-swarm.sflowtool.txt").read_text().splitlines()
    theirs = [x for x in dump if x.startswith("ifName ")]
    assert len(theirs) == 98 and ours == theirs
    assert "unknown_record=25" in r.stderr  # only hsflowd's 0:1043 flow records are left


def test_discard_event_text_and_json(tmp_path: Path) -> None:
    hdr = record(1, u32(1, 64, 4, 14) + bytes(range(14)) + b"\0\0")
    p = tmp_path / "drop.bin"
    p.write_bytes(datagram([discard_sample([hdr], seq=5, sid_index=3, drops=2, inp=7, out=0,
                                           reason=258)]))
    r = cli("decode", str(p))
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    for line in ("sampleType_tag 0:5", "sampleType DISCARDSAMPLE", "sampleSequenceNo 5",
                 "sourceId 0:3", "dropEvents 2", "inputPort 7", "outputPort 0",
                 "discardCode 258", "flowBlock_tag 0:1", "frame_length 64"):
        assert line in out, line
    r = cli("decode", str(p), "--format", "json")
    (o,) = [json.loads(x) for x in r.stdout.splitlines()]
    s = o["samples"][0]
    assert (s["type"], s["reason"], s["records"][0]["name"]) == ("discard", 258, "sampled_header")
    assert r.stderr.endswith("1 datagrams, 0 rejected\n")  # no skip reason counted


def test_implementation_choice(swarm_pcap: Path) -> None:
    r = cli("-v", "decode", str(swarm_pcap), "--format", "json",
            env={"FASTFLOW_PURE_PYTHON": "1"})
    assert r.returncode == 0 and "decoder implementation: python" in r.stderr
    if os.environ.get("FASTFLOW_PURE_PYTHON") == "1":
        pytest.skip("FASTFLOW_PURE_PYTHON=1: Cython decoder disabled")
    r = cli("-v", "decode", str(swarm_pcap), "--format", "json")
    assert r.returncode == 0 and "decoder implementation: cython" in r.stderr


def test_missing_and_non_capture_files(tmp_path: Path) -> None:
    r = cli("decode", str(tmp_path / "nope.pcap"))
    assert r.returncode == 2 and "no such file" in r.stderr and r.stdout == ""
    big = tmp_path / "big.txt"
    big.write_bytes(b"hello world\n" * 10000)
    r = cli("decode", str(big))
    assert r.returncode == 2 and "not a pcap" in r.stderr


def test_raw_datagram_file(tmp_path: Path) -> None:
    p = tmp_path / "one.bin"
    p.write_bytes(datagram([counters_sample([record(2101, b"\0\0\0\1" + b"\0" * 8)])],
                           agent="192.0.2.77", seq=42))
    r = cli("decode", str(p), "--format", "json")
    assert r.returncode == 0, r.stderr
    assert "decoding it as one raw sFlow datagram" in r.stderr
    (o,) = [json.loads(x) for x in r.stdout.splitlines()]
    assert (o["agent"], o["sequence_number"]) == ("192.0.2.77", 42)
    assert o["samples"][0]["records"][0] == {"format": "0:2101", "name": "virt_cpu", "state": 1,
                                             "cpu_time": 0, "nr_virt_cpu": 0}


def test_rejected_datagrams_do_not_abort(tmp_path: Path) -> None:
    from fastflow.pcap import write

    good = datagram(seq=1)
    cap = tmp_path / "mixed.pcap"
    write(cap, [(1.0, good), (2.0, b"\0\0\0\4junk"), (3.0, datagram(seq=3, trailing=b"\0" * 4))])
    r = cli("decode", str(cap), "--format", "json")
    assert r.returncode == 0, r.stderr
    a, b, c = (json.loads(x) for x in r.stdout.splitlines())
    assert a["sequence_number"] == 1 and c["sequence_number"] == 3
    assert b["error"] == "bad_version" and b["timestamp"] == 2.0 and b["length"] == 8
    assert c["errors"] == ["trailing_bytes"]
    assert "3 datagrams, 1 rejected" in r.stderr and "bad_version=1" in r.stderr
    r = cli("decode", str(cap))
    assert r.returncode == 0 and "error bad_version" in r.stdout


def test_port_filter(swarm_pcap: Path) -> None:
    r = cli("decode", str(swarm_pcap), "--format", "json", "--port", "9999")
    assert r.returncode == 0 and r.stdout == "" and "0 datagrams" in r.stderr
    r = cli("decode", str(swarm_pcap), "--format", "json", "--port", "0")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 124
