"""A second, TLS-only Docker engine in swarm mode for tests (never the main engine).

``TlsEngine`` makes a test CA plus server and client certificates (openssl), starts ``dockerd`` in
the host network namespace with its own data root, exec root, pid file and unix socket, listening on
``tcp://127.0.0.1:2376`` with ``--tlsverify`` (``--bridge=none --iptables=false``: it leaves the
host's firewall alone), inits a swarm on 127.0.0.1:2477 (data path port 4790: the main engine uses
2377/4789), imports the offline busybox image (built from the static busybox as .ci/docker-up.sh
does), and tears all of it down again (swarm leave, engine
stopped by its pid, mounts under its roots unmounted, directories removed).

The client side (what a script's ``http2({certs})`` or the scaler's ``tls_dir`` uses) is
``self.client_dir`` holding ``ca.pem``, ``cert.pem``, ``key.pem``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PORT = 2376
SWARM_ADDR = "127.0.0.1:2477"
DATA_PATH_PORT = "4790"
SOCK_DIR = Path("/run/fftls")
IMAGE = "fastflow-busybox:latest"


def _run(args: list[str], timeout: float = 60, env: dict[str, str] | None = None,
         input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, capture_output=True, timeout=timeout, env=env, input=input,
                          check=False)


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def make_certs(d: Path) -> tuple[Path, Path]:
    """A CA, a server cert for 127.0.0.1/localhost and a client cert; (server_dir, client_dir)."""
    srv, cli = d / "server", d / "client"
    srv.mkdir(parents=True)
    cli.mkdir(parents=True)
    ca_key, ca = d / "ca-key.pem", d / "ca.pem"

    def ok(p: subprocess.CompletedProcess[bytes], what: str) -> None:
        if p.returncode != 0:
            raise RuntimeError(f"openssl {what} failed: {p.stderr.decode(errors='replace')[-400:]}")

    ok(_run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=fastflow test CA", "-keyout", str(ca_key), "-out", str(ca)]), "CA")
    for name, subj, ext in (
            ("server", "/CN=127.0.0.1",
             "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
            ("client", "/CN=fastflow test client", "extendedKeyUsage=clientAuth\n")):
        key, csr, crt, extf = (d / f"{name}-key.pem", d / f"{name}.csr", d / f"{name}.pem",
                               d / f"{name}.ext")
        extf.write_text(ext)
        ok(_run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", subj,
                 "-keyout", str(key), "-out", str(csr)]), f"{name} key")
        ok(_run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
                 "-CAcreateserial", "-days", "2", "-extfile", str(extf), "-out", str(crt)]),
           f"{name} cert")
        out = srv if name == "server" else cli
        shutil.copy(ca, out / "ca.pem")
        shutil.copy(crt, out / "cert.pem")
        shutil.copy(key, out / "key.pem")
    return srv, cli


class TlsEngine:
    """See the module docstring. ``start()`` raises RuntimeError saying which step failed."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="fftls-"))
        self.sock = SOCK_DIR / "docker.sock"
        self.server_dir: Path | None = None
        self.client_dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.root / "dockerd.log"
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{self.sock}")
        self.env.pop("DOCKER_TLS_VERIFY", None)
        self.env.pop("DOCKER_CERT_PATH", None)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{PORT}"

    def docker(self, *args: str, timeout: float = 60,
               input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return _run(["docker", *args], timeout=timeout, env=self.env, input=input)

    def start(self) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("needs root to start a second dockerd")
        if shutil.which("dockerd") is None or shutil.which("openssl") is None:
            raise RuntimeError("dockerd or openssl not installed")
        if _port_in_use(PORT):
            raise RuntimeError(f"127.0.0.1:{PORT} is already in use")
        self.server_dir, self.client_dir = make_certs(self.root / "certs")
        SOCK_DIR.mkdir(parents=True, exist_ok=True)
        s = self.server_dir
        args = ["dockerd", "--data-root", str(self.root / "data"),
                "--exec-root", str(self.root / "exec"), "--pidfile", str(self.root / "docker.pid"),
                "-H", f"unix://{self.sock}", "-H", f"tcp://127.0.0.1:{PORT}", "--tlsverify",
                "--tlscacert", str(s / "ca.pem"), "--tlscert", str(s / "cert.pem"),
                "--tlskey", str(s / "key.pem"), "--bridge=none", "--iptables=false",
                "--ip-masq=false"]
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited: {self.log.read_text()[-800:]}")
            if self.docker("info", "--format", "{{.ServerVersion}}", timeout=10).returncode == 0:
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"dockerd did not answer in 60 s: {self.log.read_text()[-800:]}")
        p = self.docker("swarm", "init", "--listen-addr", SWARM_ADDR, "--advertise-addr",
                        SWARM_ADDR, "--data-path-port", DATA_PATH_PORT, timeout=90)
        if p.returncode != 0:
            raise RuntimeError(f"swarm init failed: {p.stderr.decode(errors='replace')}")
        self._import_image()

    def _import_image(self) -> None:
        """``fastflow-busybox:latest`` from the static busybox, as .ci/docker-up.sh builds it (no
        registry, and no dependence on the main engine)."""
        busybox = next((b for b in ("/bin/busybox", "/usr/bin/busybox")
                        if os.access(b, os.X_OK)), None)
        if busybox is None:
            raise RuntimeError("no busybox to build the test image from (apt-get install "
                               "busybox-static)")
        rootfs = self.root / "rootfs"
        for d in ("bin", "tmp", "etc", "proc", "sys", "dev", "www", "ctl"):
            (rootfs / d).mkdir(parents=True, exist_ok=True)
        shutil.copy(busybox, rootfs / "bin" / "busybox")
        applets = _run([busybox, "--list"]).stdout.decode().split()
        for applet in applets:
            if applet != "busybox":
                (rootfs / "bin" / applet).symlink_to("busybox")
        (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/:/bin/sh\n")
        (rootfs / "etc" / "group").write_text("root:x:0:\n")
        tar = _run(["tar", "-C", str(rootfs), "-c", "."], timeout=60)
        if tar.returncode != 0:
            raise RuntimeError(f"tar of the rootfs failed: {tar.stderr.decode(errors='replace')}")
        p = self.docker("import", "-c", "ENV PATH=/bin", "-c", 'CMD ["/bin/sh"]', "-", IMAGE,
                        timeout=120, input=tar.stdout)
        if p.returncode != 0:
            raise RuntimeError(f"docker import failed: {p.stderr.decode(errors='replace')}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.docker("swarm", "leave", "--force", timeout=60)
            ids = self.docker("ps", "-aq", timeout=30).stdout.decode().split()
            if ids:
                self.docker("rm", "-f", *ids, timeout=60)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        # unmount anything left under our roots (deepest first), then remove them
        try:
            mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
                      if line.split()[1].startswith(str(self.root))]
        except OSError:
            mounts = []
        for m in sorted(mounts, key=len, reverse=True):
            _run(["umount", "-l", m], timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)
        try:
            self.sock.unlink()
        except OSError:
            pass
        try:
            SOCK_DIR.rmdir()
        except OSError:
            pass
