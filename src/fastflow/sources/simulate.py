"""``fastflow simulate``: sFlow from a synthetic Docker swarm, shaped like real hsflowd output.

N nodes, each an agent (10.x.y.z, sub-agent 100000) that every polling interval sends, as hsflowd
with its Docker module does (LAYOUTS.md point 6): the host sample 2:1 (0:2000, 2001, 2003, 2004,
2005, 2006, 2100) and one sample 3:<index> per container (0:2000 with the task name
``svc.slot.taskid`` as hostname, 2001, 2002 = 2:1, 2101, 2102, 2103, 2104), packed into datagrams of
at most ~1400 bytes.

Each service has a demand curve (CPU percent of one core in total, e.g. 300 = three busy cores):
``step:50,300,50@60`` (levels, each held 60 s), ``ramp:50:400:300`` (from, to, seconds),
``sine:200:150:600`` (mean, amplitude, period), ``risefall:800:120`` (up to a peak and back over
the given seconds) or ``csv:FILE`` (rows ``t,demand``, linear between rows). The demand is split
across the service's *current* replicas, so per-container CPU and bytes fall when replicas rise.
Replicas come from a :class:`SimulatedSwarm` (the same methods as ``fastflow.scaler.swarm.Swarm``, so the
scaler can drive it) or from the real Docker engine (``--docker``: containers are the real tasks).

Speed: datagrams are built from per-sample byte templates once per change of the container set;
each tick patches the counters into one buffer with vectorised big-endian writes
(``fastflow.sources._replay.put_be32/put_be64``) and sends it with ``sendmmsg``. ``--speed`` compresses time.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import logging
import math
import random
import socket
import string
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastflow import encode as E

log = logging.getLogger("fastflow.simulate")

MTU_PAYLOAD = 1400
SUB_AGENT = 100000
BYTES_PER_CPU_PCT = 20_000.0      # bytes/s in (and out/2) per percent of CPU used
MEM_BASE = 50 << 20                # bytes
HOST_MEM = 16 << 30

DemandFn = Callable[[float], float]


# --------------------------------------------------------------------------------------------------
# demand curves
# --------------------------------------------------------------------------------------------------
def parse_demand(spec: str) -> DemandFn:
    """A demand curve (total CPU percent as a function of simulated seconds) from its text form."""
    kind, _, rest = spec.partition(":")
    try:
        if kind == "const":
            v = float(rest)
            return lambda t: v
        if kind == "step":
            levels_s, _, hold_s = rest.partition("@")
            levels = [float(x) for x in levels_s.split(",") if x]
            hold = float(hold_s or 60)
            if not levels or hold <= 0:
                raise ValueError
            return lambda t: levels[min(int(max(t, 0) // hold), len(levels) - 1)]
        if kind == "ramp":
            a, b, dur = (float(x) for x in rest.split(":"))
            return lambda t: a + (b - a) * min(max(t, 0) / dur, 1.0) if dur > 0 else b
        if kind == "sine":
            mean, amp, period = (float(x) for x in rest.split(":"))
            return lambda t: max(0.0, mean + amp * math.sin(2 * math.pi * t / period))
        if kind == "risefall":
            peak_s, _, dur_s = rest.partition(":")
            peak, dur = float(peak_s), float(dur_s or 120)
            return lambda t: max(5.0, peak * math.sin(math.pi * min(max(t, 0) / dur, 1.0)))
        if kind == "csv":
            ts, vs = [], []
            with open(rest, newline="") as f:
                for row in csv.reader(f):
                    if not row or row[0].strip().startswith("#"):
                        continue
                    try:
                        ts.append(float(row[0]))
                        vs.append(float(row[1]))
                    except ValueError:
                        continue  # a header line
            if not ts:
                raise ValueError
            ta, va = np.array(ts), np.array(vs)
            return lambda t: float(np.interp(t, ta, va))
    except (ValueError, OSError, TypeError) as exc:
        raise ValueError(f"bad demand {spec!r}: {exc or 'expected e.g. ramp:50:400:300'}") from None
    raise ValueError(f"bad demand {spec!r}: kind must be const, step, ramp, sine, risefall or csv")


# --------------------------------------------------------------------------------------------------
# a simulated swarm with the scaler's backend interface (fastflow.scaler.swarm.Swarm)
# --------------------------------------------------------------------------------------------------
def _task_id(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(25))


class SimulatedSwarm:
    """Replicated services in memory, offering ``read_service``, ``running_tasks`` and
    ``set_replicas`` exactly like :class:`fastflow.scaler.swarm.Swarm`. Thread-safe."""

    def __init__(self, services: dict[str, int], seed: int = 1) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._replicas: dict[str, int] = {}
        self._version: dict[str, int] = {}
        self._tasks: dict[str, dict[int, str]] = {}
        self.before_update: Callable[[Any], None] | None = None
        self.changes: list[tuple[str, int, int]] = []    # (service, old, new)
        for name, n in services.items():
            self._replicas[name] = 0
            self._version[name] = 1
            self._tasks[name] = {}
            self._set(name, n)

    def _set(self, name: str, n: int) -> None:
        tasks = self._tasks[name]
        for slot in range(1, n + 1):
            if slot not in tasks:
                tasks[slot] = _task_id(self._rng)
        for slot in [s for s in tasks if s > n]:
            del tasks[slot]
        self._replicas[name] = n
        self._version[name] += 1

    def services(self) -> list[str]:
        with self._lock:
            return list(self._replicas)

    def replicas(self, name: str) -> int:
        with self._lock:
            return self._replicas[name]

    def read_service(self, name: str) -> Any:
        from fastflow.scaler.swarm import ServiceInfo, SwarmError

        with self._lock:
            if name not in self._replicas:
                raise SwarmError(f"service {name} not found")
            spec = {"Name": name, "Mode": {"Replicated": {"Replicas": self._replicas[name]}},
                    "TaskTemplate": {"ContainerSpec": {"Image": "simulated"}}}
            return ServiceInfo(id=f"sim-{name}", name=name, version=self._version[name],
                               spec=spec, update_state=None)

    def running_tasks(self, service: Any) -> list[str]:
        with self._lock:
            tasks = self._tasks.get(service.name, {})
            return [f"{service.name}.{slot}.{tid}" for slot, tid in sorted(tasks.items())]

    def task_names(self) -> list[str]:
        """Every running task of every service, ``svc.slot.taskid``."""
        with self._lock:
            return [f"{svc}.{slot}.{tid}" for svc, tasks in self._tasks.items()
                    for slot, tid in sorted(tasks.items())]

    def set_replicas(self, name: str, replicas: int, expect_current: int | None = None) -> int:
        from fastflow.scaler.swarm import SwarmError

        info = self.read_service(name)
        if self.before_update is not None:
            self.before_update(info)
        with self._lock:
            cur = self._replicas[name]
            if expect_current is not None and cur != expect_current:
                raise SwarmError(f"service {name}: replicas changed to {cur} by another client")
            if replicas < 0:
                raise SwarmError(f"service {name}: replicas must be >= 0")
            if cur != replicas:
                self._set(name, int(replicas))
                self.changes.append((name, cur, int(replicas)))
            return cur


class DockerTasks:
    """Container names from the real engine: the running tasks of the given services."""

    def __init__(self, services: Sequence[str], docker_host: str | None = None) -> None:
        from fastflow.scaler.swarm import Swarm

        self.swarm = Swarm.connect(docker_host)
        self.names = list(services)

    def task_names(self) -> list[str]:
        from fastflow.scaler.swarm import SwarmError

        out: list[str] = []
        for name in self.names:
            try:
                out += self.swarm.running_tasks(self.swarm.read_service(name))
            except SwarmError as exc:
                log.warning("%s", exc)
        return out


# --------------------------------------------------------------------------------------------------
# sample templates
# --------------------------------------------------------------------------------------------------
@dataclass
class Template:
    """One sample's bytes (format word onwards) and where its changing fields are."""

    data: bytes
    fields: dict[str, tuple[int, str]]   # name -> (offset in data, "u32"/"u64")


def _sample_with_offsets(src_type: int, src_index: int, records: list[dict[str, Any]],
                         dynamic: dict[str, tuple[str, str]]) -> Template:
    """Encode an expanded counter sample; ``dynamic`` maps a field key to (record name, json name)
    whose offset is wanted. Offsets come from the schema's wire offsets."""
    from fastflow._schema import COUNTER_RECORD_BY_NAME

    head = struct.pack(">IIIIII", 4, 0, 0, src_type, src_index, len(records))
    body = bytearray(head)
    rec_at: dict[str, int] = {}
    for r in records:
        rec_at[r["name"]] = len(body) + 8
        body += E.encode_counter_record(r)
    struct.pack_into(">I", body, 4, len(body) - 8)
    fields: dict[str, tuple[int, str]] = {"seq": (8, "u32")}
    for key, (rname, jname) in dynamic.items():
        for jn, _col, off, typ in COUNTER_RECORD_BY_NAME[rname][3]:
            if jn == jname:
                assert off is not None
                fields[key] = (rec_at[rname] + off, typ)
                break
        else:
            raise KeyError(jname)
    return Template(bytes(body), fields)


CONTAINER_DYNAMIC = {
    "cpu_ms": ("virt_cpu", "cpu_time"), "mem": ("virt_memory", "memory"),
    "rd_req": ("virt_disk_io", "rd_req"), "rd_bytes": ("virt_disk_io", "rd_bytes"),
    "wr_req": ("virt_disk_io", "wr_req"), "wr_bytes": ("virt_disk_io", "wr_bytes"),
    "rx_bytes": ("virt_net_io", "rx_bytes"), "rx_pkts": ("virt_net_io", "rx_packets"),
    "tx_bytes": ("virt_net_io", "tx_bytes"), "tx_pkts": ("virt_net_io", "tx_packets"),
}
HOST_DYNAMIC = {
    "uptime_s": ("host_cpu", "uptime"), "cpu_user": ("host_cpu", "cpu_user"),
    "cpu_system": ("host_cpu", "cpu_system"), "cpu_idle": ("host_cpu", "cpu_idle"),
    "mem_free": ("host_memory", "mem_free"), "bytes_in": ("host_net_io", "bytes_in"),
    "pkts_in": ("host_net_io", "pkts_in"), "bytes_out": ("host_net_io", "bytes_out"),
    "pkts_out": ("host_net_io", "packets_out"), "vmem_free": ("virt_node", "memory_free"),
    "ndomains": ("virt_node", "num_domains"),
}


def container_index(name: str) -> int:
    """A stable 3:<index> for a container (hsflowd uses a hash-derived index too)."""
    return 100000 + int.from_bytes(hashlib.blake2b(name.encode(), digest_size=4).digest(), "big") % 900000


_SKELETONS: dict[tuple[int, int], Template] = {}


def container_template(name: str, index: int, max_mem: int = HOST_MEM) -> Template:
    """hsflowd's container sample: 2001, 2103, 2102, 2101, 2104, 2002, 2000 (its order).

    Built once per hostname length through the encoder, then copied with the hostname, uuid and
    index patched in (host_descr is the last record, so every other offset stays put)."""
    raw = name.encode()
    if len(raw) > 64:
        raise ValueError(f"container name {name!r} longer than 64 bytes")
    key = (len(raw), max_mem)
    sk = _SKELETONS.get(key)
    if sk is None:
        sk = _SKELETONS[key] = _container_template_slow("x" * len(raw), 0, max_mem)
    data = bytearray(sk.data)
    struct.pack_into(">I", data, 16, index)
    # host_descr body: hostname length word, hostname (padded), 16 uuid bytes, 2 u32, os_release
    rel = len("6.1.0-sim")
    hd = len(data) - (4 + len(raw) + (-len(raw) % 4) + 16 + 8 + 4 + rel + (-rel % 4))
    data[hd + 4:hd + 4 + len(raw)] = raw
    u = hd + 4 + len(raw) + (-len(raw) % 4)
    data[u:u + 16] = hashlib.md5(raw).digest()
    return Template(bytes(data), sk.fields)


def _container_template_slow(name: str, index: int, max_mem: int = HOST_MEM) -> Template:
    uid = hashlib.md5(name.encode()).hexdigest()
    recs = [E.host_adapters(), E.virt_disk_io(), E.virt_memory(MEM_BASE, max_mem),
            E.virt_cpu(1, 0, 1), E.virt_net_io(), E.host_parent(2, 1),
            E.host_descr(name, uuid=f"{uid[:8]}-{uid[8:12]}-{uid[12:16]}-{uid[16:20]}-{uid[20:]}",
                         os_release="6.1.0-sim")]
    return _sample_with_offsets(3, index, recs, CONTAINER_DYNAMIC)


def host_template(hostname: str, node: int, cpus: int) -> Template:
    """hsflowd's host sample 2:1: 2100, 2001, 2005, 2004, 2003, 2006, 2000."""
    mac = f"02fc{node:08x}"
    uid = hashlib.md5(hostname.encode()).hexdigest()
    recs = [E.virt_node(mhz=2400, cpus=cpus, memory=HOST_MEM, memory_free=HOST_MEM, num_domains=0),
            E.host_adapters([(2, [mac])]),
            E.host_disk_io(disk_total=256 << 30, disk_free=128 << 30, part_max_used=5000),
            E.host_memory(mem_total=HOST_MEM, mem_free=HOST_MEM),
            E.host_cpu(cpu_num=cpus, cpu_speed=2400, proc_total=200, proc_run=1, cpu_steal=0),
            E.host_net_io(),
            E.host_descr(hostname, uuid=f"{uid[:8]}-{uid[8:12]}-{uid[12:16]}-{uid[16:20]}-{uid[20:]}",
                         os_release="6.1.0-sim")]
    return _sample_with_offsets(2, 1, recs, HOST_DYNAMIC)


# --------------------------------------------------------------------------------------------------
# the simulator
# --------------------------------------------------------------------------------------------------
def node_address(i: int) -> str:
    """Agent address of node i: 10.<i>.<..>.<..> + 1, unique for 16M nodes."""
    v = (10 << 24) + 1 + i
    return socket.inet_ntoa(struct.pack(">I", v))


@dataclass
class Frame:
    """One tick's datagrams in one buffer, and where every changing field is."""

    buf: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray
    node_of_dgram: np.ndarray
    rank_of_dgram: np.ndarray         # ordinal of the datagram within its node's tick
    dgrams_per_node: np.ndarray
    seq_pos: np.ndarray               # datagram sequence number positions
    up_pos: np.ndarray
    c_fields: dict[str, tuple[np.ndarray, np.ndarray, str]] = field(default_factory=dict)
    h_fields: dict[str, tuple[np.ndarray, np.ndarray, str]] = field(default_factory=dict)


class Simulator:
    """Nodes, containers placed on them, counters that follow the demand, and a frame per tick."""

    def __init__(self, nodes: int, demands: dict[str, DemandFn], source: Any,
                 cpus: int = 4, seed: int = 1, extra_containers: int = 0) -> None:
        if nodes < 1:
            raise ValueError("nodes must be >= 1")
        self.n_nodes = nodes
        self.cpus = cpus
        self.demands = demands
        self.source = source              # .task_names() -> list[str]
        self.rng = np.random.default_rng(seed)
        self.extra = extra_containers     # static, idle-ish containers per node (load for scale)
        self.node_addr = [node_address(i) for i in range(nodes)]
        self.host_tpl = [host_template(f"node{i}", i, cpus) for i in range(nodes)]
        self._tpl_cache: dict[str, Template] = {}
        self.placement: dict[str, int] = {}
        self.names: list[str] = []
        self.c_state: dict[str, np.ndarray] = {}
        self.h_state = {k: np.zeros(nodes, np.float64) for k in HOST_DYNAMIC}
        self.h_seq = np.zeros(nodes, np.uint64)          # host sample sequence
        self.d_seq = np.zeros(nodes, np.uint64)          # datagram sequence
        self.frame: Frame | None = None
        self.t = 0.0
        self._static = [f"static{i}.{j}.{node_address(i)}" for i in range(nodes)
                        for j in range(extra_containers)]

    # ---- containers
    def _place(self, names: list[str]) -> None:
        load = np.zeros(self.n_nodes, np.int64)
        wanted = set(names)
        for n, node in self.placement.items():
            if n in wanted:
                load[node] += 1
        for n in names:
            if n not in self.placement:
                if n.startswith("static"):
                    node = int(n.split(".")[0][6:])
                else:
                    node = int(np.argmin(load))
                self.placement[n] = node
                load[node] += 1
        for n in [n for n in self.placement if n not in wanted]:
            del self.placement[n]

    def _rebuild(self, names: list[str]) -> None:
        old = {n: i for i, n in enumerate(self.names)}
        self._place(names)
        keys = list(CONTAINER_DYNAMIC) + ["seq"]
        new_state = {k: np.zeros(len(names), np.float64) for k in keys}
        new_state["mem"][:] = MEM_BASE
        for i, n in enumerate(names):
            j = old.get(n)
            if j is not None:
                for key in keys:
                    new_state[key][i] = self.c_state[key][j]
        self.c_state = new_state
        self.names = names
        by_node: list[list[int]] = [[] for _ in range(self.n_nodes)]
        for i, n in enumerate(names):
            by_node[self.placement[n]].append(i)
        for n in [n for n in self._tpl_cache if n not in self.placement]:
            del self._tpl_cache[n]
        chunks: list[bytes] = []
        offsets: list[int] = []
        lengths: list[int] = []
        dnode: list[int] = []
        drank: list[int] = []
        c_start: list[tuple[int, int]] = []   # (container idx, sample pos)
        h_start: list[tuple[int, int]] = []
        pos = 0
        per_node = np.zeros(self.n_nodes, np.int64)
        for node in range(self.n_nodes):
            addr = socket.inet_aton(self.node_addr[node])
            items: list[tuple[int, Template]] = [(-1, self.host_tpl[node])]
            for ci in by_node[node]:
                n = names[ci]
                tpl = self._tpl_cache.get(n)
                if tpl is None:
                    tpl = self._tpl_cache[n] = container_template(n, container_index(n))
                items.append((ci, tpl))
            rank = 0
            k = 0
            while k < len(items):
                size = 28
                batch: list[tuple[int, Template]] = []
                while k < len(items) and (not batch or size + len(items[k][1].data) <= MTU_PAYLOAD):
                    batch.append(items[k])
                    size += len(items[k][1].data)
                    k += 1
                head = struct.pack(">II4sIIII", 5, 1, addr, SUB_AGENT, 0, 0, len(batch))
                offsets.append(pos)
                chunks.append(head)
                p = pos + len(head)
                for ci, tpl in batch:
                    (h_start if ci < 0 else c_start).append((node if ci < 0 else ci, p))
                    chunks.append(tpl.data)
                    p += len(tpl.data)
                lengths.append(p - pos)
                dnode.append(node)
                drank.append(rank)
                rank += 1
                pos = p
            per_node[node] = rank
        buf = np.frombuffer(b"".join(chunks), np.uint8).copy()
        off_a = np.array(offsets, np.int64)
        fr = Frame(buf, off_a, np.array(lengths, np.int64), np.array(dnode, np.int64),
                   np.array(drank, np.uint64), per_node, off_a + 16, off_a + 20)
        c_idx = np.array([c for c, _ in c_start], np.int64)
        c_pos = np.array([p for _, p in c_start], np.int64)
        ref_c = container_template("x", 1)
        for key, (off, typ) in ref_c.fields.items():
            if key == "seq":
                fr.c_fields["seq"] = (c_pos + off, c_idx, typ)
            else:
                fr.c_fields[key] = (c_pos + off + 0, c_idx, typ)
        # host_descr comes last in a container template, so every offset above is fixed:
        # verify on the first container (cheap insurance against a template change)
        h_idx = np.array([c for c, _ in h_start], np.int64)
        h_pos = np.array([p for _, p in h_start], np.int64)
        h_ref = self.host_tpl[0].fields
        for key, (off, typ) in h_ref.items():
            fr.h_fields[key] = (h_pos + off, h_idx, typ)
        self.frame = fr
        for n in names[:1]:
            assert self._tpl_cache[n].fields == ref_c.fields

    # ---- time
    def step(self, dt: float) -> Frame:
        """Advance simulated time by dt seconds and return the frame to send."""
        from fastflow.sources._replay import put_be32, put_be64

        names = list(self.source.task_names()) + self._static
        if self.frame is None or names != self.names:
            self._rebuild(names)
        fr = self.frame
        assert fr is not None
        self.t += dt
        n = len(self.names)
        cs = self.c_state
        used: np.ndarray
        nbytes: np.ndarray
        if n:
            svc = [nm.split(".")[0] for nm in self.names]
            counts: dict[str, int] = {}
            for s in svc:
                counts[s] = counts.get(s, 0) + 1
            share = np.array([self.demands[s](self.t) / counts[s] if s in self.demands else 1.0
                              for s in svc], np.float64)
            share *= self.rng.normal(1.0, 0.03, n).clip(0.8, 1.2)
            share = share.clip(0.0, 100.0)                       # % of one CPU per container
            cs["cpu_ms"] += share / 100.0 * dt * 1000.0
            bps = share * BYTES_PER_CPU_PCT
            cs["rx_bytes"] += bps * dt
            cs["tx_bytes"] += bps * dt * 0.5
            cs["rx_pkts"] += bps * dt / 800
            cs["tx_pkts"] += bps * dt / 1200
            cs["rd_bytes"] += share * 100 * dt
            cs["rd_req"] += share * dt / 40
            cs["wr_bytes"] += share * 200 * dt
            cs["wr_req"] += share * dt / 20
            cs["mem"] = MEM_BASE + share * (2 << 20)
            cs["seq"] += 1
            node_of: np.ndarray = np.array([self.placement[nm] for nm in self.names], np.int64)
            used = np.bincount(node_of, weights=share, minlength=self.n_nodes)
            nbytes = np.bincount(node_of, weights=bps, minlength=self.n_nodes)
            ndom = np.bincount(node_of, minlength=self.n_nodes)
        else:
            used = np.zeros(self.n_nodes)
            nbytes = np.zeros(self.n_nodes)
            ndom = np.zeros(self.n_nodes, np.int64)
        hs = self.h_state
        busy_ms = np.minimum(used / 100.0, self.cpus) * dt * 1000.0
        hs["cpu_user"] += busy_ms * 0.8 + 5 * dt
        hs["cpu_system"] += busy_ms * 0.2 + 2 * dt
        hs["cpu_idle"] += np.maximum(self.cpus * dt * 1000.0 - busy_ms - 7 * dt, 0)
        hs["uptime_s"][:] = 1000 + self.t
        hs["bytes_in"] += nbytes * dt
        hs["bytes_out"] += nbytes * dt * 0.5
        hs["pkts_in"] += nbytes * dt / 800
        hs["pkts_out"] += nbytes * dt / 1200
        hs["mem_free"][:] = HOST_MEM - ndom * MEM_BASE
        hs["vmem_free"][:] = hs["mem_free"]
        hs["ndomains"][:] = ndom
        self.h_seq += np.uint64(1)
        # patch
        for key, (pos, idx, typ) in fr.c_fields.items():
            vals = cs[key][idx]
            (put_be64 if typ == "u64" else put_be32)(fr.buf, pos, _wrap(vals, typ))
        for key, (pos, idx, typ) in fr.h_fields.items():
            vals = self.h_seq[idx].astype(np.float64) if key == "seq" else hs[key][idx]
            (put_be64 if typ == "u64" else put_be32)(fr.buf, pos, _wrap(vals, typ))
        seq = self.d_seq[fr.node_of_dgram] + fr.rank_of_dgram + np.uint64(1)
        put_be32(fr.buf, fr.seq_pos, seq)
        self.d_seq += fr.dgrams_per_node.astype(np.uint64)
        uptime = np.full(len(fr.offsets), int((1000 + self.t) * 1000), np.uint64)
        put_be32(fr.buf, fr.up_pos, uptime)
        return fr


def _wrap(vals: np.ndarray, typ: str) -> np.ndarray:
    v = np.floor(vals).astype(np.uint64)
    return v & np.uint64(0xFFFFFFFF) if typ == "u32" else v


def frame_datagrams(fr: Frame) -> Iterator[bytes]:
    """The frame's datagrams as bytes (tests, pcap output)."""
    b = fr.buf.tobytes()
    for o, n in zip(fr.offsets.tolist(), fr.lengths.tolist(), strict=True):
        yield b[o:o + n]


# --------------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------------
def parse_service(text: str) -> tuple[str, str, int]:
    """``NAME=DEMAND[/REPLICAS]`` e.g. ``apache=risefall:800:120/1``."""
    name, sep, rest = text.partition("=")
    if not sep or not name or "." in name:
        raise ValueError(f"bad service {text!r}: expected NAME=DEMAND[/REPLICAS]")
    demand, _, reps = rest.rpartition("/") if "/" in rest and rest.rsplit("/", 1)[1].isdigit() \
        else (rest, "", "1")
    return name, demand, int(reps)


def run(sim: Simulator, interval: float, duration: float, speed: float = 1.0,
        send: Callable[[Frame, float], None] | None = None, realtime: bool = True,
        stop: threading.Event | None = None, on_tick: Callable[[float], None] | None = None) -> int:
    """Tick every ``interval`` simulated seconds for ``duration`` simulated seconds; each frame is
    handed to ``send(frame, sim_time)``. With ``realtime`` the wall clock paces ticks (interval /
    speed apart) and a frame's datagrams are spread over the first part of the interval."""
    ticks = 0
    t0 = time.monotonic()
    while sim.t + interval <= duration + 1e-9:
        if stop is not None and stop.is_set():
            break
        fr = sim.step(interval)
        if send is not None:
            send(fr, sim.t)
        ticks += 1
        if on_tick is not None:
            on_tick(sim.t)
        if realtime:
            wait = t0 + ticks * interval / speed - time.monotonic()
            if wait > 0:
                if stop is not None:
                    stop.wait(wait)
                else:
                    time.sleep(wait)
    return ticks


def node_phases(nodes: int, seed: int = 1) -> np.ndarray:
    """Each agent's polling phase, a fraction of the interval in [0, 1) (fixed by the seed)."""
    return np.random.default_rng(seed + 7919).random(nodes)


def udp_sender(dest: tuple[str, int], interval_wall: float, spread: bool = False,
               seed: int = 1) -> Callable[[Frame, float], None]:
    """Send each frame to dest, spread over up to half the wall interval in slices; with
    ``spread``, each agent sends at its own phase of the whole interval, as real agents do (their
    polling timers start when each agent starts), in slices of about 50 ms."""
    from fastflow.sources.replay import connect_udp, send

    sock = connect_udp(*dest)
    stats = {"sent": 0, "errors": 0}

    def _send_spread(fr: Frame) -> None:
        nodes = fr.node_of_dgram.astype(np.int64)
        frac = node_phases(int(nodes.max()) + 1 if len(nodes) else 0, seed)[nodes]
        order = np.argsort(frac, kind="stable")        # a node's datagrams stay in their order
        offs = np.ascontiguousarray(fr.offsets[order])
        lens = np.ascontiguousarray(fr.lengths[order])
        slices = max(1, min(1000, int(interval_wall * 20)))
        bounds = np.searchsorted(frac[order], np.arange(slices + 1) / slices)
        bounds[-1] = len(order)
        start = time.monotonic()
        for k in range(slices):
            w = start + k * interval_wall / slices - time.monotonic()
            if w > 0:
                time.sleep(w)
            if bounds[k + 1] > bounds[k]:
                s, e = send(sock, fr.buf, offs, lens, int(bounds[k]), int(bounds[k + 1]))
                stats["sent"] += s
                stats["errors"] += e

    def _send(fr: Frame, _t: float) -> None:
        if spread:
            _send_spread(fr)
            return
        n = len(fr.offsets)
        slices = max(1, min(20, int(interval_wall * 10)))
        bounds = np.linspace(0, n, slices + 1).astype(int)
        start = time.monotonic()
        for k in range(slices):
            s, e = send(sock, fr.buf, fr.offsets, fr.lengths, int(bounds[k]), int(bounds[k + 1]))
            stats["sent"] += s
            stats["errors"] += e
            target = start + (k + 1) * interval_wall * 0.5 / slices
            w = target - time.monotonic()
            if w > 0 and k + 1 < slices:
                time.sleep(w)

    _send.stats = stats  # type: ignore[attr-defined]
    return _send


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``fastflow simulate``."""
    from fastflow._console import nonneg_int, positive_float, positive_int

    p.add_argument("--nodes", type=positive_int, default=3, metavar="N",
                   help="simulated swarm nodes (agents)")
    p.add_argument("--service", action="append", default=[], metavar="NAME=DEMAND[/REPLICAS]",
                   help="a service and its demand curve, e.g. apache=risefall:800:120/1 "
                        "(repeatable; default apache=risefall:800:120)")
    p.add_argument("--containers-per-node", type=nonneg_int, default=0, metavar="N",
                   help="extra static containers per node (scale testing)")
    p.add_argument("--polling", type=positive_float, default=10.0, metavar="SECONDS",
                   help="polling interval, simulated seconds")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--duration", type=positive_float, metavar="SECONDS",
                        help="wall-clock seconds to send for (as in demo and replay): the swarm "
                             "lives DURATION x SPEED simulated seconds; with --pcap, the "
                             "capture's length")
    length.add_argument("--sim-seconds", type=positive_float, metavar="SECONDS",
                        help="simulated seconds to run instead (default 120 when neither is "
                             "given; over UDP that takes SIM_SECONDS / SPEED wall seconds)")
    p.add_argument("--speed", type=positive_float, default=1.0, metavar="X",
                   help="simulated seconds per wall second (UDP only; a pcap has no wall clock)")
    dest = p.add_mutually_exclusive_group(required=True)
    dest.add_argument("--to", metavar="HOST:PORT", help="collector (e.g. 127.0.0.1:6343)")
    dest.add_argument("--pcap", metavar="FILE", help="write a capture instead of sending")
    p.add_argument("--docker", action="store_true",
                   help="replicas/containers from the real engine's running tasks of the services")
    p.add_argument("--seed", type=int, default=1,
                   help="random seed of the simulated counters and task ids")
    p.add_argument("--spread", action="store_true",
                   help="each agent sends at its own phase of the polling interval, as real agents "
                        "do (default: every agent in the first half of it, a burst per tick)")


def main(args: argparse.Namespace) -> int:
    """Run ``fastflow simulate``: 0 ok; 2 for bad arguments (including a run too short to send
    anything) or an unwritable --pcap path; 1 when nothing was sent or sending failed."""
    from fastflow._console import (
        EXIT_FAILURE,
        EXIT_OK,
        EXIT_USAGE,
        check_destination,
        check_output_path,
        explain_send_errno,
        fail,
    )

    specs = args.service or ["apache=risefall:800:120"]
    try:
        parsed = [parse_service(s) for s in specs]
        demands = {n: parse_demand(d) for n, d, _r in parsed}
    except ValueError as exc:
        return fail("simulate", str(exc), EXIT_USAGE)
    if args.sim_seconds is not None:
        sim_seconds, length = args.sim_seconds, f"--sim-seconds {args.sim_seconds:g}"
    elif args.duration is not None:
        sim_seconds = args.duration * (args.speed if args.to else 1.0)
        length = f"--duration {args.duration:g} s" + (f" x --speed {args.speed:g}" if args.to
                                                      and args.speed != 1 else "")
    else:
        sim_seconds, length = 120.0, "the default 120 simulated seconds"
    if sim_seconds + 1e-9 < args.polling:
        return fail("simulate", f"{length} = {sim_seconds:g} simulated s is shorter than one "
                    f"polling interval (--polling {args.polling:g}): nothing would be sent. Give "
                    f"a longer --duration/--sim-seconds or a shorter --polling", EXIT_USAGE)
    if args.pcap:
        problem = check_output_path(args.pcap)
        if problem:
            return fail("simulate", problem, EXIT_USAGE)
        if args.speed != 1.0:
            print("fastflow simulate: note: --speed has no effect with --pcap (the capture's "
                  "timestamps are simulated time)", file=sys.stderr)
    source: Any
    if args.docker:
        try:
            source = DockerTasks([n for n, _d, _r in parsed])
        except Exception as exc:
            return fail("simulate", f"cannot read the services from Docker: {exc}", EXIT_FAILURE)
    else:
        source = SimulatedSwarm({n: r for n, _d, r in parsed}, seed=args.seed)
    sim = Simulator(args.nodes, demands, source, seed=args.seed,
                    extra_containers=args.containers_per_node)
    if args.pcap:
        from fastflow import pcap

        out: list[tuple[float, bytes]] = []
        base = time.time()

        def keep(fr: Frame, t: float) -> None:
            out.extend((base + t, d) for d in frame_datagrams(fr))

        ticks = run(sim, args.polling, sim_seconds, send=keep, realtime=False)
        try:
            n = pcap.write(args.pcap, out)
        except OSError as exc:
            return fail("simulate", f"cannot write {args.pcap}: {exc.strerror or exc}",
                        EXIT_FAILURE)
        print(f"fastflow simulate: {ticks} ticks, {n} datagrams written to {args.pcap} "
              f"({sim_seconds:g} simulated s)", file=sys.stderr)
        return EXIT_OK if n else fail("simulate", "no datagrams written", EXIT_FAILURE)
    from fastflow.sources.replay import parse_hostport

    try:
        dest = parse_hostport(args.to)
    except ValueError as exc:
        return fail("simulate", str(exc), EXIT_USAGE)
    problem = check_destination(*dest)
    if problem:
        return fail("simulate", problem, EXIT_USAGE)
    try:
        sender = udp_sender(dest, args.polling / args.speed, spread=args.spread, seed=args.seed)
    except OSError as exc:
        return fail("simulate", f"cannot send to {args.to}: {exc.strerror or exc}", EXIT_FAILURE)
    print(f"fastflow simulate: {args.nodes} node(s) to {dest[0]}:{dest[1]} for "
          f"{sim_seconds / args.speed:g} wall s ({sim_seconds:g} simulated s at {args.speed:g}x, "
          f"polling every {args.polling:g} simulated s)", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    done = [0]
    interrupted = False
    try:
        run(sim, args.polling, sim_seconds, speed=args.speed, send=sender,
            on_tick=lambda _t: done.__setitem__(0, done[0] + 1))
    except KeyboardInterrupt:     # Ctrl-C is how a long simulation is stopped: a clean stop
        interrupted = True
    st = sender.stats  # type: ignore[attr-defined]
    el = time.monotonic() - t0
    print(f"fastflow simulate: {'interrupted; ' if interrupted else ''}{done[0]} ticks, sent "
          f"{st['sent']:,} datagrams ({st['sent'] / max(el, 1e-9):,.0f}/s), errors "
          f"{st['errors']}", file=sys.stderr)
    if st["errors"]:
        import errno

        return fail("simulate", f"{st['errors']:,} datagrams not sent (likely "
                    f"{explain_send_errno(errno.ECONNREFUSED, *dest)})", EXIT_FAILURE)
    if st["sent"] == 0 and not interrupted:
        return fail("simulate", "no datagrams sent", EXIT_FAILURE)
    return EXIT_OK
