"""Telemetry for scaler tests: Host sFlow-like container counters sent over real UDP on 127.0.0.1
into a real Pipeline + Store + Metrics.

:class:`TelemetryRig` binds a UDP socket on 127.0.0.1, feeds what it receives to
``Pipeline.feed`` (a receiver thread), and :meth:`TelemetryRig.send` emits one counter datagram per
container (hostname = the swarm task name ``svc.slot.taskid``), with ``virt_cpu.cpu_time`` advanced
so that the container's ``vir_cpu_utilization`` equals the requested percentage, and ``virt_net_io``
bytes advanced by the requested rate. Datagrams are built with :mod:`fastflow.encode`.
"""

from __future__ import annotations

import socket
import threading
import time
import zlib
from collections.abc import Iterable
from typing import Any

import numpy as np


def need_metrics_stack() -> tuple[Any, Any, Any]:
    """(Pipeline, Store, Metrics) classes."""
    from fastflow.collector.metrics import Metrics
    from fastflow.collector.pipeline import Pipeline
    from fastflow.collector.store import Store

    return Pipeline, Store, Metrics


class TelemetryRig:
    """Real UDP receiver on 127.0.0.1 feeding a Pipeline with a Store and Metrics."""

    def __init__(self, agent: str = "127.0.0.1") -> None:
        Pipeline, Store, Metrics = need_metrics_stack()
        self.store = Store(depth=16, expire_after=30.0)
        self.metrics = Metrics(self.store)
        self.pipeline = Pipeline([self.store])
        self.agent = agent
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.bind(("127.0.0.1", 0))
        self.rx.settimeout(0.1)
        self.port = self.rx.getsockname()[1]
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.received = 0
        self._stop = threading.Event()
        self._cpu_ms: dict[str, float] = {}
        self._bytes: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self._seq = 0
        self._thread = threading.Thread(target=self._recv_loop, name="telemetry-rx", daemon=True)
        self._thread.start()

    def _recv_loop(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.rx.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            buf = np.frombuffer(data, np.uint8)
            self.pipeline.feed(buf, [0], [len(data)], time.time())
            self.received += 1

    def send(self, hosts: Iterable[str], util: float, bytes_per_s: float = 0.0) -> None:
        """One counter datagram per container in ``hosts``, as hsflowd sends them."""
        from fastflow import encode as e

        now = time.time()
        for host in hosts:
            last = self._last.get(host)
            dt = 0.0 if last is None else now - last
            self._last[host] = now
            self._cpu_ms[host] = self._cpu_ms.get(host, 1000.0) + util / 100.0 * dt * 1000.0
            self._bytes[host] = self._bytes.get(host, 0.0) + bytes_per_s / 2 * dt
            self._seq += 1
            index = 100000 + zlib.crc32(host.encode()) % 100000
            sample = e.counter_sample(f"3:{index}", [
                e.host_descr(hostname=host, machine_type=3, os_name=2, os_release="6.1.0"),
                e.host_parent(2, 1),
                e.virt_cpu(state=1, cpu_time=int(self._cpu_ms[host]), nr_virt_cpu=1),
                e.virt_memory(memory=1 << 20, max_memory=1 << 30),
                e.virt_net_io(rx_bytes=int(self._bytes[host]), tx_bytes=int(self._bytes[host])),
            ], sequence_number=self._seq, expanded=True)
            dg = e.datagram(self.agent, [sample], sequence_number=self._seq,
                            uptime=int(now * 1000) & 0xFFFFFFFF, sub_agent_id=100000)
            self.tx.sendto(e.encode_datagram(dg), ("127.0.0.1", self.port))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.rx.close()
        self.tx.close()
