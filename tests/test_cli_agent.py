"""``fastflow agent`` CLI: bad values are usage errors; SIGHUP is logged and the agent keeps
polling (only SIGINT/SIGTERM stop it)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path


def test_agent_bad_values_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path)}
    for args, word in ((["--collector", "127.0.0.1:70000"], "out of range"),
                       (["--collector", "127.0.0.1:6343", "--polling", "0"],
                        "polling")):
        r = subprocess.run([sys.executable, "-m", "fastflow", "agent", "--no-docker", *args],
                           capture_output=True, text=True, timeout=60, env=env)
        assert r.returncode == 2, r.stderr
        assert word in r.stderr and "Traceback" not in r.stderr


def test_agent_survives_sighup(tmp_path: Path) -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(10)
    env = {**os.environ, "HOME": str(tmp_path)}
    p = subprocess.Popen([sys.executable, "-m", "fastflow", "agent", "--no-docker", "--collector",
                          f"127.0.0.1:{rx.getsockname()[1]}", "--polling", "0.2"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        rx.recv(65535)                      # it polls
        p.send_signal(signal.SIGHUP)
        for _ in range(3):                  # and keeps polling after the SIGHUP
            rx.recv(65535)
        assert p.poll() is None
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=20)
    finally:
        rx.close()
        if p.poll() is None:
            p.kill()
            p.wait(10)
    assert p.returncode == 0, err
    assert "SIGHUP: nothing to reload" in err
