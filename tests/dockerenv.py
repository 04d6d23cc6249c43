"""Real Docker engine (swarm mode) for tests: fixtures and helpers shared by every test module.

Use from a test module::

    from dockerenv import docker_client_fixture, swarm_fixture  # noqa: F401  (pytest fixtures
    # "docker_client" and "swarm"; the imports register them in the test module)

    def test_x(swarm):                      # a SwarmHelper; everything it creates is removed after
        svc = swarm.create_service("web", ["sleep", "300"], replicas=1)
        swarm.wait_running(svc, 1)

* The engine is started when needed: if ``docker info`` fails and we are root, ``.ci/docker-up.sh``
  runs (installs docker.io / busybox-static if missing, starts dockerd, ``swarm init``, imports the
  offline image ``fastflow-busybox:latest``).
* When the engine cannot be had, tests **skip** with the precise reason, except when
  ``FASTFLOW_REQUIRE_DOCKER=1`` (set by ``.ci/run``): then they **fail**.
* Everything is created with ``--network host`` (no bridge/overlay traffic) and the label
  ``fastflow-test=1``; it is removed at teardown, and leftovers so labelled are removed at start.
* Load only with bounded CPU work (``cpu_burn_cmd``) or loopback traffic.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

IMAGE = "fastflow-busybox:latest"
LABEL = "fastflow-test"
LABEL_PID = "fastflow-test-pid"
# Every object is labelled with the creating pytest process, so that one session's clean-up of
# leftovers never removes what another session (still running) created.
LABELS = {LABEL: "1", LABEL_PID: str(os.getpid())}
UP_SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "docker-up.sh"
_state: dict[str, Any] = {}


def _required() -> bool:
    return os.environ.get("FASTFLOW_REQUIRE_DOCKER") == "1"


def unavailable(reason: str) -> None:
    """Skip (or fail when FASTFLOW_REQUIRE_DOCKER=1) with ``reason``."""
    if _required():
        pytest.fail(f"FASTFLOW_REQUIRE_DOCKER=1 but the Docker engine is unusable: {reason}")
    pytest.skip(f"Docker engine unusable: {reason}")


def _docker_ok() -> str | None:
    """None when the engine answers, is an active swarm manager and has the image; else why not."""
    try:
        import docker
    except ImportError:
        return "the docker Python SDK is not installed"
    try:
        c = docker.from_env(timeout=10)
        info = c.info()
    except Exception as exc:
        return f"docker info failed: {exc}"
    swarm = info.get("Swarm") or {}
    if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
        return f"engine is not a swarm manager (state {swarm.get('LocalNodeState')!r})"
    try:
        c.images.get(IMAGE)
    except Exception:
        return f"image {IMAGE} is missing"
    return None


def ensure_engine() -> str | None:
    """Make the engine usable (running .ci/docker-up.sh as root when needed); None or the reason."""
    if "reason" in _state:
        return _state["reason"]  # type: ignore[no-any-return]
    reason = _docker_ok()
    if reason is not None:
        if os.geteuid() != 0:
            reason += "; not root, so .ci/docker-up.sh was not run"
        elif not UP_SCRIPT.exists():
            reason += f"; {UP_SCRIPT} not found"
        else:
            try:
                r = subprocess.run(["bash", str(UP_SCRIPT)], capture_output=True, text=True,
                                   timeout=240)
                reason = _docker_ok()
                if reason is not None:
                    tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
                    reason += f"; .ci/docker-up.sh exited {r.returncode}: {' | '.join(tail)}"
            except subprocess.TimeoutExpired:
                reason = f"{reason or 'engine unavailable'}; .ci/docker-up.sh timed out after 240 s"
    _state["reason"] = reason
    return reason


def _orphaned(labels: dict[str, str] | None) -> bool:
    """True for an object whose creating process is this one or is gone (a killed earlier run)."""
    pid = (labels or {}).get(LABEL_PID, "")
    if not pid.isdigit() or int(pid) == os.getpid():
        return True
    return not Path(f"/proc/{pid}").exists()


def remove_leftovers(client: Any) -> None:
    """Remove services and containers labelled ``fastflow-test=1`` that this run or a dead run made."""
    for s in client.services.list(filters={"label": f"{LABEL}=1"}):
        try:
            if _orphaned(s.attrs.get("Spec", {}).get("Labels")):
                s.remove()
        except Exception:
            pass
    for c in client.containers.list(all=True, filters={"label": f"{LABEL}=1"}):
        try:
            if _orphaned(c.labels):
                c.remove(force=True)
        except Exception:
            pass


def cpu_burn_cmd(seconds: int = 60) -> list[str]:
    """A command that keeps one CPU busy for at most ``seconds`` (bounded load)."""
    return ["sh", "-c", f"timeout {int(seconds)} yes > /dev/null; sleep 3600"]


def unique(prefix: str) -> str:
    """A service name unlikely to collide with a concurrent test run."""
    return f"fftest-{prefix}-{uuid.uuid4().hex[:6]}"


class SwarmHelper:
    """Creates test services/containers (host network, labelled) and removes them at teardown."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.services: list[Any] = []
        self.containers: list[Any] = []

    def create_service(self, name: str, command: Sequence[str] = ("sleep", "600"),
                       replicas: int = 1, mode: str = "replicated", **kwargs: Any) -> Any:
        """A swarm service of ``fastflow-busybox`` on the host network (``docker service create
        --network host --label fastflow-test=1``). Returns the docker SDK Service."""
        from docker.types import ServiceMode

        labels = {**LABELS, **kwargs.pop("labels", {})}
        svc = self.client.services.create(
            IMAGE, list(command), name=name, networks=["host"], labels=labels,
            container_labels=LABELS,
            mode=ServiceMode(mode, replicas=replicas if mode == "replicated" else None),
            **kwargs)
        self.services.append(svc)
        return svc

    def run_container(self, command: Sequence[str] = ("sleep", "600"), **kwargs: Any) -> Any:
        """A detached plain container (host network, labelled)."""
        c = self.client.containers.run(IMAGE, list(command), detach=True, network_mode="host",
                                       labels=LABELS, **kwargs)
        self.containers.append(c)
        return c

    def running_tasks(self, service: Any) -> list[str]:
        """``svc.slot.taskid`` names of the running tasks (the container names hsflowd reports)."""
        svc = self.client.services.get(service.id if hasattr(service, "id") else service)
        out = []
        for t in svc.tasks(filters={"desired-state": "running"}):
            if (t.get("Status") or {}).get("State") == "running":
                out.append(f"{svc.name}.{t['Slot']}.{t['ID']}")
        return sorted(out)

    def wait_running(self, service: Any, n: int, timeout: float = 60.0) -> list[str]:
        """Wait (bounded) until exactly ``n`` tasks run; returns their names."""
        deadline = time.monotonic() + timeout
        names: list[str] = []
        while time.monotonic() < deadline:
            names = self.running_tasks(service)
            if len(names) == n:
                return names
            time.sleep(0.3)
        raise AssertionError(f"{n} running tasks expected within {timeout}s, have {names}")

    def replicas(self, service: Any) -> int:
        s = self.client.api.inspect_service(service.id if hasattr(service, "id") else service)
        return int(s["Spec"]["Mode"]["Replicated"]["Replicas"])

    def cleanup(self) -> None:
        for s in self.services:
            try:
                s.remove()
            except Exception:
                pass
        for c in self.containers:
            try:
                c.remove(force=True)
            except Exception:
                pass
        self.services.clear()
        self.containers.clear()


@pytest.fixture(scope="session", name="docker_client")
def docker_client_fixture() -> Iterator[Any]:
    """A ``docker.DockerClient`` for a running swarm-mode engine with the test image."""
    reason = ensure_engine()
    if reason is not None:
        unavailable(reason)
    import docker

    client = docker.from_env(timeout=30)
    remove_leftovers(client)
    yield client
    remove_leftovers(client)
    client.close()


@pytest.fixture(name="swarm")
def swarm_fixture(docker_client: Any) -> Iterator[SwarmHelper]:
    """A :class:`SwarmHelper`; whatever it created is removed after the test."""
    helper = SwarmHelper(docker_client)
    try:
        yield helper
    finally:
        helper.cleanup()
