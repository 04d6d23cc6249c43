"""fastflow.collector.ingest: real UDP sockets on loopback, both receivers (recvmmsg and the Python loop)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fastflow.collector.ingest import UdpIngest, src_text

try:
    from fastflow.collector import _ingest  # noqa: F401

    HAVE_CYTHON = True
except ImportError:  # pragma: no cover
    HAVE_CYTHON = False


@pytest.fixture(params=["cython", "python"])
def pure(request: pytest.FixtureRequest) -> bool:
    if request.param == "cython" and not HAVE_CYTHON:
        pytest.fail("fastflow.collector._ingest is not built")
    return request.param == "python"


class Collect:
    """on_batch that keeps copies of everything (5-argument form: with sources)."""

    def __init__(self) -> None:
        self.items: list[tuple[bytes, str, float]] = []
        self.sizes: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, buf: np.ndarray, offsets: np.ndarray, lengths: np.ndarray,
                 ts: np.ndarray, src: np.ndarray) -> None:
        assert offsets.dtype == np.int64 and lengths.dtype == np.int64 and ts.dtype == np.float64
        assert src.shape == (len(offsets), 16)
        with self.lock:
            self.sizes.append(len(offsets))
            for o, n, t, s in zip(offsets.tolist(), lengths.tolist(), ts.tolist(), src, strict=True):
                self.items.append((buf[o : o + n].tobytes(), src_text(s), t))

    def wait(self, n: int, timeout: float = 5.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if len(self.items) >= n:
                    return
            time.sleep(0.01)


@pytest.fixture
def ingest_factory() -> Iterator[Any]:
    made: list[UdpIngest] = []

    def make(**kw: Any) -> UdpIngest:
        kw.setdefault("host", "127.0.0.1")
        kw.setdefault("port", 0)
        kw.setdefault("rcvbuf", 1 << 20)
        ing = UdpIngest(**kw)
        made.append(ing)
        ing.start()
        return ing

    yield make
    for ing in made:
        ing.stop()


def payloads(n: int) -> list[bytes]:
    return [(b"%06d" % i) * (1 + i % 150) for i in range(n)]


def send(datagrams: list[bytes], port: int, host: str = "127.0.0.1",
         family: int = socket.AF_INET, pace: int = 200) -> None:
    """Send to loopback, pausing every ``pace`` datagrams so the receiver keeps up."""
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        for i, d in enumerate(datagrams):
            s.sendto(d, (host, port))
            if pace and i % pace == pace - 1:
                time.sleep(0.002)


def test_all_datagrams_arrive(ingest_factory: Any, pure: bool) -> None:
    col = Collect()
    ing = ingest_factory(on_batch=col, pure_python=pure)
    data = payloads(3000)
    t0 = time.time()
    send(data, ing.port)
    col.wait(len(data))
    t1 = time.time()
    assert [d for d, _, _ in col.items] == data
    assert {s for _, s, _ in col.items} == {"127.0.0.1"}
    ts = np.array([t for _, _, t in col.items])
    assert (ts >= t0 - 1).all() and (ts <= t1 + 1).all()
    st = ing.stats()
    assert st["datagrams"] == 3000 and st["bytes"] == sum(map(len, data))
    assert st["batches"] == len(col.sizes) and st["truncated"] == 0
    assert st["kernel_drops"] == 0 and st["callback_errors"] == 0
    assert max(col.sizes) <= 1024


def test_ipv6_and_dual_stack(ingest_factory: Any, pure: bool) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support")
    col = Collect()
    try:
        ing = ingest_factory(host="::1", on_batch=col, pure_python=pure)
    except OSError as e:
        pytest.skip(f"cannot bind ::1: {e}")
    send([b"six"] * 5, ing.port, "::1", socket.AF_INET6)
    col.wait(5)
    assert [(d, s) for d, s, _ in col.items] == [(b"six", "::1")] * 5
    col2 = Collect()
    ing2 = ingest_factory(host="::", on_batch=col2, pure_python=pure)
    send([b"four"], ing2.port, "127.0.0.1", socket.AF_INET)
    send([b"six"], ing2.port, "::1", socket.AF_INET6)
    col2.wait(2)
    assert sorted((d, s) for d, s, _ in col2.items) == [(b"four", "127.0.0.1"), (b"six", "::1")]


def test_batch_boundaries(ingest_factory: Any, pure: bool) -> None:
    """With the consumer held up, queued datagrams come out in batches of exactly ``batch``."""
    release = threading.Event()
    col = Collect()

    def slow(buf: Any, off: Any, ln: Any, ts: Any, src: Any) -> None:
        release.wait(5)
        col(buf, off, ln, ts, src)

    ing = ingest_factory(on_batch=slow, batch=7, pure_python=pure)
    data = payloads(50)
    send(data[:1], ing.port)
    time.sleep(0.2)          # the first datagram is being handled (blocked) now
    send(data[1:], ing.port, pace=0)
    time.sleep(0.2)
    release.set()
    col.wait(50)
    assert [d for d, _, _ in col.items] == data
    assert col.sizes == [1, 7, 7, 7, 7, 7, 7, 7]


def test_linger_coalesces_sparse_batches(ingest_factory: Any, pure: bool) -> None:
    """A trickle of datagrams is handed on in a few batches, not one batch per datagram: a batch
    that comes back sparse waits ``linger`` and is topped up. Nothing is lost or reordered."""
    col = Collect()
    ing = ingest_factory(on_batch=col, batch=1024, linger=0.3, pure_python=pure)
    data = payloads(40)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for d in data:            # ~1 ms apart: every recvmmsg alone would return one datagram
            s.sendto(d, ("127.0.0.1", ing.port))
            time.sleep(0.001)
    col.wait(40)
    assert [d for d, _, _ in col.items] == data
    assert len(col.sizes) < 10, col.sizes
    assert ing.stats()["batches"] == len(col.sizes)


def test_linger_zero_hands_on_at_once(ingest_factory: Any, pure: bool) -> None:
    col = Collect()
    ing = ingest_factory(on_batch=col, linger=0, pure_python=pure)
    send(payloads(3), ing.port, pace=1)
    col.wait(3)
    assert len(col.items) == 3
    with pytest.raises(ValueError, match="linger"):
        UdpIngest(linger=-1)


def test_four_argument_callback_and_errors(ingest_factory: Any, pure: bool,
                                           caplog: pytest.LogCaptureFixture) -> None:
    seen: list[int] = []
    calls = [0]

    def cb(buf: Any, offsets: Any, lengths: Any, ts: Any) -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("consumer bug")
        seen.extend(lengths.tolist())

    caplog.set_level(logging.ERROR, "fastflow.collector.ingest")
    ing = ingest_factory(on_batch=cb, pure_python=pure)
    send([b"a"], ing.port)
    end = time.monotonic() + 5
    while calls[0] < 1 and time.monotonic() < end:
        time.sleep(0.01)
    send([b"bb", b"ccc"], ing.port)
    end = time.monotonic() + 5
    while len(seen) < 2 and time.monotonic() < end:
        time.sleep(0.01)
    assert seen == [2, 3]
    assert ing.stats()["callback_errors"] == 1
    assert ing.running
    assert "consumer bug" in caplog.text


def test_oversize_datagrams_counted(ingest_factory: Any, pure: bool) -> None:
    col = Collect()
    ing = ingest_factory(on_batch=col, max_datagram=100, pure_python=pure)
    send([b"x" * 100, b"y" * 101, b"z" * 5000, b"w"], ing.port)
    col.wait(2)
    time.sleep(0.1)
    assert [d for d, _, _ in col.items] == [b"x" * 100, b"w"]
    st = ing.stats()
    assert st["truncated"] == 2 and st["datagrams"] == 2


def test_stop_is_prompt_and_idempotent(pure: bool) -> None:
    ing = UdpIngest("127.0.0.1", 0, rcvbuf=0, pure_python=pure)
    ing.start()
    assert ing.running
    time.sleep(0.05)
    ing.stop(timeout=2.0)
    assert not ing.running
    ing.stop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # the port is released
        s.bind(("127.0.0.1", ing.port))


def test_reuseport_shares_the_port(ingest_factory: Any) -> None:
    a, b = Collect(), Collect()
    ia = ingest_factory(on_batch=a, reuseport=True)
    ib = ingest_factory(on_batch=b, reuseport=True, port=ia.port)
    with pytest.raises(OSError):
        UdpIngest("127.0.0.1", ia.port, reuseport=False).start()
    for i in range(32):  # 32 sender sockets: the kernel hashes each to one of the two
        send([b"%d" % i] * 3, ia.port)
    end = time.monotonic() + 5
    while len(a.items) + len(b.items) < 96 and time.monotonic() < end:
        time.sleep(0.01)
    assert len(a.items) + len(b.items) == 96
    assert a.items and b.items
    assert ia.stats()["datagrams"] + ib.stats()["datagrams"] == 96


def test_rcvbuf_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "fastflow.collector.ingest")
    ing = UdpIngest("127.0.0.1", 0, rcvbuf=1 << 30)
    ing.start()
    try:
        st = ing.stats()
        assert st["rcvbuf_requested"] == 1 << 30
        assert 0 < st["rcvbuf_granted"] < 1 << 30
        assert "sysctl -w net.core.rmem_max=1073741824" in caplog.text
    finally:
        ing.stop()
    caplog.clear()
    ing = UdpIngest("127.0.0.1", 0, rcvbuf=64 << 10)
    ing.start()
    ing.stop()
    assert "rmem_max" not in caplog.text


def test_kernel_drops_counted(ingest_factory: Any, pure: bool) -> None:
    """A stalled consumer overflows a small socket buffer: the drops are counted."""
    release = threading.Event()
    got = [0]

    def stalled(buf: Any, off: Any, ln: Any, ts: Any) -> None:
        release.wait(5)
        got[0] += len(off)

    ing = ingest_factory(on_batch=stalled, rcvbuf=32 << 10, batch=4, pure_python=pure)
    send([b"\0" * 1000], ing.port)
    time.sleep(0.2)
    n = 600
    send([b"\1" * 1000] * n, ing.port, pace=0)
    release.set()
    end = time.monotonic() + 5
    while time.monotonic() < end:
        st = ing.stats()
        if st["datagrams"] + st["kernel_drops"] >= n + 1 and got[0] == st["datagrams"]:
            break
        time.sleep(0.02)
    st = ing.stats()
    assert st["kernel_drops"] > 0
    assert st["datagrams"] + st["kernel_drops"] == n + 1


def test_bad_arguments() -> None:
    for kw in ({"port": 70000}, {"batch": 0}, {"max_datagram": 10}, {"rcvbuf": -1}):
        with pytest.raises(ValueError):
            UdpIngest(**kw)  # type: ignore[arg-type]
    ing = UdpIngest("127.0.0.1", 0)
    ing.start()
    try:
        with pytest.raises(RuntimeError):
            ing.start()
    finally:
        ing.stop()


def test_swarm_capture_over_udp_decodes(ingest_factory: Any, swarm_pcap: Path) -> None:
    """The real capture replayed over loopback decodes to the same 124 datagrams."""
    import fastflow.decode as decode
    from fastflow import pcap
    cap = pcap.read(swarm_pcap)
    dec = decode.Decoder()
    lock = threading.Lock()

    def feed(buf: Any, off: Any, ln: Any, ts: Any) -> None:
        with lock:
            dec.feed(buf, off, ln, ts)

    ing = ingest_factory(on_batch=feed)
    send(cap.datagrams(), ing.port)
    end = time.monotonic() + 5
    while time.monotonic() < end:
        with lock:
            if dec.n_datagrams >= 124:
                break
        time.sleep(0.01)
    with lock:
        assert dec.n_datagrams == 124
        assert dec.datagrams["sequence_number"].tolist() == \
            pcap_seq(cap)


def pcap_seq(cap: Any) -> list[int]:
    return [int.from_bytes(d[16:20], "big") for d in cap.datagrams()]  # IPv4 agents


# ------------------------------------------------------------------ [collector] agents allow-list
def test_allow_masks_maps_ipv4_into_ipv6() -> None:
    from fastflow.collector.ingest import allow_masks

    nets, masks = allow_masks(["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"])
    assert nets.shape == masks.shape == (3, 16)
    assert bytes(nets[0]) == b"\0" * 10 + b"\xff\xff" + bytes([10, 0, 0, 0])
    assert bytes(masks[0]) == b"\xff" * 13 + b"\0\0\0"
    assert bytes(masks[2]) == b"\xff" * 16
    with pytest.raises(ValueError):
        allow_masks(["not-an-address"])


@pytest.mark.parametrize("allow,accepted", [(["127.0.0.0/8"], True), (["10.0.0.0/8", "::1"], False)])
def test_allow_list_in_the_receiver(ingest_factory: Any, pure: bool, allow: list[str],
                                    accepted: bool) -> None:
    col = Collect()
    idle: list[float] = []
    ing = ingest_factory(on_batch=col, pure_python=pure, allow=allow, linger=0,
                         on_idle=lambda: idle.append(time.monotonic()))
    data = payloads(20)
    send(data, ing.port)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (ing.stats()["datagrams"] + ing.stats()["rejected_senders"]) < 20:
        time.sleep(0.02)
    st = ing.stats()
    if accepted:
        col.wait(20)
        assert st["datagrams"] == 20 and st["rejected_senders"] == 0
    else:
        assert st["datagrams"] == 0 and st["rejected_senders"] == 20 and not col.items
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not idle:        # silence: on_idle is called
        time.sleep(0.05)
    assert idle
