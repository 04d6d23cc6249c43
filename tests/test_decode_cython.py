"""Cython-only concerns of ``fastflow._decode.Decoder``: GIL release, capacity and rollback, buffer
types, the C intern tables, memory, and a fuzz run (random and mutated real datagrams) checked for
consistency and against the pure-Python reference. The decoding rules themselves are tested for
both decoders by tests/test_decode.py.
"""

from __future__ import annotations

import array
import os
import struct
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastflow
from fastflow import _schema
from fastflow._decode import Decoder

try:
    from fastflow._pydecode import Decoder as PyDecoder
except ImportError:  # pragma: no cover - the reference is part of the project
    PyDecoder = None  # type: ignore[assignment,misc]

MIN = 4096
R = _schema.REASON_CODE


# --------------------------------------------------------------------------------------------------
# tiny builders (independent of fastflow.encode)
# --------------------------------------------------------------------------------------------------
def u32(*vals: int) -> bytes:
    return b"".join(struct.pack(">I", v & 0xFFFFFFFF) for v in vals)


def xdr(raw: bytes) -> bytes:
    return u32(len(raw)) + raw + b"\0" * (-len(raw) % 4)


def rec(fmt: int, body: bytes) -> bytes:
    return u32(fmt, len(body)) + body


def counters(records: list[bytes], sid: int = 1, seq: int = 1) -> bytes:
    body = u32(seq, sid, len(records)) + b"".join(records)
    return u32(2, len(body)) + body


def dgram(samples: list[bytes], agent: bytes = bytes([192, 0, 2, 1]), seq: int = 1) -> bytes:
    at = {0: 0, 4: 1, 16: 2}[len(agent)]
    return u32(5, at) + agent + u32(0, seq, 1000, len(samples)) + b"".join(samples)


def host_descr(name: bytes, release: bytes = b"6.1") -> bytes:
    return rec(2000, xdr(name) + bytes(range(16)) + u32(3, 2) + xdr(release))


def host_cpu(n_words: int = 17, value: int = 7) -> bytes:
    return rec(2003, u32(*([value] * n_words)))


def virt_cpu(state: int = 1) -> bytes:
    return rec(2101, u32(state, 1234, 2))


def split(dgs: list[bytes]) -> tuple[bytes, np.ndarray, np.ndarray]:
    lens = np.array([len(d) for d in dgs], np.int64)
    offs = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    return b"".join(dgs), offs, lens


@pytest.fixture(scope="module")
def swarm(swarm_pcap: Path) -> list[bytes]:
    from fastflow import pcap

    cap = pcap.read(swarm_pcap)
    buf = bytes(cap.buf)
    return [buf[o:o + n] for o, n in zip(cap.offsets.tolist(), cap.lengths.tolist(), strict=True)]


def check_consistent(d: Decoder) -> None:
    """Rows of the datagrams account for every counter/flow row, in order."""
    dg = d.datagrams
    assert int(dg["n_counters"].sum()) == d.n_counters == len(d.counters)
    assert int(dg["n_flows"].sum()) == d.n_flows == len(d.flows)
    exp_c = np.repeat(np.arange(len(dg), dtype=np.uint32), dg["n_counters"])
    exp_f = np.repeat(np.arange(len(dg), dtype=np.uint32), dg["n_flows"])
    assert np.array_equal(d.counters["dgram"], exp_c)
    assert np.array_equal(d.flows["dgram"], exp_f)
    assert (dg["status"] < _schema.N_REASONS).all()
    assert (dg["agent"] < d.n_agents).all()
    assert (d.counters["hostname"] < d.n_strings).all()
    assert (d.counters["os_release"] < d.n_strings).all()


# --------------------------------------------------------------------------------------------------
# construction and arguments
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [{"datagram_capacity": MIN - 1}, {"counter_capacity": 0},
                                {"flow_capacity": -5}, {"max_interned": 1}])
def test_bad_construction(kw: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        Decoder(**kw)


def test_uninitialised_decoder_raises_instead_of_crashing() -> None:
    d = Decoder.__new__(Decoder)
    with pytest.raises(RuntimeError):
        d.feed(b"", [], [])
    assert d.strings() == [] and d.agents() == []


def test_buffer_types_all_agree(swarm: list[bytes]) -> None:
    buf, offs, lens = split(swarm)
    ref = Decoder()
    assert ref.feed(buf, offs, lens) == len(swarm)
    for b in (bytearray(buf), memoryview(buf), np.frombuffer(buf, np.uint8),
              np.frombuffer(buf, np.int8), array.array("B", buf), memoryview(buf).cast("c")):
        d = Decoder()
        assert d.feed(b, offs, lens) == len(swarm), type(b)
        for name in ("datagrams", "counters", "flows"):
            assert getattr(d, name).tobytes() == getattr(ref, name).tobytes(), (type(b), name)
        assert d.strings() == ref.strings() and d.agents() == ref.agents()
    # offsets/lengths as lists and other integer dtypes
    d = Decoder()
    assert d.feed(buf, offs.tolist(), lens.astype(np.int32)) == len(swarm)
    assert d.counters.tobytes() == ref.counters.tobytes()


def test_rejects_non_buffers_and_non_contiguous() -> None:
    d = Decoder()
    with pytest.raises(TypeError):
        d.feed("not bytes", [0], [1])
    strided = np.zeros(64, np.uint8)[::2]
    with pytest.raises((BufferError, ValueError, TypeError)):
        d.feed(strided, [0], [4])
    assert d.n_datagrams == 0


@pytest.mark.parametrize("offs,lens", [([0, 10], [4, 10**6]), ([-1], [4]), ([0], [-4]),
                                       ([2**62], [2**62]), ([0, 0], [4]), ([[0]], [[4]])])
def test_offsets_checked_before_decoding(swarm: list[bytes], offs: list, lens: list) -> None:
    d = Decoder()
    buf = swarm[0] + b"\0" * 100
    with pytest.raises(ValueError):
        d.feed(buf, offs, lens)
    assert d.n_datagrams == 0 and d.n_counters == 0
    assert not d.errors.any()


def test_bad_pair_after_good_ones_decodes_nothing(swarm: list[bytes]) -> None:
    buf, offs, lens = split(swarm)
    lens = lens.copy()
    lens[-1] += 1  # runs one byte past the buffer
    d = Decoder()
    with pytest.raises(ValueError, match=f"datagram {len(swarm) - 1}"):
        d.feed(buf, offs, lens)
    assert d.n_datagrams == 0 and not d.errors.any()


def test_ts_forms(swarm: list[bytes]) -> None:
    buf, offs, lens = split(swarm[:5])
    d = Decoder()
    d.feed(buf, offs, lens)
    assert (d.datagrams["ts"] == 0).all()
    d.clear()
    d.feed(buf, offs, lens, 12.5)
    assert (d.datagrams["ts"] == 12.5).all() and (d.counters["ts"] == 12.5).all()
    d.clear()
    ts = np.arange(5, dtype=np.float64) + 0.25
    d.feed(buf, offs, lens, ts.tolist())
    assert np.array_equal(d.datagrams["ts"], ts)
    assert np.array_equal(d.counters["ts"], np.repeat(ts, d.datagrams["n_counters"]))
    with pytest.raises(ValueError):
        d.feed(buf, offs, lens, ts[:4])


def test_empty_feed_and_feed_list() -> None:
    d = Decoder()
    assert d.feed(b"", np.zeros(0, np.int64), np.zeros(0, np.int64)) == 0
    assert d.feed_list([]) == 0
    assert d.feed_list([b"", b"\0\0\0\4", bytearray(dgram([]))]) == 3
    assert d.n_datagrams == 1
    assert d.error_counts() == {"truncated_header": 1, "bad_version": 1}


def test_errors_is_a_copy_and_views_follow_clear(swarm: list[bytes]) -> None:
    d = Decoder()
    d.feed_list(swarm[:3] + [b"xx"])
    e = d.errors
    assert e.dtype == np.uint64 and e.shape == (_schema.N_REASONS,)
    e[:] = 99
    assert d.errors[R["truncated_header"]] == 1
    assert len(d.datagrams) == 3
    d.clear()
    assert len(d.datagrams) == 0 and len(d.counters) == 0 and len(d.flows) == 0
    assert d.errors[R["truncated_header"]] == 1  # cumulative
    assert d.n_strings > 1  # intern tables survive clear()


# --------------------------------------------------------------------------------------------------
# capacity and rollback
# --------------------------------------------------------------------------------------------------
def _feed_chunked(d: Decoder, buf: bytes, offs: np.ndarray, lens: np.ndarray,
                  ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], int]:
    dgs, ctrs, flows, chunks = [], [], [], 0
    i = 0
    while i < len(offs):
        k = d.feed(buf, offs[i:], lens[i:])
        assert k > 0
        check_consistent(d)
        if i + k < len(offs):  # stopped early: some table must really be (nearly) full
            chunks += 1
        dgs.append(d.datagrams.copy())
        ctrs.append(d.counters.copy())
        flows.append(d.flows.copy())
        d.clear()
        i += k
    return dgs, ctrs, flows, chunks


def test_overflow_rolls_back_whole_datagrams(swarm: list[bytes]) -> None:
    many = swarm * 40  # ~5000 datagrams, ~10k counter samples: several flushes at capacity 4096
    buf, offs, lens = split(many)
    big = Decoder(datagram_capacity=8192, counter_capacity=65536, flow_capacity=65536)
    assert big.feed(buf, offs, lens) == len(many)
    small = Decoder(MIN, MIN, MIN)
    dgs, ctrs, flows, chunks = _feed_chunked(small, buf, offs, lens)
    assert chunks >= 2
    cat = np.concatenate(dgs)
    assert cat.tobytes() == big.datagrams.tobytes()
    c = np.concatenate(ctrs)
    f = np.concatenate(flows)
    for name in c.dtype.names or ():
        if name != "dgram":  # batch-relative
            assert c[name].tobytes() == big.counters[name].tobytes(), name
    for name in f.dtype.names or ():
        if name != "dgram":
            assert f[name].tobytes() == big.flows[name].tobytes(), name
    assert np.array_equal(small.errors, big.errors)
    assert small.strings() == big.strings() and small.agents() == big.agents()


def test_overflow_mid_datagram_keeps_errors_and_interns_clean() -> None:
    # 3 counter samples per datagram: 4096 % 3 != 0, so the counter table fills inside a datagram.
    # Each datagram brings a new hostname, a new agent and an unknown record.
    dgs = [dgram([counters([host_descr(b"host-%d" % i), rec(9999, b"")], sid=j)
                  for j in range(3)], agent=bytes([10, 0, i >> 8 & 255, i & 255]))
           for i in range(1400)]
    buf, offs, lens = split(dgs)
    d = Decoder(MIN, MIN, MIN)
    k = d.feed(buf, offs, lens)
    assert k == MIN // 3
    check_consistent(d)
    assert d.n_counters == 3 * k
    # the rolled-back datagram left no trace: errors, strings and agents are those of k datagrams
    assert d.error_counts() == {"unknown_record": 3 * k}
    assert d.n_strings == 1 + 1 + k  # "", "6.1", host-0..k-1
    assert d.n_agents == 1 + k
    assert d.strings()[-1] == f"host-{k - 1}"
    if PyDecoder is not None:
        p = PyDecoder(MIN, MIN, MIN)
        assert p.feed(buf, offs, lens) == k
        assert p.strings() == d.strings() and p.agents() == d.agents()
        assert p.error_counts() == d.error_counts()
    d.clear()
    assert d.feed(buf, offs[k:], lens[k:]) == len(dgs) - k
    assert d.strings()[-1] == f"host-{len(dgs) - 1}"
    assert d.error_counts() == {"unknown_record": 3 * len(dgs)}


def test_datagram_table_capacity() -> None:
    dgs = [dgram([]) for _ in range(MIN + 10)]
    buf, offs, lens = split(dgs)
    d = Decoder(MIN, MIN, MIN)
    assert d.feed(buf, offs, lens) == MIN
    # a datagram that gets no row does not need one: still accepted when the table is full
    assert d.feed_list([b"\0\0\0\4bad-version"]) == 1
    assert d.error_counts() == {"bad_version": 1}
    assert d.feed(buf, offs, lens) == 0


def test_dropped_sample_does_not_need_a_row() -> None:
    full = [dgram([counters([virt_cpu()]) for _ in range(8)]) for _ in range(MIN // 8)]
    d = Decoder(MIN, MIN, MIN)
    buf, offs, lens = split(full)
    assert d.feed(buf, offs, lens) == len(full)
    assert d.n_counters == MIN
    bad = dgram([u32(2, 8) + u32(1, 1)])  # too short for the 12-byte fixed part: no row
    assert d.feed_list([bad]) == 1
    assert d.datagrams[-1]["status"] == R["sample_too_short"]
    assert d.feed_list([dgram([counters([virt_cpu()])])]) == 0


def test_repeated_host_cpu_overwrites_optional_tail() -> None:
    d = Decoder()
    d.feed_list([dgram([counters([host_cpu(20, 9), host_cpu(17, 5)])])])
    row = d.counters[0]
    assert row["cpu_user"] == 5 and row["contexts"] == 5
    assert row["cpu_steal"] == 0 and row["cpu_guest_nice"] == 0


# --------------------------------------------------------------------------------------------------
# intern tables
# --------------------------------------------------------------------------------------------------
def test_intern_tables_grow_and_stay_consistent() -> None:
    n = 20000  # several rehashes and arena reallocations
    names = [b"container-%06d.example" % i for i in range(n)]
    dgs = [dgram([counters([host_descr(names[i], b"r%d" % (i % 7))])],
                 agent=(i % 300).to_bytes(16, "big"))
           for i in range(n)]
    d = Decoder(n, n, MIN)
    assert d.feed_list(dgs) == n
    s = d.strings()
    assert s[0] == "" and len(s) == d.n_strings == 1 + n + 7
    hn = d.counters["hostname"]
    assert [s[i] for i in hn[:5]] == [x.decode() for x in names[:5]]
    assert s[hn[-1]] == names[-1].decode()
    assert len(set(hn.tolist())) == n
    ag = d.agents()
    assert ag[0] == "" and len(ag) == 301
    assert ag[d.datagrams["agent"][1]] == "::1"
    # interning the same strings again adds nothing, and the indices are stable
    d.clear()
    assert d.feed_list(dgs[:100]) == 100
    assert d.n_strings == len(s) and d.strings() == s
    assert np.array_equal(d.counters["hostname"], hn[:100])


def test_agent_text_forms() -> None:
    d = Decoder()
    d.feed_list([dgram([], agent=b""), dgram([], agent=bytes([127, 0, 0, 1])),
                 dgram([], agent=bytes(15) + b"\1"), dgram([], agent=b"")])
    assert d.agents() == ["", "unknown", "127.0.0.1", "::1"]
    assert d.datagrams["agent"].tolist() == [1, 2, 3, 1]
    assert d.datagrams["agent_af"].tolist() == [0, 4, 6, 0]


def test_table_full() -> None:
    dgs = [dgram([counters([host_descr(b"h%d" % i, b"")])], agent=bytes([10, 0, 0, i]))
           for i in range(6)]
    d = Decoder(max_interned=4)
    assert d.feed_list(dgs) == 6
    assert d.strings() == ["", "h0", "h1", "h2"]
    assert d.agents() == ["", "10.0.0.0", "10.0.0.1", "10.0.0.2"]
    assert d.counters["hostname"].tolist() == [1, 2, 3, 0, 0, 0]
    assert d.datagrams["agent"].tolist() == [1, 2, 3, 0, 0, 0]
    assert d.error_counts() == {"table_full": 6}
    assert d.datagrams["status"].tolist() == [0, 0, 0] + [R["table_full"]] * 3
    # known entries are still found when the table is full
    assert d.feed_list(dgs[:1]) == 1 and d.counters["hostname"][-1] == 1
    if PyDecoder is not None:
        p = PyDecoder()
        p._max_interned = 4
        p.feed_list(dgs + dgs[:1])
        assert p.strings() == d.strings() and p.agents() == d.agents()
        assert p.counters.tobytes() == d.counters.tobytes()
        assert p.datagrams.tobytes() == d.datagrams.tobytes()


def test_strings_decoded_with_replacement() -> None:
    d = Decoder()
    d.feed_list([dgram([counters([host_descr(b"ok\xff\xfe", b"\xc3\xa9t\xc3")])])])
    assert d.strings() == ["", "ok\ufffd\ufffd", "\u00e9t\ufffd"]


# --------------------------------------------------------------------------------------------------
# threads and memory
# --------------------------------------------------------------------------------------------------
def test_feed_releases_the_gil(swarm: list[bytes]) -> None:
    """While one thread is inside feed(), another thread runs Python code.

    With a huge switch interval, a feed that held the GIL would let the main thread run only before
    or after it; timestamps taken by the main thread inside the worker's [start, end] interval prove
    the GIL was released. (No speed is asserted: only that the two overlapped.) The pure-Python
    decoder, which holds the GIL, lets in 0-2 per feed here.
    """
    buf, offs, lens = split(swarm * 400)  # ~50k datagrams
    d = Decoder(1 << 16, 1 << 17, 1 << 16)
    interval: list[float] = []
    done = threading.Event()

    def work() -> None:
        try:
            for _ in range(20):
                d.clear()
                t0 = time.perf_counter()
                d.feed(buf, offs, lens)
                interval.extend((t0, time.perf_counter()))
        finally:
            done.set()

    old = sys.getswitchinterval()
    sys.setswitchinterval(30.0)
    try:
        t = threading.Thread(target=work)
        stamps: list[float] = []
        deadline = time.monotonic() + 60
        t.start()
        while not done.is_set() and time.monotonic() < deadline:
            stamps.append(time.perf_counter())
            time.sleep(0)  # give the GIL back explicitly, as the worker would need it
        t.join(60)
    finally:
        sys.setswitchinterval(old)
    assert not t.is_alive()
    pairs = list(zip(interval[::2], interval[1::2], strict=True))
    # a feed that held the GIL lets the main thread in at most at incidental releases (a stamp or
    # two); a nogil feed overlaps many main-thread iterations
    most = max(sum(1 for s in stamps if a < s < b) for a, b in pairs)
    assert most >= 5, f"at most {most} main-thread iterations ran during one feed(): GIL held?"


def test_concurrent_feed_on_one_decoder_is_refused(swarm: list[bytes]) -> None:
    buf, offs, lens = split(swarm * 400)
    d = Decoder(1 << 16, 1 << 17, 1 << 16)
    refused = []
    done = threading.Event()

    def work() -> None:
        for _ in range(10):
            d.clear()
            d.feed(buf, offs, lens)
        done.set()

    t = threading.Thread(target=work)
    t.start()
    deadline = time.monotonic() + 30
    while not done.is_set() and time.monotonic() < deadline:
        try:
            d.feed(buf, offs[:1], lens[:1])
        except RuntimeError:
            refused.append(1)
        time.sleep(0.001)
    t.join(30)
    assert not t.is_alive()
    check_consistent(d)  # whatever interleaving happened, the tables are consistent


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_no_leak_across_decoders() -> None:
    dgs = [dgram([counters([host_descr(b"leak-%05d-%s" % (i, b"x" * 40))])],
                 agent=i.to_bytes(4, "big")) for i in range(3000)]
    buf, offs, lens = split(dgs)

    def cycle() -> None:
        d = Decoder(MIN, MIN, MIN)
        assert d.feed(buf, offs, lens) == len(dgs)
        d.strings()
        d.agents()
        del d

    for _ in range(5):
        cycle()
    before = _rss()
    for _ in range(40):
        cycle()
    grown = _rss() - before
    assert grown < 16 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 40 decoders"


# --------------------------------------------------------------------------------------------------
# fuzz: any byte string is survivable, and the reference agrees
# --------------------------------------------------------------------------------------------------
def _invariants(d: Decoder, n_fed: int) -> None:
    check_consistent(d)
    e = d.errors
    dropped = int(e[R["truncated_header"]] + e[R["bad_version"]] + e[R["bad_agent_address"]])
    assert d.n_datagrams + dropped == n_fed
    status = d.datagrams["status"]
    for code in np.unique(status[status > 0]):
        assert e[code] >= (status == code).sum()
    assert e[0] == 0


def _compare_reference(d: Decoder, dgs: list[bytes]) -> None:
    if PyDecoder is None:
        return
    p = PyDecoder()
    assert p.feed_list(dgs) == len(dgs)
    for name in ("datagrams", "counters", "flows"):
        a, b = getattr(d, name), getattr(p, name)
        assert len(a) == len(b), name
        for col in a.dtype.names or ():
            # bytes, not values: an all-ones f32 ("unknown" load) is a NaN
            assert a[col].tobytes() == b[col].tobytes(), (name, col)
    assert d.strings() == p.strings() and d.agents() == p.agents()
    assert d.error_counts() == p.error_counts()


_LENGTHS = st.sampled_from([0, 1, 2, 3, 4, 7, 8, 11, 12, 15, 16, 31, 32, 43, 44, 64, 255,
                            0x7FFFFFFF, 0x80000000, 0xFFFFFFF8, 0xFFFFFFFF])


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    d = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 4))
        if op == 0 and d:  # bit flip
            i = draw(st.integers(0, len(d) - 1))
            d[i] ^= 1 << draw(st.integers(0, 7))
        elif op == 1 and d:  # truncation
            d = d[:draw(st.integers(0, len(d) - 1))]
        elif op in (2, 3) and len(d) >= 4:  # a word (lengths, counts, formats) replaced
            i = draw(st.integers(0, (len(d) - 4) // 4)) * 4
            v = draw(_LENGTHS) if op == 2 else draw(st.integers(0, 2**32 - 1))
            d[i:i + 4] = struct.pack(">I", v)
        else:  # junk appended
            d += draw(st.binary(max_size=16))
    return bytes(d)


def _seeds(swarm: list[bytes], corpus: Path) -> list[bytes]:
    out = list(swarm[:40])
    for p in sorted((corpus / "public").rglob("*")):
        if p.suffix in (".bin", ".dat"):
            out.append(p.read_bytes())
    return out


_FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                        HealthCheck.function_scoped_fixture])


@_FUZZ
@given(data=st.lists(st.binary(max_size=200), min_size=1, max_size=8))
def test_fuzz_random_bytes(data: list[bytes]) -> None:
    dgs = [u32(5) + x if i % 2 else x for i, x in enumerate(data)]  # half look like version 5
    d = Decoder()
    assert d.feed_list(dgs) == len(dgs)
    _invariants(d, len(dgs))
    _compare_reference(d, dgs)


@_FUZZ
@given(st.data())
def test_fuzz_mutated_real_datagrams(swarm: list[bytes], corpus: Path, data: st.DataObject) -> None:
    seeds = _seeds(swarm, corpus)
    dgs = data.draw(st.lists(mutated(seeds), min_size=1, max_size=6))
    d = Decoder()
    assert d.feed_list(dgs) == len(dgs)
    _invariants(d, len(dgs))
    _compare_reference(d, dgs)


# --------------------------------------------------------------------------------------------------
# ColumnDecoder: growth, hand-over, memory
# --------------------------------------------------------------------------------------------------
def test_column_decoder_grows_and_hands_over(swarm: list[bytes]) -> None:
    """From the smallest first sizes, 400 copies of the capture grow every table many times (and
    move them); take() gives owned arrays equal to the row decoder's, then starts empty ones."""
    from fastflow._decode import ColumnDecoder

    batch = swarm * 400
    c = ColumnDecoder(1, 1, 1)
    assert c.feed_list(batch) == len(batch)
    assert c.n_datagrams == len(batch) and c.n_samples == c.n_counters
    counts = c.record_counts()
    t = c.take()
    assert {k: len(v) for k, v in t["records"].items()} == counts
    d = Decoder(len(batch), len(batch) * 3, len(batch))
    assert d.feed_list(batch) == len(batch)
    samples, records = _schema.split_counters(d.counters)
    assert t["samples"].tobytes() == samples.tobytes()
    assert t["datagrams"].tobytes() == d.datagrams.tobytes()
    assert t["flows"].tobytes() == d.flows.tobytes()
    for name, rows in records.items():
        assert t["records"][name].tobytes() == rows.tobytes(), name
    del c  # the arrays own their memory: still readable, and writable
    assert t["samples"].flags.writeable and int(t["samples"]["dgram"][-1]) == len(batch) - 1
    t["samples"]["mask"][0] = 0
    c2 = ColumnDecoder()
    c2.feed_list(swarm)
    first = c2.take()
    again = c2.take()
    assert len(first["datagrams"]) == len(swarm) and len(again["datagrams"]) == 0
    assert again["records"] == {} and again["samples"].dtype == _schema.SAMPLE_DTYPE
    with pytest.raises(TypeError):
        _ = c2.counters  # the columnar decoder has no row views


def test_column_decoder_out_of_memory_is_an_error_not_a_crash(swarm_pcap: Path) -> None:
    """Fault injection: an address-space limit makes a table unable to grow; feed raises
    MemoryError (in a subprocess, so the limit stays there)."""
    import subprocess
    import textwrap

    code = textwrap.dedent("""
        import resource, sys
        from fastflow import pcap
        from fastflow._decode import ColumnDecoder
        cap = pcap.read(sys.argv[1])
        bufs = [cap.datagram(i) for i in range(len(cap))] * 20000
        used = int(open("/proc/self/statm").read().split()[0]) * 4096
        resource.setrlimit(resource.RLIMIT_AS,
                           (used + (64 << 20), resource.getrlimit(resource.RLIMIT_AS)[1]))
        try:
            ColumnDecoder(16, 16, 16).feed_list(bufs)
        except MemoryError as e:
            print("MemoryError", e)
        else:
            print("no error")
    """)
    # the child imports the same fastflow as this process (the checkout or the installed package)
    pkg_parent = Path(fastflow.__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(pkg_parent))
    p = subprocess.run([sys.executable, "-c", code, str(swarm_pcap)], capture_output=True,
                       text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.startswith("MemoryError"), p.stdout + p.stderr[-2000:]
