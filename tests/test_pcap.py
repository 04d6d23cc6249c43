"""fastflow.pcap: capture reading (Cython walker and Python reference) and writing."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _pcap_util import (
    epb,
    eth,
    idb,
    ipv4_udp,
    ipv6_udp,
    loop,
    null,
    opb,
    other_block,
    shb,
    sll,
    sll2,
    spb,
    write_classic,
)
from fastflow import pcap

try:
    from fastflow import _pcap  # noqa: F401

    HAVE_CYTHON = True
except ImportError:  # pragma: no cover
    HAVE_CYTHON = False

needs_cython = pytest.mark.skipif(not HAVE_CYTHON, reason="fastflow._pcap is not built")


def both(path: Path, port: int | None = 6343) -> pcap.Capture:
    """Read with the reference, and with Cython when built; assert identical; return one."""
    ref = pcap.read(path, port, pure_python=True)
    if HAVE_CYTHON:
        fast = pcap.read(path, port, pure_python=False)
        assert_same(ref, fast)
    return ref


def assert_same(a: pcap.Capture, b: pcap.Capture) -> None:
    assert a.datagrams() == b.datagrams()
    assert np.array_equal(a.lengths, b.lengths)
    assert np.array_equal(a.ts, b.ts)  # bit-identical timestamps
    assert a.src == b.src
    assert a.skipped == b.skipped
    assert a.linktype == b.linktype
    for c in (a, b):
        assert c.buf.dtype == np.uint8 and c.offsets.dtype == np.int64 and c.ts.dtype == np.float64
        if len(c):
            assert int(c.offsets[-1] + c.lengths[-1]) <= len(c.buf)


# --------------------------------------------------------------------------------------------------
# The real corpus
# --------------------------------------------------------------------------------------------------
def corpus_pcaps(corpus: Path) -> list[Path]:
    return sorted(corpus.glob("*/*.pcap")) + sorted(corpus.glob("*/*/*.pcap"))


def test_corpus_identical_both_impls(corpus: Path) -> None:
    files = corpus_pcaps(corpus)
    assert files
    for f in files:
        for port in (6343, None, 9):
            cap = both(f, port)
            if port == 9:
                assert len(cap) == 0 and cap.skipped.get("wrong_port", 0) > 0
            else:
                assert len(cap) > 0, f


def test_swarm_matches_sflowtool(swarm_pcap: Path) -> None:
    """Sizes and capture timestamps agree with sflowtool's independent dump."""
    cap = both(swarm_pcap)
    txt = (swarm_pcap.parent / "docker-swarm.sflowtool.txt").read_text()
    sizes = [int(x) for x in re.findall(r"^datagramSize (\d+)$", txt, re.M)]
    usecs = [int(x) for x in re.findall(r"^pcapTimestamp_uS (\d+)$", txt, re.M)]
    assert len(cap) == len(sizes) == 124
    assert cap.lengths.tolist() == sizes
    assert [round((t % 1) * 1e6) for t in cap.ts] == usecs
    assert cap.skipped == {}
    assert cap.linktype == 1
    assert set(cap.src) == {"127.0.0.1"}
    # every payload starts with sFlow version 5
    assert all(d[:4] == b"\x00\x00\x00\x05" for d in cap.datagrams())
    # streaming gives the same datagrams
    streamed = list(pcap.iter_datagrams(swarm_pcap))
    assert [d for _, _, d in streamed] == cap.datagrams()
    assert [t for t, _, _ in streamed] == cap.ts.tolist()


def test_ipv6_agent_capture(corpus: Path) -> None:
    cap = both(corpus / "public" / "tcpdump" / "sflow-print-v6.pcap")
    assert len(cap) == 25
    assert set(cap.src) == {"30::1:1:1"}


def test_decoder_batch_from_capture(swarm_pcap: Path) -> None:
    """A whole capture is one decoder batch."""
    import fastflow.decode as decode

    cap = pcap.read(swarm_pcap)
    dec = decode.Decoder()
    k = dec.feed(cap.buf, cap.offsets, cap.lengths, cap.ts)
    assert k == 124
    assert dec.n_datagrams == 124
    assert np.array_equal(dec.datagrams["ts"], cap.ts)


# --------------------------------------------------------------------------------------------------
# write() round trip
# --------------------------------------------------------------------------------------------------
def test_write_roundtrip(tmp_path: Path) -> None:
    payloads = [bytes([i % 256]) * (i * 7 % 1400 + 1) for i in range(300)]
    items = [(1_700_000_000.0 + i * 0.001234, p) for i, p in enumerate(payloads)]
    path = tmp_path / "w.pcap"
    assert pcap.write(path, items, src=("192.0.2.7", 40000), dst=("127.0.0.1", 6343)) == 300
    cap = both(path)
    assert cap.datagrams() == payloads
    assert np.allclose(cap.ts, [t for t, _ in items], atol=1e-6, rtol=0)
    assert set(cap.src) == {"192.0.2.7"}
    assert len(both(path, 6344)) == 0


def test_write_ipv6_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "w6.pcap"
    pcap.write(path, [(1.5, b"abc"), (2.5, b"")], src=("2001:db8::9", 1), dst=("::1", 6343))
    cap = both(path)
    assert cap.datagrams() == [b"abc", b""]
    assert cap.src == ["2001:db8::9", "2001:db8::9"]
    with pytest.raises(ValueError, match="IP versions"):
        pcap.write(path, [(0.0, b"x")], src=("::1", 1), dst=("127.0.0.1", 2))
    with pytest.raises(ValueError, match="too large"):
        pcap.write(path, [(0.0, b"x" * 70000)])
    with pytest.raises(ValueError, match="port"):
        pcap.read(path, 70000)


# --------------------------------------------------------------------------------------------------
# Link types, byte orders, resolutions
# --------------------------------------------------------------------------------------------------
P1, P2, P3 = b"\x00\x00\x00\x05first", b"\x00\x00\x00\x05second!", b"third" * 50
V4 = ipv4_udp(P1, src="198.51.100.1")
V6 = ipv6_udp(P2, src="2001:db8::1")


def mixed_ip() -> list[bytes]:
    """IP packets covering every skip reason reachable from the IP layer, plus three good ones."""
    return [
        V4,                                                  # ok
        V6,                                                  # ok
        ipv4_udp(P1, dport=53),                              # wrong_port
        ipv4_udp(P1, proto=6),                               # not_udp
        ipv4_udp(P1, frag=0x0010),                           # fragment (non-first)
        ipv4_udp(P1, frag=0x2000),                           # fragment (first, more to come)
        ipv4_udp(P1, ihl=4),                                 # bad_ip
        ipv4_udp(P1, udp_len=4),                             # bad_ip (udp length < 8)
        ipv4_udp(P1, udp_len=400),                           # snapped (payload cut short)
        ipv4_udp(P3, src="203.0.113.9", ihl=7),              # ok, IP options
        ipv6_udp(P1, ext=[(0, b"\x01\x02"), (60, b"")]),     # ok after hop-by-hop + dest opts
        ipv6_udp(P1, ext=[(44, b"\x00\x08\x00\x00\x00\x01")]),  # fragment (offset 1)
        ipv6_udp(P1, nh_last=58),                            # not_udp
        ipv4_udp(P1)[:24],                                   # short_frame
    ]


GOOD = [P1, P2, P3, P1]
GOOD_SRC = ["198.51.100.1", "2001:db8::1", "203.0.113.9", "2001:db8::2"]
SKIPS = {"wrong_port": 1, "not_udp": 2, "fragment": 3, "bad_ip": 2, "snapped": 1,
         "short_frame": 1}


def _et(pkt: bytes) -> int:
    return 0x86DD if pkt[0] >> 4 == 6 else 0x0800


def _fam(pkt: bytes, v6: int) -> int:
    return v6 if pkt[0] >> 4 == 6 else 2


LINKS = {
    "ethernet": (1, lambda p: eth(p, _et(p))),
    "vlan": (1, lambda p: eth(p, _et(p), [(0x8100, 10)])),
    "qinq": (1, lambda p: eth(p, _et(p), [(0x88A8, 100), (0x8100, 10)])),
    "sll": (113, lambda p: sll(p, _et(p))),
    "sll2": (276, lambda p: sll2(p, _et(p))),
    "raw101": (101, lambda p: p),
    "raw12": (12, lambda p: p),
    "null_le": (0, lambda p: null(p, _fam(p, 24), "<")),
    "null_be": (0, lambda p: null(p, _fam(p, 30), ">")),
    "null_linux": (0, lambda p: null(p, _fam(p, 10), "<")),
    "loop": (108, lambda p: loop(p, _fam(p, 28))),
}


@pytest.mark.parametrize("link", sorted(LINKS))
@pytest.mark.parametrize("big,ns", [(False, False), (True, False), (False, True), (True, True)])
def test_links_and_byte_orders(tmp_path: Path, link: str, big: bool, ns: bool) -> None:
    lt, wrap = LINKS[link]
    pkts = mixed_ip()
    frames = [(1_600_000_000 + i + 0.123456789, wrap(p)) for i, p in enumerate(pkts)]
    path = write_classic(tmp_path / f"{link}.pcap", lt, frames, big=big, ns=ns)
    cap = both(path)
    assert cap.linktype == lt
    assert cap.datagrams() == GOOD
    assert cap.src == GOOD_SRC
    assert cap.skipped == SKIPS
    idx = [0, 1, 9, 10]
    want = [frames[i][0] for i in idx]
    assert np.allclose(cap.ts, want, atol=(1e-9 if ns else 1e-6) + 1e-7, rtol=0)
    # port None takes the wrong-port datagram too
    anyport = both(path, None)
    assert len(anyport) == 5 and "wrong_port" not in anyport.skipped


def test_raw_ipv4_ipv6_linktypes(tmp_path: Path) -> None:
    c4 = both(write_classic(tmp_path / "a.pcap", 228, [(1.0, V4), (2.0, V6)]))
    assert c4.datagrams() == [P1] and c4.skipped == {"bad_ip": 1}
    c6 = both(write_classic(tmp_path / "b.pcap", 229, [(1.0, V6), (2.0, ipv4_udp(P3)), (3.0, V4)]))
    assert c6.datagrams() == [P2] and c6.skipped == {"bad_ip": 1, "short_frame": 1}


def test_non_ip_and_unknown_linktype(tmp_path: Path) -> None:
    arp = eth(b"\x00" * 28, 0x0806)
    llc = eth(b"\x42\x42\x03" + b"\x00" * 40, 60)
    cap = both(write_classic(tmp_path / "a.pcap", 1, [(1.0, arp), (2.0, llc), (3.0, eth(V4))]))
    assert cap.datagrams() == [P1] and cap.skipped == {"not_ip": 2}
    cap = both(write_classic(tmp_path / "b.pcap", 105, [(1.0, V4), (2.0, V4)]))  # 802.11
    assert len(cap) == 0 and cap.skipped == {"unsupported_linktype": 2}
    cap = both(write_classic(tmp_path / "c.pcap", 0, [(1.0, null(V4, 7))]))
    assert cap.skipped == {"not_ip": 1}


def test_snaplen_cut_frames(tmp_path: Path) -> None:
    frames = [(1.0, eth(V4)), (2.0, eth(V4)), (3.0, eth(V4))]
    cap = both(write_classic(tmp_path / "s.pcap", 1, frames, caplens=[None, 30, 50]))
    assert cap.datagrams() == [P1]
    assert cap.skipped == {"short_frame": 1, "snapped": 1}


# --------------------------------------------------------------------------------------------------
# pcapng
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("big", [False, True])
def test_pcapng_interfaces_resolutions_blocks(tmp_path: Path, big: bool) -> None:
    t = 1_700_000_000
    blob = b"".join([
        shb(big),
        idb(1, big),                                    # 0: Ethernet, default microseconds
        other_block(4, b"\x00" * 12, big),             # name resolution block: skipped
        idb(113, big, tsresol=9),                       # 1: SLL, nanoseconds
        idb(101, big, tsresol=0x80 | 20, tsoffset=t),   # 2: raw, 2^-20 s, offset t seconds
        epb(0, (t * 1_000_000 + 250_000), eth(V4), big),
        epb(1, (t * 1_000_000_000 + 123_456_789), sll(V6, 0x86DD), big),
        other_block(5, b"\x00" * 20, big),             # interface statistics: skipped
        epb(2, 3 << 19, ipv4_udp(P3, dport=6343), big),  # 1.5 s after the offset
        epb(0, t * 1_000_000, eth(ipv4_udp(P1, dport=9)), big),  # wrong port
        opb(0, t * 1_000_000 + 1, eth(V4), big),       # obsolete packet block
        other_block(0x40000BAD, b"custom!!", big),     # custom block: skipped
    ])
    # a second section in the other byte order with its own interface table, SPB
    blob += shb(not big) + idb(1, not big) + spb(eth(V6, 0x86DD), not big)
    path = tmp_path / "x.pcapng"
    path.write_bytes(blob)
    cap = both(path)
    assert cap.datagrams() == [P1, P2, P3, P1, P2]
    assert cap.src == ["198.51.100.1", "2001:db8::1", "192.0.2.2", "198.51.100.1", "2001:db8::1"]
    assert cap.ts[0] == t + 0.25
    assert cap.ts[1] == pytest.approx(t + 0.123456789, abs=1e-6)
    assert cap.ts[2] == t + 1.5
    assert cap.ts[4] == 0.0  # simple packet blocks carry no time
    assert cap.skipped == {"wrong_port": 1}
    assert cap.linktype == 1


def test_pcapng_corrupt_and_truncated(tmp_path: Path) -> None:
    good = shb() + idb(1) + epb(0, 1_000_000, eth(V4))
    p = tmp_path / "t.pcapng"
    p.write_bytes(good + epb(0, 2_000_000, eth(V4))[:-10])
    cap = both(p)
    assert cap.datagrams() == [P1] and cap.skipped == {"truncated": 1}
    p.write_bytes(good + struct.pack("<II", 6, 13) + b"\0" * 20)  # length not a multiple of 4
    cap = both(p)
    assert cap.datagrams() == [P1] and cap.skipped == {"corrupt": 1}
    p.write_bytes(good + epb(7, 1, eth(V4)))  # unknown interface
    cap = both(p)
    assert cap.datagrams() == [P1] and cap.skipped == {"corrupt": 1}


# --------------------------------------------------------------------------------------------------
# Bad files
# --------------------------------------------------------------------------------------------------
def test_not_a_capture(tmp_path: Path) -> None:
    p = tmp_path / "x"
    for content, msg in [(b"", "too short"), (b"hello world, not a pcap at all", "not a pcap"),
                         (struct.pack("<IHH", 0xA1B2C3D4, 2, 4), "file header"),
                         (b"\x0a\x0d\x0d\x0a\x1c\0\0\0\x11\x22\x33\x44", "byte-order")]:
        p.write_bytes(content)
        for pure in ([True, False] if HAVE_CYTHON else [True]):
            with pytest.raises(pcap.PcapError, match=msg):
                pcap.read(p, pure_python=pure)
        with pytest.raises(pcap.PcapError):
            list(pcap.iter_datagrams(p))
    with pytest.raises(FileNotFoundError):
        pcap.read(tmp_path / "missing.pcap")


def test_truncated_and_corrupt_records(tmp_path: Path) -> None:
    frames = [(float(i), eth(V4)) for i in range(5)]
    path = write_classic(tmp_path / "t.pcap", 1, frames)
    data = path.read_bytes()
    rec = 16 + len(eth(V4))
    for cut, kept in [(24 + 3 * rec + 5, 3), (24 + 4 * rec + 20, 4), (24 + 3 * rec, 3)]:
        path.write_bytes(data[:cut])
        cap = both(path)
        assert len(cap) == kept
        assert cap.skipped == ({"truncated": 1} if cut != 24 + 3 * rec else {})
    bad = bytearray(data)
    struct.pack_into("<I", bad, 24 + 2 * rec + 8, 0x7FFFFFFF)  # absurd caplen in record 3
    path.write_bytes(bytes(bad))
    cap = both(path)
    assert len(cap) == 2 and cap.skipped == {"corrupt": 1}
    path.write_bytes(data[:24])  # header only: an empty capture
    cap = both(path)
    assert len(cap) == 0 and cap.skipped == {} and cap.buf.dtype == np.uint8


@needs_cython
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=600), lt=st.sampled_from([0, 1, 12, 101, 108, 113, 228, 229, 276]),
       big=st.booleans(), ng=st.booleans())
def test_fuzz_both_impls_agree(tmp_path: Path, body: bytes, lt: int, big: bool, ng: bool) -> None:
    """Random bytes after a valid file header never crash and give identical results."""
    if ng:
        head = shb(big) + idb(lt, big)
    else:
        head = struct.pack((">" if big else "<") + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, lt)
    p = tmp_path / "f.pcap"
    p.write_bytes(head + body)
    for port in (6343, None):
        assert_same(pcap.read(p, port, pure_python=True), pcap.read(p, port, pure_python=False))


@needs_cython
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pkts=st.lists(st.tuples(st.binary(max_size=64), st.integers(0, 3), st.integers(0, 65535),
                               st.integers(0, 80)), max_size=20))
def test_fuzz_mutated_frames(tmp_path: Path, pkts: list[tuple[bytes, int, int, int]]) -> None:
    """Well-formed records with mutated frames: both implementations agree."""
    frames = []
    for payload, kind, dport, cut in pkts:
        ip = ipv4_udp(payload, dport=dport) if kind % 2 else ipv6_udp(payload, dport=dport)
        fr = eth(ip, _et(ip), [(0x8100, 5)] * (kind // 2))
        frames.append((1.0, fr[: len(fr) - cut] if cut < len(fr) else fr))
    p = write_classic(tmp_path / "m.pcap", 1, frames)
    for port in (6343, None):
        assert_same(pcap.read(p, port, pure_python=True), pcap.read(p, port, pure_python=False))


@needs_cython
def test_mmap_path_matches(swarm_pcap: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Large files are mapped read-only and the datagrams are used where they lie: same result,
    and the file itself is not modified."""
    before = swarm_pcap.read_bytes()
    ref = pcap.read(swarm_pcap, pure_python=True)
    monkeypatch.setattr(pcap, "_MMAP_THRESHOLD", 0)
    fast = pcap.read(swarm_pcap, pure_python=False)
    assert_same(ref, fast)
    assert swarm_pcap.read_bytes() == before


def test_mmap_path_mostly_other_traffic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A mapped capture that is mostly other traffic: the sFlow payloads are gathered into a
    buffer of their own (the mapping is not pinned) and match the reference reader."""
    frames = []
    for i in range(300):
        frames.append((1.0 + i, pcap.udp_frame(bytes([i % 256]) * (60 + i % 40),
                                               ("192.0.2.1", 5000), ("127.0.0.1", 6343), i)))
        frames.append((1.0 + i, pcap.udp_frame(b"x" * 3000, ("192.0.2.1", 5000),
                                               ("127.0.0.1", 9), i)))
    path = tmp_path / "mostly-other.pcap"
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for t, fr in frames:
            f.write(struct.pack("<IIII", int(t), 0, len(fr), len(fr)) + fr)
    ref = pcap.read(path, pure_python=True)
    monkeypatch.setattr(pcap, "_MMAP_THRESHOLD", 0)
    fast = pcap.read(path, pure_python=False)
    assert_same(ref, fast)
    assert len(fast) == 300 and fast.skipped == {"wrong_port": 300}
    assert len(fast.buf) == int(fast.lengths.sum())   # a compact copy, not the whole file
