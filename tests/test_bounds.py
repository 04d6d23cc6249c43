"""Issue #11 against a real ``fastflow run`` on 127.0.0.1: bounded tables, the agents allow-list,
uptime that disagrees with arrival time, sequence wrap and jumps (real UDP, real subprocess)."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from _service_util import Proc, wait_for
from fastflow import encode as E


class Svc:
    """A running collector (no scaler) with its sFlow / HTTP ports."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = Proc("--sflow-port", "0", "--http-port", "0", "--bind", "127.0.0.1",
                         "--no-scaler", env=env)
        self.sflow = self.proc.port("sFlow")
        self.http = self.proc.port("HTTP")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def send(self, *grams: bytes) -> None:
        for g in grams:
            self.sock.sendto(g, ("127.0.0.1", self.sflow))

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}", timeout=5) as r:
            return json.loads(r.read())

    def ingest(self) -> dict[str, Any]:
        return dict(self.get("/healthz")["ingest"])

    def close(self) -> None:
        self.sock.close()
        self.proc.stop()


@pytest.fixture
def service(request: pytest.FixtureRequest) -> Iterator[Svc]:
    env = {"FASTFLOW_COLLECTOR_LINGER": "0", **getattr(request, "param", {})}
    svc = Svc(env)
    yield svc
    svc.close()


def containers(agent: str, first: int, n: int, seq: int = 1, uptime: int = 1000,
               cpu: int = 0) -> bytes:
    samples = [E.counter_sample(f"3:{first + j}", [
        E.host_descr(hostname=f"c{first + j}"), E.virt_cpu(state=1, cpu_time=cpu, nr_virt_cpu=1)],
        sequence_number=seq) for j in range(n)]
    return E.encode_datagram(E.datagram(agent, samples, sequence_number=seq, uptime=uptime))


@pytest.mark.parametrize("service", [{"FASTFLOW_COLLECTOR_MAX_SOURCES": "40",
                                      "FASTFLOW_STORE_EXPIRE_AFTER": "2"}], indirect=True)
def test_store_cap_refuses_counts_logs_evicts_and_gives_memory_back(service: Svc) -> None:
    service.send(containers("192.0.2.1", 0, 30), containers("192.0.2.2", 100, 30))
    ing = wait_for(lambda: (i := service.ingest())["datagrams_decoded"] == 2 and i, 10)
    # 40 held; the housekeeping pass (within a second) then evicts the stalest 1/16
    assert ing["store_data_sources"] + ing["store_evicted"] == 40
    assert ing["store_max_sources"] == 40 and ing["store_rejected"] == 20
    assert service.get("/errors/json")["errors"]["store_full"] == 20
    assert wait_for(lambda: service.ingest()["store_evicted"] >= 2, 5)     # stalest 1/16
    assert wait_for(lambda: any("store full (max_sources=40)" in ln for ln in service.proc.lines), 5)
    # silence: the sources expire without traffic and the tables shrink
    assert wait_for(lambda: service.ingest()["store_data_sources"] == 0, 10)
    t = time.monotonic()
    h = service.get("/healthz")
    assert time.monotonic() - t < 2.0 and h["status"] == "ok"


@pytest.mark.parametrize("service", [{"FASTFLOW_STORE_EXPIRE_AFTER": "2"}], indirect=True)
def test_memory_comes_back_when_sources_expire(service: Svc) -> None:
    for k in range(50):                              # 3,000 data sources, 60 per datagram
        service.send(containers(f"192.0.2.{k + 1}", 1000 * k, 60))
        time.sleep(0.002)
    ing = wait_for(lambda: (i := service.ingest())["store_data_sources"] == 3000 and i, 10)
    assert ing, service.ingest()
    peak = ing["store_bytes"]
    assert wait_for(lambda: service.ingest()["store_data_sources"] == 0, 10)
    assert service.ingest()["store_bytes"] < peak / 10


@pytest.mark.parametrize("service", [{"FASTFLOW_COLLECTOR_MAX_AGENTS": "3"}], indirect=True)
def test_agent_cap(service: Svc) -> None:
    service.send(*[containers(f"192.0.2.{i}", 0, 1) for i in range(1, 6)])
    ing = wait_for(lambda: (i := service.ingest())["datagrams_decoded"] == 5 and i, 10)
    assert ing["agentstats_agents"] + ing["agentstats_evicted"] == 3
    assert ing["agentstats_rejected_agents"] == 2
    assert len(service.get("/agents/json")) <= 3
    assert service.get("/errors/json")["errors"]["agents_full"] >= 2


@pytest.mark.parametrize("service", [{"FASTFLOW_COLLECTOR_AGENTS": "10.0.0.0/8, 2001:db8::/32"}],
                         indirect=True)
def test_allow_list_drops_other_senders(service: Svc) -> None:
    service.send(*[containers("10.1.2.3", 0, 2, seq=i + 1) for i in range(5)])
    ing = wait_for(lambda: (i := service.ingest())["rejected_senders"] == 5 and i, 10)
    assert ing["datagrams"] == 0 and ing["datagrams_decoded"] == 0
    assert service.get("/agents/json") == {}
    assert wait_for(lambda: any("outside [collector] agents" in ln for ln in service.proc.lines), 5)


@pytest.mark.parametrize("service", [{"FASTFLOW_COLLECTOR_AGENTS": "127.0.0.0/8"}], indirect=True)
def test_allow_list_accepts_listed_senders(service: Svc) -> None:
    service.send(containers("10.1.2.3", 0, 2))
    ing = wait_for(lambda: (i := service.ingest())["datagrams_decoded"] == 1 and i, 10)
    assert ing["rejected_senders"] == 0


def test_uptime_lagging_arrival_gives_no_rate(service: Svc) -> None:
    """Attack 10: uptime advances 1 ms while 2.5 s pass; an honest agent beside it."""
    service.send(containers("192.0.2.9", 7, 1, seq=1, uptime=50_000, cpu=0),
                 containers("192.0.2.8", 8, 1, seq=1, uptime=50_000, cpu=0))
    time.sleep(2.5)
    service.send(containers("192.0.2.9", 7, 1, seq=2, uptime=50_001, cpu=2000),
                 containers("192.0.2.8", 8, 1, seq=2, uptime=52_500, cpu=1250))
    assert wait_for(lambda: service.ingest()["datagrams_decoded"] == 4, 10)
    ing = service.ingest()
    assert ing["store_uptime_mismatch"] == 1
    bad = service.get("/metric/192.0.2.9/max:vir_cpu_utilization/json")[0]
    good = service.get("/metric/192.0.2.8/max:vir_cpu_utilization/json")[0]
    assert bad.get("metricValue") is None
    assert good["metricValue"] == pytest.approx(50.0)


def test_sequence_wrap_and_jump(service: Svc) -> None:
    """Attack 11: 0xFFFFFFFF -> 0 is not a restart; a jump to 1e9 is not loss."""
    seqs = [0xFFFFFFFE, 0xFFFFFFFF, 0, 1, 1_000_000_000, 1_000_000_001]
    for i, s in enumerate(seqs):
        service.send(containers("192.0.2.7", 1, 1, seq=s, uptime=10_000 + 100 * i))
    assert wait_for(lambda: service.ingest()["datagrams_decoded"] == len(seqs), 10)
    a = service.get("/agents/json")["192.0.2.7"]
    assert a["sFlowAgentRestarts"] == 0 and a["sFlowDatagramsLost"] == 0
    assert a["sFlowDatagramSequenceJumps"] == 1
