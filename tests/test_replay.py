"""fastflow replay: real captures re-sent over real UDP sockets on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastflow.sources._replay as _replay
from _udp_util import Receiver, header_fields, sample_seqs
from fastflow import pcap
from fastflow.sources.replay import SeqRewriter, parse_hostport, replay


def test_parse_hostport() -> None:
    assert parse_hostport("127.0.0.1:6343") == ("127.0.0.1", 6343)
    assert parse_hostport("[::1]:9") == ("::1", 9)
    assert parse_hostport("localhost") == ("localhost", 6343)
    for bad in ("127.0.0.1:x", ":5", "h:0", "h:70000"):
        with pytest.raises(ValueError):
            parse_hostport(bad)


def test_send_batch_counts_every_datagram() -> None:
    rx = Receiver()
    n = 5000
    payloads = [bytes([i & 0xFF]) * (1 + i % 300) for i in range(n)]
    buf = np.frombuffer(b"".join(payloads), np.uint8)
    lengths = np.array([len(p) for p in payloads])
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(rx.addr)
    sent, errors, _e = _replay.send_batch(s.fileno(), buf, offsets, lengths)
    s.close()
    got = rx.wait(n)
    assert (sent, errors) == (n, 0)
    assert [g[1] for g in got] == payloads


def test_send_batch_bad_offsets() -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(("127.0.0.1", 9))
    with pytest.raises(ValueError):
        _replay.send_batch(s.fileno(), b"abc", [0, 2], [1, 5])
    with pytest.raises(ValueError):
        _replay.send_batch(s.fileno(), b"abc", [0], [1, 2])
    s.close()


def test_send_to_closed_port_counts_errors_not_crash() -> None:
    # nothing listens: loopback answers ICMP port unreachable -> ECONNREFUSED on later sends
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    addr = probe.getsockname()
    probe.close()
    buf = np.zeros(100 * 10, np.uint8)
    st = replay(buf, np.arange(100) * 10, np.full(100, 10), None, addr, loops=3)
    assert st.sent + st.errors == 300


def test_put_be() -> None:
    b = np.zeros(16, np.uint8)
    _replay.put_be32(b, [1, 9], [0x01020304, 2**32 + 5])
    _replay.put_be64(b, [5 - 5 + 13 - 13 + 5], [0x1122334455667788 >> 32])
    assert bytes(b[1:5]) == b"\x01\x02\x03\x04"
    with pytest.raises(ValueError):
        _replay.put_be32(b, [14], [1])


def test_replay_capture_every_datagram_arrives(swarm_pcap: Path) -> None:
    cap = pcap.read(swarm_pcap)
    n = len(cap.offsets)
    rx = Receiver()
    st = replay(cap.buf, cap.offsets, cap.lengths, cap.ts, rx.addr, loops=20)
    got = rx.wait(20 * n)
    assert st.sent == 20 * n and st.errors == 0 and st.loops == 20
    assert len(got) == 20 * n
    assert got[0][1] == cap.datagram(0) and got[n - 1][1] == cap.datagram(n - 1)


def test_replay_pacing_roughly_honoured(swarm_pcap: Path) -> None:
    cap = pcap.read(swarm_pcap)
    span = float(cap.ts.max() - cap.ts.min())
    speed = span / 1.0          # the whole capture in about one second
    rx = Receiver(idle=3.0)
    st = replay(cap.buf, cap.offsets, cap.lengths, cap.ts, rx.addr, speed=speed)
    got = rx.wait(len(cap.offsets))
    assert len(got) == len(cap.offsets) and st.sent == len(cap.offsets)
    # paced: the datagrams arrive spread over about a second, not in one burst
    spread = got[-1][0] - got[0][0]
    assert spread > 0.4


def test_replay_fixed_rate(swarm_pcap: Path) -> None:
    cap = pcap.read(swarm_pcap)
    rx = Receiver(idle=3.0)
    st = replay(cap.buf, cap.offsets, cap.lengths, cap.ts, rx.addr, rate=200.0)
    got = rx.wait(len(cap.offsets))
    assert st.sent == len(got) == len(cap.offsets)
    assert got[-1][0] - got[0][0] > 0.3    # 124 at 200/s arrive spread over ~0.6 s


def test_replay_duration_bounds_endless_loop(swarm_pcap: Path) -> None:
    cap = pcap.read(swarm_pcap)
    rx = Receiver()
    st = replay(cap.buf, cap.offsets, cap.lengths, cap.ts, rx.addr, rate=2000, loops=0,
                duration=0.3)
    rx.close()
    assert 0 < st.sent < 5000          # stopped after ~0.3 s at 2000/s (~600), not endless


def test_loop_rewrite_gives_continuous_sequences(swarm_pcap: Path) -> None:
    cap = pcap.read(swarm_pcap)
    n = len(cap.offsets)
    loops = 3
    rx = Receiver()
    st = replay(cap.buf, cap.offsets, cap.lengths, cap.ts, rx.addr, loops=loops, rewrite_seq=True)
    got = [g[1] for g in rx.wait(loops * n)]
    assert st.sent == loops * n and len(got) == loops * n and st.skipped_rewrite == 0
    by_agent: dict[tuple[bytes, int], list[tuple[int, int]]] = {}
    by_source: dict[tuple, list[int]] = {}
    for d in got:
        a, sub, seq, up = header_fields(d)
        by_agent.setdefault((a, sub), []).append((seq, up))
        for fmt, src, sseq in sample_seqs(d):
            by_source.setdefault((a, sub, fmt in (1, 3), src), []).append(sseq)
    for key, pairs in by_agent.items():
        seqs = [p[0] for p in pairs]
        ups = [p[1] for p in pairs]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), key     # no restart, no gap
        assert all(b >= a for a, b in zip(ups, ups[1:], strict=False)), key  # never goes back
    for key, seqs in by_source.items():
        assert all(b > a for a, b in zip(seqs, seqs[1:], strict=False)), key
    # the first loop is the capture as it was
    assert got[:n] == cap.datagrams()


def test_rewriter_skips_garbage() -> None:
    buf = np.frombuffer(b"\x00\x00\x00\x04" + b"x" * 40, np.uint8)
    rw = SeqRewriter.build(buf, np.array([0]), np.array([44]), np.zeros(1), 1.0)
    assert rw.skipped == 1 and len(rw.seq_off) == 0


def test_cli_replay(swarm_pcap: Path) -> None:
    rx = Receiver()
    host, port = rx.addr
    r = subprocess.run([sys.executable, "-m", "fastflow", "replay", str(swarm_pcap), "--to",
                        f"{host}:{port}", "--loop", "2", "--rewrite-seq", "--json"],
                       capture_output=True, text=True, timeout=60)
    got = rx.wait(248)
    assert r.returncode == 0, r.stderr
    assert "sent 248 datagrams" in r.stderr
    assert len(got) == 248


def test_cli_replay_needs_destination(swarm_pcap: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "fastflow", "replay", str(swarm_pcap)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "--to" in r.stderr
