"""Docker swarm access for the scaler: read a service, its tasks (with Docker's task states), the
nodes' addresses and the labelled services, and set a service's replicas.

Blocking (docker SDK); :mod:`fastflow.scaler.controller` calls it from a thread executor. Updates go through
the low-level ``APIClient.update_service`` with every part of the service's raw spec as read, so
only ``Mode.Replicated.Replicas`` changes; an "update out of sequence" answer (another client
changed the service between our read and our update) re-reads and retries a bounded number of times.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("fastflow.scaler")

ROLLING_STATES = {"updating", "rollback_started", "paused", "rollback_paused"}
UPDATE_RETRIES = 3
# Docker task states (swarmkit api/types.proto TaskState), in order. A task whose observed state
# is before "running" has (or will have) a container starting; at or after "complete" it has none.
PRE_RUNNING = ("new", "allocated", "pending", "assigned", "accepted", "preparing", "ready",
               "starting")
TERMINAL = ("complete", "shutdown", "failed", "rejected", "remove", "orphaned")
LABEL_PREFIX = "fastflow."


def parse_time(text: Any) -> float | None:
    """A Docker RFC 3339 timestamp (nanoseconds, ``Z``) as POSIX seconds; None when unreadable."""
    if not isinstance(text, str) or len(text) < 20:
        return None
    t = text.strip()
    if t.endswith("Z"):
        t = t[:-1] + "+00:00"
    head, dot, rest = t.partition(".")
    if dot:   # at most 6 fraction digits for fromisoformat
        i = 0
        while i < len(rest) and rest[i].isdigit():
            i += 1
        t = head + "." + rest[:min(i, 6)].ljust(6, "0") + rest[i:]
    try:
        return datetime.fromisoformat(t).timestamp()
    except ValueError:
        return None


@dataclass
class Task:
    """One task of a service as Docker reports it."""

    id: str
    name: str            # the container name hsflowd reports: svc.slot.taskid
    node: str            # NodeID ("" before scheduling)
    state: str           # Status.State
    desired: str         # DesiredState
    timestamp: float | None   # Status.Timestamp: when it entered its state
    message: str = ""

    @property
    def running(self) -> bool:
        return self.state == "running" and self.desired == "running"

    @property
    def starting(self) -> bool:
        return self.desired == "running" and self.state in PRE_RUNNING

    @property
    def stopping(self) -> bool:
        """Shut down by the orchestrator but its container may still run."""
        return self.desired != "running" and self.state not in TERMINAL and self.state not in (
            "new", "allocated", "pending", "assigned")

    def describe(self) -> str:
        return f"{self.name} {self.state}->{self.desired}"


@dataclass
class Node:
    id: str
    hostname: str
    addr: str            # Status.Addr: the address the node's agent is expected to send from
    labels: dict[str, str] = field(default_factory=dict)


class SwarmError(Exception):
    """A Docker/swarm problem the scaler reports and retries at its next interval."""


@dataclass
class ServiceInfo:
    """A service as read just now: its id, ``Version.Index``, raw ``Spec`` and update state."""

    id: str
    name: str
    version: int
    spec: dict[str, Any]
    update_state: str | None
    updated_at: float | None = None

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.spec.get("Labels") or {})

    @property
    def global_mode(self) -> bool:
        return "Global" in (self.spec.get("Mode") or {}) or "GlobalJob" in (self.spec.get("Mode") or {})

    @property
    def replicas(self) -> int | None:
        rep = (self.spec.get("Mode") or {}).get("Replicated")
        if rep is None:
            return None
        return int(rep.get("Replicas", 1))


def connect(docker_host: str | None = None, tls_dir: str | os.PathLike[str] | None = None,
            timeout: float = 10.0) -> Any:
    """A ``docker.DockerClient``: ``docker_host`` (e.g. ``tcp://10.0.0.1:2376``) or DOCKER_HOST or
    the local socket; with ``tls_dir`` holding ca.pem, cert.pem, key.pem, TLS client auth."""
    import docker  # imported lazily: the collector alone does not need the SDK

    kwargs: dict[str, Any] = {"timeout": timeout}
    if tls_dir:
        d = Path(tls_dir).expanduser()
        files = {n: d / n for n in ("ca.pem", "cert.pem", "key.pem")}
        missing = [n for n, f in files.items() if not f.is_file()]
        if missing:
            raise SwarmError(f"tls_dir {d}: missing {', '.join(missing)}")
        kwargs["tls"] = docker.tls.TLSConfig(
            client_cert=(str(files["cert.pem"]), str(files["key.pem"])),
            ca_cert=str(files["ca.pem"]), verify=True)
    try:
        if docker_host:
            return _client(docker, docker_host, kwargs)
        env = docker.from_env(timeout=timeout)
        if tls_dir:
            return _client(docker, env.api.base_url.replace("https://", "tcp://")
                           .replace("http://", "tcp://"), kwargs)
        return env
    except docker.errors.DockerException as exc:
        raise SwarmError(f"cannot connect to the Docker engine: {exc}") from None


def _client(docker: Any, base_url: str, kwargs: dict[str, Any]) -> Any:
    """A DockerClient that verifies TLS against ``tls_dir``'s ca.pem, whatever the environment.

    requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's own CA (its
    ``trust_env``), so with those set (common on Debian, in containers) the engine's test-CA
    certificate failed verification: the client's session must not read the environment. The
    API version is asked first with such a session, then the client is built with it.
    """
    if "tls" not in kwargs:
        return docker.DockerClient(base_url=base_url, **kwargs)
    probe = docker.APIClient(base_url=base_url, version=docker.constants.MINIMUM_DOCKER_API_VERSION,
                             **kwargs)
    probe.trust_env = False
    try:
        version = probe.version(api_version=False)["ApiVersion"]
    except docker.errors.DockerException:
        raise
    except Exception as exc:       # requests' SSLError, ConnectionError, ...
        raise docker.errors.DockerException(
            f"Error while fetching server API version: {exc}") from None
    finally:
        probe.close()
    client = docker.DockerClient(base_url=base_url, version=version, **kwargs)
    client.api.trust_env = False
    return client


def _explain(exc: BaseException) -> str:
    expl = getattr(exc, "explanation", None)
    return str(expl or exc).strip()


class Swarm:
    """Thin, blocking wrapper over a docker client for the scaler's few calls."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.api = client.api
        # Fault-injection point for tests: called with the ServiceInfo after each read that
        # precedes an update, before the update is sent.
        self.before_update: Callable[[ServiceInfo], None] | None = None

    @classmethod
    def connect(cls, docker_host: str | None = None, tls_dir: str | None = None) -> Swarm:
        return cls(connect(docker_host, tls_dir))

    def read_service(self, name: str) -> ServiceInfo:
        """Inspect service ``name``; :class:`SwarmError` when it is gone or the engine fails."""
        import docker

        try:
            s = self.api.inspect_service(name)
        except docker.errors.NotFound:
            raise SwarmError(f"service {name} not found") from None
        except docker.errors.APIError as exc:
            raise SwarmError(f"inspect {name}: {_explain(exc)}") from None
        except Exception as exc:  # connection refused, timeouts, engine restarting
            raise SwarmError(f"inspect {name}: {type(exc).__name__}: {exc}") from None
        spec = s.get("Spec") or {}
        return ServiceInfo(id=s["ID"], name=spec.get("Name", name),
                           version=int((s.get("Version") or {}).get("Index", 0)), spec=spec,
                           update_state=(s.get("UpdateStatus") or {}).get("State"),
                           updated_at=parse_time(s.get("UpdatedAt")))

    def tasks(self, service: ServiceInfo) -> list[Task]:
        """Every task Docker still lists for the service (running, starting, stopping and the
        recent history), with its state, desired state, node and state timestamp."""
        try:
            raw = self.api.tasks(filters={"service": service.id})
        except Exception as exc:
            raise SwarmError(f"tasks of {service.name}: {_explain(exc)}") from None
        out = []
        for t in raw:
            if t.get("ServiceID") not in (None, service.id):
                continue
            st = t.get("Status") or {}
            slot = t.get("Slot")
            out.append(Task(id=str(t.get("ID", "")),
                            name=f"{service.name}.{slot if slot else t.get('NodeID', '')}.{t.get('ID', '')}",
                            node=str(t.get("NodeID") or ""), state=str(st.get("State", "")),
                            desired=str(t.get("DesiredState", "")),
                            timestamp=parse_time(st.get("Timestamp")),
                            message=str(st.get("Err") or st.get("Message") or "")))
        return out

    def nodes(self) -> dict[str, Node]:
        """Node id -> :class:`Node` (hostname and ``Status.Addr``)."""
        try:
            raw = self.api.nodes()
        except Exception as exc:
            raise SwarmError(f"nodes: {_explain(exc)}") from None
        out = {}
        for n in raw:
            nid = str(n.get("ID", ""))
            out[nid] = Node(id=nid, hostname=str((n.get("Description") or {}).get("Hostname", "")),
                            addr=str((n.get("Status") or {}).get("Addr", "")),
                            labels=dict((n.get("Spec") or {}).get("Labels") or {}))
        return out

    def labelled_services(self, label: str = LABEL_PREFIX + "scale") -> dict[str, dict[str, str]]:
        """Services labelled ``label=true`` (any case): name -> their ``fastflow.*`` labels."""
        try:
            raw = self.api.services(filters={"label": label})
        except Exception as exc:
            raise SwarmError(f"services labelled {label}: {_explain(exc)}") from None
        out = {}
        for s in raw:
            spec = s.get("Spec") or {}
            labels = spec.get("Labels") or {}
            if str(labels.get(label, "")).strip().lower() in ("true", "1", "yes", "on"):
                out[str(spec.get("Name", s.get("ID", "")))] = {
                    k: str(v) for k, v in labels.items() if k.startswith(LABEL_PREFIX)}
        return out

    def running_tasks(self, service: ServiceInfo) -> list[str]:
        """Names ``svc.slot.taskid`` of the service's tasks that are running and meant to run."""
        return [t.name for t in self.tasks(service) if t.running]

    def set_replicas(self, name: str, replicas: int, expect_current: int | None = None) -> int:
        """Set ``name``'s replicas, changing nothing else in its spec. Returns the previous count.

        Reads the service right before every attempt; on "update out of sequence" re-reads and
        retries up to ``UPDATE_RETRIES`` times. Refuses global services, services in a rolling
        update, and (when ``expect_current`` is given) a service whose count changed meanwhile.
        """
        import docker

        last = ""
        for attempt in range(1, UPDATE_RETRIES + 1):
            info = self.read_service(name)
            if info.global_mode:
                raise SwarmError(f"service {name} is in global mode; only replicated services scale")
            if info.update_state in ROLLING_STATES:
                raise SwarmError(f"service {name}: rolling update in progress ({info.update_state})")
            cur = info.replicas
            assert cur is not None
            if expect_current is not None and cur != expect_current:
                raise SwarmError(f"service {name}: replicas changed to {cur} by another client")
            if cur == replicas:
                return cur
            spec = copy.deepcopy(info.spec)
            mode = spec["Mode"]
            mode["Replicated"]["Replicas"] = int(replicas)
            if self.before_update is not None:
                self.before_update(info)
            try:
                self.api.update_service(
                    info.id, version=info.version, name=spec.get("Name"),
                    labels=spec.get("Labels"), mode=mode, task_template=spec.get("TaskTemplate"),
                    update_config=spec.get("UpdateConfig"),
                    rollback_config=spec.get("RollbackConfig"),
                    endpoint_spec=spec.get("EndpointSpec"), fetch_current_spec=False)
                return cur
            except docker.errors.APIError as exc:
                last = _explain(exc)
                if "out of sequence" in last and attempt < UPDATE_RETRIES:
                    log.warning("%s update out of sequence (attempt %d), re-reading", name, attempt)
                    continue
                raise SwarmError(f"update {name}: {last}") from None
            except Exception as exc:
                raise SwarmError(f"update {name}: {type(exc).__name__}: {exc}") from None
        raise SwarmError(f"update {name}: {last or 'out of sequence'} after {UPDATE_RETRIES} attempts")
