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


def test_demo_survives_sighup(tmp_path: object) -> None:
    """SIGHUP is logged, not fatal (the terminal closing is what SIGHUP usually means to a shell,
    but an operator's reload habit must not kill it)."""
    import os
    import signal
    import time

    env = {**os.environ, "HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path)}
    p = subprocess.Popen([sys.executable, "-m", "fastflow", "demo", "--duration", "4", "--speed",
                          "20", "--http-port", "0"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert p.stderr is not None
        for line in p.stderr:
            if "dashboard http://127.0.0.1:" in line:
                break
        time.sleep(0.3)
        p.send_signal(signal.SIGHUP)
        _out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    assert p.returncode == 0, err
    assert "SIGHUP: nothing to reload, still running" in err
    assert "fastflow demo: done" in err
