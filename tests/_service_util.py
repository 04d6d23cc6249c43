"""``fastflow run`` as a real subprocess for tests: ports read from its log lines, stderr kept."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any


def wait_for(pred: Any, timeout: float = 10.0, step: float = 0.05) -> Any:
    """Poll ``pred`` until it returns something truthy or ``timeout`` passes; its last value."""
    t_end = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > t_end:
            return v
        time.sleep(step)


class Proc:
    """``python -m fastflow run ARGS`` with its stderr collected by a thread."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.lines: list[str] = []
        self.p = subprocess.Popen([sys.executable, "-m", "fastflow", "run", *args],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, **(env or {})})
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self) -> None:
        assert self.p.stderr is not None
        for line in self.p.stderr:
            self.lines.append(line.rstrip("\n"))

    def port(self, what: str, timeout: float = 20.0) -> int:
        """The port of ``INFO: Listening, {what} port N`` ("sFlow" or "HTTP") once logged."""
        rx = re.compile(rf"INFO: Listening, {what} port (\d+)$")

        def find() -> int | None:
            for line in list(self.lines):
                m = rx.search(line)
                if m:
                    return int(m.group(1))
            return None
        port = wait_for(lambda: find() or (self.p.poll() is not None and -1), timeout)
        if not port or port == -1:
            self.kill()
            raise AssertionError(f"no '{what}' port logged; stderr:\n" + "\n".join(self.lines))
        return int(port)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT, as an operator's Ctrl-C; killed if it does not exit in time. Its exit code."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return int(self.p.returncode)

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(10)
