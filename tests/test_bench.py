"""The benchmark scripts must keep running: `bench/run.py --quick` end to end, results well-formed.

This checks that the benchmarks run and produce sane, complete output — never how fast anything is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_run_quick(tmp_path: Path, corpus: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**__import__("os").environ, "FASTFLOW_CORPUS": str(corpus)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    assert report["meta"]["quick"] is True
    assert set(report["decode"]) == {"swarm", "flows"}
    for name, row in report["decode"].items():
        assert row["datagrams"] > 0, name
        for key in ("cython", "python", "floor_sum", "pcap_read"):
            r = row[key]
            assert r["min"] <= r["median"] <= r["max"], (name, key, r)
            assert r["median"] > 0
    md = (tmp_path / "latest.md").read_text()
    assert "Cython decode" in md and "| swarm |" in md
    for name, entry in report["other"].items():
        assert entry["status"] in ("ok", "missing"), (name, entry)
