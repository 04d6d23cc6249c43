"""``fastflow agent``: a small Host sFlow-compatible agent for one Docker host.

For hosts where hsflowd is not available. Every polling interval it sends, to each collector, the
record set of Host sFlow's Docker module (host-sflow ``mod_docker``; see
/work/shared/sflow/LAYOUTS.md point 6), as expanded counter samples (0:4):

* the physical host at source ``2:1``: host_descr, host_adapters, host_cpu, host_memory,
  host_disk_io, host_net_io, mib2 ip/icmp/tcp/udp (from /proc/net/snmp) and virt_node, read from
  /proc, /sys and statvfs;
* each running (or paused) container at ``3:<index>`` (a stable index derived from its id):
  host_descr (hostname = container name, uuid = the first 128 bits of the id), host_adapters
  (none, as hsflowd sends for host-network containers), host_parent (2:1), virt_cpu, virt_memory,
  virt_disk_io and virt_net_io. CPU, memory and block I/O come from the container's cgroup, found
  through ``/proc/<State.Pid>/cgroup`` (cgroup v1 and v2, systemd and cgroupfs drivers); network
  counters from ``/proc/<pid>/net/dev`` (non-loopback interfaces summed).

Datagrams are built with :mod:`fastflow.encode` and split to stay under ``MAX_DATAGRAM`` bytes.
A container that vanishes mid-poll is skipped and counted; an engine that is down or restarting is
logged (once per outage) and retried every poll, while the host sample keeps flowing.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import logging
import os
import platform
import signal
import socket
import sys
import threading
import time
import uuid as uuid_mod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastflow import encode as enc

__all__ = [
    "MAX_DATAGRAM", "DEFAULT_SUB_AGENT_ID", "Collector", "HostAgent", "HostReader", "CgroupReader",
    "ContainerInfo", "parse_collector", "container_index", "container_uuid", "pack_samples",
    "add_arguments", "main",
]

log = logging.getLogger("fastflow.hostagent")

MAX_DATAGRAM = 1400            # bytes: each datagram stays at or under this (one Ethernet MTU)
DEFAULT_SUB_AGENT_ID = 100000  # what hsflowd sends (agentSubId in the reference capture)
DEFAULT_PORT = 6343
INDEX_BASE = 100000            # container data-source indices start here (below: physical/ifIndex)
INDEX_SPAN = (1 << 24) - INDEX_BASE
MAX_HOST_ADAPTERS = 32         # keeps the host sample inside one datagram
U32 = 0xFFFFFFFF
UNLIMITED = 1 << 62            # cgroup v1 "no limit" is 2^63 - page size; anything above this

MACHINE_TYPES = {"x86_64": 3, "amd64": 3, "i386": 2, "i486": 2, "i586": 2, "i686": 2, "ia64": 4,
                 "sparc": 5, "sparc64": 5, "alpha": 6, "ppc": 7, "ppc64": 7, "ppc64le": 7,
                 "m68k": 8, "mips": 9, "mips64": 9, "arm": 10, "armv7l": 10, "aarch64": 10,
                 "arm64": 10, "parisc": 11, "s390": 12, "s390x": 12}
LOCAL_FS = {"ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "jfs", "reiserfs", "vfat", "f2fs",
            "ntfs", "hfs", "hfsplus", "ufs"}


# ==================================================================================================
# small helpers
# ==================================================================================================
def _read(path: str | Path) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def _read_or(path: str | Path, default: str = "") -> str:
    try:
        return _read(path)
    except OSError:
        return default


def _int(text: str, default: int = 0) -> int:
    try:
        return int(text.strip())
    except ValueError:
        return default


def _u32(v: int) -> int:
    return int(v) & U32


def _u64(v: int) -> int:
    return int(v) & 0xFFFFFFFFFFFFFFFF


def _trim_utf8(text: str, limit: int) -> str:
    raw = text.encode("utf-8")[:limit]
    return raw.decode("utf-8", "ignore")


@dataclass(frozen=True)
class Collector:
    """A destination: address text, port, and the resolved socket address."""

    host: str
    port: int
    family: int
    sockaddr: tuple[Any, ...]

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_collector(spec: str) -> Collector:
    """``HOST:PORT``, ``HOST`` (port 6343), ``[V6]:PORT`` or a bare IPv6 address -> a Collector.

    Raises ValueError when the text is malformed or the name does not resolve."""
    spec = spec.strip()
    host, port = spec, DEFAULT_PORT
    if spec.startswith("["):
        end = spec.find("]")
        if end < 0:
            raise ValueError(f"collector {spec!r}: missing ']'")
        host, rest = spec[1:end], spec[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"collector {spec!r}: expected [ADDR]:PORT")
            port = _port(rest[1:], spec)
    elif spec.count(":") == 1:
        host, p = spec.split(":")
        port = _port(p, spec)
    if not host:
        raise ValueError(f"collector {spec!r}: empty host")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise ValueError(f"collector {spec!r}: cannot resolve {host!r}: {exc}") from None
    fam, _t, _p, _c, sockaddr = infos[0]
    return Collector(host, port, int(fam), tuple(sockaddr))


def _port(text: str, spec: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ValueError(f"collector {spec!r}: port {text!r} is not a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"collector {spec!r}: port {port} out of range")
    return port


def container_index(container_id: str, taken: Mapping[int, str] | None = None) -> int:
    """A stable data-source index for a container (``3:<index>``), from its id.

    ``INDEX_BASE`` + (hash of the id) mod ``INDEX_SPAN``, so it fits 24 bits; when ``taken`` (index
    -> id) already holds that index for another container, the next free one is used."""
    h = int.from_bytes(hashlib.sha1(container_id.encode()).digest()[:8], "big")
    idx = INDEX_BASE + h % INDEX_SPAN
    if taken is not None:
        while taken.get(idx, container_id) != container_id:
            idx = INDEX_BASE + (idx - INDEX_BASE + 1) % INDEX_SPAN
    return idx


def container_uuid(container_id: str) -> str:
    """The uuid sent for a container: its id's first 32 hex digits (a name hash otherwise)."""
    try:
        return str(uuid_mod.UUID(hex=container_id[:32]))
    except ValueError:
        return str(uuid_mod.uuid5(uuid_mod.NAMESPACE_OID, container_id))


# ==================================================================================================
# the host (/proc)
# ==================================================================================================
def _net_dev(path: str | Path) -> dict[str, list[int]]:
    """``/proc/.../net/dev`` -> {interface: [16 counters]} (lines that do not parse are skipped)."""
    out: dict[str, list[int]] = {}
    for line in _read(path).splitlines()[2:]:
        name, sep, rest = line.partition(":")
        if not sep:
            continue
        try:
            vals = [int(x) for x in rest.split()]
        except ValueError:
            continue
        if len(vals) >= 16:
            out[name.strip()] = vals[:16]
    return out


def net_totals(path: str | Path) -> dict[str, int]:
    """Sum of the non-loopback interfaces of a net/dev file: bytes/packets/errs/drops in and out."""
    tot = [0] * 16
    for name, vals in _net_dev(path).items():
        if name == "lo":
            continue
        tot = [a + b for a, b in zip(tot, vals, strict=True)]
    return {"rx_bytes": tot[0], "rx_packets": tot[1], "rx_errs": tot[2], "rx_drop": tot[3],
            "tx_bytes": tot[8], "tx_packets": tot[9], "tx_errs": tot[10], "tx_drop": tot[11]}


def _snmp(path: str | Path) -> dict[str, dict[str, int]]:
    """/proc/net/snmp: {"Ip": {"Forwarding": 1, ...}, "Tcp": {...}, ...}."""
    out: dict[str, dict[str, int]] = {}
    lines = _read_or(path).splitlines()
    for head, vals in zip(lines[::2], lines[1::2], strict=False):
        hk, _, hnames = head.partition(":")
        vk, _, hvals = vals.partition(":")
        if hk != vk:
            continue
        try:
            out[hk] = dict(zip(hnames.split(), (int(v) for v in hvals.split()), strict=False))
        except ValueError:
            continue
    return out


_MIB2 = {
    "mib2_ip_group": ("Ip", "Forwarding DefaultTTL InReceives InHdrErrors InAddrErrors ForwDatagrams "
                      "InUnknownProtos InDiscards InDelivers OutRequests OutDiscards OutNoRoutes "
                      "ReasmTimeout ReasmReqds ReasmOKs ReasmFails FragOKs FragFails FragCreates",
                      "ip_forwarding ip_default_ttl ip_in_receives ip_in_hdr_errors ip_in_addr_errors "
                      "ip_forw_datagrams ip_in_unknown_protos ip_in_discards ip_in_delivers "
                      "ip_out_requests ip_out_discards ip_out_no_routes ip_reasm_timeout "
                      "ip_reasm_reqds ip_reasm_oks ip_reasm_fails ip_frag_oks ip_frag_fails "
                      "ip_frag_creates"),
    "mib2_icmp_group": ("Icmp", "InMsgs InErrors InDestUnreachs InTimeExcds InParmProbs InSrcQuenchs "
                        "InRedirects InEchos InEchoReps InTimestamps InAddrMasks InAddrMaskReps "
                        "OutMsgs OutErrors OutDestUnreachs OutTimeExcds OutParmProbs OutSrcQuenchs "
                        "OutRedirects OutEchos OutEchoReps OutTimestamps OutTimestampReps "
                        "OutAddrMasks OutAddrMaskReps",
                        "icmp_in_msgs icmp_in_errors icmp_in_dest_unreachs icmp_in_time_excds "
                        "icmp_in_param_probs icmp_in_src_quenchs icmp_in_redirects icmp_in_echos "
                        "icmp_in_echo_reps icmp_in_timestamps icmp_in_addr_masks "
                        "icmp_in_addr_mask_reps icmp_out_msgs icmp_out_errors "
                        "icmp_out_dest_unreachs icmp_out_time_excds icmp_out_param_probs "
                        "icmp_out_src_quenchs icmp_out_redirects icmp_out_echos "
                        "icmp_out_echo_reps icmp_out_timestamps icmp_out_timestamp_reps "
                        "icmp_out_addr_masks icmp_out_addr_mask_reps"),
    "mib2_tcp_group": ("Tcp", "RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens "
                       "AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs "
                       "OutRsts InCsumErrors",
                       "tcp_rto_algorithm tcp_rto_min tcp_rto_max tcp_max_conn tcp_active_opens "
                       "tcp_passive_opens tcp_attempt_fails tcp_estab_resets tcp_curr_estab "
                       "tcp_in_segs tcp_out_segs tcp_retrans_segs tcp_in_errs tcp_out_rsts "
                       "tcp_in_csum_errors"),
    "mib2_udp_group": ("Udp", "InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors "
                       "InCsumErrors",
                       "udp_in_datagrams udp_no_ports udp_in_errors udp_out_datagrams "
                       "udp_rcvbuf_errors udp_sndbuf_errors udp_in_csum_errors"),
}


class HostReader:
    """Reads the physical host's counters from /proc and /sys into Host sFlow record objects."""

    def __init__(self, proc: str | Path = "/proc", sys_root: str | Path = "/sys") -> None:
        self.proc = Path(proc)
        self.sys = Path(sys_root)
        self.clk_tck = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.hostname = socket.gethostname()
        self.release = platform.release()
        self.machine_type = MACHINE_TYPES.get(platform.machine().lower(), 1)
        self.uuid = self._host_uuid()

    def _host_uuid(self) -> str:
        for p in ("/etc/machine-id", str(self.sys / "class/dmi/id/product_uuid"),
                  "/var/lib/dbus/machine-id"):
            text = _read_or(p).strip().replace("-", "")
            if len(text) == 32:
                try:
                    return str(uuid_mod.UUID(hex=text))
                except ValueError:
                    continue
        return str(uuid_mod.uuid5(uuid_mod.NAMESPACE_DNS, self.hostname))

    # individual records ---------------------------------------------------------------------------
    def descr(self) -> dict[str, Any]:
        """0:2000 for the host."""
        return enc.host_descr(hostname=_trim_utf8(self.hostname, 64), uuid=self.uuid,
                              machine_type=self.machine_type, os_name=2,
                              os_release=_trim_utf8(self.release, 32))

    def adapters(self) -> dict[str, Any]:
        """0:2001: non-loopback interfaces with a MAC (ifIndex from /sys/class/net)."""
        out: list[tuple[int, list[str]]] = []
        base = self.sys / "class/net"
        try:
            names = sorted(os.listdir(base))
        except OSError:
            names = []
        for name in names:
            if name == "lo" or len(out) >= MAX_HOST_ADAPTERS:
                continue
            mac = _read_or(base / name / "address").strip().replace(":", "")
            idx = _int(_read_or(base / name / "ifindex", "0"))
            if len(mac) == 12 and mac != "000000000000" and idx > 0:
                out.append((idx, [mac]))
        return enc.host_adapters(out)

    def cpu_speed(self) -> int:
        """MHz of the first CPU (/proc/cpuinfo), 0 when unknown."""
        for line in _read_or(self.proc / "cpuinfo").splitlines():
            if line.lower().startswith("cpu mhz"):
                try:
                    return int(float(line.split(":", 1)[1]))
                except ValueError:
                    return 0
        return 0

    def cpu(self) -> dict[str, Any]:
        """0:2003 (80-byte layout with steal/guest/guest_nice)."""
        la = _read_or(self.proc / "loadavg", "0 0 0 0/0 0").split()
        run_total = la[3].split("/") if len(la) > 3 else ["0", "0"]
        f: dict[str, Any] = {"load_one": float(la[0]), "load_five": float(la[1]),
                             "load_fifteen": float(la[2]),
                             "proc_total": _int(run_total[1]) if len(run_total) > 1 else 0,
                             "cpu_num": os.cpu_count() or 0, "cpu_speed": self.cpu_speed(),
                             "uptime": _u32(int(float(
                                 (_read_or(self.proc / "uptime", "0").split() or ["0"])[0])))}
        ms = 1000 // max(1, self.clk_tck)
        for line in _read_or(self.proc / "stat").splitlines():
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "cpu":
                v = [_int(x) for x in parts[1:]] + [0] * 10
                for name, i in (("cpu_user", 0), ("cpu_nice", 1), ("cpu_system", 2), ("cpu_idle", 3),
                                ("cpu_wio", 4), ("cpu_intr", 5), ("cpu_sintr", 6), ("cpu_steal", 7),
                                ("cpu_guest", 8), ("cpu_guest_nice", 9)):
                    f[name] = _u32(v[i] * ms)
            elif parts[0] == "intr" and len(parts) > 1:
                f["interrupts"] = _u32(_int(parts[1]))
            elif parts[0] == "ctxt" and len(parts) > 1:
                f["contexts"] = _u32(_int(parts[1]))
            elif parts[0] == "procs_running" and len(parts) > 1:
                f["proc_run"] = _int(parts[1])
        return enc.host_cpu(**f)

    def meminfo(self) -> dict[str, int]:
        """/proc/meminfo in bytes."""
        out: dict[str, int] = {}
        for line in _read_or(self.proc / "meminfo").splitlines():
            k, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                out[k] = _int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
        return out

    def memory(self, mi: Mapping[str, int] | None = None) -> dict[str, Any]:
        """0:2004."""
        mi = self.meminfo() if mi is None else mi
        vm: dict[str, int] = {}
        for line in _read_or(self.proc / "vmstat").splitlines():
            k, _, v = line.partition(" ")
            vm[k] = _int(v)
        return enc.host_memory(
            mem_total=mi.get("MemTotal", 0), mem_free=mi.get("MemFree", 0),
            mem_shared=mi.get("Shmem", 0), mem_buffers=mi.get("Buffers", 0),
            mem_cached=mi.get("Cached", 0), swap_total=mi.get("SwapTotal", 0),
            swap_free=mi.get("SwapFree", 0), page_in=_u32(vm.get("pgpgin", 0)),
            page_out=_u32(vm.get("pgpgout", 0)), swap_in=_u32(vm.get("pswpin", 0)),
            swap_out=_u32(vm.get("pswpout", 0)))

    def disk(self) -> dict[str, Any]:
        """0:2005: local filesystems (statvfs, one per device) and whole-disk /proc/diskstats."""
        total = free = 0
        max_used = -1
        seen: set[str] = set()
        for line in _read_or(self.proc / "mounts").splitlines():
            parts = line.split()
            if len(parts) < 3 or parts[2] not in LOCAL_FS or parts[0] in seen:
                continue
            seen.add(parts[0])
            try:
                st = os.statvfs(parts[1].replace("\\040", " "))
            except OSError:
                continue
            t, fr = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
            total, free = total + t, free + fr
            if t > 0:
                max_used = max(max_used, int(10000 * (t - fr) / t))
        if not seen:  # containers and odd roots: the root filesystem
            try:
                st = os.statvfs("/")
                total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
                max_used = int(10000 * (total - free) / total) if total else -1
            except OSError:
                pass
        f = {"disk_total": total, "disk_free": free, "part_max_used": max_used}
        rd = rb = rt = wr = wb = wt = 0
        block = self.sys / "block"
        for line in _read_or(self.proc / "diskstats").splitlines():
            p = line.split()
            if len(p) < 14:
                continue
            name = p[2]
            if name.startswith(("loop", "ram", "zram", "fd", "sr")):
                continue
            if block.is_dir() and not (block / name.replace("/", "!")).exists():
                continue  # a partition: counted in its disk
            v = [_int(x) for x in p[3:14]]
            rd, rb, rt = rd + v[0], rb + v[2] * 512, rt + v[3]
            wr, wb, wt = wr + v[4], wb + v[6] * 512, wt + v[7]
        f.update(reads=_u32(rd), bytes_read=_u64(rb), read_time=_u32(rt), writes=_u32(wr),
                 bytes_written=_u64(wb), write_time=_u32(wt))
        return enc.host_disk_io(**f)

    def net(self) -> dict[str, Any]:
        """0:2006: /proc/net/dev, non-loopback interfaces summed."""
        try:
            t = net_totals(self.proc / "net/dev")
        except OSError:
            t = dict.fromkeys(("rx_bytes", "rx_packets", "rx_errs", "rx_drop", "tx_bytes",
                               "tx_packets", "tx_errs", "tx_drop"), 0)
        return enc.host_net_io(bytes_in=_u64(t["rx_bytes"]), pkts_in=_u32(t["rx_packets"]),
                               errs_in=_u32(t["rx_errs"]), drops_in=_u32(t["rx_drop"]),
                               bytes_out=_u64(t["tx_bytes"]), packets_out=_u32(t["tx_packets"]),
                               errs_out=_u32(t["tx_errs"]), drops_out=_u32(t["tx_drop"]))

    def mib2(self) -> list[dict[str, Any]]:
        """0:2007-0:2010 from /proc/net/snmp (values u32; -1 such as Tcp MaxConn -> all ones)."""
        snmp = _snmp(self.proc / "net/snmp")
        out = []
        for rec, (key, names, fields) in _MIB2.items():
            vals = snmp.get(key)
            if not vals:
                continue
            out.append(enc.counter_record(rec, **{
                f: _u32(vals.get(n, 0)) for n, f in zip(names.split(), fields.split(), strict=True)}))
        return out

    def records(self, num_domains: int) -> list[dict[str, Any]]:
        """Every record of the host sample (2:1), in hsflowd's order (reversed, as it sends)."""
        mi = self.meminfo()
        cpu = self.cpu()
        recs = [self.descr(), self.net(), cpu, self.memory(mi), self.disk(), *self.mib2(),
                self.adapters(),
                enc.virt_node(mhz=cpu["cpu_speed"], cpus=os.cpu_count() or 0,
                              memory=mi.get("MemTotal", 0), memory_free=mi.get("MemFree", 0),
                              num_domains=num_domains)]
        return recs[::-1]


# ==================================================================================================
# containers (cgroups)
# ==================================================================================================
@dataclass
class ContainerInfo:
    """What the agent needs from ``docker inspect``."""

    id: str
    name: str
    pid: int
    state: int                 # virDomainState: 1 running, 3 paused
    nr_cpus: int
    memory_limit: int = 0      # HostConfig.Memory (0: none)


class ContainerGone(Exception):
    """The container's process (and so its cgroup) disappeared while it was being read."""


class CgroupReader:
    """Finds a process's cgroups (v1 controllers and/or the v2 unified tree) and reads counters."""

    def __init__(self, proc: str | Path = "/proc") -> None:
        self.proc = Path(proc)
        self.v1: dict[str, Path] = {}     # controller -> mount point
        self.v2: Path | None = None
        for line in _read_or(self.proc / "self/mounts").splitlines():
            p = line.split()
            if len(p) < 4:
                continue
            if p[2] == "cgroup2" and self.v2 is None:
                self.v2 = Path(p[1])
            elif p[2] == "cgroup":
                for opt in p[3].split(","):
                    if opt in ("cpuacct", "memory", "blkio", "cpu"):
                        self.v1.setdefault(opt, Path(p[1]))

    def paths(self, pid: int) -> dict[str, str]:
        """/proc/<pid>/cgroup -> {controller: path}; the v2 entry is under key ``""``."""
        try:
            text = _read(self.proc / str(pid) / "cgroup")
        except OSError as exc:
            raise ContainerGone(f"pid {pid}: {exc}") from None
        out: dict[str, str] = {}
        for line in text.splitlines():
            parts = line.split(":", 2)
            if len(parts) == 3:
                for ctrl in parts[1].split(",") if parts[1] else [""]:
                    out[ctrl] = parts[2]
        return out

    def _v1(self, ctrl: str, paths: Mapping[str, str]) -> Path | None:
        if ctrl in self.v1 and ctrl in paths:
            return self.v1[ctrl] / paths[ctrl].lstrip("/")
        return None

    def _v2(self, paths: Mapping[str, str]) -> Path | None:
        if self.v2 is not None and "" in paths:
            return self.v2 / paths[""].lstrip("/")
        return None

    def read(self, pid: int) -> dict[str, int]:
        """cpu_ns, mem, mem_limit (0: unlimited), rd_bytes, wr_bytes, rd_req, wr_req.

        Raises ContainerGone when neither the v1 nor the v2 files of the process can be read."""
        paths = self.paths(pid)
        out = {"cpu_ns": 0, "mem": 0, "mem_limit": 0, "rd_bytes": 0, "wr_bytes": 0, "rd_req": 0,
               "wr_req": 0}
        v2 = self._v2(paths)
        found = False
        cpu = self._v1("cpuacct", paths)
        if cpu is not None and (cpu / "cpuacct.usage").exists():
            out["cpu_ns"] = _int(_read_or(cpu / "cpuacct.usage", "0"))
            found = True
        elif v2 is not None and (v2 / "cpu.stat").exists():
            for line in _read_or(v2 / "cpu.stat").splitlines():
                k, _, v = line.partition(" ")
                if k == "usage_usec":
                    out["cpu_ns"] = _int(v) * 1000
                    found = True
        mem = self._v1("memory", paths)
        if mem is not None and (mem / "memory.usage_in_bytes").exists():
            out["mem"] = _int(_read_or(mem / "memory.usage_in_bytes", "0"))
            lim = _int(_read_or(mem / "memory.limit_in_bytes", "0"))
            out["mem_limit"] = 0 if lim >= UNLIMITED else lim
            found = True
        elif v2 is not None and (v2 / "memory.current").exists():
            out["mem"] = _int(_read_or(v2 / "memory.current", "0"))
            lim_s = _read_or(v2 / "memory.max", "max").strip()
            out["mem_limit"] = 0 if lim_s == "max" else _int(lim_s)
            found = True
        blk = self._v1("blkio", paths)
        if blk is not None and (blk / "blkio.throttle.io_service_bytes").exists():
            for fname, rk, wk in (("blkio.throttle.io_service_bytes", "rd_bytes", "wr_bytes"),
                                  ("blkio.throttle.io_serviced", "rd_req", "wr_req")):
                for line in _read_or(blk / fname).splitlines():
                    p = line.split()
                    if len(p) == 3 and p[1] in ("Read", "Write"):
                        out[rk if p[1] == "Read" else wk] += _int(p[2])
        elif v2 is not None and (v2 / "io.stat").exists():
            for line in _read_or(v2 / "io.stat").splitlines():
                for kv in line.split()[1:]:
                    k, _, v = kv.partition("=")
                    key = {"rbytes": "rd_bytes", "wbytes": "wr_bytes", "rios": "rd_req",
                           "wios": "wr_req"}.get(k)
                    if key:
                        out[key] += _int(v)
        if not found:
            raise ContainerGone(f"pid {pid}: no readable cgroup counters")
        return out


# ==================================================================================================
# datagrams
# ==================================================================================================
def pack_samples(samples: Sequence[dict[str, Any]], header_len: int,
                 limit: int = MAX_DATAGRAM) -> list[list[dict[str, Any]]]:
    """Group samples into datagrams of at most ``limit`` bytes (a sample too big on its own goes
    alone, it is never cut)."""
    groups: list[list[dict[str, Any]]] = []
    cur: list[dict[str, Any]] = []
    size = header_len
    for s in samples:
        n = len(enc.encode_sample(s))
        if cur and size + n > limit:
            groups.append(cur)
            cur, size = [], header_len
        cur.append(s)
        size += n
    if cur:
        groups.append(cur)
    return groups


@dataclass
class AgentStats:
    """Counts since the agent started (logged at debug level each poll, and at exit)."""

    polls: int = 0
    datagrams: int = 0
    bytes: int = 0
    samples: int = 0
    containers: int = 0             # container samples sent
    containers_skipped: int = 0     # vanished between list and read, or unreadable
    engine_errors: int = 0          # engine unreachable / API failures
    send_errors: int = 0
    read_errors: int = 0            # host /proc reads that failed
    by_reason: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.containers_skipped += 1
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1


DockerFactory = Callable[[], Any]


def _default_docker() -> Any:
    import docker  # imported lazily: the rest of fastflow does not need the SDK

    return docker.from_env(timeout=10).api


class HostAgent:
    """The agent: ``poll()`` reads and sends once; ``run(stop)`` polls until ``stop`` is set."""

    def __init__(self, collectors: Sequence[Collector], polling: float = 10.0,
                 agent_address: str | None = None, sub_agent_id: int = DEFAULT_SUB_AGENT_ID,
                 docker_factory: DockerFactory | None = _default_docker,
                 proc: str | Path = "/proc", sys_root: str | Path = "/sys",
                 max_datagram: int = MAX_DATAGRAM) -> None:
        if not collectors:
            raise ValueError("at least one collector is needed")
        if not polling > 0:
            raise ValueError(f"polling interval must be > 0, got {polling}")
        self.collectors = list(collectors)
        self.polling = float(polling)
        self.agent = agent_address or self._guess_address()
        ipaddress.ip_address(self.agent)  # ValueError when not an address
        self.sub_agent_id = int(sub_agent_id)
        self.docker_factory = docker_factory
        self.proc = Path(proc)
        self.host = HostReader(proc, sys_root)
        self.cgroups = CgroupReader(proc)
        self.max_datagram = max_datagram
        self.stats = AgentStats()
        self._start = time.monotonic()
        self._seq = 0
        self._sample_seq: dict[tuple[int, int], int] = {}
        self._index: dict[str, int] = {}          # container id -> index
        self._taken: dict[int, str] = {}          # index -> container id
        self._last_seen: dict[str, float] = {}
        self._inspect: dict[str, ContainerInfo] = {}
        self._docker: Any = None
        self._engine_down = False
        self._socks: dict[int, socket.socket] = {}
        self._header_len = len(enc.encode_datagram(enc.datagram(self.agent, [])))

    # setup ----------------------------------------------------------------------------------------
    def _guess_address(self) -> str:
        """The source address the kernel would use towards the first collector (no packet sent)."""
        c = self.collectors[0]
        try:
            with socket.socket(c.family, socket.SOCK_DGRAM) as s:
                s.connect(c.sockaddr)
                addr = str(s.getsockname()[0]).split("%")[0]
                return addr
        except OSError:
            return "127.0.0.1" if c.family == socket.AF_INET else "::1"

    def _sock(self, family: int) -> socket.socket:
        s = self._socks.get(family)
        if s is None:
            s = socket.socket(family, socket.SOCK_DGRAM)
            self._socks[family] = s
        return s

    def close(self) -> None:
        """Close the sockets and the engine connection."""
        for s in self._socks.values():
            s.close()
        self._socks.clear()
        if self._docker is not None:
            try:
                self._docker.close()
            except Exception:  # noqa: BLE001 - closing a dead connection
                pass
            self._docker = None

    def uptime_ms(self) -> int:
        """ms since the agent started (u32, wraps after 49.7 days)."""
        return _u32(int((time.monotonic() - self._start) * 1000))

    def _next_sample_seq(self, st: int, si: int) -> int:
        n = _u32(self._sample_seq.get((st, si), 0) + 1) or 1
        self._sample_seq[(st, si)] = n
        return n

    # containers -----------------------------------------------------------------------------------
    def _client(self) -> Any:
        if self._docker is None and self.docker_factory is not None:
            self._docker = self.docker_factory()
        return self._docker

    def _engine_failed(self, exc: BaseException) -> None:
        self.stats.engine_errors += 1
        if not self._engine_down:
            log.warning("Docker engine unavailable (%s); sending the host sample only, retrying "
                        "every %.3g s", exc, self.polling)
        self._engine_down = True
        if self._docker is not None:
            try:
                self._docker.close()
            except Exception:  # noqa: BLE001
                pass
        self._docker = None

    def list_containers(self) -> list[dict[str, Any]]:
        """Running and paused containers (the engine's list), [] when the engine is down."""
        if self.docker_factory is None:
            return []
        try:
            client = self._client()
            items = list(client.containers())
        except Exception as exc:  # noqa: BLE001 - any engine / transport failure
            self._engine_failed(exc)
            return []
        if self._engine_down:
            log.info("Docker engine reachable again")
            self._engine_down = False
        return items

    def _inspect_info(self, cid: str) -> ContainerInfo:
        info = self._inspect.get(cid)
        if info is not None:
            # still the same process? (a restarted container has a new init pid)
            try:
                if cid in _read(self.proc / str(info.pid) / "cgroup"):
                    return info
            except OSError:
                pass
        data = self._client().inspect_container(cid)
        st = data.get("State") or {}
        pid = int(st.get("Pid") or 0)
        if not st.get("Running") or pid <= 0:
            raise ContainerGone(f"{cid[:12]} not running")
        hc = data.get("HostConfig") or {}
        info = ContainerInfo(id=cid, name=str(data.get("Name") or cid[:12]).lstrip("/"), pid=pid,
                             state=3 if st.get("Paused") else 1, nr_cpus=_nr_cpus(hc),
                             memory_limit=int(hc.get("Memory") or 0))
        self._inspect[cid] = info
        return info

    def _index_of(self, cid: str) -> int:
        idx = self._index.get(cid)
        if idx is None:
            idx = container_index(cid, self._taken)
            self._index[cid] = idx
            self._taken[idx] = cid
        return idx

    def container_sample(self, item: Mapping[str, Any]) -> dict[str, Any] | None:
        """The 3:<index> sample of one listed container, or None (skipped and counted)."""
        cid = str(item.get("Id") or "")
        if not cid:
            self.stats.skip("no_id")
            return None
        try:
            info = self._inspect_info(cid)
            cg = self.cgroups.read(info.pid)
            try:
                net = net_totals(self.proc / str(info.pid) / "net/dev")
            except OSError as exc:
                raise ContainerGone(f"{cid[:12]}: {exc}") from None
        except ContainerGone as exc:
            log.debug("container skipped: %s", exc)
            self._inspect.pop(cid, None)
            self.stats.skip("gone")
            return None
        except Exception as exc:  # noqa: BLE001 - 404 from inspect (removed) or engine failure
            status = getattr(getattr(exc, "response", None), "status_code", None)
            self._inspect.pop(cid, None)
            if status == 404:
                log.debug("container %s vanished before inspect", cid[:12])
                self.stats.skip("gone")
            else:
                log.warning("container %s skipped: %s", cid[:12], exc)
                self.stats.skip("error")
            return None
        if str(item.get("State", "")).lower() == "paused":
            info.state = 3
        idx = self._index_of(cid)
        self._last_seen[cid] = time.monotonic()
        limit = cg["mem_limit"] or info.memory_limit
        recs = [
            enc.host_descr(hostname=_trim_utf8(info.name, 64), uuid=container_uuid(cid),
                           machine_type=self.host.machine_type, os_name=2,
                           os_release=_trim_utf8(self.host.release, 32)),
            enc.host_adapters([]),
            enc.host_parent(2, 1),
            enc.virt_cpu(state=info.state, cpu_time=cg["cpu_ns"] // 1_000_000,
                         nr_virt_cpu=info.nr_cpus),
            enc.virt_memory(memory=cg["mem"], max_memory=limit),
            enc.virt_disk_io(capacity=0, allocation=0, available=0, rd_req=_u32(cg["rd_req"]),
                             rd_bytes=_u64(cg["rd_bytes"]), wr_req=_u32(cg["wr_req"]),
                             wr_bytes=_u64(cg["wr_bytes"]), errs=0),
            enc.virt_net_io(rx_bytes=_u64(net["rx_bytes"]), rx_packets=_u32(net["rx_packets"]),
                            rx_errs=_u32(net["rx_errs"]), rx_drop=_u32(net["rx_drop"]),
                            tx_bytes=_u64(net["tx_bytes"]), tx_packets=_u32(net["tx_packets"]),
                            tx_errs=_u32(net["tx_errs"]), tx_drop=_u32(net["tx_drop"])),
        ]
        return enc.counter_sample((3, idx), recs[::-1], self._next_sample_seq(3, idx),
                                  expanded=True)

    def _forget_old(self) -> None:
        """Drop state of containers not seen for an hour (bounded memory on busy hosts)."""
        cutoff = time.monotonic() - max(3600.0, 10 * self.polling)
        for cid in [c for c, t in self._last_seen.items() if t < cutoff]:
            idx = self._index.pop(cid, None)
            if idx is not None:
                self._taken.pop(idx, None)
                self._sample_seq.pop((3, idx), None)
            self._last_seen.pop(cid, None)
            self._inspect.pop(cid, None)

    # one poll -------------------------------------------------------------------------------------
    def host_sample(self, num_domains: int) -> dict[str, Any] | None:
        """The 2:1 sample, or None when /proc could not be read (counted)."""
        try:
            recs = self.host.records(num_domains)
        except (OSError, ValueError, IndexError) as exc:
            self.stats.read_errors += 1
            log.warning("host counters unreadable: %s", exc)
            return None
        return enc.counter_sample((2, 1), recs, self._next_sample_seq(2, 1), expanded=True)

    def build(self) -> list[bytes]:
        """Read everything once and return the datagrams (sequence numbers advance)."""
        items = self.list_containers()
        samples: list[dict[str, Any]] = []
        for item in items:
            s = self.container_sample(item)
            if s is not None:
                samples.append(s)
        live = {str(i.get("Id")) for i in items}
        for cid in [c for c in self._inspect if c not in live]:
            self._inspect.pop(cid, None)
        host = self.host_sample(len(samples))
        if host is not None:
            samples.insert(0, host)
        self._forget_old()
        uptime = self.uptime_ms()
        out = []
        for group in pack_samples(samples, self._header_len, self.max_datagram):
            self._seq = _u32(self._seq + 1) or 1
            out.append(enc.encode_datagram(enc.datagram(
                self.agent, group, sequence_number=self._seq, uptime=uptime,
                sub_agent_id=self.sub_agent_id)))
        self.stats.samples += len(samples)
        self.stats.containers += len(samples) - (host is not None)
        return out

    def send(self, datagrams: Iterable[bytes]) -> int:
        """Send to every collector; returns datagrams sent (failures are logged and counted)."""
        n = 0
        for d in datagrams:
            for c in self.collectors:
                try:
                    self._sock(c.family).sendto(d, c.sockaddr)
                    n += 1
                    self.stats.bytes += len(d)
                except OSError as exc:
                    self.stats.send_errors += 1
                    if self.stats.send_errors in (1, 10, 100) or self.stats.send_errors % 1000 == 0:
                        log.warning("send to %s failed (%d so far): %s", c, self.stats.send_errors,
                                    exc)
        self.stats.datagrams += n
        return n

    def poll(self) -> int:
        """One polling round: read, encode, send. Returns datagrams sent."""
        self.stats.polls += 1
        n = self.send(self.build())
        log.debug("poll %d: %d datagrams, stats %s", self.stats.polls, n, self.stats)
        return n

    def run(self, stop: threading.Event, max_polls: int | None = None) -> None:
        """Poll every ``polling`` seconds (first poll at once) until ``stop`` is set."""
        next_t = time.monotonic()
        polls = 0
        while not stop.is_set():
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - never die on one bad round
                log.exception("poll failed; continuing")
            polls += 1
            if max_polls is not None and polls >= max_polls:
                break
            next_t += self.polling
            now = time.monotonic()
            if next_t < now:  # overran: skip the missed ticks
                next_t = now + self.polling - (now - next_t) % self.polling
            stop.wait(next_t - now)


def _nr_cpus(hc: Mapping[str, Any]) -> int:
    """vCPUs of a container: NanoCpus, else CpuQuota/CpuPeriod, else its cpuset, else the host's."""
    host = os.cpu_count() or 1
    nano = int(hc.get("NanoCpus") or 0)
    if nano > 0:
        return max(1, min(host, -(-nano // 1_000_000_000)))
    quota, period = int(hc.get("CpuQuota") or 0), int(hc.get("CpuPeriod") or 0) or 100_000
    if quota > 0:
        return max(1, min(host, -(-quota // period)))
    cpuset = str(hc.get("CpusetCpus") or "")
    if cpuset:
        n = 0
        for part in cpuset.split(","):
            a, _, b = part.partition("-")
            try:
                n += (int(b) - int(a) + 1) if b else 1
            except ValueError:
                return host
        return max(1, n)
    return host


# ==================================================================================================
# command line
# ==================================================================================================
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``fastflow agent`` options."""
    parser.add_argument("--collector", action="append", required=True, metavar="HOST:PORT",
                        help="where to send sFlow (repeatable; port defaults to 6343; "
                             "IPv6 as [ADDR]:PORT)")
    parser.add_argument("--polling", type=float, default=10.0, metavar="SECONDS",
                        help="counter polling interval (default 10)")
    parser.add_argument("--agent-address", metavar="A",
                        help="agent address in the datagrams (default: the source address "
                             "towards the first collector)")
    parser.add_argument("--sub-agent-id", type=int, default=DEFAULT_SUB_AGENT_ID, metavar="N",
                        help=f"sub-agent id (default {DEFAULT_SUB_AGENT_ID}, as hsflowd)")
    parser.add_argument("--no-docker", action="store_true",
                        help="send the host sample only (do not contact the Docker engine)")
    parser.add_argument("--max-polls", type=int, default=None, metavar="N",
                        help=argparse.SUPPRESS)  # for tests: stop after N polls


def main(args: argparse.Namespace) -> int:
    """Run until SIGINT/SIGTERM (exit 0; SIGHUP is logged, not fatal); 2 on bad arguments."""
    try:
        collectors = [parse_collector(c) for c in args.collector]
        if not 0 <= args.sub_agent_id <= U32:
            raise ValueError(f"--sub-agent-id {args.sub_agent_id} out of range")
        if args.max_polls is not None and args.max_polls < 1:
            raise ValueError("--max-polls must be >= 1")
        agent = HostAgent(collectors, polling=args.polling, agent_address=args.agent_address,
                          sub_agent_id=args.sub_agent_id,
                          docker_factory=None if args.no_docker else _default_docker)
    except ValueError as exc:
        print(f"fastflow agent: {exc}", file=sys.stderr)
        return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s")
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if not stop.is_set():
            log.info("%s received, stopping", signal.Signals(signum).name)
        stop.set()

    def on_hup(_signum: int, _frame: Any) -> None:
        log.info("SIGHUP: nothing to reload (containers are read from Docker at every poll); "
                 "still running")

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    old[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hup)
    log.info("fastflow agent: agent %s sub-agent %d, collectors %s, polling every %.3g s%s",
             agent.agent, agent.sub_agent_id, ", ".join(str(c) for c in collectors), agent.polling,
             "" if agent.docker_factory else " (host only)")
    try:
        agent.run(stop, max_polls=args.max_polls)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        agent.close()
        log.info("stopped: %d polls, %d datagrams, %d container samples, %d skipped, "
                 "%d engine errors, %d send errors", agent.stats.polls, agent.stats.datagrams,
                 agent.stats.containers, agent.stats.containers_skipped, agent.stats.engine_errors,
                 agent.stats.send_errors)
    return 0

