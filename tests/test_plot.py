"""``fastflow plot``: the swarm capture replayed through the engine and rendered to a PNG."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="matplotlib (the 'plot' extra) is not installed")

from fastflow.cli import main as cli_main  # noqa: E402
from fastflow.cli import plot  # noqa: E402


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    w, h = struct.unpack(">II", data[16:24])
    assert data.rstrip(b"\x00")[-8:-4] == b"IEND"
    return w, h


def test_plot_swarm_capture(swarm_pcap: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "chart.png"
    rc = cli_main(["plot", str(swarm_pcap), "--service", "sflowpeer_burn", "--metric",
                   "vir_cpu_utilization", "--metric", "vir_bytes_out", "--hline", "20",
                   "--hline", "80", "--step", "10", "-o", str(out)])
    assert rc == 0
    w, h = png_size(out)
    assert 600 <= w <= 3000 and 400 <= h <= 3000
    assert out.stat().st_size > 10_000
    assert "3 data sources" in capsys.readouterr().out


def test_collect_series_follows_capture_time(swarm_pcap: Path) -> None:
    s = plot.collect(swarm_pcap, ["vir_cpu_utilization"],
                     {"vir_host_name": [r"sflowpeer_burn\..*"]}, step=10.0)
    assert len(s.t) >= 9 and all(b - a == pytest.approx(10.0) for a, b in zip(s.t, s.t[1:], strict=False))
    hosts = s.values["vir_cpu_utilization"]
    assert len(hosts) == 3 and all(h.startswith("sflowpeer_burn.") for h in hosts)
    assert max(s.reporting) == 3
    vals = [v for col in hosts.values() for v in col if v is not None]
    assert vals and all(0.0 <= v <= 100.0 for v in vals)


def test_bad_input_is_a_clear_error(swarm_pcap: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.png"
    assert cli_main(["plot", str(tmp_path / "missing.pcap"), "-o", str(out)]) == 2
    assert cli_main(["plot", str(swarm_pcap), "--filter", "novalue", "-o", str(out)]) == 2
    assert cli_main(["plot", str(swarm_pcap), "--filter", "vir_host_name=(", "-o", str(out)]) == 2
    assert cli_main(["plot", str(swarm_pcap), "--metric", "no_such_metric", "-o", str(out)]) == 2
    assert cli_main(["plot", str(swarm_pcap), "--step", "0", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "fastflow plot:" in err and "metric=pattern" in err
    assert not out.exists()


def test_missing_matplotlib_names_the_extra(swarm_pcap: Path, tmp_path: Path) -> None:
    # fault injection: run the real CLI in a child where importing matplotlib fails
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from fastflow.cli import main\n"
            f"sys.exit(main(['plot', {str(swarm_pcap)!r}, '-o', {str(tmp_path / 'c.png')!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "pip install fastflow[plot]" in r.stderr
