"""``fastflow agent`` (fastflow.sources.agent): the host sample read from this machine's /proc, the
datagram framing, the command line (a real subprocess, SIGTERM), an unreachable engine, and end to
end against the real Docker engine with ``fastflow run`` as the collector."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from _service_util import Proc
from dockerenv import docker_client_fixture, swarm_fixture, unique  # noqa: F401
from fastflow import encode as enc
from fastflow.decode import decode
from fastflow.sources.agent import (
    INDEX_BASE,
    MAX_DATAGRAM,
    CgroupReader,
    ContainerGone,
    HostAgent,
    add_arguments,
    container_index,
    container_uuid,
    main,
    pack_samples,
    parse_collector,
)


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
class Receiver:
    """A UDP socket on 127.0.0.1 collecting datagrams in a thread (bounded)."""

    def __init__(self, max_datagrams: int = 10_000) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.got: list[bytes] = []
        self.max = max_datagrams
        self._stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.got) < self.max:
            try:
                self.got.append(self.sock.recv(65536))
            except TimeoutError:
                continue
            except OSError:
                return

    def wait(self, n: int, timeout: float = 10.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while len(self.got) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.got)

    def close(self) -> None:
        self._stop.set()
        self.t.join(2)
        self.sock.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


def _samples(datagrams: list[bytes]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    out: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for d in datagrams:
        o = decode(d)
        assert o.get("errors", []) == [], o.get("errors")
        out.extend((o, s) for s in o["samples"])
    return out


def _records(sample: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in sample["records"]}


# --------------------------------------------------------------------------------------------------
# 1. the host sample from this machine's /proc (no Docker)
# --------------------------------------------------------------------------------------------------
def test_host_sample_decodes_with_sane_values() -> None:
    agent = HostAgent([parse_collector("127.0.0.1:9")], polling=1, docker_factory=None)
    try:
        datagrams = agent.build()
    finally:
        agent.close()
    assert len(datagrams) == 1 and len(datagrams[0]) <= MAX_DATAGRAM
    o = decode(datagrams[0])
    assert o["agent"] == "127.0.0.1" and o["sub_agent_id"] == 100000 and o["sequence_number"] == 1
    assert "errors" not in o or o["errors"] == []
    (s,) = o["samples"]
    assert (s["format"], s["source_id"], s["sequence_number"]) == ("0:4", "2:1", 1)
    r = _records(s)
    assert {"host_descr", "host_adapters", "host_cpu", "host_memory", "host_disk_io", "host_net_io",
            "virt_node"} <= set(r)
    assert r["host_cpu"]["cpu_num"] == os.cpu_count()
    assert r["host_cpu"]["uptime"] > 0 and r["host_cpu"]["proc_total"] > 0
    assert r["host_cpu"]["cpu_user"] + r["host_cpu"]["cpu_idle"] > 0
    assert "cpu_steal" in r["host_cpu"]  # the 80-byte layout
    assert r["host_memory"]["mem_total"] > 0
    assert 0 < r["host_memory"]["mem_free"] <= r["host_memory"]["mem_total"]
    assert r["host_descr"]["hostname"] == socket.gethostname()[:64]
    assert r["host_descr"]["os_name"] == 2 and r["host_descr"]["os_release"] == os.uname().release[:32]
    assert r["host_disk_io"]["disk_total"] >= r["host_disk_io"]["disk_free"] > 0
    assert -1 <= r["host_disk_io"]["part_max_used"] <= 10000
    assert r["virt_node"]["cpus"] == os.cpu_count()
    assert r["virt_node"]["memory"] == r["host_memory"]["mem_total"]
    assert r["virt_node"]["num_domains"] == 0
    for a in r["host_adapters"]["adapters"]:
        assert a["if_index"] > 0 and len(a["macs"]) == 1


def test_sequence_numbers_and_uptime_increase() -> None:
    agent = HostAgent([parse_collector("127.0.0.1:9")], polling=1, docker_factory=None,
                      agent_address="192.0.2.7", sub_agent_id=3)
    try:
        objs: list[dict[str, Any]] = []
        for _ in range(3):
            objs.extend(decode(d) for d in agent.build())
            time.sleep(0.02)
    finally:
        agent.close()
    assert [o["sequence_number"] for o in objs] == [1, 2, 3]
    assert [o["samples"][0]["sequence_number"] for o in objs] == [1, 2, 3]
    ups = [o["uptime"] for o in objs]
    assert ups == sorted(ups) and ups[-1] > ups[0]
    assert {o["agent"] for o in objs} == {"192.0.2.7"} and {o["sub_agent_id"] for o in objs} == {3}


def test_pack_samples_stays_under_the_limit() -> None:
    samples = [enc.counter_sample((3, INDEX_BASE + i), [
        enc.host_descr(hostname=f"svc.{i}.{'x' * 25}"), enc.host_adapters([]), enc.host_parent(),
        enc.virt_cpu(cpu_time=i), enc.virt_memory(1, 2), enc.virt_disk_io(), enc.virt_net_io()],
        i + 1, expanded=True) for i in range(40)]
    head = len(enc.encode_datagram(enc.datagram("127.0.0.1", [])))
    groups = pack_samples(samples, head)
    assert [s for g in groups for s in g] == samples
    assert len(groups) > 1
    for g in groups:
        d = enc.encode_datagram(enc.datagram("127.0.0.1", g))
        assert len(d) <= MAX_DATAGRAM
        assert len(decode(d)["samples"]) == len(g)


def _tree(root: Any, files: dict[str, str]) -> None:
    for rel, text in files.items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)


def test_cgroup_v2_systemd_files(tmp_path: Any) -> None:
    """The cgroup v2 formats (this machine runs v1, read for real in the Docker tests)."""
    cg = tmp_path / "cg"
    scope = "system.slice/docker-abc.scope"
    _tree(tmp_path, {
        "proc/self/mounts": f"cgroup2 {cg} cgroup2 rw,nosuid 0 0\n",
        "proc/42/cgroup": f"0::/{scope}\n",
        f"cg/{scope}/cpu.stat": "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n",
        f"cg/{scope}/memory.current": "1048576\n",
        f"cg/{scope}/memory.max": "max\n",
        f"cg/{scope}/io.stat": "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n"
                               "8:16 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n"})
    r = CgroupReader(tmp_path / "proc")
    assert r.read(42) == {"cpu_ns": 2_500_000_000, "mem": 1048576, "mem_limit": 0,
                          "rd_bytes": 8192, "wr_bytes": 8192, "rd_req": 2, "wr_req": 2}
    (cg / scope / "memory.max").write_text("67108864\n")
    assert r.read(42)["mem_limit"] == 64 << 20
    with pytest.raises(ContainerGone):
        r.read(43)  # no such process


def test_cgroup_v1_cgroupfs_files(tmp_path: Any) -> None:
    cg = tmp_path / "cg"
    path = "docker/abc"
    _tree(tmp_path, {
        "proc/self/mounts": "".join(f"cgroup {cg}/{c} cgroup rw,{c} 0 0\n"
                                    for c in ("cpu,cpuacct", "memory", "blkio")),
        "proc/7/cgroup": f"4:memory:/{path}\n3:cpu,cpuacct:/{path}\n2:blkio:/{path}\n0::/{path}\n",
        f"cg/cpu,cpuacct/{path}/cpuacct.usage": "123456789\n",
        f"cg/memory/{path}/memory.usage_in_bytes": "2048\n",
        f"cg/memory/{path}/memory.limit_in_bytes": "9223372036854771712\n",
        f"cg/blkio/{path}/blkio.throttle.io_service_bytes":
            "8:0 Read 100\n8:0 Write 200\n8:0 Total 300\nTotal 300\n",
        f"cg/blkio/{path}/blkio.throttle.io_serviced": "8:0 Read 1\n8:0 Write 3\nTotal 4\n"})
    r = CgroupReader(tmp_path / "proc")
    assert r.read(7) == {"cpu_ns": 123456789, "mem": 2048, "mem_limit": 0, "rd_bytes": 100,
                         "wr_bytes": 200, "rd_req": 1, "wr_req": 3}


def test_container_index_and_uuid_are_stable() -> None:
    cid = "e2b7e0e3ca8cb818c388ecd24c0f2cf4cc3ac6f479bd8a1232d1dfd66276af30"
    idx = container_index(cid)
    assert idx == container_index(cid) and INDEX_BASE <= idx < 1 << 24
    assert container_index(cid, {idx: "another"}) == idx + 1
    assert container_index(cid, {idx: cid}) == idx
    assert container_uuid(cid) == "e2b7e0e3-ca8c-b818-c388-ecd24c0f2cf4"
    assert len(container_uuid("not-hex")) == 36


@pytest.mark.parametrize(("spec", "host", "port"), [
    ("127.0.0.1:6400", "127.0.0.1", 6400), ("127.0.0.1", "127.0.0.1", 6343),
    ("[::1]:6401", "::1", 6401), ("::1", "::1", 6343), ("localhost:7000", "localhost", 7000)])
def test_parse_collector(spec: str, host: str, port: int) -> None:
    c = parse_collector(spec)
    assert (c.host, c.port) == (host, port)


@pytest.mark.parametrize("spec", ["127.0.0.1:0", "127.0.0.1:x", "[::1", ":6343", "[::1]x",
                                  "no-such-host.invalid:6343"])
def test_parse_collector_rejects(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_collector(spec)


def test_unreachable_engine_sends_the_host_sample_and_counts(receiver: Receiver) -> None:
    """A real docker SDK client on a socket nobody serves: logged, counted, host sample still sent."""
    import docker

    def factory() -> Any:
        return docker.APIClient(base_url="unix:///nonexistent/fastflow-test.sock", timeout=2)

    agent = HostAgent([parse_collector(f"127.0.0.1:{receiver.port}")], polling=0.05,
                      docker_factory=factory)
    stop = threading.Event()
    try:
        agent.run(stop, max_polls=3)
    finally:
        agent.close()
    got = receiver.wait(3, 5)
    assert len(got) == 3
    assert [s["source_id"] for _o, s in _samples(got)] == ["2:1"] * 3
    assert agent.stats.engine_errors == 3 and agent.stats.polls == 3


# --------------------------------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------------------------------
def test_cli_arguments_and_main(receiver: Receiver) -> None:
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--collector", f"127.0.0.1:{receiver.port}", "--collector",
                         f"127.0.0.1:{receiver.port}", "--polling", "0.05", "--no-docker",
                         "--agent-address", "192.0.2.9", "--sub-agent-id", "5", "--max-polls", "2"])
    assert main(args) == 0
    got = receiver.wait(4, 5)
    assert len(got) == 4  # 2 polls x 2 collectors
    objs = [decode(d) for d in got]
    assert sorted(o["sequence_number"] for o in objs) == [1, 1, 2, 2]
    assert {o["agent"] for o in objs} == {"192.0.2.9"} and {o["sub_agent_id"] for o in objs} == {5}


@pytest.mark.parametrize("argv", [["--collector", "127.0.0.1:0"],
                                  ["--collector", "127.0.0.1:6343", "--polling", "0"],
                                  ["--collector", "127.0.0.1:6343", "--agent-address", "nope"],
                                  ["--collector", "127.0.0.1:6343", "--sub-agent-id", "-1"]])
def test_cli_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    p = argparse.ArgumentParser()
    add_arguments(p)
    assert main(p.parse_args([*argv, "--no-docker"])) == 2
    assert "fastflow agent:" in capsys.readouterr().err


def test_subprocess_logs_and_stops_cleanly_on_sigterm(receiver: Receiver) -> None:
    p = subprocess.Popen([sys.executable, "-m", "fastflow", "agent", "--collector",
                          f"127.0.0.1:{receiver.port}", "--polling", "0.2", "--no-docker"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        got = receiver.wait(2, 15)
        assert len(got) >= 2, "no datagrams from the agent subprocess"
        p.send_signal(signal.SIGTERM)
        _out, err = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
    assert p.returncode == 0, err
    assert re.search(rf"collectors 127\.0\.0\.1:{receiver.port}, polling every 0\.2 s", err), err
    assert "SIGTERM received, stopping" in err and "stopped:" in err


# --------------------------------------------------------------------------------------------------
# 2. against the real engine, with ``fastflow run`` as the collector
# --------------------------------------------------------------------------------------------------
def _cpu_of(http_port: int, name: str) -> tuple[int, float | None]:
    q = urllib.parse.urlencode({"vir_host_name": re.escape(name)})
    url = f"http://127.0.0.1:{http_port}/metric/ALL/max:vir_cpu_utilization/json?{q}"
    with urllib.request.urlopen(url, timeout=5) as r:
        (m,) = json.loads(r.read())
    return int(m.get("metricN", 0)), m.get("metricValue")


def _wait_cpu(http_port: int, name: str, ok: Any, timeout: float) -> list[tuple[int, Any]]:
    seen: list[tuple[int, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.append(_cpu_of(http_port, name))
        if ok(*seen[-1]):
            return seen
        time.sleep(0.5)
    raise AssertionError(f"{name}: condition not met in {timeout}s; readings {seen[-12:]}")


def test_containers_end_to_end_through_fastflow_run(swarm: Any) -> None:
    """Two real containers (one burning a CPU, one idle), the agent in a thread, ``fastflow run``
    as the collector: vir_cpu_utilization ~100 and ~0, then the stopped one expires."""
    t0 = time.monotonic()
    burn_name, idle_name = unique("agent-burn"), unique("agent-idle")
    burn = swarm.run_container(["sh", "-c", "timeout 40 yes > /dev/null"], name=burn_name)
    swarm.run_container(["sleep", "40"], name=idle_name)
    run = Proc("--sflow-port", "0", "--http-port", "0", "--bind", "127.0.0.1", "--no-scaler",
               env={"FASTFLOW_STORE_EXPIRE_AFTER": "3", "FASTFLOW_STORE_POLLING_INTERVAL": "1",
                    "FASTFLOW_SCALER_STATE_FILE": os.devnull})
    stop = threading.Event()
    agent: HostAgent | None = None
    th: threading.Thread | None = None
    try:
        sflow_port, http_port = run.port("sFlow"), run.port("HTTP")
        agent = HostAgent([parse_collector(f"127.0.0.1:{sflow_port}")], polling=1.0)
        th = threading.Thread(target=agent.run, args=(stop,), kwargs={"max_polls": 60}, daemon=True)
        th.start()
        # the burning container: ~100 % of one CPU (a shared 2-core box: 70..110)
        seen = _wait_cpu(http_port, burn_name,
                         lambda n, v: n == 1 and v is not None and 70 <= v <= 110, 20)
        assert all(v is None or v <= 130 for _n, v in seen), seen
        # the idle one: ~0
        _wait_cpu(http_port, idle_name, lambda n, v: n == 1 and v is not None and v < 10, 10)
        # the burning container stops: it drops out (no samples -> expired after 3 s)
        burn.remove(force=True)
        _wait_cpu(http_port, burn_name, lambda n, v: n == 0, 12)
        assert _cpu_of(http_port, idle_name)[0] == 1
        assert agent.stats.containers >= 4 and agent.stats.send_errors == 0
    finally:
        stop.set()
        if th is not None:
            th.join(10)
        if agent is not None:
            agent.close()
        run.stop()
    assert time.monotonic() - t0 < 75


def test_limits_pause_vanish_and_engine_return(swarm: Any) -> None:
    """Memory/CPU limits reach virt_memory/virt_cpu, a paused container reports state 3, one removed
    between list and read is skipped and counted, and an engine that comes back is used again."""
    import docker

    limited = swarm.run_container(["sleep", "40"], name=unique("agent-lim"), mem_limit="64m",
                                  nano_cpus=1_000_000_000)
    paused = swarm.run_container(["sleep", "40"], name=unique("agent-pause"))
    doomed = swarm.run_container(["sleep", "40"], name=unique("agent-gone"))
    paused.pause()
    calls = []

    def factory() -> Any:  # first a dead engine, then the real one (an engine restart)
        calls.append(1)
        if len(calls) == 1:
            return docker.APIClient(base_url="unix:///nonexistent/fastflow-test.sock", timeout=2)
        return docker.from_env(timeout=10).api

    agent = HostAgent([parse_collector("127.0.0.1:9")], polling=1, docker_factory=factory)
    try:
        assert [decode(d)["samples"][0]["source_id"] for d in agent.build()] == ["2:1"]
        assert agent.stats.engine_errors == 1
        items = agent.list_containers()
        assert not agent._engine_down
        mine = {i["Id"]: i for i in items}
        assert {limited.id, paused.id, doomed.id} <= set(mine)
        doomed.remove(force=True)
        assert agent.container_sample(mine[doomed.id]) is None
        assert agent.stats.by_reason.get("gone") == 1
        s_lim = agent.container_sample(mine[limited.id])
        s_pause = agent.container_sample(mine[paused.id])
        assert s_lim is not None and s_pause is not None
        o = decode(enc.encode_datagram(enc.datagram("127.0.0.1", [s_lim, s_pause])))
        lim, pau = (_records(s) for s in o["samples"])
        assert lim["host_descr"]["hostname"] == limited.name
        assert lim["host_descr"]["uuid"] == container_uuid(limited.id)
        assert o["samples"][0]["source_id_index"] == container_index(limited.id)
        assert lim["host_parent"]["container_type"] == 2 and lim["host_parent"]["container_index"] == 1
        assert lim["virt_memory"]["max_memory"] == 64 << 20
        assert 0 < lim["virt_memory"]["memory"] <= 64 << 20
        assert lim["virt_cpu"]["state"] == 1 and lim["virt_cpu"]["nr_virt_cpu"] == 1
        assert pau["virt_cpu"]["state"] == 3 and pau["virt_memory"]["max_memory"] == 0
        assert pau["virt_cpu"]["nr_virt_cpu"] == os.cpu_count()
    finally:
        agent.close()
        try:
            paused.unpause()
        except Exception:
            pass
