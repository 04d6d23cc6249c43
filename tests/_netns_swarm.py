"""A real multi-manager swarm on this machine: several ``dockerd`` instances, each in a network
namespace of its own on a private bridge (/work/shared/swarm-in-netns.md, followed exactly).

* Only the network namespace is entered (``nsenter --net=``); each engine has its own
  ``--data-root``, ``--exec-root``, ``--pidfile`` and ``-H unix://`` socket, and runs with
  ``--bridge=none --iptables=false`` so the host's firewall is left alone.
* Wiring: a bridge in the root namespace (10.254.N.1/24, N random per run so that concurrent runs
  do not collide), one veth pair per namespace (10.254.N.2, .3, ...), ``lo`` up; the FORWARD
  ACCEPT rule for the bridge (the host engine's FORWARD policy is DROP).
* Clean-up in reverse: ``swarm leave --force``, each engine stopped by its pid file, anything left
  mounted under its exec/data root unmounted, the iptables rule, the bridge, the namespaces.

The main engine's swarm membership is never touched: every docker command here names its engine's
socket (``DOCKER_HOST``). Traffic goes only to these namespaces' addresses.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any


class NetnsError(RuntimeError):
    """The environment cannot host extra engines (reason in the message)."""


def _run(*cmd: str, check: bool = True, timeout: float = 60, env: dict[str, str] | None = None,
         input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    r = subprocess.run(list(cmd), capture_output=True, timeout=timeout, env=env, input=input)
    if check and r.returncode != 0:
        raise NetnsError(f"{' '.join(cmd)}: exit {r.returncode}: "
                         f"{(r.stderr or r.stdout).decode(errors='replace').strip()[-400:]}")
    return r


def unavailable_reason() -> str | None:
    """None when extra engines can be started here; else why not."""
    if os.geteuid() != 0:
        return "not root"
    for tool in ("ip", "nsenter", "iptables", "dockerd", "docker"):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    return None


class Engine:
    def __init__(self, root: Path, ns: str, addr: str) -> None:
        self.root, self.ns, self.addr = root, ns, addr
        self.sock = root / "d.sock"
        self.pidfile = root / "d.pid"
        self.log = root / "dockerd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host}

    def docker(self, *args: str, check: bool = True, timeout: float = 120,
               input: bytes | None = None) -> str:
        return _run("docker", *args, check=check, timeout=timeout, env=self.env(),
                    input=input).stdout.decode().strip()

    def start(self) -> None:
        for d in ("data", "exec"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["nsenter", f"--net=/var/run/netns/{self.ns}", "dockerd",
                 "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
                 "--pidfile", str(self.pidfile), "-H", self.host, "--bridge=none",
                 "--iptables=false", "--ip-masq=false", "--log-level=warn"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise NetnsError(f"dockerd in {self.ns} exited: {self.log.read_text()[-600:]}")
            if _run("docker", "version", check=False, timeout=10, env=self.env()).returncode == 0:
                return
            time.sleep(0.3)
        raise NetnsError(f"dockerd in {self.ns} did not answer: {self.log.read_text()[-600:]}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30) -> None:
        """Stop this engine (SIGTERM by its pid, then SIGKILL)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        # containerd-shims it left (new sessions): by the pids under its exec root
        for pidf in (self.root / "exec").glob("**/*.pid"):
            try:
                os.kill(int(pidf.read_text().strip()), signal.SIGKILL)
            except (ValueError, OSError):
                pass

    def node_id(self) -> str:
        return self.docker("info", "--format", "{{.Swarm.NodeID}}")


class NetnsSwarm:
    """``n`` engines in network namespaces forming one swarm (all managers)."""

    def __init__(self, n: int = 3) -> None:
        tag = f"{random.randrange(16 ** 5):05x}"
        self.subnet = random.randrange(20, 250)
        self.bridge = f"ffha{tag}"
        self.tmp = Path(tempfile.mkdtemp(prefix="fastflow-netns-"))
        self.engines = [Engine(self.tmp / f"e{i}", f"ffha{tag}n{i}",
                               f"10.254.{self.subnet}.{i + 2}") for i in range(n)]
        self._rule = ["FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"]
        self._made: list[str] = []

    def gateway(self) -> str:
        return f"10.254.{self.subnet}.1"

    def start(self) -> NetnsSwarm:
        try:
            self._wire()
            for e in self.engines:
                e.start()
            first = self.engines[0]
            first.docker("swarm", "init", "--advertise-addr", first.addr,
                         "--listen-addr", f"{first.addr}:2377")
            token = first.docker("swarm", "join-token", "-q", "manager")
            for e in self.engines[1:]:
                e.docker("swarm", "join", "--token", token, "--advertise-addr", e.addr,
                         "--listen-addr", f"{e.addr}:2377", f"{first.addr}:2377")
        except BaseException:
            self.close()
            raise
        return self

    def _wire(self) -> None:
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        self._made.append("bridge")
        _run("ip", "addr", "add", f"{self.gateway()}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        _run("iptables", "-I", *self._rule)
        self._made.append("rule")
        for i, e in enumerate(self.engines):
            _run("ip", "netns", "add", e.ns)
            self._made.append(f"ns:{e.ns}")
            host_end, ns_end = f"{self.bridge}h{i}", f"{self.bridge}c{i}"
            _run("ip", "link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            _run("ip", "link", "set", host_end, "master", self.bridge)
            _run("ip", "link", "set", host_end, "up")
            _run("ip", "link", "set", ns_end, "netns", e.ns)
            _run("ip", "-n", e.ns, "link", "set", ns_end, "name", "eth0")
            _run("ip", "-n", e.ns, "addr", "add", f"{e.addr}/24", "dev", "eth0")
            _run("ip", "-n", e.ns, "link", "set", "eth0", "up")
            _run("ip", "-n", e.ns, "link", "set", "lo", "up")
            _run("ip", "-n", e.ns, "route", "add", "default", "via", self.gateway())

    def leader(self) -> Engine | None:
        """The engine whose node is the Raft leader, asked of any running engine."""
        for e in self.engines:
            if not e.running:
                continue
            out = e.docker("node", "ls", "--format", "{{.ID}} {{.ManagerStatus}}", check=False,
                           timeout=20)
            for line in out.splitlines():
                nid, _, status = line.partition(" ")
                if status.strip() == "Leader":
                    for cand in self.engines:
                        if cand.running and cand.node_id() == nid:
                            return cand
            return None
        return None

    def load_image(self, image: str) -> None:
        """Copy a local image of the main engine into every engine (no registry)."""
        data = _run("docker", "save", image, timeout=300,
                    env={k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}).stdout
        for e in self.engines:
            e.docker("load", "-q", input=data, timeout=300)

    def close(self) -> None:
        """Clean up in reverse; never raises."""
        for e in reversed(self.engines):
            if e.running:
                e.docker("swarm", "leave", "--force", check=False, timeout=30)
        for e in reversed(self.engines):
            try:
                e.stop()
            except Exception:
                pass
        # anything still mounted under our roots (netns files, overlay layers, shm)
        try:
            mounts = Path("/proc/self/mounts").read_text().splitlines()
        except OSError:
            mounts = []
        targets = [m.split()[1] for m in mounts if len(m.split()) > 1
                   and m.split()[1].startswith(str(self.tmp))]
        for t in sorted(targets, key=len, reverse=True):
            _run("umount", "-l", t, check=False)
        for item in reversed(self._made):
            if item == "rule":
                _run("iptables", "-D", *self._rule, check=False)
            elif item == "bridge":
                _run("ip", "link", "del", self.bridge, check=False)
            elif item.startswith("ns:"):
                _run("ip", "netns", "del", item[3:], check=False)
        self._made.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> NetnsSwarm:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()
