"""Public decoding API: sFlow v5 datagrams and captures into numpy tables (or objects).

The notebook entry points::

    import fastflow.decode as fd
    t = fd.read_pcap("docker-swarm.pcap")
    t.counters["vcpu_cpu_time"], t.agents, t.strings
    frames = t.to_pandas()            # needs the fastflow[pandas] extra
    fd.decode(datagram_bytes)         # one datagram as a nested dict (docs/internals.md §3)

``Decoder`` is the Cython table decoder (``fastflow._decode``) unless the environment sets
``FASTFLOW_PURE_PYTHON=1`` or the extension is not built; then it is the pure-Python reference
(``fastflow._pydecode``), with a logged warning in the second case. ``IMPLEMENTATION`` says which.
"""

from __future__ import annotations

import logging
import os
import uuid as _uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fastflow import _pydecode
from fastflow._pydecode import DecodeError
from fastflow._schema import (
    COUNTER_BIT,
    COUNTER_DTYPE,
    COUNTER_RECORDS,
    DATAGRAM_DTYPE,
    FLOW_BIT,
    FLOW_DTYPE,
    IPV4_MAPPED_PREFIX,
)

if TYPE_CHECKING:
    import pandas

__all__ = ["IMPLEMENTATION", "DecodeError", "Decoder", "Tables", "decode", "decode_buffers",
           "iter_tables", "read_pcap"]

log = logging.getLogger(__name__)

Decoder: Any
IMPLEMENTATION: str
if os.environ.get("FASTFLOW_PURE_PYTHON") == "1":
    Decoder = _pydecode.Decoder
    IMPLEMENTATION = "python"
    log.debug("FASTFLOW_PURE_PYTHON=1: using the pure-Python reference decoder")
else:
    try:
        from fastflow._decode import Decoder as _CDecoder
    except ImportError as _e:  # extension not built (or broken): the reference still works
        log.warning("Cython decoder unavailable (%s); falling back to the pure-Python decoder, "
                    "which is much slower (build with: python setup.py build_ext --inplace)", _e)
        Decoder = _pydecode.Decoder
        IMPLEMENTATION = "python"
    else:
        Decoder = _CDecoder
        IMPLEMENTATION = "cython"


@dataclass
class Tables:
    """Decoded tables of a batch or capture, plus the decoder's intern tables and error counts.

    ``counters["hostname"]`` etc. hold indices into ``strings``; ``agent`` columns index
    ``agents``; ``dgram`` columns index ``datagrams``. ``errors`` maps reason name -> count.
    """

    datagrams: np.ndarray
    counters: np.ndarray
    flows: np.ndarray
    strings: list[str]
    agents: list[str]
    errors: dict[str, int]
    skipped: dict[str, int] = field(default_factory=dict)  # capture frames not taken (read_pcap)

    def to_pandas(self) -> dict[str, pandas.DataFrame]:
        """Three DataFrames ("datagrams", "counters", "flows") with text for agents and strings.

        Addresses become text, MACs 12 hex digits, uuids canonical text, and a ``records``
        column lists the records present in each sample (decoded from ``mask``).
        """
        try:
            import pandas as pd
        except ImportError as e:
            raise ImportError("Tables.to_pandas() needs pandas: pip install 'fastflow[pandas]'") \
                from e
        agents = np.array(self.agents, dtype=object)
        strings = np.array(self.strings, dtype=object)

        def frame(arr: np.ndarray) -> pandas.DataFrame:
            cols: dict[str, Any] = {}
            names = arr.dtype.names or ()
            for name in names:
                col = arr[name]
                if name == "agent":
                    cols[name] = agents[col] if len(col) else col.astype(object)
                elif name in ("hostname", "os_release"):
                    cols[name] = strings[col] if len(col) else col.astype(object)
                elif name in ("ip_src", "ip_dst", "nexthop"):
                    cols[name] = [_ip_text(bytes(v)) for v in col]
                elif name == "uuid":
                    cols[name] = [str(_uuid.UUID(bytes=bytes(v))) for v in col]
                elif name in ("eth_src", "eth_dst"):
                    cols[name] = [f"{int(v):012x}" for v in col]
                else:
                    cols[name] = col
            return pd.DataFrame(cols)

        out = {"datagrams": frame(self.datagrams), "counters": frame(self.counters),
               "flows": frame(self.flows)}
        out["counters"]["records"] = _mask_names(self.counters["mask"],
                                                 [r[1] for r in COUNTER_RECORDS], COUNTER_BIT)
        out["flows"]["records"] = _mask_names(self.flows["mask"], list(FLOW_BIT), FLOW_BIT)
        return out


def _ip_text(raw: bytes) -> str:
    import ipaddress
    if raw == b"\x00" * 16:
        return ""
    if raw.startswith(IPV4_MAPPED_PREFIX):
        return str(ipaddress.IPv4Address(raw[12:]))
    return str(ipaddress.IPv6Address(raw))


def _mask_names(mask: np.ndarray, names: list[str], bits: dict[str, int]) -> list[str]:
    return [",".join(n for n in names if int(m) >> bits[n] & 1) for m in mask]


def _tables(dec: Any, copy: bool) -> Tables:
    def grab(a: np.ndarray) -> np.ndarray:
        return a.copy() if copy else a
    return Tables(grab(dec.datagrams), grab(dec.counters), grab(dec.flows), dec.strings(),
                  dec.agents(), dec.error_counts())


def iter_tables(buf: Any, offsets: Any, lengths: Any, ts: Any = None,
                decoder: Any = None) -> Iterator[Tables]:
    """Decode a batch, yielding Tables of *views* each time the decoder's tables fill up.

    The views are valid until the next iteration; copy what you keep. ``decoder`` (optional) is
    reused, so its intern tables and error counts carry over; rows it already held are yielded
    first. ``errors`` in each Tables is the decoder's cumulative count.
    """
    dec = Decoder() if decoder is None else decoder
    offs = np.ascontiguousarray(offsets, np.int64).reshape(-1)
    lens = np.ascontiguousarray(lengths, np.int64).reshape(-1)
    if offs.shape != lens.shape:
        raise ValueError(f"offsets ({offs.size}) and lengths ({lens.size}) differ in size")
    tss: Any = ts
    if ts is not None and np.ndim(ts) > 0:
        tss = np.ascontiguousarray(ts, np.float64).reshape(-1)
        if tss.size != offs.size:
            raise ValueError(f"ts has {tss.size} entries for {offs.size} datagrams")
    start, n = 0, int(offs.size)
    while True:
        empty = dec.n_datagrams == 0 and dec.n_counters == 0 and dec.n_flows == 0
        part_ts = tss[start:] if isinstance(tss, np.ndarray) else tss
        k = int(dec.feed(buf, offs[start:], lens[start:], part_ts)) if start < n else 0
        start += k
        if start < n and k == 0 and empty:
            raise ValueError(f"datagram {start} produces more rows than the decoder's capacity")
        if start >= n:
            yield _tables(dec, copy=False)
            dec.clear()
            return
        yield _tables(dec, copy=False)
        dec.clear()


def decode_buffers(buf: Any, offsets: Any, lengths: Any, ts: Any = None) -> Tables:
    """Decode a whole batch into one Tables of owned arrays (flushing the decoder as needed).

    ``dgram`` columns are renumbered to index the combined datagram table.
    """
    dec = Decoder()
    dgs: list[np.ndarray] = []
    cts: list[np.ndarray] = []
    fls: list[np.ndarray] = []
    base = 0
    for t in iter_tables(buf, offsets, lengths, ts, decoder=dec):
        c, f = t.counters.copy(), t.flows.copy()
        c["dgram"] += base
        f["dgram"] += base
        dgs.append(t.datagrams.copy())
        cts.append(c)
        fls.append(f)
        base += len(t.datagrams)
    return Tables(
        np.concatenate(dgs) if dgs else np.zeros(0, DATAGRAM_DTYPE),
        np.concatenate(cts) if cts else np.zeros(0, COUNTER_DTYPE),
        np.concatenate(fls) if fls else np.zeros(0, FLOW_DTYPE),
        dec.strings(), dec.agents(), dec.error_counts())


def read_pcap(path: str | os.PathLike[str], port: int | None = 6343) -> Tables:
    """Decode every sFlow datagram (UDP ``port``; None = any) of a pcap/pcapng capture."""
    from fastflow.pcap import read

    cap = read(Path(path), port=port)
    t = decode_buffers(cap.buf, cap.offsets, cap.lengths, cap.ts)
    t.skipped = dict(cap.skipped)
    return t


def decode(data: bytes, ts: float = 0.0) -> dict[str, Any]:
    """One datagram as the nested dict of docs/internals.md §3; raises :class:`DecodeError`."""
    return _pydecode.parse(data, ts)
