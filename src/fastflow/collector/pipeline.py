"""The pipeline: decode batches of sFlow datagrams into tables and hand them to every sink.

``Pipeline.feed`` runs one batch of datagrams (a byte buffer plus offsets/lengths, as the UDP ingest
and the pcap reader produce) through the table decoder, flushing the decoder whenever one of its
tables fills up, and calls ``sink.add(batch)`` on every sink for each flush, under ``Pipeline.lock``
so that readers (the REST API, the scaler) see whole batches only.

``Pipeline.feed_capture`` replays a capture in capture-time order with a :class:`ReplayClock` that
follows the capture's timestamps, optionally stopping every ``step`` seconds of capture time to call
``on_step(t)``. This is what ``fastflow series`` and the replay tests use: the store and the metrics
see exactly the same data and the same clock as the live service would have.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from fastflow.pcap import Capture

__all__ = [
    "Batch",
    "Clock",
    "LiveClock",
    "Pipeline",
    "ReplayClock",
    "Sink",
    "StringView",
]

log = logging.getLogger(__name__)

COMPACT_MIN_S = 10.0     # seconds between two compactions of the decoder's intern tables
COMPACT_IDLE_S = 300.0   # ... and between two made only to give back what sinks let go of


@runtime_checkable
class Clock(Protocol):
    """Where "now" comes from: wall time when live, capture time when replaying."""

    def now(self) -> float: ...


class LiveClock:
    """The wall clock (``time.time()``), for the live service."""

    def now(self) -> float:
        return time.time()


class ReplayClock:
    """Capture time: ``now()`` is the newest timestamp fed (never goes backwards) or set explicitly."""

    def __init__(self, t: float = 0.0) -> None:
        self._t = float(t)

    def now(self) -> float:
        return self._t

    def set(self, t: float) -> None:
        """Set the time, backwards too (explicit control, e.g. by a test)."""
        self._t = float(t)

    def advance(self, t: float) -> None:
        """Move to ``t`` if it is later than the current time (replay keeps time monotonic)."""
        if t > self._t:
            self._t = float(t)


class StringView:
    """Index -> text for one of the decoder's intern tables (strings or agents).

    Between two compactions (:meth:`Pipeline.compact_interned`) the decoder's tables only grow, so
    the text list is fetched once and re-fetched only when an index beyond it is asked for. Index 0
    is "" (absent); an index the decoder does not know (yet) gives "".
    """

    def __init__(self, fetch: Callable[[], list[str]]) -> None:
        self._fetch = fetch
        self._cache: list[str] = []
        self._index: dict[str, int] | None = None

    def _refresh(self) -> None:
        self._cache = list(self._fetch())
        self._index = None

    def invalidate(self) -> None:
        """Forget the cached text (the decoder renumbered its table: a compaction)."""
        self._cache = []
        self._index = None

    def __getitem__(self, i: int) -> str:
        i = int(i)
        if i < 0:
            raise IndexError(i)
        if i >= len(self._cache):
            self._refresh()
            if i >= len(self._cache):
                return ""
        return self._cache[i]

    def __len__(self) -> int:
        self._refresh()
        return len(self._cache)

    def resolve(self, codes: np.ndarray) -> list[str]:
        """Text of every index in ``codes`` (vectorised lookups: one refresh at most)."""
        if len(codes) and int(np.max(codes)) >= len(self._cache):
            self._refresh()
        cache = self._cache
        n = len(cache)
        return [cache[c] if 0 <= c < n else "" for c in codes.tolist()]

    def index_of(self, text: str) -> int | None:
        """The index of ``text`` (e.g. an agent address), or None when it was never seen."""
        if self._index is None or text not in self._index:
            self._refresh()
            self._index = {s: i for i, s in enumerate(self._cache)}
        return self._index.get(text)


def _is_vec(a: Any, dt: type) -> bool:
    return isinstance(a, np.ndarray) and a.dtype == dt and a.ndim == 1 and a.flags.c_contiguous


@dataclass
class Batch:
    """One decoder flush. The arrays are views valid only during ``Sink.add``: copy what you keep."""

    datagrams: np.ndarray
    counters: np.ndarray
    flows: np.ndarray
    strings: StringView
    agents: StringView


@runtime_checkable
class Sink(Protocol):
    """Anything that consumes decoded batches (store, agent statistics, top flows, ...).

    A sink that keeps the decoder's string or agent indices beyond ``add`` also has
    ``interned_refs() -> (string indices, agent indices)`` and ``remap_interned(smap, amap)``
    (old index -> new index arrays), so that :meth:`Pipeline.compact_interned` can drop what no
    sink holds; a sink without them must keep text, not indices."""

    def add(self, tables: Batch) -> None: ...


@dataclass
class _Counts:
    datagrams: int = 0
    oversize: int = 0
    compactions: int = 0
    interned_dropped: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class Pipeline:
    """Decoder + sinks. Thread-safe: every feed and every sink call runs under ``lock``."""

    def __init__(self, sinks: Sequence[Sink], decoder: Any = None, clock: Clock | None = None) -> None:
        if decoder is None:
            from fastflow.decode import Decoder

            decoder = Decoder()
        self.decoder = decoder
        self.sinks: list[Sink] = list(sinks)
        self.clock: Clock = clock if clock is not None else LiveClock()
        self.lock = threading.RLock()
        self.strings = StringView(decoder.strings)
        self.agents = StringView(decoder.agents)
        self._counts = _Counts()
        cap = int(getattr(decoder, "max_interned", 0))
        # the decoder's string and agent tables are compacted when either reaches half its cap
        # (then twice what survived), at most every COMPACT_MIN_S seconds, and every
        # COMPACT_IDLE_S while they hold more than 1/16 of the cap: entries no sink holds any more
        # (spoofed agents, containers long gone) are dropped and their memory given back
        self._compact_floor = max(cap // 2, 2) if cap else 0
        self._compact_at = self._compact_floor
        self._compact_cap = cap
        self._last_compact = time.monotonic()

    # ------------------------------------------------------------------------------------------
    def add_sink(self, sink: Sink) -> None:
        """Attach another sink (it sees batches fed from now on)."""
        with self.lock:
            self.sinks.append(sink)

    def feed(self, buf: Any, offsets: Any, lengths: Any, ts: Any = None) -> None:
        """Decode datagrams ``buf[offsets[i]:offsets[i]+lengths[i]]`` and pass them to every sink.

        ``ts`` is None (every datagram stamped with ``clock.now()``), a float, or a float64 array of
        per-datagram timestamps (epoch seconds).
        """
        # the live ingest hands int64 / float64 arrays already: no conversion on that path
        if not _is_vec(offsets, np.int64):
            offsets = np.ascontiguousarray(offsets, np.int64)
        if not _is_vec(lengths, np.int64):
            lengths = np.ascontiguousarray(lengths, np.int64)
        n = len(offsets)
        if len(lengths) != n:
            raise ValueError(f"offsets ({n}) and lengths ({len(lengths)}) differ in length")
        if n == 0:
            return
        if ts is None:
            tsa = np.full(n, self.clock.now(), np.float64)
        elif _is_vec(ts, np.float64):
            tsa = ts
        elif np.ndim(ts) == 0:
            tsa = np.full(n, float(ts), np.float64)
        else:
            tsa = np.ascontiguousarray(ts, np.float64)
        if len(tsa) != n:
            raise ValueError(f"ts ({len(tsa)}) and offsets ({n}) differ in length")
        # the lock is held per decoder flush (at most a table's worth of samples), not for the
        # whole receive batch: a batch of large datagrams never stalls readers for long
        dec = self.decoder
        i = 0
        while i < n:
            with self.lock:
                dec.clear()
                if i:
                    k = int(dec.feed(buf, offsets[i:], lengths[i:], tsa[i:]))
                else:
                    k = int(dec.feed(buf, offsets, lengths, tsa))
                if k == 0:
                    # A single datagram bigger than an empty decoder's tables: count and skip it.
                    self._counts.oversize += 1
                    log.warning("datagram %d (%d bytes) overflows the decoder tables; dropped",
                                i, int(lengths[i]))
                    i += 1
                    continue
                i += k
                self._counts.datagrams += k
                self._emit()
                dec.clear()
                if self._compact_at:
                    self._maybe_compact()

    def _maybe_compact(self) -> None:
        """Compact when a table reached the threshold, or every COMPACT_IDLE_S while the tables
        are not small (what the sinks expired since, e.g. after a flood, is given back)."""
        dec = self.decoder
        n = max(int(dec.n_strings), int(dec.n_agents))
        mono = time.monotonic()
        since = mono - self._last_compact
        if since < COMPACT_MIN_S:
            return
        if n >= self._compact_at or (n > self._compact_floor // 8 and since >= COMPACT_IDLE_S):
            self.compact_interned()

    def compact_interned(self) -> dict[str, int]:
        """Drop the decoder's intern-table entries that no sink holds, renumber the rest in the
        decoder and in every sink (``interned_refs`` / ``remap_interned``), and give the memory
        back. Runs under the lock, between decoder flushes; returns what it did."""
        with self.lock:
            dec = self.decoder
            before = (int(dec.n_strings), int(dec.n_agents))
            strings: list[np.ndarray] = [np.zeros(0, np.int64)]
            agents: list[np.ndarray] = [np.zeros(0, np.int64)]
            holders: list[Any] = []
            for sink in self.sinks:
                refs = getattr(sink, "interned_refs", None)
                if refs is None:
                    continue
                s_idx, a_idx = refs()
                strings.append(np.asarray(s_idx, np.int64).ravel())
                agents.append(np.asarray(a_idx, np.int64).ravel())
                holders.append(sink)
            dec.clear()
            smap, amap = dec.compact_interned(np.concatenate(strings), np.concatenate(agents))
            for sink in holders:
                sink.remap_interned(smap, amap)
            self.strings.invalidate()
            self.agents.invalidate()
            after = (int(dec.n_strings), int(dec.n_agents))
            dropped = before[0] - after[0] + before[1] - after[1]
            self._counts.compactions += 1
            self._counts.interned_dropped += dropped
            self._last_compact = time.monotonic()
            nxt = max(self._compact_floor, 2 * max(after))
            self._compact_at = min(nxt, self._compact_cap) if self._compact_cap else nxt
        log.info("intern tables compacted: strings %d -> %d, agents %d -> %d (entries no longer "
                 "held by any data source, agent or flow; %d compactions)", before[0], after[0],
                 before[1], after[1], self._counts.compactions)
        return {"strings_before": before[0], "strings_after": after[0],
                "agents_before": before[1], "agents_after": after[1]}

    def tick(self) -> None:
        """Housekeeping of every sink that has it (expiry, eviction, memory given back), for
        when no batch arrives; each sink does it at most once a second of its clock."""
        with self.lock:
            for sink in self.sinks:
                fn = getattr(sink, "tick", None)
                if fn is not None:
                    fn()
            if self._compact_at:
                self._maybe_compact()

    def _emit(self) -> None:
        dec = self.decoder
        batch = Batch(dec.datagrams, dec.counters, dec.flows, self.strings, self.agents)
        for sink in self.sinks:
            sink.add(batch)

    def feed_capture(self, cap: Capture, step: float | None = None,
                     on_step: Callable[[float], None] | None = None,
                     chunk: int = 4096) -> None:
        """Replay a capture in capture-time order through the sinks.

        The pipeline's clock must be a :class:`ReplayClock`; it is advanced to the newest timestamp
        of each chunk fed. With ``step``, time is cut at ``t0 + k*step`` (t0 = first timestamp,
        k = 1, 2, ...): every datagram with ``ts <= boundary`` is fed, the clock is set to the
        boundary and ``on_step(boundary)`` is called, until the boundary reaches the last timestamp.
        """
        if not isinstance(self.clock, ReplayClock):
            raise TypeError("feed_capture needs a Pipeline built with clock=ReplayClock()")
        if step is not None and not step > 0:
            raise ValueError(f"step must be > 0 seconds, got {step!r}")
        clock = self.clock
        ts = np.asarray(cap.ts, np.float64)
        n = len(ts)
        if n == 0:
            return
        order = np.argsort(ts, kind="stable")
        offs = np.asarray(cap.offsets, np.int64)[order]
        lens = np.asarray(cap.lengths, np.int64)[order]
        ts = ts[order]

        def run(lo: int, hi: int) -> None:
            for a in range(lo, hi, chunk):
                b = min(hi, a + chunk)
                clock.advance(float(ts[b - 1]))
                self.feed(cap.buf, offs[a:b], lens[a:b], ts[a:b])

        if step is None:
            run(0, n)
            return
        t0 = float(ts[0])
        last = float(ts[-1])
        i = 0
        k = 1
        max_steps = int((last - t0) / step) + 2
        while k <= max_steps:
            boundary = t0 + k * step
            j = int(np.searchsorted(ts, boundary, side="right"))
            run(i, j)
            i = j
            with self.lock:
                clock.set(boundary)
                if on_step is not None:
                    on_step(boundary)
            if boundary >= last:
                break
            k += 1
        if i < n:  # cannot happen (the last boundary is >= last ts); kept as a guard
            run(i, n)

    def errors(self) -> dict[str, int]:
        """Decoder rejections by reason (non-zero only), plus the pipeline's own drops."""
        out = dict(self.decoder.error_counts())
        if self._counts.oversize:
            out["oversize_datagram"] = self._counts.oversize
        for sink in self.sinks:             # bounded tables: what they refused (non-zero only)
            refusals = getattr(sink, "refusals", None)
            if refusals is not None:
                out.update({k: v for k, v in refusals().items() if v})
        return out

    def interned_stats(self) -> dict[str, int]:
        """The decoder's intern tables: entries, cap, compactions and entries they dropped."""
        dec = self.decoder
        return {"strings": int(dec.n_strings), "agents": int(dec.n_agents),
                "max_interned": self._compact_cap, "compactions": self._counts.compactions,
                "dropped": self._counts.interned_dropped}

    @property
    def n_datagrams(self) -> int:
        """Datagrams fed through the decoder so far."""
        return self._counts.datagrams
