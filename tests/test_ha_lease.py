"""The HA lease (fastflow.scaler.lease) on the real engine: the lock service's Version.Index CAS under
concurrent writers, takeover only after the lease was seen unchanged for its full duration (on the
observer's own clock: wall clocks never matter), release, loss, configuration, and the
controller's gate (a standby neither decides nor writes)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from dockerenv import LABELS, docker_client_fixture, unique  # noqa: F401

pytestmark = pytest.mark.docker


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def lock_name(docker_client: Any) -> Any:
    name = unique("lease")
    yield name
    try:
        docker_client.api.remove_service(name)
    except Exception:
        pass


def make(client: Any, name: str, ident: str, clock: Any = time.monotonic, **kw: Any) -> Any:
    from fastflow.scaler.lease import Lease

    kw = {"duration": 4.0, "renew": 1.0, "poll": 0.5, **kw}
    return Lease(lock_service=name, client=client, holder_id=ident, clock=clock, **kw)


def step(lease: Any) -> bool:
    return asyncio.run(lease.acquire_or_renew())  # type: ignore[no-any-return]


def labels(client: Any, name: str) -> dict[str, str]:
    return client.api.inspect_service(name)["Spec"]["Labels"]  # type: ignore[no-any-return]


def test_cas_one_winner_among_concurrent_writers(docker_client: Any, lock_name: str) -> None:
    """Writers that read the same lease version race; the engine's Version.Index check lets
    exactly one through each round (the others are counted as conflicts, not errors)."""
    import docker

    first = make(docker_client, lock_name, "w0")
    assert step(first) and first.is_held()          # creates the lock service, holding it
    asyncio.run(first.release())
    assert labels(docker_client, lock_name)["fastflow.lease.state"] == "released"
    clients = [docker.from_env(timeout=30) for _ in range(4)]
    writers = [make(c, lock_name, f"w{i}") for i, c in enumerate(clients)]
    try:
        for rnd in range(6):
            snap = docker_client.api.inspect_service(lock_name)
            barrier = threading.Barrier(len(writers))
            results: dict[str, bool] = {}

            def write(w: Any, snap: Any = snap, barrier: Any = barrier,
                      results: Any = results) -> None:
                barrier.wait()
                results[w.id] = w._write(snap)

            threads = [threading.Thread(target=write, args=(w,)) for w in writers]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            winners = [k for k, v in results.items() if v]
            assert len(results) == len(writers) and len(winners) == 1, (rnd, results)
            assert labels(docker_client, lock_name)["fastflow.lease.holder"] == winners[0]
        assert sum(w.conflicts for w in writers) == 6 * (len(writers) - 1)
    finally:
        for c in clients:
            c.close()


def test_takeover_only_after_full_duration_unchanged(docker_client: Any, lock_name: str) -> None:
    clock_a, clock_b = FakeClock(), FakeClock()
    a = make(docker_client, lock_name, "a", clock_a)
    b = make(docker_client, lock_name, "b", clock_b)
    assert step(a) and not step(b)
    assert b.holder()["holder"] == "a" and not b.is_held()
    # a renews: every renewal is a new version, so b's "unchanged" timer starts again
    for _ in range(5):
        clock_a.t += 1.0
        clock_b.t += 3.9
        assert step(a)
        assert not step(b), b.holder()
    # a stops renewing (dead): its own lease runs out on its own clock ...
    clock_a.t += a.duration - a.guard
    assert not a.is_held()
    # ... and b waits the full duration from the first read that showed a's last write
    clock_b.t += 3.9
    assert not step(b)
    clock_b.t += 0.2
    assert step(b) and b.is_held()
    assert labels(docker_client, lock_name)["fastflow.lease.holder"] == "b"
    # a comes back: the lock says b; a does not hold, and its stale renewal is not attempted
    assert not step(a) and a.holder()["holder"] == "b"
    assert b.acquisitions == 1 and a.acquisitions == 1


def test_wall_clock_skew_is_irrelevant(docker_client: Any, lock_name: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The holder's wall clock an hour behind (its 'renewed' label long past) does not make a
    standby take over early: only the observed version's age on the standby's own clock counts."""
    import fastflow.scaler.lease as lease_mod

    clock_a, clock_b = FakeClock(), FakeClock()
    a = make(docker_client, lock_name, "a", clock_a)
    b = make(docker_client, lock_name, "b", clock_b)
    real_time = time.time
    monkeypatch.setattr(lease_mod.time, "time", lambda: real_time() - 3600)
    assert step(a)
    monkeypatch.setattr(lease_mod.time, "time", real_time)
    assert float(labels(docker_client, lock_name)["fastflow.lease.renewed"]) < time.time() - 3000
    assert not step(b)
    clock_b.t += 1.0
    assert not step(b) and not b.is_held()


def test_release_hands_over_at_once(docker_client: Any, lock_name: str) -> None:
    a = make(docker_client, lock_name, "a")
    b = make(docker_client, lock_name, "b")
    assert step(a) and not step(b)
    asyncio.run(a.release())
    assert not a.is_held()
    assert step(b), b.holder()        # a released lease needs no waiting
    assert not step(a)


def test_deleted_lock_service(docker_client: Any, lock_name: str) -> None:
    """Whoever next finds the lock service gone recreates it holding the lease; the old holder
    lets go at its next step (docs/ha.md: do not delete the lock service of a running set)."""
    a = make(docker_client, lock_name, "a")
    b = make(docker_client, lock_name, "b")
    assert step(a)
    docker_client.api.remove_service(lock_name)
    assert step(b)
    assert not step(a) and a.holder()["holder"] == "b"


def test_want_false_releases_and_never_takes(docker_client: Any, lock_name: str) -> None:
    want = {"a": True}
    a = make(docker_client, lock_name, "a", want=lambda: want["a"])
    b = make(docker_client, lock_name, "b", want=lambda: False)
    assert step(a)
    want["a"] = False
    assert not step(a)
    assert labels(docker_client, lock_name)["fastflow.lease.state"] == "released"
    assert not step(b) and not step(b)


def test_lock_service_never_runs_a_task(docker_client: Any, lock_name: str) -> None:
    a = make(docker_client, lock_name, "a")
    assert step(a)
    svc = docker_client.api.inspect_service(lock_name)
    assert svc["Spec"]["Mode"] == {"Replicated": {"Replicas": 0}}
    assert docker_client.api.tasks(filters={"service": lock_name}) == []


def test_config_errors() -> None:
    from fastflow.scaler.lease import Lease, LeaseError

    assert Lease.from_config({}) is None
    assert Lease.from_config({"enabled": False, "duration": 5}) is None
    lease = Lease.from_config({"enabled": True})
    assert lease is not None and (lease.duration, lease.renew, lease.mode) == (12.0, 3.0, "service")
    cases: list[tuple[dict[str, Any], str]] = [
                     ({"enabled": True, "mode": "zk"}, "mode"),
                     ({"enabled": True, "renew": 10}, "renew"),
                     ({"enabled": True, "duration": -1}, "duration"),
                     ({"enabled": True, "duration": "5"}, "duration"),
                     ({"enabled": "yes"}, "enabled"),
                     ({"enabled": True, "lease": 1}, "unknown")]
    for bad, msg in cases:
        with pytest.raises(LeaseError, match=msg):
            Lease.from_config(bad)


def test_service_config_error_names_ha(tmp_path: Any) -> None:
    from fastflow.cli.config import ConfigError, load_config
    from fastflow.cli.run import Service

    cfg = load_config(env={}, overrides={"collector.port": 0, "api.port": 0,
                                         "ha.enabled": True, "ha.renew": 100})
    with pytest.raises(ConfigError, match=r"\[ha\] renew"):
        Service(cfg, state_file=tmp_path / "s.json")
    cfg = load_config(env={"FASTFLOW_HA_ENABLED": "true", "FASTFLOW_HA_DURATION": "6"},
                      overrides={"collector.port": 0, "api.port": 0})
    svc = Service(cfg, state_file=tmp_path / "s.json")
    assert svc.lease is not None and svc.lease.duration == 6.0
    assert svc.scaler.lease is svc.lease
    assert svc.scaler.state()["lease"]["held"] is False


def test_standby_neither_decides_nor_writes(docker_client: Any) -> None:
    """The controller's gate, with a real swarm service: a standby reads the service (shows its
    current replicas) but decides nothing and changes nothing; once the lease is held it acts."""
    from fastflow.scaler.controller import Scaler
    from fastflow.scaler.policy import Policy
    from fastflow.scaler.swarm import Swarm

    class Gate:
        held = False

        def is_held(self) -> bool:
            return self.held

        def holder(self) -> dict[str, Any]:
            return {"held": self.held, "holder": "other" if not self.held else "me"}

    from docker.types import ServiceMode
    name = unique("gate")
    svc = docker_client.services.create("fastflow-busybox:latest", ["sleep", "600"], name=name,
                                        labels=LABELS, mode=ServiceMode("replicated", replicas=0))
    try:
        class Busy:
            def query(self, *a: Any, **k: Any) -> list[dict[str, Any]]:
                return [{"metricName": "avg:vir_cpu_utilization", "metricValue": 99.0,
                         "metricN": 1}]

            def dump(self, *a: Any, **k: Any) -> list[dict[str, Any]]:
                return []

        gate = Gate()
        pol = Policy.from_dict({"service": name, "replicas_min": 0, "replicas_max": 2})
        scaler = Scaler([pol], Busy(), enabled=True, swarm=Swarm(docker_client),
                        lease=gate)  # type: ignore[arg-type]
        assert asyncio.run(scaler.tick(name)) is None
        st = scaler.state()
        assert st["lease"] == {"held": False, "holder": "other"}
        assert st["services"][name]["status"] == "standby: lease held by other"
        assert st["services"][name]["current"] == 0 and st["services"][name]["decision"] is None
        assert not scaler.events
        gate.held = True
        d = asyncio.run(scaler.tick(name))
        assert d is not None and scaler.state()["services"][name]["status"] != "standby"
    finally:
        svc.remove()
