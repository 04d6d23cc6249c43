"""``fastflow series`` end to end, as a subprocess, on the real swarm capture and a hand-made one."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from _sflow_build import counters_sample, datagram, fixed_counter, host_descr, record


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastflow", "series", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_json_on_swarm_capture(swarm_pcap: Path) -> None:
    r = run(str(swarm_pcap), "avg:vir_cpu_utilization,max:vir_cpu_utilization,sum:vir_bytes_in",
            "--filter", r"vir_host_name=sflowpeer_burn\.1\..*", "--step", "10")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert 8 <= len(lines) <= 12                      # ~110 s of capture in 10 s steps
    ts = [x["t"] for x in lines]
    assert ts == sorted(ts) and all(b - a == pytest.approx(10) for a, b in zip(ts, ts[1:], strict=False))
    for x in lines:
        assert [m["metricName"] for m in x["metrics"]] == [
            "avg:vir_cpu_utilization", "max:vir_cpu_utilization", "sum:vir_bytes_in"]
    filled = [x["metrics"][0] for x in lines if x["metrics"][0]["metricN"]]
    assert len(filled) >= len(lines) - 2
    assert all(m["metricN"] == 1 and 40 < m["metricValue"] < 70 for m in filled)
    first = lines[0]["metrics"][0]
    assert first["metricN"] == 1 or first["metricValue"] is None


def test_csv_on_swarm_capture(swarm_pcap: Path) -> None:
    r = run(str(swarm_pcap), "vir_cpu_utilization,any:vir_host_name", "--format", "csv",
            "--filter", r"vir_host_name=sflowpeer_burn\.3\..*", "--step", "20")
    assert r.returncode == 0, r.stderr
    table = list(csv.reader(io.StringIO(r.stdout)))
    assert table[0] == ["t", "vir_cpu_utilization", "vir_cpu_utilization:N",
                        "any:vir_host_name", "any:vir_host_name:N"]
    body = [row for row in table[1:] if row[2] == "1"]
    assert len(body) >= 3
    for row in body:
        assert float(row[1]) < 1.0                     # the idle container
        assert row[3].startswith("sflowpeer_burn.3.")


def test_synthetic_capture_exact_values(tmp_path: Path) -> None:
    from fastflow import pcap

    t0 = 1_700_000_000.0
    items = []
    for i in range(7):
        recs = [record(2000, host_descr("api.1.q")),
                record(2101, fixed_counter("virt_cpu", {"state": 1, "cpu_time": 2500 * i,
                                                        "nr_virt_cpu": 1}))]
        items.append((t0 + 10 * i, datagram([counters_sample(recs, seq=i + 1, expanded=True,
                                                             sid_type=3, sid_index=9)],
                                            seq=i + 1, uptime=5000 + 10_000 * i)))
    path = tmp_path / "s.pcap"
    pcap.write(path, items)
    r = run(str(path), "vir_cpu_utilization", "--step", "10", "--filter", "vir_cpu_state=running")
    assert r.returncode == 0, r.stderr
    got = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["t"] for x in got] == [t0 + 10 * k for k in range(1, 7)]
    assert all(x["metrics"][0]["metricValue"] == pytest.approx(25.0) for x in got)


def test_bad_arguments_exit_2(swarm_pcap: Path, tmp_path: Path) -> None:
    r = run(str(swarm_pcap), "avg:no_such_metric")
    assert r.returncode == 2 and "unknown metric" in r.stderr
    r = run(str(swarm_pcap), "vir_cpu_utilization", "--filter", "novalue")
    assert r.returncode == 2 and "KEY=PATTERN" in r.stderr
    r = run(str(swarm_pcap), "vir_cpu_utilization", "--filter", "vir_host_name=(")
    assert r.returncode == 2 and "pattern" in r.stderr
    missing = tmp_path / "missing.pcap"
    r = run(str(missing), "vir_cpu_utilization")
    assert r.returncode == 2 and "missing.pcap" in r.stderr
