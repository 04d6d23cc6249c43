"""fastflow demo: collector + scaler against the simulated swarm; replicas go up then back down."""

from __future__ import annotations

import re
import subprocess
import sys


def test_demo_scales_up_and_down() -> None:
    r = subprocess.run([sys.executable, "-m", "fastflow", "demo", "--duration", "25", "--speed",
                        "20", "--http-port", "0"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    reps = [int(m) for m in re.findall(r"^apache set replicas=(\d+)$", r.stdout, re.M)]
    assert reps, r.stdout + r.stderr[-2000:]
    peak = max(reps)
    assert peak >= 4, reps
    assert reps.index(peak) < len(reps) - 1 and reps[-1] <= 2, reps
    assert "dashboard http://127.0.0.1:" in r.stderr
