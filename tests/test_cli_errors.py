"""The operator's first hour, through the real ``fastflow`` command in a subprocess: one-line
errors that name the port, path or option, and the README's exit-code table (0 ok, 1 runtime
failure or damaged input, 2 usage or configuration error, 130 interrupted).

Every subprocess gets its own HOME / XDG_STATE_HOME so nothing depends on the user's home.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastflow import pcap
from fastflow.sources.simulate import SimulatedSwarm, Simulator, frame_datagrams, parse_demand


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


def cli(*args: str, home: Path, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("FASTFLOW_")
         or k in ("FASTFLOW_CORPUS",)}
    e.update({"HOME": str(home), "XDG_STATE_HOME": str(home / "state")})
    e.update(env or {})
    r = subprocess.run([sys.executable, "-m", "fastflow", *args], capture_output=True,
                       timeout=timeout, env=e)
    # decoded without newline translation, so a progress line's "\r" stays visible
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(),
                                       r.stderr.decode())


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    """The error must be short and without a traceback."""
    assert "Traceback" not in r.stderr, r.stderr
    return r.stderr


@pytest.fixture()
def busy_tcp() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.fixture()
def busy_udp() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", 0))
        yield s.getsockname()[1]


def closed_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small simulated capture (no corpus needed): 3 nodes, 12 ticks."""
    sim = Simulator(3, {"apache": parse_demand("const:300")}, SimulatedSwarm({"apache": 2}))
    frames: list[tuple[float, bytes]] = []
    for k in range(12):
        frames += [(1_700_000_000.0 + 10 * k, d) for d in frame_datagrams(sim.step(10))]
    out = tmp_path_factory.mktemp("cap") / "sim.pcap"
    pcap.write(out, frames)
    return out


# ---------------------------------------------------------------------------- ports and addresses
def test_demo_busy_port_is_one_line_exit_1(home: Path, busy_tcp: int) -> None:
    r = cli("demo", "--http-port", str(busy_tcp), "--duration", "5", home=home)
    assert r.returncode == 1, r.stderr
    err = one_line_error(r)
    assert f"HTTP port {busy_tcp} on 127.0.0.1 is already in use" in err
    assert "--http-port" in err


@pytest.mark.parametrize("args, word", [
    (["--nodes", "0"], "argument --nodes: must be >= 1"),
    (["--duration", "-1"], "argument --duration: must be > 0"),
    (["--speed", "fast"], "argument --speed: expected a number"),
    (["--http-port", "70000"], "argument --http-port: 70000 is not a port number"),
])
def test_demo_bad_values_are_usage_errors(home: Path, args: list[str], word: str) -> None:
    r = cli("demo", *args, home=home)
    assert r.returncode == 2
    assert word in one_line_error(r) and "usage: fastflow demo" in r.stderr


def test_run_busy_http_port_names_it(home: Path, busy_tcp: int) -> None:
    r = cli("run", "--http-port", str(busy_tcp), "--sflow-port", "0", "--no-scaler", home=home)
    assert r.returncode == 1
    assert f"HTTP port {busy_tcp} on 127.0.0.1 is already in use" in one_line_error(r)
    assert "--http-port" in r.stderr


def test_run_busy_sflow_port_names_it(home: Path, busy_udp: int) -> None:
    r = cli("run", "--http-port", "0", "--sflow-port", str(busy_udp), "--no-scaler", home=home)
    assert r.returncode == 1
    assert f"sFlow port {busy_udp} on 0.0.0.0 is already in use" in one_line_error(r)
    assert "--sflow-port" in r.stderr


def test_run_foreign_address_names_it(home: Path) -> None:
    # 192.0.2.1 (TEST-NET-1) is nobody's address here: the bind fails, nothing is sent
    r = cli("run", "--http-port", "0", "--sflow-port", "0", "--bind", "192.0.2.1",
            "--no-scaler", home=home)
    assert r.returncode == 1
    assert "sFlow address 192.0.2.1 is not an address of this host" in one_line_error(r)


def test_public_http_bind_without_token_is_a_config_error(home: Path) -> None:
    r = cli("run", "--http-bind", "0.0.0.0", "--http-port", "0", "--sflow-port", "0", home=home)
    assert r.returncode == 2
    assert "configuration error" in one_line_error(r) and "token" in r.stderr
    r = cli("config", "check", "--http-bind", "0.0.0.0", home=home)
    assert r.returncode == 2 and "token" in r.stderr


def test_missing_tls_dir_fails_at_start(home: Path, tmp_path: Path) -> None:
    env = {"FASTFLOW_SCALER_TLS_DIR": str(tmp_path / "no-such-dir")}
    r = cli("run", "--http-port", "0", "--sflow-port", "0", home=home, env=env, timeout=60)
    assert r.returncode == 2
    assert "tls_dir" in one_line_error(r) and "no such directory" in r.stderr
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "ca.pem").write_text("x")
    r = cli("config", "check", home=home, env={"FASTFLOW_SCALER_TLS_DIR": str(tmp_path / "tls")})
    assert r.returncode == 2 and "missing cert.pem, key.pem" in r.stderr


# ---------------------------------------------------------------------------- files
def test_missing_input_is_2_everywhere(home: Path, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pcap")
    for args in (["decode", missing], ["series", missing, "avg:vir_cpu_utilization"],
                 ["plot", missing, "-o", str(tmp_path / "c.png")],
                 ["replay", missing, "--to", "127.0.0.1:9"]):
        r = cli(*args, home=home)
        assert r.returncode == 2, (args, r.stderr)
        assert f"{missing}: no such file" in one_line_error(r), args


def test_decode_not_a_capture_directory_and_cut(home: Path, tmp_path: Path,
                                                capture: Path) -> None:
    text = tmp_path / "README.md"
    text.write_text("# fastflow\n\nnot a capture\n")
    r = cli("decode", str(text), home=home)
    assert r.returncode == 2 and "not a pcap/pcapng capture" in one_line_error(r)
    r = cli("decode", str(tmp_path), home=home)
    assert r.returncode == 2 and "is a directory" in one_line_error(r)
    cut = tmp_path / "cut.pcap"
    data = capture.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    r = cli("decode", str(cut), "--format", "json", home=home)
    assert r.returncode == 1
    assert "capture damaged after" in one_line_error(r) and "cut short" in r.stderr
    assert r.stdout.count("\n") >= 1            # what was read is still printed
    r = cli("series", str(cut), "avg:vir_cpu_utilization", home=home)
    assert r.returncode == 1 and "capture damaged" in one_line_error(r)
    r = cli("decode", str(capture), home=home)
    assert r.returncode == 0 and "damaged" not in r.stderr
    r = cli("decode", str(capture), "--port", "9999", home=home)
    assert r.returncode == 0 and "try --port 0" in r.stderr


def test_raw_sflow_datagram_still_decodes(home: Path, tmp_path: Path, capture: Path) -> None:
    raw = tmp_path / "one.bin"
    raw.write_bytes(next(pcap.iter_datagrams(capture))[2])
    r = cli("decode", str(raw), "--format", "json", home=home)
    assert r.returncode == 0, r.stderr
    assert "decoding it as one raw sFlow datagram" in r.stderr


def test_unwritable_outputs_are_one_line(home: Path, capture: Path) -> None:
    r = cli("plot", str(capture), "-o", "/nonexistent/d/c.png", home=home)
    assert r.returncode == 2
    assert "cannot write /nonexistent/d/c.png: directory /nonexistent/d does not exist" \
        in one_line_error(r)
    r = cli("simulate", "--pcap", "/nonexistent/d/x.pcap", "--sim-seconds", "20", home=home)
    assert r.returncode == 2
    assert "cannot write /nonexistent/d/x.pcap" in one_line_error(r)


# ---------------------------------------------------------------------------- durations, senders
def test_simulate_too_short_says_so(home: Path) -> None:
    r = cli("simulate", "--to", f"127.0.0.1:{closed_udp_port()}", "--duration", "5", home=home)
    assert r.returncode == 2
    assert "shorter than one polling interval" in one_line_error(r)
    r = cli("simulate", "--pcap", "x.pcap", "--duration", "1", "--sim-seconds", "30", home=home)
    assert r.returncode == 2 and "not allowed with argument --duration" in r.stderr


def test_simulate_duration_is_wall_time(home: Path, tmp_path: Path) -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(10)
    try:
        r = cli("simulate", "--to", f"127.0.0.1:{rx.getsockname()[1]}", "--nodes", "2",
                "--duration", "1", "--speed", "40", home=home)
        assert r.returncode == 0, r.stderr
        # 1 wall second at 40x = 40 simulated s = 4 polls of 10 s
        assert "for 1 wall s (40 simulated s at 40x" in r.stderr
        assert "4 ticks" in r.stderr
        got = 0
        rx.settimeout(0.5)
        try:
            while True:
                rx.recv(65535)
                got += 1
        except TimeoutError:
            pass
        assert got == 8, got        # 2 nodes x 4 ticks, one datagram each
    finally:
        rx.close()
    out = tmp_path / "s.pcap"
    r = cli("simulate", "--pcap", str(out), "--nodes", "1", "--sim-seconds", "50", home=home)
    assert r.returncode == 0 and "5 ticks, 5 datagrams" in r.stderr


def test_simulate_to_closed_port_explains(home: Path) -> None:
    port = closed_udp_port()
    r = cli("simulate", "--to", f"127.0.0.1:{port}", "--duration", "1", "--speed", "60",
            home=home)
    assert r.returncode == 1
    assert f"nothing listening on 127.0.0.1:{port}" in one_line_error(r)


def test_replay_says_flat_out_and_explains_closed_port(home: Path, capture: Path) -> None:
    port = closed_udp_port()
    r = cli("replay", str(capture), "--to", f"127.0.0.1:{port}", "--loop", "20", home=home)
    assert "flat out" in r.stderr
    assert r.returncode == 1
    assert f"ICMP port unreachable: nothing listening on 127.0.0.1:{port}" in one_line_error(r)
    assert "\r" not in r.stderr                      # no progress bar when not a terminal
    help_text = cli("replay", "--help", home=home).stdout
    assert "flat out" in help_text


def test_progress_only_on_a_terminal_or_when_asked(home: Path, capture: Path) -> None:
    r = cli("decode", str(capture), home=home)
    assert r.returncode == 0 and "\r" not in r.stderr
    r = cli("decode", str(capture), home=home, env={"FASTFLOW_PROGRESS": "1"})
    assert r.returncode == 0 and "\rdecoding sim.pcap:" in r.stderr
    r = cli("series", str(capture), "avg:vir_cpu_utilization", home=home,
            env={"FASTFLOW_PROGRESS": "1"})
    assert r.returncode == 0 and "\rseries:" in r.stderr


# ---------------------------------------------------------------------------- help and version
def test_version_and_help(home: Path) -> None:
    from fastflow import __version__

    r = cli("--version", home=home)
    assert r.returncode == 0 and r.stdout.strip() == f"fastflow {__version__}"
    from fastflow.cli import COMMANDS

    for name in COMMANDS:
        r = cli(name, "--help", home=home)
        assert r.returncode == 0, (name, r.stderr)
        assert "example:" in r.stdout and "exit codes:" in r.stdout, name
    demo = cli("demo", "--help", home=home).stdout
    assert "(default: 75.0)" in demo and "(default: 8008)" in demo


def test_unknown_option_is_2(home: Path) -> None:
    r = cli("decode", "--no-such-option", "x", home=home)
    assert r.returncode == 2 and "unrecognized arguments" in r.stderr
