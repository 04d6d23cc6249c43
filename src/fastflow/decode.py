"""Public decoding API: sFlow v5 datagrams and captures into numpy tables (or objects).

The notebook entry points (docs/notebook.md)::

    import fastflow.decode as fd
    t = fd.read_pcap("docker-swarm.pcap")     # one pass, tables sized to the data
    t.samples                                 # one row per counter sample (agent, source, mask...)
    t.records["virt_cpu"]  # or t.virt_cpu    # one row per virt_cpu record, ``sample`` links back
    t.flows                                   # flow samples and 0:5 discard events
    t.text(t.records["host_descr"]["hostname"])   # interned strings as text
    frames = t.to_pandas()                    # needs pandas
    t.to_arrow(); t.to_parquet("out/")        # needs the fastflow[arrow] extra (pyarrow)
    fd.decode(datagram_bytes)                 # one datagram as a nested dict (internals §3)

``Decoder`` (the live collector's fixed-capacity row decoder) and ``ColumnDecoder`` (the columnar
one behind ``read_pcap``) are the Cython ones (``fastflow._decode``) unless the environment sets
``FASTFLOW_PURE_PYTHON=1`` or the extension is not built; then they are the pure-Python reference
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
    COUNTER_RECORDS,
    FLOW_BIT,
    IPV4_MAPPED_PREFIX,
    RECORD_DTYPES,
    join_counters,
)

if TYPE_CHECKING:
    import pandas
    import pyarrow

__all__ = ["IMPLEMENTATION", "ColumnDecoder", "DecodeError", "Decoder", "Tables", "decode",
           "decode_buffers", "iter_tables", "read_pcap"]

log = logging.getLogger(__name__)

Decoder: Any
ColumnDecoder: Any
IMPLEMENTATION: str
if os.environ.get("FASTFLOW_PURE_PYTHON") == "1":
    Decoder, ColumnDecoder = _pydecode.Decoder, _pydecode.ColumnDecoder
    IMPLEMENTATION = "python"
    log.debug("FASTFLOW_PURE_PYTHON=1: using the pure-Python reference decoder")
else:
    try:
        from fastflow._decode import ColumnDecoder as _CColumnDecoder
        from fastflow._decode import Decoder as _CDecoder
    except ImportError as _e:  # extension not built (or broken): the reference still works
        log.warning("Cython decoder unavailable (%s); falling back to the pure-Python decoder, "
                    "which is much slower (build with: python setup.py build_ext --inplace)", _e)
        Decoder, ColumnDecoder = _pydecode.Decoder, _pydecode.ColumnDecoder
        IMPLEMENTATION = "python"
    else:
        Decoder, ColumnDecoder = _CDecoder, _CColumnDecoder
        IMPLEMENTATION = "cython"


# columns holding an index into the string table / agent table
_STRING_COLUMNS = frozenset({"hostname", "os_release", "ifname"})
_IP16_COLUMNS = frozenset({"ip_src", "ip_dst", "nexthop"})
# sample columns joined onto each record table by to_pandas()/to_arrow() (via ``sample``)
_JOINED = ("ts", "agent", "source_id_type", "source_id_index")


@dataclass
class Tables:
    """Decoded tables of a capture or batch, sized to the data, plus intern tables and counts.

    * ``datagrams`` (``DATAGRAM_DTYPE``): one row per datagram.
    * ``samples`` (``SAMPLE_DTYPE``): one row per counter sample; ``dgram`` indexes ``datagrams``,
      ``mask`` has bit ``COUNTER_BIT[name]`` for each record the sample carried.
    * ``records[name]`` (``RECORD_DTYPES[name]``): one table per counter record type present, one
      row per record; ``sample`` indexes ``samples``. Also reachable as ``t.<name>``.
    * ``flows`` (``FLOW_DTYPE``): flow samples, and 0:5 discard events (``discard == 1``).

    ``hostname``/``os_release``/``ifname`` hold indices into ``strings`` and ``agent`` into
    ``agents`` (:meth:`text` maps them). ``errors`` maps reason name -> count; ``skipped`` counts
    capture frames not taken (read_pcap). ``counters`` rebuilds the wide one-row-per-sample
    ``COUNTER_DTYPE`` table of the live decoder (costly: every column of every record).
    """

    datagrams: np.ndarray
    samples: np.ndarray
    records: dict[str, np.ndarray]
    flows: np.ndarray
    strings: list[str]
    agents: list[str]
    errors: dict[str, int]
    skipped: dict[str, int] = field(default_factory=dict)

    def __getattr__(self, name: str) -> np.ndarray:
        # t.virt_cpu == t.records["virt_cpu"]; an absent record type is an empty table
        if name in RECORD_DTYPES:
            recs = self.__dict__.get("records", {})
            return recs[name] if name in recs else np.zeros(0, RECORD_DTYPES[name])
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    @property
    def counters(self) -> np.ndarray:
        """The wide ``COUNTER_DTYPE`` form (one row per sample, every record's columns)."""
        return join_counters(self.samples, self.records)

    def text(self, column: np.ndarray, table: str = "strings") -> np.ndarray:
        """An index column (``hostname``, ``ifname``, ..., or ``agent`` with table="agents") as
        an object array of text."""
        names = np.array(self.strings if table == "strings" else self.agents, dtype=object)
        return names[np.asarray(column, np.int64)] if len(column) else np.zeros(0, object)

    def record(self, name: str) -> np.ndarray:
        """``records[name]``, or an empty table of its dtype when the capture had none."""
        return getattr(self, name) if name in RECORD_DTYPES else self.records[name]

    # -- exports ----------------------------------------------------------------------------------
    def _columns(self, table: str) -> dict[str, np.ndarray]:
        """Columns of one table as plain arrays, record tables with the joined sample columns."""
        if table in ("datagrams", "samples", "flows"):
            arr = getattr(self, table)
            return {n: arr[n] for n in arr.dtype.names or ()}
        arr = self.records[table]
        rows = arr["sample"].astype(np.int64)
        cols = {n: self.samples[n][rows] for n in _JOINED}
        cols.update({n: arr[n] for n in arr.dtype.names or ()})
        return cols

    def table_names(self) -> list[str]:
        """The tables :meth:`to_pandas` / :meth:`to_arrow` export: the three fixed ones, then the
        record types present."""
        return ["datagrams", "samples", "flows", *self.records]

    def to_pandas(self) -> dict[str, pandas.DataFrame]:
        """One DataFrame per table (:meth:`table_names`), text for agents and strings.

        Record frames carry their sample's ``ts``, ``agent``, ``source_id_type`` and
        ``source_id_index``. Addresses become text, MACs 12 hex digits, uuids canonical text;
        ``samples`` and ``flows`` get a ``records`` column naming the records in ``mask``.
        """
        try:
            import pandas as pd
        except ImportError as e:
            raise ImportError("Tables.to_pandas() needs pandas: pip install 'fastflow[pandas]'") from e
        out: dict[str, pandas.DataFrame] = {}
        for table in self.table_names():
            cols: dict[str, Any] = {}
            for name, col in self._columns(table).items():
                if name == "agent":
                    cols[name] = self.text(col, "agents")
                elif name in _STRING_COLUMNS:
                    cols[name] = self.text(col)
                elif name in _IP16_COLUMNS:
                    cols[name] = [_ip_text(bytes(v)) for v in col]
                elif name == "uuid":
                    cols[name] = [str(_uuid.UUID(bytes=bytes(v))) for v in col]
                elif name in ("eth_src", "eth_dst"):
                    cols[name] = [f"{int(v):012x}" for v in col]
                else:
                    cols[name] = col
            out[table] = pd.DataFrame(cols)
        out["samples"]["records"] = _mask_names(self.samples["mask"],
                                                [r[1] for r in COUNTER_RECORDS], COUNTER_BIT)
        out["flows"]["records"] = _mask_names(self.flows["mask"], list(FLOW_BIT), FLOW_BIT)
        return out

    def to_arrow(self) -> dict[str, pyarrow.Table]:
        """One ``pyarrow.Table`` per table (:meth:`table_names`), for DuckDB / Polars / Parquet.

        Numbers stay numbers (one copy out of the row layout, no per-value Python); ``agent`` and
        the string columns become dictionary arrays over the intern tables; 16-byte addresses and
        uuids ``fixed_size_binary(16)``. Needs the ``fastflow[arrow]`` extra (pyarrow).
        """
        pa = _pyarrow()
        agents = pa.array(self.agents, pa.string())
        strings = pa.array(self.strings, pa.string())
        out: dict[str, pyarrow.Table] = {}
        for table in self.table_names():
            arrays, names = [], []
            for name, col in self._columns(table).items():
                if name == "agent" or name in _STRING_COLUMNS:
                    idx = pa.array(np.ascontiguousarray(col).astype(np.int32))
                    arrays.append(pa.DictionaryArray.from_arrays(
                        idx, agents if name == "agent" else strings))
                elif col.ndim == 2:  # (n, 16) bytes
                    raw = np.ascontiguousarray(col)
                    arrays.append(pa.FixedSizeBinaryArray.from_buffers(
                        pa.binary(col.shape[1]), len(raw), [None, pa.py_buffer(raw)]))
                else:
                    arrays.append(pa.array(np.ascontiguousarray(col)))
                names.append(name)
            out[table] = pa.Table.from_arrays(arrays, names=names)
        return out

    def to_parquet(self, directory: str | os.PathLike[str], **kwargs: Any) -> list[Path]:
        """Write one Parquet file per table (``<directory>/<table>.parquet``); returns the paths.

        ``kwargs`` go to ``pyarrow.parquet.write_table`` (e.g. ``compression="zstd"``). Needs the
        ``fastflow[arrow]`` extra.
        """
        _pyarrow()
        import pyarrow.parquet as pq

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, table in self.to_arrow().items():
            path = out / f"{name}.parquet"
            pq.write_table(table, path, **kwargs)
            paths.append(path)
        return paths


def _pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError as e:
        raise ImportError("Tables.to_arrow()/to_parquet() need pyarrow: "
                          "pip install 'fastflow[arrow]'") from e
    return pyarrow


def _ip_text(raw: bytes) -> str:
    import ipaddress
    if raw == b"\x00" * 16:
        return ""
    if raw.startswith(IPV4_MAPPED_PREFIX):
        return str(ipaddress.IPv4Address(raw[12:]))
    return str(ipaddress.IPv6Address(raw))


def _mask_names(mask: np.ndarray, names: list[str], bits: dict[str, int]) -> list[str]:
    return [",".join(n for n in names if int(m) >> bits[n] & 1) for m in mask]


def _taken(dec: Any, skipped: dict[str, int] | None = None) -> Tables:
    t = dec.take()
    return Tables(t["datagrams"], t["samples"], t["records"], t["flows"], dec.strings(),
                  dec.agents(), dec.error_counts(), dict(skipped or {}))


def _arrays(offsets: Any, lengths: Any, ts: Any) -> tuple[np.ndarray, np.ndarray, Any]:
    offs = np.ascontiguousarray(offsets, np.int64).reshape(-1)
    lens = np.ascontiguousarray(lengths, np.int64).reshape(-1)
    if offs.shape != lens.shape:
        raise ValueError(f"offsets ({offs.size}) and lengths ({lens.size}) differ in size")
    tss: Any = ts
    if ts is not None and np.ndim(ts) > 0:
        tss = np.ascontiguousarray(ts, np.float64).reshape(-1)
        if tss.size != offs.size:
            raise ValueError(f"ts has {tss.size} entries for {offs.size} datagrams")
    return offs, lens, tss


def column_decoder_for(n_datagrams: int, n_bytes: int) -> Any:
    """A ColumnDecoder whose first table sizes follow a batch's size (they grow if short).

    A Host sFlow datagram of ``b`` bytes carries about ``b / 230`` counter samples; flow samples
    are bigger. Untouched capacity costs address space, not memory.
    """
    return ColumnDecoder(max(n_datagrams, 16), max(n_bytes // 200, 16), max(n_bytes // 400, 16))


def iter_tables(buf: Any, offsets: Any, lengths: Any, ts: Any = None,
                chunk: int = 65536, decoder: Any = None) -> Iterator[Tables]:
    """Decode a batch ``chunk`` datagrams at a time, yielding one :class:`Tables` per chunk.

    Each Tables owns its arrays (``dgram`` indexes that chunk's datagrams). ``decoder`` (optional,
    a ColumnDecoder) is reused, so its intern tables and error counts carry over; ``errors`` in
    each Tables is the decoder's cumulative count.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    offs, lens, tss = _arrays(offsets, lengths, ts)
    dec = decoder if decoder is not None else column_decoder_for(
        min(chunk, len(offs)), int(lens[:chunk].sum()))
    for start in range(0, max(len(offs), 1), chunk):
        stop = start + chunk
        part_ts = tss[start:stop] if isinstance(tss, np.ndarray) else tss
        dec.feed(buf, offs[start:stop], lens[start:stop], part_ts)
        yield _taken(dec)


def decode_buffers(buf: Any, offsets: Any, lengths: Any, ts: Any = None) -> Tables:
    """Decode a whole batch into one :class:`Tables` in one pass (the tables grow as needed)."""
    offs, lens, tss = _arrays(offsets, lengths, ts)
    dec = column_decoder_for(len(offs), int(lens.sum()))
    dec.feed(buf, offs, lens, tss)
    return _taken(dec)


def read_pcap(path: str | os.PathLike[str], port: int | None = 6343) -> Tables:
    """Decode every sFlow datagram (UDP ``port``; None = any) of a pcap/pcapng capture.

    One pass: the capture is mapped (or read) once, its payloads decoded where they lie, straight
    into tables sized to the data (see :class:`Tables`). Memory: about the capture's size for the
    mapping while decoding, plus tables a little smaller than the sFlow payloads.
    """
    from fastflow.pcap import read

    cap = read(Path(path), port=port)
    dec = column_decoder_for(len(cap.offsets), int(cap.lengths.sum()))
    dec.feed(cap.buf, cap.offsets, cap.lengths, cap.ts)
    return _taken(dec, cap.skipped)


def decode(data: bytes, ts: float = 0.0) -> dict[str, Any]:
    """One datagram as the nested dict of docs/internals.md §3; raises :class:`DecodeError`."""
    return _pydecode.parse(data, ts)
