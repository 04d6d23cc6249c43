"""Telemetry for the tests that scale a real swarm service through real ``fastflow run`` processes.

:class:`TaskTelemetry` sends, every ``SEND_EVERY`` s, one hsflowd-shaped datagram (built with
:mod:`fastflow.encode`) describing the service's running tasks as Docker lists them right now, each
container busy ``util`` percent of one CPU, over UDP on 127.0.0.1 to every given collector port (as
a Host sFlow agent with several ``collector {}`` blocks would).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from dockerenv import SwarmHelper

SEND_EVERY = 0.5      # seconds between datagrams (the agents' polling interval)


class TaskTelemetry:
    """``sending`` False: the containers go silent (their CPU time keeps advancing)."""

    def __init__(self, client: Any, service_id: str, ports: Sequence[int],
                 util: float = 0.0) -> None:
        self.helper = SwarmHelper(client)
        self.service_id = service_id
        self.ports = list(ports)
        self.util = util
        self.sending = True
        self.sent = 0
        self.tasks: list[str] = []
        self.errors: list[str] = []
        self._cpu_ms: dict[str, float] = {}
        self._sample_seq: dict[str, int] = {}
        self._seq = 0
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._thread = threading.Thread(target=self._run, name="task-telemetry", daemon=True)

    def start(self) -> TaskTelemetry:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(10)
        self._sock.close()

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            try:
                tasks = self.helper.running_tasks(self.service_id)
            except Exception as exc:  # noqa: BLE001 - an engine hiccup: report, keep going
                self.errors.append(repr(exc))
                tasks = self.tasks
            now = time.monotonic()
            dt, last = now - last, now
            for t in tasks:   # a new container starts with some CPU time already used
                self._cpu_ms[t] = self._cpu_ms.get(t, 1000.0) + self.util / 100.0 * dt * 1000.0
            self.tasks = tasks
            if self.sending and tasks:
                data = self._datagram(tasks)
                for p in self.ports:
                    try:
                        self._sock.sendto(data, ("127.0.0.1", p))
                    except OSError:    # a killed instance's port: ICMP refused, harmless
                        pass
                self.sent += 1
            self._stop.wait(max(0.0, SEND_EVERY - (time.monotonic() - now)))

    def _datagram(self, tasks: list[str]) -> bytes:
        from fastflow import encode as e
        from fastflow.sources.simulate import container_index

        self._seq += 1
        up_ms = int((time.monotonic() - self._t0) * 1000) + 600_000
        samples = [e.counter_sample("2:1", [
            e.host_descr(hostname="fftest-node", machine_type=3, os_name=2, os_release="6.1.0"),
            e.host_cpu(cpu_num=2, cpu_speed=2400, uptime=up_ms // 1000, cpu_user=up_ms // 4,
                       cpu_idle=up_ms),
        ], sequence_number=self._seq, expanded=True)]
        for t in tasks:
            n = self._sample_seq[t] = self._sample_seq.get(t, 0) + 1
            samples.append(e.counter_sample(f"3:{container_index(t)}", [
                e.host_descr(hostname=t, machine_type=3, os_name=2, os_release="6.1.0"),
                e.host_parent(2, 1),
                e.virt_cpu(state=1, cpu_time=int(self._cpu_ms[t]) & 0xFFFFFFFF, nr_virt_cpu=1),
                e.virt_memory(memory=8 << 20, max_memory=2 << 30),
                e.virt_net_io(rx_bytes=n * 1000, rx_packets=n * 10, tx_bytes=n * 500,
                              tx_packets=n * 5),
            ], sequence_number=n, expanded=True))
        return e.encode_datagram(e.datagram("127.0.0.1", samples, sequence_number=self._seq,
                                            uptime=up_ms & 0xFFFFFFFF, sub_agent_id=100000))


def bounded(cond: Callable[[], Any], timeout: float, what: str, diag: Callable[[], Any],
            step: float = 0.25) -> Any:
    """``cond()``'s first truthy value within ``timeout`` s, else an AssertionError with ``diag()``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"{what} not within {timeout}s: {diag()}")
