"""bench/e2e.py --quick runs end to end and writes well-formed JSON (never checks how fast)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "e2e.py"
CAPTURE = ROOT.parent / "shared" / "data" / "hsflowd" / "docker-swarm.pcap"

RUN_KEYS = ("sent", "seconds", "offered_per_s", "received", "received_per_s", "decoded",
            "decoded_per_s", "rejected", "loss", "loss_pct", "kernel_drops", "seq_lost",
            "service_cpu_s", "service_cpu_pct", "busiest_thread_cpu_pct",
            "service_cpu_us_per_datagram", "sender_cpu_us_per_datagram")


def _nonneg(v: Any, what: str) -> None:
    if v is None:
        return
    assert isinstance(v, int | float) and not isinstance(v, bool), f"{what}: {v!r}"
    assert v >= 0, f"{what} is negative: {v}"


@pytest.mark.slow
@pytest.mark.skipif(not CAPTURE.exists(), reason="hsflowd/docker-swarm.pcap not available")
def test_e2e_quick(tmp_path: Path) -> None:
    out = tmp_path / "e2e.json"
    p = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["bench"] == "e2e" and res["quick"] is True
    for key in ("duration_s", "repeats", "target", "rates", "latency", "rcvbuf_granted"):
        assert key in res, key
    assert res["rates"], "no rates measured"
    for row in res["rates"]:
        assert row["runs"] and row["summary"]
        for run in row["runs"]:
            for key in RUN_KEYS:
                assert key in run, key
                _nonneg(run[key], key)
            assert run["received"] <= run["sent"]
            assert run["decoded"] <= run["received"]
            assert run["loss"] == run["sent"] - run["received"]
        for key, st in row["summary"].items():
            assert set(st) == {"median", "min", "max"}, key
            assert st["min"] <= st["median"] <= st["max"], key
    lat = res["latency"]
    for key in ("arrival_to_metric_ms", "first_sample_visible_ms", "http_rtt_ms"):
        assert set(lat[key]) == {"median", "min", "max"}, key
        for v in lat[key].values():
            _nonneg(v, key)
    assert 0 <= lat["missed"] <= lat["trials"]
    assert lat["arrival_to_metric_ms"]["median"] is not None   # the metric did appear
