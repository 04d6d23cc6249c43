"""Elastic scaler: sizes Docker swarm services from their containers' sFlow metrics (docs/scaler.md).

For every managed service, every ``interval`` seconds: read the service, its tasks (Docker's task
states) and the nodes (Docker, in a thread); gather one trusted data source per running task from
:class:`fastflow.collector.metrics.Metrics` (``dump``, exact names; samples count only from the
agent of the task's node: :class:`Trust`, CONTRACTS C4); fill the convergence gate's inputs
(starting/stopping tasks, when the last change took effect, the agents' polling interval); run
the pure policy (:mod:`fastflow.scaler.policy`) and, when it says so, set
``Mode.Replicated.Replicas`` (nothing else) via :mod:`fastflow.scaler.swarm`. Logs
``apache set replicas=4`` like the original sFlow-RT script, with the reason on the line before.

Services come from ``[[scaler.services]]``, from swarm labels (``fastflow.scale=true``, see
:func:`policy_from_labels`) and from ``PUT /scaler/{svc}/json`` with ``"manage": true``.
Precedence per service: defaults < labels < TOML < REST (kept in the state file). The master
switch: ``[scaler] enabled``, overridden by a REST switch kept in the state file until the
configuration's own value changes; :meth:`Scaler.announce` logs which source won.

``[scaler]`` keys (defaults in brackets): ``enabled`` [false], ``token`` [""], ``dry_run`` [false],
``state_file`` [$XDG_STATE_HOME/fastflow/scaler.json], ``restore_state`` [true], ``labels`` [true],
``replicas_ceiling`` [100], ``agent_addresses`` [{}], ``trusted_agents`` [[]], ``docker_host``,
``tls_dir``, ``services``; per-service keys in :data:`fastflow.scaler.policy.DEFAULTS`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import os
import re
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fastflow.scaler.lease import Lease
from fastflow.scaler.policy import (
    CPU,
    Decision,
    History,
    Policy,
    PolicyError,
    Telemetry,
    decide,
    record_change,
)
from fastflow.scaler.swarm import LABEL_PREFIX, ROLLING_STATES, Node, Swarm, SwarmError, Task

log = logging.getLogger("fastflow.scaler")

SECTION_KEYS = {"enabled", "token", "dry_run", "state_file", "docker_host", "tls_dir", "services",
                "agent_addresses", "trusted_agents", "replicas_ceiling", "labels", "restore_state"}
MAX_EVENTS = 1000
MAX_SEEN = 200          # data sources shown per interval (an attacker may add many)
MAX_PROBLEMS = 20
CPU_COUNT = "vir_cpu_count"


class StateNotSaved(Exception):
    """A runtime change was applied but the state file could not be written."""


class MetricsSource(Protocol):
    """The part of :class:`fastflow.collector.metrics.Metrics` the scaler uses (docs/internals.md 7)."""

    def dump(self, agents: str, metrics: str | Sequence[str],
             filters: Mapping[str, Sequence[str]] | None = None) -> list[dict[str, Any]]: ...


def default_state_file() -> Path:
    """``$XDG_STATE_HOME/fastflow/scaler.json`` (``~/.local/state/fastflow/scaler.json``)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "fastflow" / "scaler.json"


def _escape(name: str) -> str:
    """A name as an exact filter value under both the v0.1 regex syntax and sFlow-RT globs (C3):
    a backslash before every character that is not a letter or digit."""
    return "".join(ch if ch.isalnum() else "\\" + ch for ch in name)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(where: str, items: Any) -> list[Network]:
    if isinstance(items, str):
        items = [items]
    if not isinstance(items, list | tuple):
        raise PolicyError(f"{where}: expected a list of addresses or CIDRs")
    out = []
    for it in items:
        try:
            out.append(ipaddress.ip_network(str(it), strict=False))
        except ValueError:
            raise PolicyError(f"{where}: {it!r} is not an address or CIDR") from None
    return out


@dataclass
class Trust:
    """Which sFlow agent addresses may speak for a container (CONTRACTS C4).

    A task's container counts only from the agent of the node running the task: the node's
    ``Status.Addr`` (Docker), or an address/CIDR configured for that node in ``agent_addresses``
    (keyed by node hostname, node id or node address: for NAT or multi-homed hosts), or one in
    ``trusted_agents`` (CIDRs trusted for every node: use only for a single host or a private
    management network).
    """

    by_node: dict[str, list[Network]] = field(default_factory=dict)
    anywhere: list[Network] = field(default_factory=list)

    @classmethod
    def from_config(cls, agent_addresses: Any, trusted_agents: Any) -> Trust:
        if agent_addresses is None:
            agent_addresses = {}
        if not isinstance(agent_addresses, Mapping):
            raise PolicyError("[scaler] agent_addresses: expected a table of node -> addresses")
        by_node = {str(k): _networks(f"[scaler] agent_addresses.{k}", v)
                   for k, v in agent_addresses.items()}
        return cls(by_node, _networks("[scaler] trusted_agents", trusted_agents or []))

    def expected(self, node: Node | None) -> list[str]:
        """What the explanation shows as the node's agent address(es)."""
        if node is None:
            return [str(n) for n in self.anywhere]
        out = [node.addr] if node.addr and node.addr not in ("0.0.0.0", "::") else []
        for key in (node.id, node.hostname, node.addr):
            out += [str(n) for n in self.by_node.get(key, [])]
        return out + [str(n) for n in self.anywhere]

    def allowed(self, agent: str, node: Node | None) -> bool:
        try:
            a = ipaddress.ip_address(agent)
        except ValueError:
            return False
        if any(a in n for n in self.anywhere):
            return True
        if node is None:
            return False
        if node.addr and node.addr not in ("0.0.0.0", "::"):
            try:
                if a == ipaddress.ip_address(node.addr):
                    return True
            except ValueError:
                pass
        return any(a in n for key in (node.id, node.hostname, node.addr)
                   for n in self.by_node.get(key, []))


def gather_telemetry(metrics: MetricsSource, policy: Policy,
                     task_names: Sequence[str] | None, *, tasks: Sequence[Task] | None = None,
                     nodes: Mapping[str, Node] | None = None, trust: Trust | None = None,
                     now: float | None = None) -> Telemetry:
    """What the service's running containers report, one trusted data source each.

    ``tasks`` (Docker's, every state) and ``nodes`` enable the convergence gate and the trust
    check; without them (a simulated swarm) ``task_names`` are the running tasks and every
    agent is believed. Samples are read with ``dump`` (exact names, matched again here: no
    pattern syntax is relied on) and aggregated in Python.
    """
    now = time.time() if now is None else now
    names = policy.required_metrics() or [CPU]
    if tasks is not None:
        running = {t.name: t for t in tasks if t.running}
        task_names = sorted(running)
    else:
        running = {}
    t = Telemetry(running=len(task_names) if task_names is not None else 0,
                  task_names=set(task_names) if task_names is not None else None)
    if tasks is not None:
        t.starting = [x.describe() for x in tasks if x.starting]
        t.stopping = [x.describe() for x in tasks if x.stopping]
    wanted = names + ([CPU_COUNT] if CPU in names else [])
    flt = {"vir_host_name": [_escape(n) for n in sorted(task_names)]} if task_names else None
    try:
        try:
            dumped = metrics.dump("ALL", ",".join(wanted), flt)
        except ValueError:   # a filter syntax this Metrics does not take: match here only
            dumped = metrics.dump("ALL", ",".join(wanted), None)
    except Exception as exc:  # a metrics bug must not stop the scaler
        t.error = f"metrics query failed: {type(exc).__name__}: {exc}"
        return t
    rx = re.compile(policy.pattern) if task_names is None else None
    per_ds: dict[tuple[str, str, str], dict[str, tuple[float, float]]] = {}
    hosts: dict[tuple[str, str, str], str] = {}
    for e in dumped or []:
        host = e.get("hostName")
        if not isinstance(host, str) or not host:
            continue
        if task_names is not None and host not in t.task_names:   # type: ignore[operator]
            continue   # a gone task's last values never count
        if rx is not None and not rx.fullmatch(host):
            continue
        v = e.get("metricValue")
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            continue
        key = (str(e.get("agent", "")), str(e.get("dataSource", "")), host)
        hosts[key] = host
        name = str(e.get("metricName", "")).split(":")[-1]
        try:
            age = max(0.0, float(e.get("lastUpdate", math.inf)) / 1000.0)
        except (TypeError, ValueError):
            age = math.inf
        per_ds.setdefault(key, {})[name] = (float(v), age)
    by_host: dict[str, list[tuple[str, str, str]]] = {}
    for key, host in hosts.items():
        by_host.setdefault(host, []).append(key)
    sums: dict[str, float] = {}
    for host in sorted(by_host):
        task = running.get(host)
        node = nodes.get(task.node) if (nodes is not None and task is not None) else None
        trusted: list[tuple[str, str, str]] = []
        untrusted: list[tuple[str, str, str]] = []
        for key in sorted(by_host[host]):
            ok = trust is None or nodes is None or trust.allowed(key[0], node)
            (trusted if ok else untrusted).append(key)
        for agent, ds, _ in untrusted:
            exp = trust.expected(node) if trust is not None else []
            t.problems.append(f"{host} reported by agent {agent} (data source {ds}), not by the "
                              f"agent of its node {node.hostname if node else task.node if task else '?'}"
                              f" ({', '.join(exp) or 'no address known'})")
        if len(trusted) > 1:
            t.problems.append(f"{host} has {len(trusted)} data sources "
                              f"({', '.join(f'{a} {d}' for a, d, _ in trusted)}); one per task expected")
        for key in by_host[host]:
            vals = per_ds[key]
            ages = [vals[m][1] for m in names if m in vals]
            entry: dict[str, Any] = {
                "container": host, "agent": key[0], "dataSource": key[1],
                "node": (node.hostname or node.id) if node else (task.node if task else None),
                "trusted": key in trusted, "age": round(max(ages), 3) if ages else None,
                "values": {m: vals[m][0] for m in names if m in vals}}
            t.seen.append(entry)
        if len(trusted) != 1 or untrusted:
            continue
        vals = per_ds[trusted[0]]
        if any(m not in vals for m in names):
            continue   # incomplete: the gate reports the missing container
        age = max(vals[m][1] for m in names)
        if CPU in vals:
            ncpu = vals.get(CPU_COUNT, (1.0, 0.0))[0]
            limit = 100.0 * max(1.0, ncpu)
            if vals[CPU][0] > limit:
                t.problems.append(f"{host}: implausible {CPU} {vals[CPU][0]:.4g} % "
                                  f"(> 100 x {max(1.0, ncpu):g} vCPUs)")
                continue
        t.containers[host] = age
        t.sample_times[host] = now - age
        for m in names:
            sums[m] = sums.get(m, 0.0) + vals[m][0]
    if len(t.problems) > MAX_PROBLEMS:
        t.problems[MAX_PROBLEMS:] = [f"{len(t.problems) - MAX_PROBLEMS} more problem(s)"]
    del t.seen[MAX_SEEN:]
    n = len(t.containers)
    if n:
        t.sums = sums
        t.values = {m: v / n for m, v in sums.items()}
    return t


@dataclass
class ServiceState:
    """Runtime state of one managed service (what GET /scaler/json shows)."""

    policy: Policy
    overrides: dict[str, Any] = field(default_factory=dict)
    history: History = field(default_factory=History)
    current: int | None = None
    desired: int | None = None
    decision: Decision | None = None
    status: str = "waiting"
    next_due: float = 0.0
    last_logged: str = ""
    source: str = "config"          # where the service's settings come from: config / labels / REST
    expected: int | None = None     # the replicas we last saw or set (a difference: an operator)
    change_wall: float | None = None   # wall time of the last change (ours or an operator's)
    manual_until: float = 0.0       # monotonic time until which an operator's change is respected
    unsettled_wall: float | None = None  # wall time of the last interval with tasks in transition
    seen: dict[str, Any] = field(default_factory=dict)   # the last interval's observation
    labels: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        p = self.policy.to_dict()
        d = self.decision
        return {"service": self.policy.service, "enabled": self.policy.enabled,
                "mode": self.policy.mode, "current": self.current, "desired": self.desired,
                "status": self.status, "metrics": d.values if d else {},
                "decision": d.to_dict() if d else None, "reason": d.reason if d else self.status,
                "config": p, "staleness": self.policy.staleness, "source": self.source,
                "seen": self.seen}


# label -> policy key (``docker service create --label fastflow.scale=true --label ...``)
LABEL_KEYS = {
    "replicas.min": "replicas_min", "replicas.max": "replicas_max", "target": "target",
    "mode": "mode", "metric": "metric", "interval": "interval", "tolerance": "tolerance",
    "bytes.target": "bytes_target", "util.min": "util_min", "util.max": "util_max",
    "bytes.min": "bytes_min", "bytes.max": "bytes_max", "manual.pause": "manual_pause",
    "polling.interval": "polling_interval", "staleness": "staleness",
}
LABEL_BEHAVIOR = {"scale.up.stabilization": ("scale_up", "stabilization_window"),
                  "scale.down.stabilization": ("scale_down", "stabilization_window"),
                  "scale.up.select": ("scale_up", "select_policy"),
                  "scale.down.select": ("scale_down", "select_policy")}
LABEL_REFRESH = 10.0
MAX_STATE_BYTES = 1 << 20


def policy_from_labels(name: str, labels: Mapping[str, str]) -> Policy:
    """A :class:`Policy` from a service's ``fastflow.*`` labels (:class:`PolicyError` if bad)."""
    d: dict[str, Any] = {"service": name}
    behavior: dict[str, dict[str, Any]] = {}
    for full, text in labels.items():
        key = full[len(LABEL_PREFIX):]
        if key == "scale":
            continue
        if key in LABEL_BEHAVIOR:
            direction, k = LABEL_BEHAVIOR[key]
            behavior.setdefault(direction, {})[k] = text if k == "select_policy" else _label_num(
                full, text)
            continue
        if key not in LABEL_KEYS:
            raise PolicyError(f"label {full}: unknown (known: "
                              f"{', '.join(LABEL_PREFIX + k for k in sorted(LABEL_KEYS))})")
        pk = LABEL_KEYS[key]
        d[pk] = text if pk in ("mode", "metric") else _label_num(full, text)
    if behavior:
        d["behavior"] = behavior
    return Policy.from_dict(d)


def _label_num(full: str, text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise PolicyError(f"label {full}: expected a number, got {text!r}") from None
    return int(v) if v.is_integer() else v


class Scaler:
    """The scaler service (docs/scaler.md)."""

    def __init__(self, policies: Sequence[Policy], metrics: MetricsSource, *,
                 enabled: bool = False, token: str = "", dry_run: bool = False,
                 state_file: Path | None = None, docker_host: str | None = None,
                 tls_dir: str | None = None, swarm: Swarm | None = None,
                 trust: Trust | None = None, replicas_ceiling: int = 100, labels: bool = True,
                 restore_state: bool = True, polling_interval: float = 10.0,
                 api_token: str = "", lease: Lease | None = None) -> None:
        self.metrics = metrics
        self.lease = lease      # HA (docs/ha.md): decide and write only while it is held
        self.config_enabled = bool(enabled)
        self.enabled = bool(enabled)
        self.enabled_source = "config"
        self.token = token or ""
        self.api_token = api_token or ""
        self.dry_run = bool(dry_run)
        self.state_file = state_file
        self.docker_host = docker_host or None
        self.tls_dir = tls_dir or None
        self.swarm = swarm
        self.trust = trust if trust is not None else Trust()
        self.replicas_ceiling = int(replicas_ceiling)
        self.use_labels = bool(labels)
        self.polling_interval = float(polling_interval)
        self.services: dict[str, ServiceState] = {}
        for p in policies:
            if p.service in self.services:
                raise PolicyError(f"service {p.service} is configured twice")
            self._check_ceiling(p)
            self.services[p.service] = ServiceState(p)
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        self._enabled_state: dict[str, Any] | None = None
        self._swarm_error = ""
        self._labels_due = 0.0
        self._label_errors: dict[str, str] = {}
        if restore_state:
            self._load_state()
        elif state_file is not None and state_file.exists():
            log.info("scaler: state file %s not read (restore_state = false)", state_file)
        self.announce()

    def _check_ceiling(self, p: Policy) -> None:
        if p.replicas_max > self.replicas_ceiling:
            raise PolicyError(f"{p.service}: replicas_max {p.replicas_max} is above the ceiling "
                              f"{self.replicas_ceiling} ([scaler] replicas_ceiling)")

    def announce(self) -> None:
        """Log whether the scaler is on, and why (config, state file or REST)."""
        log.info("scaler %s (source: %s); %d service(s) managed%s%s",
                 "ENABLED" if self.enabled else "disabled", self.enabled_source,
                 len(self.services), ", dry run" if self.dry_run else "",
                 f"; state file {self.state_file}" if self.state_file else "; no state file")
        for n, st in self.services.items():
            if st.overrides:
                log.info("scaler: %s settings from %s: %s", n, st.source,
                         json.dumps(st.overrides, sort_keys=True))

    # ---------------------------------------------------------------- configuration & persistence
    @classmethod
    def from_config(cls, section: Mapping[str, Any], metrics: MetricsSource,
                    state_file: Path | None = None, **kwargs: Any) -> Scaler:
        """Build from the ``[scaler]`` TOML table; :class:`PolicyError` on a bad key or value."""
        section = dict(section or {})
        unknown = sorted(set(section) - SECTION_KEYS)
        if unknown:
            raise PolicyError(f"[scaler]: unknown key(s): {', '.join(unknown)}")
        for key in ("enabled", "dry_run", "labels", "restore_state"):
            if not isinstance(section.get(key, False), bool):
                raise PolicyError(f"[scaler] {key}: expected true or false")
        for key in ("token", "state_file", "docker_host", "tls_dir"):
            if not isinstance(section.get(key, ""), str):
                raise PolicyError(f"[scaler] {key}: expected a string")
        ceiling = section.get("replicas_ceiling", 100)
        if isinstance(ceiling, bool) or not isinstance(ceiling, int) or not 1 <= ceiling <= 10000:
            raise PolicyError(f"[scaler] replicas_ceiling: an integer 1..10000, got {ceiling!r}")
        trust = Trust.from_config(section.get("agent_addresses"), section.get("trusted_agents"))
        services = section.get("services", [])
        if not isinstance(services, list):
            raise PolicyError("[[scaler.services]] must be an array of tables")
        policies = []
        for i, entry in enumerate(services):
            if not isinstance(entry, Mapping):
                raise PolicyError(f"[[scaler.services]] #{i + 1}: expected a table")
            try:
                policies.append(Policy.from_dict(entry))
            except PolicyError as exc:
                raise PolicyError(f"[[scaler.services]] #{i + 1} ({entry.get('service')}): "
                                  f"{exc}") from None
        if state_file is None:
            state_file = Path(section["state_file"]).expanduser() if section.get("state_file") \
                else default_state_file()
        return cls(policies, metrics, enabled=section.get("enabled", False),
                   token=section.get("token", ""), dry_run=section.get("dry_run", False),
                   state_file=state_file, docker_host=section.get("docker_host") or None,
                   tls_dir=section.get("tls_dir") or None, trust=trust, replicas_ceiling=ceiling,
                   labels=section.get("labels", True),
                   restore_state=section.get("restore_state", True), **kwargs)

    def _load_state(self) -> None:
        """Apply the state file over the configuration. Any content: a warning, never a crash."""
        f = self.state_file
        if f is None or not f.exists():
            return
        try:
            if f.stat().st_size > MAX_STATE_BYTES:
                raise ValueError(f"larger than {MAX_STATE_BYTES} bytes")
            data = json.loads(f.read_text())
        except (OSError, ValueError, RecursionError, UnicodeDecodeError) as exc:
            log.warning("scaler state file %s unreadable, ignored (configuration used): %s",
                        f, str(exc)[:200])
            return
        if not isinstance(data, dict):
            log.warning("scaler state file %s: not a JSON object, ignored", f)
            return
        en = data.get("enabled")
        if isinstance(en, bool):
            raw_meta = data.get("enabled_meta")
            meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
            cfg_then = meta.get("config_enabled")
            when = meta.get("at") if isinstance(meta.get("at"), str) else "an earlier run"
            if isinstance(cfg_then, bool) and cfg_then != self.config_enabled:
                # the configuration changed since the REST switch: the newer, deliberate act wins
                log.warning("scaler: state file %s says %s (set via REST at %s), but [scaler] "
                            "enabled changed to %s since; the configuration wins", f,
                            "enabled" if en else "disabled", when, self.config_enabled)
            else:
                self.enabled = en
                self._enabled_state = {"enabled": en, "enabled_meta": meta}
                self.enabled_source = (f"state file {f} (set via REST at {when}; "
                                       f"[scaler] enabled = {str(self.config_enabled).lower()})")
        elif en is not None:
            log.warning("scaler state file %s: 'enabled' is not true/false, ignored", f)
        services = data.get("services")
        if services is None:
            return
        if not isinstance(services, dict):
            log.warning("scaler state file %s: 'services' is not an object, ignored", f)
            return
        for name, over in services.items():
            if not isinstance(over, dict) or not isinstance(name, str):
                log.warning("scaler state file: service %r: not an object, ignored", name)
                continue
            st = self.services.get(name)
            try:
                base = st.policy if st else None
                pol = Policy.from_dict(dict(over, service=name) if base is None else over, base)
                self._check_ceiling(pol)
            except (PolicyError, TypeError, ValueError, RecursionError) as exc:
                log.warning("scaler state file: service %s override ignored: %s", name,
                            str(exc)[:200])
                continue
            if st is None:
                self.services[name] = ServiceState(pol, dict(over), source=f"REST (state file {f})")
            else:
                st.policy, st.overrides = pol, dict(over)
                st.source = f"config + REST (state file {f})"

    def _save_state(self) -> None:
        if self.state_file is None:
            return
        data = {"version": 2, "enabled": (self._enabled_state or {}).get("enabled"),
                "enabled_meta": (self._enabled_state or {}).get("enabled_meta"),
                "services": {n: s.overrides for n, s in self.services.items()
                             if s.overrides and s.source != "labels"}}
        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_file.with_suffix(self.state_file.suffix + ".tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            os.replace(tmp, self.state_file)
        except OSError as exc:
            log.error("cannot write scaler state file %s: %s", self.state_file, exc)
            raise StateNotSaved(f"change applied but not persisted: {exc}") from None

    # ------------------------------------------------------------------------------ control
    def set_enabled(self, enabled: bool) -> None:
        """The master switch (persisted; wins over the configuration until it changes)."""
        self.enabled = bool(enabled)
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._enabled_state = {"enabled": self.enabled,
                               "enabled_meta": {"at": at, "config_enabled": self.config_enabled}}
        self.enabled_source = f"REST at {at}"
        log.info("scaler %s (source: REST)", "enabled" if enabled else "disabled")
        self._save_state()

    def update_service(self, name: str, changes: Mapping[str, Any],
                       create: bool = False) -> ServiceState:
        """Validate and apply ``changes`` to service ``name``; persisted. A service that is not
        managed yet is added only with ``create`` (the REST handler asks for ``"manage": true``
        and a token); ``replicas_max`` never above the ceiling."""
        st = self.services.get(name)
        changes = dict(changes)
        if "service" in changes and changes["service"] != name:
            raise PolicyError("service: must match the URL")
        changes.pop("service", None)
        if st is None:
            if not create:
                raise NotManaged(f"service {name} is not managed; to add it, PUT its settings "
                                 f"with \"manage\": true and a token")
            pol = Policy.from_dict(dict(changes, service=name))
            self._check_ceiling(pol)
            st = self.services[name] = ServiceState(pol, source="REST")
        else:
            pol = Policy.from_dict(changes, st.policy)
            self._check_ceiling(pol)
            if pol.interval != st.policy.interval:
                st.next_due = 0.0
            st.policy = pol
            if st.source == "labels":
                st.source = "labels + REST"
        for k, v in changes.items():   # behavior is merged per direction, like the policy
            if k == "behavior" and isinstance(v, Mapping) and isinstance(st.overrides.get(k), dict):
                st.overrides[k] = {**st.overrides[k], **v}
            else:
                st.overrides[k] = v
        log.info("%s scaler settings changed (REST): %s", name, json.dumps(changes, sort_keys=True))
        self._save_state()
        return st

    def state(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "enabled_source": self.enabled_source,
                "dry_run": self.dry_run, "replicas_ceiling": self.replicas_ceiling,
                "state_file": str(self.state_file) if self.state_file else None,
                "services": {n: s.to_dict() for n, s in self.services.items()},
                "lease": self.lease.holder() if self.lease is not None else None}

    # ------------------------------------------------------------------------------ the loop
    async def run(self, stop: asyncio.Event) -> None:
        """Tick every service at its interval until ``stop`` is set. Never raises for Docker."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            now = loop.time()
            if self.use_labels and self.enabled and now >= self._labels_due:
                self._labels_due = now + LABEL_REFRESH
                try:
                    await self.discover_labels()
                except Exception:  # a bug in discovery must not end the scaler
                    log.exception("scaler: label discovery failed")
            for st in list(self.services.values()):
                if st.next_due <= now:
                    st.next_due = now + st.policy.interval
                    try:
                        await self.tick(st.policy.service)
                    except asyncio.CancelledError:
                        raise
                    except Exception:  # a bug in one tick must not end the scaler
                        log.exception("%s: scaler tick failed", st.policy.service)
                if stop.is_set():
                    return
            due = min((s.next_due for s in self.services.values()), default=now + 1.0)
            try:
                await asyncio.wait_for(stop.wait(), timeout=max(0.01, min(1.0, due - loop.time())))
            except TimeoutError:
                pass

    async def discover_labels(self) -> None:
        """Manage the services labelled ``fastflow.scale=true`` (settings from their labels);
        a service in the configuration keeps its configured settings."""
        swarm = await self._get_swarm()
        if swarm is None or not hasattr(swarm, "labelled_services"):
            return
        try:
            found = await self._call(swarm.labelled_services)
        except SwarmError as exc:
            log.warning("scaler: listing labelled services: %s", exc)
            return
        for name, labels in found.items():
            st = self.services.get(name)
            if st is not None and not st.source.startswith("labels"):
                if self._label_errors.get(name) != "configured":
                    log.info("scaler: %s is labelled %sscale=true but configured; the "
                             "configuration wins", name, LABEL_PREFIX)
                    self._label_errors[name] = "configured"
                continue
            if st is not None and st.labels == labels:
                continue
            try:
                pol = policy_from_labels(name, labels)
                self._check_ceiling(pol)
                if st is not None and st.overrides:
                    pol = Policy.from_dict(st.overrides, pol)
            except PolicyError as exc:
                if self._label_errors.get(name) != str(exc):
                    log.warning("scaler: %s labels refused: %s", name, exc)
                    self._label_errors[name] = str(exc)
                continue
            self._label_errors.pop(name, None)
            if st is None:
                st = self.services[name] = ServiceState(pol, source="labels")
                log.info("scaler: managing %s from its labels: %s", name,
                         json.dumps(labels, sort_keys=True))
            else:
                st.policy = pol
                log.info("scaler: %s labels changed: %s", name, json.dumps(labels, sort_keys=True))
            st.labels = dict(labels)
        for name in [n for n, s in self.services.items()
                     if s.source == "labels" and n not in found]:
            log.info("scaler: %s no longer labelled %sscale=true (or gone); no longer managed",
                     name, LABEL_PREFIX)
            del self.services[name]

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def _get_swarm(self) -> Swarm | None:
        if self.swarm is None:
            try:
                self.swarm = await self._call(Swarm.connect, self.docker_host, self.tls_dir)
            except SwarmError as exc:
                if str(exc) != self._swarm_error:
                    log.warning("scaler: %s (retrying)", exc)
                self._swarm_error = str(exc)
                return None
        return self.swarm

    def _note(self, st: ServiceState, status: str, level: int = logging.INFO) -> None:
        st.status = status
        key = status.split(":")[0]
        if key == "hold":   # the kind of hold (its leading words), so that a new reason is logged
            key += ":" + re.sub(r"[^A-Za-z_ ].*", "", status[5:].lstrip(), flags=re.S).strip()
        if key != st.last_logged:
            log.log(level, "%s: %s", st.policy.service, status)
            st.last_logged = key
            if st.decision is not None and status.startswith("hold"):
                self._event(st.policy.service, st.decision, dry_run=self.dry_run, seen=st.seen)

    def _manual(self, st: ServiceState, now: float, replicas: int, updated_at: float | None) -> None:
        """An operator (or another client) changed the replicas: respect it for manual_pause."""
        pause = st.policy.manual_pause
        st.manual_until = now + pause
        st.change_wall = updated_at or time.time()
        st.history.recommendations.clear()
        log.info("%s: replicas changed %s -> %d outside the scaler (e.g. docker service scale); "
                 "left alone for %gs", st.policy.service, st.expected, replicas, pause)
        self.events.append({"time": time.time(), "service": st.policy.service,
                            "from": st.expected, "to": replicas, "action": "manual",
                            "reason": f"changed outside the scaler; paused {pause:g}s",
                            "metrics": {}, "dry_run": False})

    async def tick(self, name: str) -> Decision | None:
        """One decision for service ``name`` (and the update when it says so)."""
        st = self.services[name]
        pol = st.policy
        if not self.enabled or not pol.enabled:
            st.status = "disabled"
            return None
        swarm = await self._get_swarm()
        if swarm is None:
            self._note(st, f"docker unavailable: {self._swarm_error}", logging.WARNING)
            return None
        now = time.monotonic()
        tasks: list[Task] | None = None
        nodes: dict[str, Node] | None = None
        try:
            info = await self._call(swarm.read_service, name)
            if info.global_mode:
                self._note(st, "refused: global-mode service; only replicated services scale",
                           logging.WARNING)
                return None
            replicas = info.replicas
            if st.expected is not None and replicas != st.expected:
                self._manual(st, now, replicas, getattr(info, "updated_at", None))
            st.current = st.expected = replicas
            if info.update_state in ROLLING_STATES:
                self._note(st, f"hold: rolling update in progress ({info.update_state})")
                return None
            if hasattr(swarm, "tasks") and hasattr(swarm, "nodes"):
                tasks = await self._call(swarm.tasks, info)
                nodes = await self._call(swarm.nodes)
                names = None
            else:   # a simulated swarm: running task names only
                names = await self._call(swarm.running_tasks, info)
        except SwarmError as exc:
            self._note(st, f"docker error: {exc}", logging.WARNING)
            return None
        if not self._lease_held(st, now):
            return None
        wall = time.time()
        telemetry = gather_telemetry(self.metrics, pol, names, tasks=tasks, nodes=nodes,
                                     trust=self.trust, now=wall)
        if tasks is not None:
            if telemetry.starting or telemetry.stopping:
                # Docker deletes a removed task once its container stopped (its stop time is
                # lost): convergence is at least as late as the last interval that saw it
                st.unsettled_wall = wall
            stamps = [t.timestamp for t in tasks if t.timestamp is not None
                      and (t.running or t.desired != "running")]
            stamps += [x for x in (st.change_wall, st.unsettled_wall) if x]
            eff = max(stamps, default=None)
            telemetry.effective_at = min(eff, wall) if eff is not None else None
            telemetry.polling_interval = pol.polling_interval or self.polling_interval
        assert st.current is not None
        st.seen = {"time": wall, "replicas": st.current,
                   "tasks": [{"task": t.name, "node": t.node, "state": t.state,
                              "desired": t.desired,
                              "since": round(wall - t.timestamp, 1) if t.timestamp else None}
                             for t in (tasks or []) if t.running or t.starting or t.stopping],
                   "containers": telemetry.seen,
                   "change_took_effect": (round(wall - telemetry.effective_at, 1)
                                          if telemetry.effective_at else None),
                   "polling_interval": telemetry.polling_interval}
        if now < st.manual_until:
            d = Decision("hold", st.current, st.current,
                         f"respecting an operator's change to {st.current} replicas "
                         f"({st.manual_until - now:.0f}s of manual_pause left)",
                         values=dict(telemetry.values))
        else:
            d = decide(pol, st.current, telemetry, now, st.history)
        st.decision = d
        st.desired = d.desired
        st.seen["decision"] = d.to_dict()
        if d.action == "hold":
            self._note(st, f"hold: {d.reason}", logging.DEBUG if not _is_problem(d) else logging.INFO)
            return d
        if self.dry_run:
            log.info("%s would set replicas=%d (dry run): %s", name, d.desired, d.reason)
            st.status = f"dry run: would set replicas={d.desired}"
            self._event(name, d, dry_run=True, seen=st.seen)
            return d
        if not self._lease_held(st, now):     # lost while deciding: the new holder decides anew
            return d
        try:
            await self._call(lambda: swarm.set_replicas(name, d.desired, expect_current=d.current))
        except SwarmError as exc:
            self._note(st, f"docker error: {exc}", logging.WARNING)
            return d
        record_change(st.history, now, d.desired - d.current)
        st.change_wall = time.time()
        st.current = st.expected = d.desired
        st.last_logged = ""
        st.status = f"set replicas={d.desired}"
        log.info("%s: %s %d -> %d: %s", name, d.action, d.current, d.desired, d.reason)
        log.info("%s set replicas=%d", name, d.desired)   # the sFlow-RT script's line
        self._event(name, d, dry_run=False, seen=st.seen)
        return d

    def _lease_held(self, st: ServiceState, now: float) -> bool:
        """HA gate: a standby keeps no policy history (nothing stale to replay when it takes over;
        cool-downs count from the takeover) and says who acts."""
        if self.lease is None or self.lease.is_held():
            return True
        st.history = History(last_change=now)
        st.decision, st.desired = None, None
        # the holder changes the replicas, not an operator: a standby must not read its steps as
        # manual changes (nor carry that belief into its own term after a takeover)
        st.expected, st.manual_until = None, 0.0
        self._note(st, f"standby: lease held by {self.lease.holder().get('holder') or 'nobody'}")
        return False

    def _event(self, name: str, d: Decision, dry_run: bool,
               seen: Mapping[str, Any] | None = None) -> None:
        ev = {"time": time.time(), "service": name, "from": d.current, "to": d.desired,
              "action": d.action, "reason": d.reason, "metrics": dict(d.values),
              "dry_run": dry_run}
        if seen:
            ev["seen"] = [{k: c.get(k) for k in ("container", "agent", "trusted", "age", "values")}
                          for c in (seen.get("containers") or [])[:20]]
        self.events.append(ev)


class NotManaged(PolicyError):
    """A change for a service that is not managed (and was not explicitly added)."""


def _is_problem(d: Decision) -> bool:
    return d.reason.startswith(("telemetry", "tasks", "no ", "stale", "incomplete", "reporting",
                                "untrusted", "waiting", "respecting"))
