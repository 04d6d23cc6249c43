"""Exactly one acting scaler among several fastflow instances: a lease kept in the swarm itself.

Every instance collects and answers queries; only the holder of the lease decides and writes
(:class:`fastflow.scaler.controller.Scaler` gates its decide/write step on :meth:`Lease.is_held`).
Two ways to hold it (docs/ha.md says which to choose and why):

``mode = "service"`` (default)
    The lease is the labels of a small dedicated service (``lock_service``, default
    ``fastflow-lease``: replicated, 0 replicas, never runs a task), so it lives in the swarm's Raft
    store. Every write is a compare-and-swap on the service's ``Version.Index`` (the engine answers
    "update out of sequence" to a stale version). The holder renews every ``renew`` seconds; an
    instance takes the lease over only after it has **seen the lock service's version unchanged for
    the full ``duration``** on its own monotonic clock, so clocks of different hosts never matter.
    The holder counts its lease from the moment *before* its last successful write, an observer
    from the moment *after* the read that first showed that write: the holder always stops
    acting before anyone else may start. A clean stop releases the lease (a peer takes it at once).
    Managed services are never touched (a lease on them would bump their version at every renewal).

``mode = "raft-leader"``
    Hold while this instance's engine is the swarm's Raft leader (``GET /nodes/{self}`` ->
    ``ManagerStatus.Leader``). Needs exactly one fastflow per manager node (the stack's ``mode:
    global`` on managers) and ``docker_host`` pointing at the local engine.

Configuration (TOML ``[ha]``; defaults in brackets)::

    [ha]
    enabled = false            # off: this instance acts alone, as before
    mode = "service"           # or "raft-leader"
    lock_service = "fastflow-lease"
    duration = 12.0            # seconds; a dead holder is replaced within about duration + poll
    renew = 3.0                # seconds between the holder's renewals (< duration / 2)
    poll = 1.0                 # seconds between a standby's reads of the lease
    lock_image = "busybox:latest"   # the lock service's image: never pulled (0 replicas)

The Docker endpoint is the scaler's (``[scaler] docker_host`` / ``tls_dir``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("fastflow.scaler")

LABEL = "fastflow.lease"                 # marks the lock service
LABEL_HOLDER = "fastflow.lease.holder"   # holder id ("" = released)
LABEL_NODE = "fastflow.lease.node"       # holder's host name (for people)
LABEL_RENEWED = "fastflow.lease.renewed"  # holder's wall clock at the write (for people only)
LABEL_DURATION = "fastflow.lease.duration"
LABEL_STATE = "fastflow.lease.state"     # "held" or "released" (a released lease is free at once)
MODES = ("service", "raft-leader")
SECTION_KEYS = {"enabled", "mode", "lock_service", "duration", "renew", "poll", "lock_image"}
DEFAULTS: dict[str, Any] = {"enabled": False, "mode": "service", "lock_service": "fastflow-lease",
                            "duration": 12.0, "renew": 3.0, "poll": 1.0,
                            "lock_image": "busybox:latest"}


class LeaseError(ValueError):
    """A bad ``[ha]`` setting."""


class Lease:
    """The lease of one fastflow instance (C5: ``acquire_or_renew``, ``holder``, ``is_held``).

    ``client`` is a ``docker.DockerClient`` (made from ``docker_host``/``tls_dir`` when None);
    ``clock`` a monotonic clock (fault injection in tests); ``want`` says whether this instance
    should hold the lease at all (e.g. its scaler is switched on): when it returns False a held
    lease is released and none is taken.
    """

    def __init__(self, *, mode: str = "service", lock_service: str = "fastflow-lease",
                 duration: float = 12.0, renew: float = 3.0, poll: float = 1.0,
                 lock_image: str = "busybox:latest", docker_host: str | None = None,
                 tls_dir: str | None = None, client: Any = None, holder_id: str | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 want: Callable[[], bool] | None = None) -> None:
        if mode not in MODES:
            raise LeaseError(f"[ha] mode: {mode!r} is not one of {', '.join(MODES)}")
        if not 0 < duration <= 3600:
            raise LeaseError(f"[ha] duration: {duration} must be > 0 and <= 3600 s")
        if not 0 < renew <= duration / 2:
            raise LeaseError(f"[ha] renew: {renew} must be > 0 and <= duration / 2 ({duration / 2:g})")
        if not 0 < poll <= duration / 2:
            raise LeaseError(f"[ha] poll: {poll} must be > 0 and <= duration / 2 ({duration / 2:g})")
        if not lock_service or not isinstance(lock_service, str):
            raise LeaseError("[ha] lock_service: a service name is needed")
        self.mode = mode
        self.lock_service = lock_service
        self.duration = float(duration)
        self.renew = float(renew)
        self.poll = float(poll)
        self.lock_image = lock_image
        self.docker_host = docker_host
        self.tls_dir = tls_dir
        self.client = client
        self.node = socket.gethostname()
        self.id = holder_id or f"{self.node}/{os.getpid()}/{secrets.token_hex(3)}"
        self.clock = clock
        self.want = want
        # a write must have finished before the lease runs out: stop acting this much earlier
        self.guard = min(2.0, self.duration / 4)
        self._held_until = 0.0     # monotonic: the lease is ours until then (minus guard)
        self._held_since: float | None = None   # wall clock of the acquisition (for people)
        self._seen: tuple[int, float] | None = None   # (lock version, monotonic first seen)
        self._holder = ""          # the holder as last read
        self._logged_holder = ""
        self._holder_node = ""
        self._version = 0
        self._error = ""
        self._node_id = ""
        self.acquisitions = 0      # times this instance took the lease (tests, /scaler/json)
        self.writes = 0            # successful lease writes (renewals included)
        self.conflicts = 0         # CAS writes refused by the engine (another writer was first)

    # ----------------------------------------------------------------------- configuration
    @classmethod
    def from_config(cls, section: Mapping[str, Any], docker_host: str | None = None,
                    tls_dir: str | None = None, **kwargs: Any) -> Lease | None:
        """A Lease from the ``[ha]`` table, or None when HA is off; :class:`LeaseError` when bad."""
        section = dict(section or {})
        unknown = sorted(set(section) - SECTION_KEYS)
        if unknown:
            raise LeaseError(f"[ha]: unknown key(s) {', '.join(unknown)}; known: "
                             f"{', '.join(sorted(SECTION_KEYS))}")
        merged = dict(DEFAULTS, **section)
        if not isinstance(merged["enabled"], bool):
            raise LeaseError("[ha] enabled: expected true or false")
        for key in ("duration", "renew", "poll"):
            v = merged[key]
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise LeaseError(f"[ha] {key}: expected a number of seconds, got {v!r}")
        for key in ("mode", "lock_service", "lock_image"):
            if not isinstance(merged[key], str):
                raise LeaseError(f"[ha] {key}: expected a string")
        if not merged.pop("enabled"):
            return None
        return cls(docker_host=docker_host, tls_dir=tls_dir, **merged, **kwargs)

    # ----------------------------------------------------------------------- the contract
    def is_held(self) -> bool:
        """True while this instance may decide and write (its lease runs at least ``guard`` more)."""
        return self.clock() < self._held_until - self.guard

    def holder(self) -> dict[str, Any]:
        """Who holds the lease as last seen (what ``/scaler/json`` shows under ``"lease"``)."""
        now = self.clock()
        held = self.is_held()
        out: dict[str, Any] = {
            "mode": self.mode, "id": self.id, "node": self.node, "held": held,
            "holder": self._holder or None, "holder_node": self._holder_node or None,
            "duration": self.duration, "acquisitions": self.acquisitions,
            "conflicts": self.conflicts, "error": self._error or None,
        }
        if self.mode == "service":
            out["lock_service"] = self.lock_service
            out["version"] = self._version
            out["unchanged_for"] = round(now - self._seen[1], 3) if self._seen else None
        if held:
            out["expires_in"] = round(self._held_until - now, 3)
            out["since"] = self._held_since
        return out

    async def acquire_or_renew(self) -> bool:
        """One step: read the lease, renew it when ours, take it when free or expired. Never raises
        for Docker problems (they are logged once and shown in :meth:`holder`)."""
        was = self.is_held()
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._step)
            self._set_error("")
        except Exception as exc:  # noqa: BLE001 - engine down, timeouts: retried next step
            self._set_error(f"{type(exc).__name__}: {_explain(exc)}")
        held = self.is_held()
        what = self.lock_service if self.mode == "service" else "raft-leader"
        if held and not was:
            log.info("lease %s: acquired by %s", what, self.id)
        elif not held and (was or self._holder != self._logged_holder):
            log.info("lease %s: %s stands by (holder: %s)", what, self.id, self._holder or "none")
        self._logged_holder = self._holder
        return held

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the lease (renew every ``renew`` s; a standby reads every ``poll`` s) until ``stop``;
        then release it so that a peer takes over at once."""
        while not stop.is_set():
            held = await self.acquire_or_renew()
            wait = self.renew if held else self.poll
            if not held and self._seen is not None and self.mode == "service" and self._holder:
                # wake up right when the holder's lease has run out on our clock
                due = self._seen[1] + self.duration - self.clock()
                if 0 < due < wait:
                    wait = due + 0.01
            try:
                await asyncio.wait_for(stop.wait(), timeout=max(0.01, wait))
            except TimeoutError:
                pass
        await self.release()

    async def release(self) -> None:
        """Give the lease back (when held): peers may take it at once."""
        if self.mode != "service" or self._held_until == 0.0:
            self._held_until = 0.0
            return
        self._held_until = 0.0
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._release)
            log.info("lease %s released by %s", self.lock_service, self.id)
        except Exception as exc:  # noqa: BLE001 - it then simply expires
            log.warning("lease %s: release failed (it will expire): %s", self.lock_service,
                        _explain(exc))

    # ----------------------------------------------------------------------- blocking parts
    def _client(self) -> Any:
        if self.client is None:
            from fastflow.scaler.swarm import connect

            self.client = connect(self.docker_host, self.tls_dir)
        return self.client

    def _set_error(self, err: str) -> None:
        if err and err != self._error:
            log.warning("lease %s: %s (retrying)", self.lock_service, err)
        self._error = err

    def _step(self) -> None:
        if self.mode == "raft-leader":
            self._step_raft()
        else:
            self._step_service()

    def _step_raft(self) -> None:
        api = self._client().api
        t0 = self.clock()
        if not self._node_id:
            self._node_id = ((api.info().get("Swarm") or {}).get("NodeID")) or ""
            if not self._node_id:
                raise RuntimeError("this engine is not a swarm node")
        leader = ""
        for n in api.nodes(filters={"role": "manager"}):
            if (n.get("ManagerStatus") or {}).get("Leader"):
                leader = n.get("ID", "")
                self._holder_node = (n.get("Description") or {}).get("Hostname", "")
        self._holder = leader
        wanted = self.want is None or self.want()
        if leader and leader == self._node_id and wanted:
            if not self.is_held():
                self._acquired()
            # a stale "leader" answer can be at most two renewals old
            self._held_until = t0 + min(self.duration, 2 * self.renew) + self.guard
        else:
            self._held_until = 0.0

    def _read(self) -> dict[str, Any] | None:
        import docker

        try:
            return self._client().api.inspect_service(self.lock_service)  # type: ignore[no-any-return]
        except docker.errors.NotFound:
            return None

    def _step_service(self) -> None:
        t0 = self.clock()
        svc = self._read()
        t_read = self.clock()
        wanted = self.want is None or self.want()
        if svc is None:
            if wanted:
                self._create(t0)
            else:
                self._held_until = 0.0
            return
        version = int((svc.get("Version") or {}).get("Index", 0))
        labels = dict((svc.get("Spec") or {}).get("Labels") or {})
        holder = labels.get(LABEL_HOLDER, "")
        self._holder, self._holder_node, self._version = holder, labels.get(LABEL_NODE, ""), version
        if self._seen is None or self._seen[0] != version:
            self._seen = (version, t_read)       # after the read: never before the write it shows
        if holder == self.id:
            if not wanted:
                self._held_until = 0.0
                self._write(svc, released=True)
                return
            t1 = self.clock()
            if self._write(svc):
                self._held_until = t1 + self.duration
            return
        # someone else's (or nobody's) lease: we do not hold it, whatever we thought
        self._held_until = 0.0
        if not wanted:
            return
        free = not holder and labels.get(LABEL_STATE) == "released"
        expired = t0 - self._seen[1] >= self.duration
        if free or expired:
            t1 = self.clock()
            if self._write(svc):
                self._held_until = t1 + self.duration
                self._acquired(previous=holder)

    def _acquired(self, previous: str = "") -> None:
        self.acquisitions += 1
        self._held_since = time.time()
        self._holder, self._holder_node = self.id, self.node
        if previous:
            log.info("lease %s: taken over from %s (unchanged for %.3g s)", self.lock_service,
                     previous, self.duration)

    def _labels(self, base: Mapping[str, str], released: bool = False) -> dict[str, str]:
        labels = dict(base)
        labels.update({LABEL: "1", LABEL_HOLDER: "" if released else self.id,
                       LABEL_NODE: "" if released else self.node,
                       LABEL_RENEWED: f"{time.time():.3f}", LABEL_DURATION: f"{self.duration:g}",
                       LABEL_STATE: "released" if released else "held"})
        return labels

    def _write(self, svc: Mapping[str, Any], released: bool = False) -> bool:
        """CAS-update the lock service's labels at the version read; False when another writer
        was first (the engine's "update out of sequence")."""
        import docker

        spec = dict(svc.get("Spec") or {})
        version = int((svc.get("Version") or {}).get("Index", 0))
        try:
            self._client().api.update_service(
                svc["ID"], version=version, name=spec.get("Name"),
                labels=self._labels(spec.get("Labels") or {}, released),
                mode=spec.get("Mode"), task_template=spec.get("TaskTemplate"),
                endpoint_spec=spec.get("EndpointSpec"), fetch_current_spec=False)
        except docker.errors.APIError as exc:
            text = _explain(exc)
            if "out of sequence" in text or exc.status_code == 404:
                self.conflicts += 1
                self._held_until = 0.0
                return False
            raise
        self.writes += 1
        if not released:
            self._holder, self._holder_node = self.id, self.node
        return True

    def _create(self, t0: float) -> None:
        """Create the lock service holding the lease (a concurrent creator: "name conflicts")."""
        import docker
        from docker.types import ContainerSpec, ServiceMode, TaskTemplate

        try:
            self._client().api.create_service(
                TaskTemplate(ContainerSpec(self.lock_image, ["true"])), name=self.lock_service,
                labels=self._labels({}), mode=ServiceMode("replicated", replicas=0))
        except docker.errors.APIError as exc:
            if exc.status_code == 409 or "already exists" in _explain(exc):
                self.conflicts += 1
                return
            raise
        self.writes += 1
        self._held_until = t0 + self.duration
        self._acquired()
        log.info("lease %s: lock service created", self.lock_service)

    def _release(self) -> None:
        svc = self._read()
        if svc is not None and (svc["Spec"].get("Labels") or {}).get(LABEL_HOLDER) == self.id:
            self._write(svc, released=True)


def _explain(exc: BaseException) -> str:
    return str(getattr(exc, "explanation", None) or exc).strip()
