"""Elastic scaler: sizes Docker swarm services from their containers' sFlow metrics.

For every managed service, every ``interval`` seconds: read the service (Docker, in a thread), list
its running tasks, ask :class:`fastflow.collector.metrics.Metrics` for the average utilisation / bytes of its
containers (hostnames matching ``pattern``) and each container's freshness, run the pure policy
(:mod:`fastflow.scaler.policy`) and, when it says so, set ``Mode.Replicated.Replicas`` (nothing else)
via :mod:`fastflow.scaler.swarm`. Logs ``apache set replicas=4`` like the original sFlow-RT script.

Configuration (TOML ``[scaler]``; defaults in brackets)::

    [scaler]
    enabled = false        # master switch (GET /scaler/json?state=enabled turns it on at runtime)
    token = ""             # bearer token required for changes ("" = none)
    dry_run = false        # decide and log ("would set"), never update the service
    state_file = "..."     # runtime changes; default $XDG_STATE_HOME/fastflow/scaler.json
                           # (~/.local/state/fastflow/scaler.json)
    docker_host = ""       # default DOCKER_HOST or the local socket
    tls_dir = ""           # directory with ca.pem, cert.pem, key.pem for TCP + TLS
    [[scaler.services]]
    service = "apache"     # plus the keys of fastflow.scaler.policy.DEFAULTS

Runtime changes (state switches, PUT bodies) are kept as per-service overrides in the state file and
applied over the configuration at the next start.
"""

from __future__ import annotations

import asyncio
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
    Decision,
    History,
    Policy,
    PolicyError,
    Telemetry,
    decide,
    record_change,
)
from fastflow.scaler.swarm import ROLLING_STATES, Swarm, SwarmError

log = logging.getLogger("fastflow.scaler")

SECTION_KEYS = {"enabled", "token", "dry_run", "state_file", "docker_host", "tls_dir", "services"}
MAX_EVENTS = 1000


class StateNotSaved(Exception):
    """A runtime change was applied but the state file could not be written."""


class MetricsSource(Protocol):
    """The part of :class:`fastflow.collector.metrics.Metrics` the scaler uses (docs/internals.md 7)."""

    def query(self, agents: str, metrics: str | Sequence[str],
              filters: Mapping[str, Sequence[str]] | None = None) -> list[dict[str, Any]]: ...

    def dump(self, agents: str, metrics: str | Sequence[str],
             filters: Mapping[str, Sequence[str]] | None = None) -> list[dict[str, Any]]: ...


def default_state_file() -> Path:
    """``$XDG_STATE_HOME/fastflow/scaler.json`` (``~/.local/state/fastflow/scaler.json``)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "fastflow" / "scaler.json"


def gather_telemetry(metrics: MetricsSource, policy: Policy,
                     task_names: Sequence[str] | None) -> Telemetry:
    """Averages (query) and per-container freshness (dump) for ``policy``'s containers."""
    names = policy.required_metrics() or ["vir_cpu_utilization"]
    # restrict to the running tasks' names when known: a gone task's last values must not count
    if task_names:
        flt = {"vir_host_name": [re.escape(n) for n in sorted(task_names)]}
    else:
        flt = {"vir_host_name": [policy.pattern]}
    t = Telemetry(running=len(task_names) if task_names is not None else 0,
                  task_names=set(task_names) if task_names is not None else None)
    try:
        answer = metrics.query("ALL", ",".join(f"avg:{m}" for m in names), flt)
        dumped = metrics.dump("ALL", ",".join(names), flt)
    except Exception as exc:  # a metrics bug must not stop the scaler
        t.error = f"metrics query failed: {type(exc).__name__}: {exc}"
        return t
    for i, entry in enumerate(answer or []):
        name = str(entry.get("metricName", "")).split(":")[-1]
        if name not in names and i < len(names):
            name = names[i]
        v = entry.get("metricValue")
        if entry.get("metricN", 1) and isinstance(v, int | float) and math.isfinite(v):
            t.values[name] = float(v)
    rx = re.compile(policy.pattern)
    per_ds: dict[tuple[str, str], dict[str, float]] = {}
    hosts: dict[tuple[str, str], str] = {}
    for e in dumped or []:
        key = (str(e.get("agent", "")), str(e.get("dataSource", "")))
        host = e.get("hostName")
        if isinstance(host, str) and host:
            hosts[key] = host
        if e.get("metricValue") is None:
            continue
        name = str(e.get("metricName", "")).split(":")[-1]
        age = float(e.get("lastUpdate", math.inf)) / 1000.0
        per_ds.setdefault(key, {})[name] = age
    for key, ages in per_ds.items():
        host = hosts.get(key)
        if host is None or not rx.fullmatch(host):
            continue
        age = max(ages.get(m, math.inf) for m in names)
        t.containers[host] = min(age, t.containers.get(host, math.inf))
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

    def to_dict(self) -> dict[str, Any]:
        p = self.policy.to_dict()
        d = self.decision
        return {"service": self.policy.service, "enabled": self.policy.enabled,
                "mode": self.policy.mode, "current": self.current, "desired": self.desired,
                "status": self.status, "metrics": d.values if d else {},
                "decision": d.to_dict() if d else None, "reason": d.reason if d else self.status,
                "config": p, "staleness": self.policy.staleness}


class Scaler:
    """The scaler service (docs/internals.md section 9)."""

    def __init__(self, policies: Sequence[Policy], metrics: MetricsSource, *,
                 enabled: bool = False, token: str = "", dry_run: bool = False,
                 state_file: Path | None = None, docker_host: str | None = None,
                 tls_dir: str | None = None, swarm: Swarm | None = None,
                 lease: Lease | None = None) -> None:
        self.metrics = metrics
        self.lease = lease      # HA (docs/ha.md): decide and write only while it is held
        self.enabled = bool(enabled)
        self.token = token or ""
        self.dry_run = bool(dry_run)
        self.state_file = state_file
        self.docker_host = docker_host or None
        self.tls_dir = tls_dir or None
        self.swarm = swarm
        self.services: dict[str, ServiceState] = {}
        for p in policies:
            if p.service in self.services:
                raise PolicyError(f"service {p.service} is configured twice")
            self.services[p.service] = ServiceState(p)
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        self._enabled_override: bool | None = None
        self._swarm_error = ""
        self._load_state()

    # ---------------------------------------------------------------- configuration & persistence
    @classmethod
    def from_config(cls, section: Mapping[str, Any], metrics: MetricsSource,
                    state_file: Path | None = None) -> Scaler:
        """Build from the ``[scaler]`` TOML table; :class:`PolicyError` on a bad key or value."""
        section = dict(section or {})
        unknown = sorted(set(section) - SECTION_KEYS)
        if unknown:
            raise PolicyError(f"[scaler]: unknown key(s): {', '.join(unknown)}")
        for key in ("enabled", "dry_run"):
            if not isinstance(section.get(key, False), bool):
                raise PolicyError(f"[scaler] {key}: expected true or false")
        for key in ("token", "state_file", "docker_host", "tls_dir"):
            if not isinstance(section.get(key, ""), str):
                raise PolicyError(f"[scaler] {key}: expected a string")
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
                   tls_dir=section.get("tls_dir") or None)

    def _load_state(self) -> None:
        if self.state_file is None or not self.state_file.exists():
            return
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError) as exc:
            log.warning("scaler state file %s unreadable, ignored: %s", self.state_file, exc)
            return
        if not isinstance(data, dict):
            log.warning("scaler state file %s: not an object, ignored", self.state_file)
            return
        if isinstance(data.get("enabled"), bool):
            self._enabled_override = data["enabled"]
            self.enabled = data["enabled"]
        for name, over in (data.get("services") or {}).items():
            if not isinstance(over, dict):
                continue
            st = self.services.get(name)
            try:
                base = st.policy if st else None
                pol = Policy.from_dict(dict(over, service=name) if base is None else over, base)
            except PolicyError as exc:
                log.warning("scaler state file: service %s override ignored: %s", name, exc)
                continue
            if st is None:
                self.services[name] = ServiceState(pol, dict(over))
            else:
                st.policy, st.overrides = pol, dict(over)

    def _save_state(self) -> None:
        if self.state_file is None:
            return
        data = {"version": 1, "enabled": self._enabled_override,
                "services": {n: s.overrides for n, s in self.services.items() if s.overrides}}
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
        """The master switch (persisted)."""
        self.enabled = self._enabled_override = bool(enabled)
        log.info("scaler %s", "enabled" if enabled else "disabled")
        self._save_state()

    def update_service(self, name: str, changes: Mapping[str, Any]) -> ServiceState:
        """Validate and apply ``changes`` to service ``name`` (created when new); persisted."""
        st = self.services.get(name)
        changes = dict(changes)
        if "service" in changes and changes["service"] != name:
            raise PolicyError("service: must match the URL")
        changes.pop("service", None)
        if st is None:
            pol = Policy.from_dict(dict(changes, service=name))
            st = self.services[name] = ServiceState(pol)
        else:
            pol = Policy.from_dict(changes, st.policy)
            if pol.interval != st.policy.interval:
                st.next_due = 0.0
            st.policy = pol
        st.overrides.update(changes)
        log.info("%s scaler settings changed: %s", name, json.dumps(changes, sort_keys=True))
        self._save_state()
        return st

    def state(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "dry_run": self.dry_run,
                "services": {n: s.to_dict() for n, s in self.services.items()},
                "lease": self.lease.holder() if self.lease is not None else None}

    # ------------------------------------------------------------------------------ the loop
    async def run(self, stop: asyncio.Event) -> None:
        """Tick every service at its interval until ``stop`` is set. Never raises for Docker."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            now = loop.time()
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
        try:
            info = await self._call(swarm.read_service, name)
            if info.global_mode:
                self._note(st, "refused: global-mode service; only replicated services scale",
                           logging.WARNING)
                return None
            st.current = info.replicas
            if info.update_state in ROLLING_STATES:
                self._note(st, f"hold: rolling update in progress ({info.update_state})")
                return None
            tasks = await self._call(swarm.running_tasks, info)
        except SwarmError as exc:
            self._note(st, f"docker error: {exc}", logging.WARNING)
            return None
        now = time.monotonic()
        if not self._lease_held(st, now):
            return None
        telemetry = gather_telemetry(self.metrics, pol, tasks)
        assert st.current is not None
        d = decide(pol, st.current, telemetry, now, st.history)
        st.decision = d
        st.desired = d.desired
        if d.action == "hold":
            self._note(st, f"hold: {d.reason}", logging.DEBUG if not _is_problem(d) else logging.INFO)
            return d
        if self.dry_run:
            log.info("%s would set replicas=%d (dry run): %s", name, d.desired, d.reason)
            st.status = f"dry run: would set replicas={d.desired}"
            self._event(name, d, dry_run=True)
            return d
        if not self._lease_held(st, now):     # lost while deciding: the new holder decides anew
            return d
        try:
            await self._call(lambda: swarm.set_replicas(name, d.desired, expect_current=d.current))
        except SwarmError as exc:
            self._note(st, f"docker error: {exc}", logging.WARNING)
            return d
        record_change(st.history, now)
        st.current = d.desired
        st.last_logged = ""
        st.status = f"set replicas={d.desired}"
        log.info("%s set replicas=%d", name, d.desired)
        self._event(name, d, dry_run=False)
        return d

    def _lease_held(self, st: ServiceState, now: float) -> bool:
        """HA gate: a standby keeps no policy history (nothing stale to replay when it takes over;
        cool-downs count from the takeover) and says who acts."""
        if self.lease is None or self.lease.is_held():
            return True
        st.history = History(last_change=now)
        st.decision, st.desired = None, None
        self._note(st, f"standby: lease held by {self.lease.holder().get('holder') or 'nobody'}")
        return False

    def _event(self, name: str, d: Decision, dry_run: bool) -> None:
        self.events.append({"time": time.time(), "service": name, "from": d.current,
                            "to": d.desired, "action": d.action, "reason": d.reason,
                            "metrics": dict(d.values), "dry_run": dry_run})


def _is_problem(d: Decision) -> bool:
    return d.reason.startswith(("telemetry", "tasks", "no ", "stale", "incomplete", "reporting"))
