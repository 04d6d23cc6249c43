"""HA on a real three-manager swarm made of three ``dockerd`` engines in network namespaces this test
creates (tests/_netns_swarm.py; the main engine's swarm is never touched).

* ``test_raft_leader_failover``: three ``fastflow run`` processes, each talking to its own manager
  engine, ``[ha] mode = "raft-leader"``. The instance on the Raft leader acts; stopping the
  leader's engine makes Raft elect another and that engine's fastflow takes over and goes on
  scaling from the service's current count.
* ``test_image_stack_on_swarm`` (opt-in: ``FASTFLOW_TEST_IMAGE=1``; builds the image offline
  with deploy/build-image.sh, ~7 min the first time, ~1 min cached): the stack file deployed on that
  swarm: one fastflow per manager answering ``/version`` on each manager's address, sFlow from the
  agents received by every collector, exactly one lease holder (``mode = "service"``, defaults),
  and the holder's engine stopped -> another instance takes over.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _api_util import get_json
from _netns_swarm import Engine, NetnsError, NetnsSwarm, unavailable_reason
from _service_util import Proc
from _telemetry_util import TaskTelemetry
from dockerenv import IMAGE, ensure_engine, unavailable, unique
from test_ha_run import bounded, report

pytestmark = [pytest.mark.docker, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def nswarm() -> Iterator[NetnsSwarm]:
    reason = unavailable_reason() or ensure_engine()
    if reason is not None:
        unavailable(f"network-namespace swarm: {reason}")
    s = NetnsSwarm(3)
    try:
        s.start()
        s.load_image(IMAGE)
    except NetnsError as exc:
        s.close()
        unavailable(f"network-namespace swarm: {exc}")
    try:
        yield s
    finally:
        s.close()


class LiveClient:
    """A docker client for whichever of the swarm's engines still runs (for the telemetry)."""

    def __init__(self, s: NetnsSwarm) -> None:
        import docker

        self.clients = {e.addr: docker.DockerClient(base_url=e.host, timeout=10)
                        for e in s.engines}
        self.s = s

    @property
    def services(self) -> Any:
        for e in self.s.engines:
            if e.running:
                return self.clients[e.addr].services
        raise RuntimeError("no engine left")

    @property
    def api(self) -> Any:
        for e in self.s.engines:
            if e.running:
                return self.clients[e.addr].api
        raise RuntimeError("no engine left")

    def close(self) -> None:
        for c in self.clients.values():
            c.close()


def test_raft_leader_failover(nswarm: NetnsSwarm, tmp_path: Path) -> None:
    name = unique("raft")
    first = nswarm.engines[0]
    first.docker("service", "create", "-d", "--name", name, "--network", "host",
                 "--replicas", "1", IMAGE, "sleep", "600")
    live = LiveClient(nswarm)
    procs: dict[str, Proc] = {}
    tel: TaskTelemetry | None = None
    events: dict[str, list[tuple[int, int]]] = {}

    def replicas() -> int:
        s = live.api.inspect_service(name)
        return int(s["Spec"]["Mode"]["Replicated"]["Replicas"])

    def running() -> int:
        return len(tel.tasks) if tel else 0

    def holders() -> list[str]:
        out = []
        for addr, p in procs.items():
            if p.p.poll() is None:
                st, body = get_json(p.port("HTTP"), "/scaler/json")
                if st == 200 and body["lease"]["held"]:
                    out.append(addr)
                if st == 200:
                    # scaling steps only: the events log also records holds and manual changes
                    events[addr] = [(e["from"], e["to"]) for e in
                                    get_json(p.port("HTTP"), "/scaler/events/json")[1]
                                    if e.get("action") in ("up", "down")]
        assert len(out) <= 1, out
        return out

    def diag() -> str:
        return (f"replicas {replicas()}, tasks {tel.tasks if tel else None}, events {events}\n" +
                "\n".join(f"--- {a}\n" + "\n".join(p.lines[-8:]) for a, p in procs.items()))

    try:
        for e in nswarm.engines:
            cfg = tmp_path / f"{e.addr}.toml"
            cfg.write_text(f"""
[store]
polling_interval = 1
expire_after = 6
[ha]
enabled = true
mode = "raft-leader"
duration = 4
renew = 1
poll = 0.5
[scaler]
enabled = true
# the test's emitter speaks for every node's containers from loopback, not from each node's
# address: trust it for all nodes (docs/scaler.md, trusted telemetry)
trusted_agents = ["127.0.0.0/8"]
docker_host = "{e.host}"
state_file = "{tmp_path / (e.addr + '.json')}"
[[scaler.services]]
service = "{name}"
replicas_min = 1
replicas_max = 3
interval = 1
staleness = 3
""")
            procs[e.addr] = Proc("--config", str(cfg), "--sflow-port", "0", "--http-port", "0",
                                 "--bind", "127.0.0.1")
        svc_id = live.api.inspect_service(name)["ID"]
        tel = TaskTelemetry(live, svc_id, [p.port("sFlow") for p in procs.values()], util=50.0).start()
        bounded(lambda: running() == 1, 90, "the service's task running", diag, step=0.5)
        leader = nswarm.leader()
        assert leader is not None
        assert bounded(holders, 30, "a holder", diag) == [leader.addr], diag()
        tel.util = 95.0
        bounded(lambda: replicas() == 2 and running() == 2, 90, "2 replicas", diag, step=0.5)
        # the leader's engine goes away: Raft elects another, whose fastflow takes over
        t0 = time.monotonic()
        leader.stop()
        new = bounded(lambda: [h for h in holders() if h != leader.addr], 90, "a new holder",
                      diag, step=0.5)
        took = time.monotonic() - t0
        new_leader = nswarm.leader()
        assert new_leader is not None and new == [new_leader.addr], (new, new_leader)
        report("raft-leader, 3 managers", [took], "stopping the leader's engine", (4.0, 1.0, 0.5))
        bounded(lambda: replicas() == 3 and running() == 3, 90, "3 replicas", diag, step=0.5)
        holders()
        assert events[leader.addr] == [(1, 2)], diag()
        assert events[new[0]] == [(2, 3)], diag()
        assert all(not ev for a, ev in events.items() if a not in (leader.addr, new[0])), diag()
    finally:
        if tel is not None:
            tel.stop()
        for p in procs.values():
            p.kill()
        live.close()


@pytest.mark.skipif(os.environ.get("FASTFLOW_TEST_IMAGE") != "1",
                    reason="opt-in (FASTFLOW_TEST_IMAGE=1): builds the image offline, minutes")
def test_image_stack_on_swarm(nswarm: NetnsSwarm, tmp_path: Path) -> None:
    r = subprocess.run(["bash", str(ROOT / "deploy" / "build-image.sh"), "fastflow:hatest"],
                       capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    nswarm.load_image("fastflow:hatest")
    cfg = tmp_path / "fastflow.toml"
    lock = unique("stacklock")
    cfg.write_text((ROOT / "deploy" / "fastflow.toml").read_text()
                   .replace('mode = "service"', f'mode = "service"\nlock_service = "{lock}"'))
    # every node's containers must reach THEIR engine: the stack mounts the socket from a path
    # templated by node id ({{.Node.ID}}), here a symlink to each engine's own socket
    socks = tmp_path / "socks"
    socks.mkdir()
    for e in nswarm.engines:
        (socks / f"{e.node_id()}.sock").symlink_to(e.sock)
    token = tmp_path / "fastflow_token"
    token.write_text("s3cret-token-for-the-test")
    addrs = [e.addr for e in nswarm.engines]
    env = {**nswarm.engines[0].env(), "FASTFLOW_IMAGE": "fastflow:hatest",
           "FASTFLOW_COLLECTORS": " ".join(addrs), "FASTFLOW_CONFIG": str(cfg),
           "FASTFLOW_TOKEN_FILE": str(token), "FASTFLOW_POLLING": "2",
           "FASTFLOW_DOCKER_SOCK": f"{socks}/{{{{.Node.ID}}}}.sock"}
    r = subprocess.run(["docker", "stack", "deploy", "--resolve-image", "never", "-c",
                        str(ROOT / "deploy" / "fastflow-stack.yml"), "ff"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stdout + r.stderr

    def http(addr: str, path: str) -> Any:
        try:
            with urllib.request.urlopen(f"http://{addr}:8008{path}", timeout=3) as resp:
                return resp.read().decode()
        except OSError:
            return None

    def ps() -> str:
        return nswarm.engines[0].docker("stack", "ps", "ff", "--no-trunc", check=False)

    import json

    def version_at(a: str) -> Any:
        return bounded(lambda: http(a, "/version"), 180, f"/version at {a}", ps, step=1.0)

    def agents_at(a: str) -> Any:
        return bounded(lambda: json.loads(http(a, "/agents/json") or "{}"), 60,
                       f"sFlow at the collector {a}", ps)

    for a in addrs:
        assert version_at(a).strip() == "0.1.0"

    def lease_states() -> dict[str, Any]:
        out = {}
        for e in nswarm.engines:
            if e.running:
                body = http(e.addr, "/scaler/json")
                out[e.addr] = json.loads(body)["lease"] if body else None
        return out

    def holder() -> list[tuple[str, str]]:
        st = lease_states()
        held = [(a, v["id"]) for a, v in st.items() if v and v["held"]]
        assert len(held) <= 1, st
        return held

    (first_addr, first_id), = bounded(holder, 60, "one lease holder", lease_states)
    # the lease lives in the test swarm (never in the main engine's)
    labels = json.loads(nswarm.engines[0].docker("service", "inspect", lock, "--format",
                                                 "{{json .Spec.Labels}}"))
    assert labels["fastflow.lease.holder"] == first_id, labels
    main = subprocess.run(["docker", "service", "inspect", lock], capture_output=True,
                          env={k: v for k, v in os.environ.items() if k != "DOCKER_HOST"})
    assert main.returncode != 0, "the lock service was created on the main engine"
    # every collector receives the agents' sFlow (each agent sends to every collector)
    for a in addrs:
        agents_at(a)
    # changes need the token from the swarm secret
    req = urllib.request.Request(f"http://{addrs[0]}:8008/scaler/json?state=disabled")
    try:
        urllib.request.urlopen(req, timeout=5)
        raise AssertionError("a change without the token was accepted")
    except urllib.error.HTTPError as exc:
        assert exc.code == 401
    defaults = (12.0, 3.0, 1.0)      # deploy/fastflow.toml keeps the default lease timing
    # 1. SIGKILL of the acting container (swarm restarts it as a new instance): a takeover by a
    # new holder after the lease was seen unchanged for its duration
    eng: Engine = next(e for e in nswarm.engines if e.addr == first_addr)
    cid = eng.docker("ps", "-q", "--filter", "label=com.docker.swarm.service.name=ff_fastflow")
    assert cid, eng.docker("ps", "-a")
    t0 = time.monotonic()
    eng.docker("kill", "--signal", "KILL", cid.split()[0])
    (second_addr, second_id), = bounded(
        lambda: [h for h in holder() if h[1] != first_id], 120, "a takeover", lease_states,
        step=0.5)
    report("stack, 3 managers, service lease", [time.monotonic() - t0],
           "SIGKILL of the acting container", defaults)
    # 2. the holder's engine stops (its fastflow is stopped cleanly and releases the lease)
    gone = next(e for e in nswarm.engines if e.addr == second_addr)
    t0 = time.monotonic()
    gone.stop()
    new = bounded(lambda: [h for h in holder() if h[1] != second_id], 120, "a takeover",
                  lease_states, step=0.5)
    report("stack, 3 managers, service lease", [time.monotonic() - t0],
           "stopping the holder's engine", defaults)
    assert new[0][0] != gone.addr
