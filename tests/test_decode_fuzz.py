"""Fuzzing the decoders with hypothesis: mutated real datagrams and random bytes.

* ``decode()`` never raises anything but DecodeError, and its objects are JSON-serialisable.
* The table decoders never raise on any bytes, their tables are self-consistent and agree with the
  object parser on which samples become rows.
* Differential: the Cython and the reference decoder give identical tables, intern tables and error
  counts on every input.

Examples are bounded (300 per property) so the file stays fast.
"""

from __future__ import annotations

import json
import os
import struct
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastflow.decode as fd
from _sflow_build import (
    counters_sample,
    datagram,
    eth,
    ext_header,
    extended_gateway,
    extended_router,
    extended_switch,
    fixed_counter,
    flow_sample,
    frag_header,
    host_adapters,
    host_descr,
    icmp,
    ipv4,
    ipv6,
    record,
    sample,
    sampled_ethernet,
    sampled_header,
    sampled_ipv4,
    sampled_ipv6,
    tcp,
    udp,
)
from conftest import corpus_dir
from fastflow._pydecode import ColumnDecoder as PyColumnDecoder
from fastflow._pydecode import Decoder as PyDecoder
from fastflow._schema import N_REASONS, REASON_CODE, split_counters

SETTINGS = settings(max_examples=300, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _built() -> list[bytes]:
    """Hand-built datagrams covering every record type (the fuzz works without the corpus)."""
    hdrs = [eth(ipv4(tcp(), proto=6), vlans=[(0x8100, 5), (0x8100, 6)]),
            eth(ipv6(ext_header(44, 0) + frag_header(17) + udp(), nh=0), etype=0x86DD),
            ipv4(icmp(), proto=1, frag=0x2000)]
    flows = [record(1, sampled_header(h, protocol=p)) for h, p in zip(hdrs, (1, 1, 11),
                                                                      strict=True)]
    flows += [record(2, sampled_ethernet(60, b"\1" * 6, b"\2" * 6, 0x800)),
              record(3, sampled_ipv4(40, 6, "1.2.3.4", "5.6.7.8", 1, 2, 3, 4)),
              record(4, sampled_ipv6(40, 17, "::1", "::2", 1, 2, 3, 4)),
              record(1001, extended_switch(1, 2, 3, 4)),
              record(1002, extended_router("10.0.0.1", 8, 24)),
              record(1003, extended_gateway("::9", 1, 2, 3, [(2, [4, 5])], [6], 7)),
              record(1006, b"\0" * 8)]
    counters = [record(2000, host_descr("host-a")), record(2001, host_adapters([(1, [b"\1" * 6])])),
                record(2003, fixed_counter("host_cpu", {"load_one": 1.5}, length=80)),
                record(2004, fixed_counter("host_memory")),
                record(2101, fixed_counter("virt_cpu")), record(1, fixed_counter("if_counters"))]
    return [
        datagram([flow_sample(flows), counters_sample(counters, sid=(2 << 24) | 1)]),
        datagram([flow_sample(flows[:3], expanded=True), counters_sample(counters, expanded=True,
                                                                         sid_type=3,
                                                                         sid_index=77)],
                 agent="2001:db8::1"),
        datagram([sample(5, b"\0" * 16), counters_sample(counters[:2])], agent=None),
    ]


def _seeds() -> list[bytes]:
    seeds = _built()
    root = corpus_dir()
    if root is not None:
        try:
            from fastflow.pcap import read
        except ImportError:
            read = None  # type: ignore[assignment]
        for p in sorted(root.rglob("*")):
            if p.suffix in (".bin", ".dat"):
                seeds.append(p.read_bytes())
            elif p.suffix == ".pcap" and read is not None:
                cap = read(p)
                seeds += [cap.datagram(i) for i in range(min(len(cap), 8))]
    return [s for s in seeds if len(s) <= 4096]


SEEDS = _seeds()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A seed datagram with a few byte flips, word overwrites, truncation or insertion."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        op = draw(st.integers(0, 4))
        pos = draw(st.integers(0, len(data) - 1))
        if op == 0:
            data[pos] = draw(st.integers(0, 255))
        elif op == 1 and pos + 4 <= len(data):  # a length/count word gets a nasty value
            word = draw(st.sampled_from([0, 1, 3, 4, 7, 8, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF,
                                         0xFFFFFFF8, len(data), len(data) - pos]))
            struct.pack_into(">I", data, pos & ~3, word & 0xFFFFFFFF)
        elif op == 2:
            del data[pos:]
        elif op == 3:
            data[pos:pos] = draw(st.binary(max_size=16))
        else:
            del data[pos: pos + draw(st.integers(1, 16))]
    return bytes(data)


random_bytes = st.one_of(
    st.binary(max_size=200),
    st.binary(max_size=300).map(lambda b: struct.pack(">II", 5, 1) + b),
    st.binary(max_size=300).map(lambda b: struct.pack(">IIIIIII", 5, 1, 0, 0, 0, 0, 3) + b),
)
inputs = st.one_of(mutated(), random_bytes)


def _cython() -> type:
    if os.environ.get("FASTFLOW_PURE_PYTHON") == "1":
        pytest.skip("FASTFLOW_PURE_PYTHON=1: Cython decoder disabled")
    from fastflow._decode import Decoder  # must import: a missing build is a failure
    return Decoder


def _cython_columns() -> type:
    _cython()
    from fastflow._decode import ColumnDecoder
    return ColumnDecoder


def tables_equal(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    for name in a.dtype.names or ():
        x, y = a[name], b[name]
        if x.dtype.kind == "f":
            assert np.array_equal(x, y, equal_nan=True), name
        else:
            assert np.array_equal(x, y), name


def check_consistent(d: object, n_in: int) -> None:
    dg, ct, fl = d.datagrams, d.counters, d.flows  # type: ignore[attr-defined]
    assert len(dg) <= n_in
    assert int(dg["n_counters"].sum()) == len(ct) and int(dg["n_flows"].sum()) == len(fl)
    for t in (ct, fl):
        assert np.all(t["dgram"] < max(len(dg), 1))
        assert np.all(np.diff(t["dgram"].astype(np.int64)) >= 0)
        assert np.all(t["agent"] == dg["agent"][t["dgram"]]) if len(t) else True
    assert np.all(dg["status"] < N_REASONS)
    assert np.all(np.isin(dg["agent_af"], [0, 4, 6]))
    assert np.all(ct["hostname"] < len(d.strings()))  # type: ignore[attr-defined]
    errors = d.errors  # type: ignore[attr-defined]
    rejected = sum(int(errors[REASON_CODE[r]]) for r in ("truncated_header", "bad_version",
                                                         "bad_agent_address"))
    assert len(dg) + rejected == n_in


@SETTINGS
@given(data=inputs)
def test_decode_objects_never_crash(data: bytes) -> None:
    try:
        o = fd.decode(data)
    except fd.DecodeError as e:
        assert e.reason in REASON_CODE
        return
    json.dumps(o)
    d = PyDecoder()
    d.feed_list([data])
    good = [s for s in o["samples"]
            if s.get("type") in ("counters", "flow", "discard") and "error" not in s]
    assert d.n_counters == sum(1 for s in good if s["type"] == "counters")
    assert d.n_flows == sum(1 for s in good if s["type"] in ("flow", "discard"))
    assert int(d.flows["discard"].sum()) == sum(1 for s in good if s["type"] == "discard")
    assert d.error_counts() == reasons_of(o)


def reasons_of(o: dict) -> dict[str, int]:
    """Every reason an object reports: its error list plus the skips found by walking it."""
    c = Counter(o["errors"])
    for s in o["samples"]:
        if s.get("type") == "unknown":
            c["unknown_sample"] += 1
        c["unknown_record"] += sum(1 for r in s.get("records", ()) if r.get("name") == "unknown")
    return {k: v for k, v in c.items() if v}


@SETTINGS
@given(batch=st.lists(inputs, min_size=1, max_size=4))
def test_differential_cython_vs_python(batch: list[bytes]) -> None:
    cy, py = _cython()(), PyDecoder()
    assert cy.feed_list(batch) == py.feed_list(batch) == len(batch)
    for name in ("datagrams", "counters", "flows"):
        tables_equal(getattr(cy, name), getattr(py, name))
    assert list(cy.errors) == list(py.errors)
    assert cy.strings() == py.strings() and cy.agents() == py.agents()
    check_consistent(cy, len(batch))
    check_consistent(py, len(batch))
    columns_equal(batch, cy)


def columns_equal(batch: list[bytes], rows: object) -> None:
    """Both columnar decoders (read_pcap's) give the row decoder's tables, split by record."""
    samples, records = split_counters(rows.counters)  # type: ignore[attr-defined]
    for cls in (_cython_columns(), PyColumnDecoder):
        c = cls()
        assert c.feed_list(batch) == len(batch)
        t = c.take()
        tables_equal(t["datagrams"], rows.datagrams)  # type: ignore[attr-defined]
        tables_equal(t["flows"], rows.flows)  # type: ignore[attr-defined]
        tables_equal(t["samples"], samples)
        assert sorted(t["records"]) == sorted(records)
        for name, r in records.items():
            tables_equal(t["records"][name], r)


def test_seeds_present() -> None:
    assert len(SEEDS) >= 3
    if corpus_dir() is None:
        pytest.skip("corpus absent: fuzzing from hand-built seeds only")
    assert len(SEEDS) > 40


def test_differential_on_every_seed() -> None:
    """All seeds unmutated in one batch, and each alone, through both decoders."""
    cy, py = _cython()(), PyDecoder()
    assert cy.feed_list(SEEDS) == py.feed_list(SEEDS) == len(SEEDS)
    for name in ("datagrams", "counters", "flows"):
        tables_equal(getattr(cy, name), getattr(py, name))
    assert list(cy.errors) == list(py.errors) and cy.strings() == py.strings()
    columns_equal(SEEDS, cy)
