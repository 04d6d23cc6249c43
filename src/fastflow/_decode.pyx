# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython table decoder: sFlow v5 datagrams -> numpy tables (the collector's hot core).

``Decoder.feed`` walks a batch of datagrams held in one byte buffer without the GIL and appends one
row per datagram / counter sample / flow sample to preallocated numpy structured arrays with the
dtypes of ``fastflow._schema``. The rules it follows (what drops a datagram, a sample or a record,
which reason is counted) are in docs/internals.md section 2; the pure-Python reference
``fastflow._pydecode`` follows the same rules and the test suite compares the two row for row.

Layout of the code: datagram walk (``_datagram``) -> sample walk (``_counter_sample`` /
``_flow_sample``) -> record decoders. Fixed-layout counter records are decoded from a table built at
construction from ``_schema.COUNTER_RECORDS`` and the column offsets of ``COUNTER_DTYPE``, so the
schema stays the single source of truth; host_descr / host_adapters and the flow records (with the
sampled-header parser) are hand-coded. Every read is checked against the enclosing structure.
"""

import ipaddress
import sys

import numpy as np

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy, memset

from fastflow import _schema
from fastflow._intern import keep_order

if sys.byteorder != "little":  # pragma: no cover - the rows are written little-endian in place
    raise ImportError("fastflow._decode needs a little-endian host")

# Reason codes as C constants; checked against the schema below (the schema is the contract).
cdef enum:
    R_OK = 0
    R_TRUNCATED_HEADER = 1
    R_BAD_VERSION = 2
    R_BAD_AGENT_ADDRESS = 3
    R_SAMPLE_OVERRUN = 4
    R_SAMPLE_TOO_SHORT = 5
    R_RECORD_OVERRUN = 6
    R_RECORD_TOO_SHORT = 7
    R_TRAILING_BYTES = 8
    R_UNKNOWN_SAMPLE = 9
    R_UNKNOWN_RECORD = 10
    R_DISCARD_EVENT = 11
    R_TABLE_FULL = 12
    N_REASONS_C = 13

_EXPECTED_CODES = {
    "ok": R_OK, "truncated_header": R_TRUNCATED_HEADER, "bad_version": R_BAD_VERSION,
    "bad_agent_address": R_BAD_AGENT_ADDRESS, "sample_overrun": R_SAMPLE_OVERRUN,
    "sample_too_short": R_SAMPLE_TOO_SHORT, "record_overrun": R_RECORD_OVERRUN,
    "record_too_short": R_RECORD_TOO_SHORT, "trailing_bytes": R_TRAILING_BYTES,
    "unknown_sample": R_UNKNOWN_SAMPLE, "unknown_record": R_UNKNOWN_RECORD,
    "discard_event": R_DISCARD_EVENT, "table_full": R_TABLE_FULL,
}
if dict(_schema.REASON_CODE) != _EXPECTED_CODES or _schema.N_REASONS != N_REASONS_C:
    raise ImportError("fastflow._decode was built for a different _schema.REASONS; rebuild it")

MIN_CAPACITY = 4096

# flow record mask bits (from the schema)
cdef uint32_t B_HEADER = 1u << _schema.FLOW_BIT["sampled_header"]
cdef uint32_t B_ETH = 1u << _schema.FLOW_BIT["sampled_ethernet"]
cdef uint32_t B_IPV4 = 1u << _schema.FLOW_BIT["sampled_ipv4"]
cdef uint32_t B_IPV6 = 1u << _schema.FLOW_BIT["sampled_ipv6"]
cdef uint32_t B_SWITCH = 1u << _schema.FLOW_BIT["extended_switch"]
cdef uint32_t B_ROUTER = 1u << _schema.FLOW_BIT["extended_router"]
cdef uint32_t B_GATEWAY = 1u << _schema.FLOW_BIT["extended_gateway"]

cdef enum:
    K_FIXED = 0
    K_HOST_DESCR = 1
    K_HOST_ADAPTERS = 2
    K_IF_NAME = 3


cdef extern from "<sys/mman.h>" nogil:
    """
    #ifndef MADV_HUGEPAGE
    #define MADV_HUGEPAGE 14
    #endif
    #ifndef MADV_POPULATE_WRITE
    #define MADV_POPULATE_WRITE 23
    #endif
    """
    int madvise(void *addr, size_t length, int advice)
    int MADV_HUGEPAGE
    int MADV_POPULATE_WRITE
    void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset)
    int munmap(void *addr, size_t length)
    int PROT_READ, PROT_WRITE, MAP_PRIVATE, MAP_ANONYMOUS
    void *MAP_FAILED

cdef extern from *:
    """
    #ifndef _GNU_SOURCE
    #define _GNU_SOURCE
    #endif
    #include <sys/mman.h>
    static void *ff_mremap(void *p, size_t old, size_t new_) {
        void *q = mremap(p, old, new_, MREMAP_MAYMOVE);
        return q == MAP_FAILED ? NULL : q;
    }
    """
    void *ff_mremap(void *p, size_t old, size_t new_) noexcept nogil


# Growable tables live in their own anonymous mappings: growing one is an mremap (page tables
# move, no byte is copied), and a table handed over is unmapped with its last numpy view.
cdef inline size_t _mapsize(Py_ssize_t rows, Py_ssize_t size) noexcept nogil:
    return ((<size_t>rows * <size_t>size) + 4095) & ~(<size_t>4095)


cdef uint8_t *_map(size_t nbytes) noexcept nogil:
    """A fresh mapping, with huge pages asked for on the whole of it (advice given to a part
    would split it, and mremap cannot grow a split mapping)."""
    cdef void *q = mmap(NULL, nbytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    if q == MAP_FAILED:
        return NULL
    madvise(q, nbytes, MADV_HUGEPAGE)
    return <uint8_t *>q


cdef void _gb_free(GBuf *g) noexcept nogil:
    if g.p != NULL:
        munmap(g.p, _mapsize(g.vcap + 1, g.size))
    g.p = NULL
    g.n = g.cap = g.vcap = 0


cdef inline void _prefault(uint8_t *p, size_t nbytes) noexcept nogil:
    """Map a step of fresh table memory in one call (MADV_POPULATE_WRITE, Linux >= 5.14):
    first-touch page faults one 4 KiB page at a time were half of read_pcap's time. Advice only:
    on older kernels the pages fault in as usual."""
    cdef size_t a, e
    if nbytes < (<size_t>1 << 20):
        return
    a = (<size_t>p + 4095) & ~(<size_t>4095)
    e = (<size_t>p + nbytes) & ~(<size_t>4095)
    if e > a:
        madvise(<void *>a, e - a, MADV_POPULATE_WRITE)


cdef bint _gb_step(GBuf *g) noexcept nogil:
    """Make more rows of ``g`` usable: the next step of its allocation (an eighth of what it holds,
    at least 1024 rows), pre-faulted; doubles the mapping (mremap) when it is used up.
    False when memory runs out."""
    cdef Py_ssize_t step = g.cap // 8 if g.cap >= 8192 else 1024
    cdef Py_ssize_t vcap, cap
    cdef void *q
    if g.p == NULL or g.cap + step > g.vcap:
        vcap = g.vcap * 2 if g.vcap >= 1024 else 1024
        if vcap < g.cap + step:
            vcap = g.cap + step
        if g.p == NULL:
            q = _map(_mapsize(vcap + 1, g.size))
        else:
            q = ff_mremap(g.p, _mapsize(g.vcap + 1, g.size), _mapsize(vcap + 1, g.size))
        if q == NULL:
            return False
        g.p = <uint8_t *>q
        g.vcap = vcap
    cap = g.cap + step
    _prefault(g.p + (g.cap + 1) * g.size, <size_t>step * <size_t>g.size)
    g.cap = cap
    return True


cdef inline uint64_t _mac(const uint8_t *p) noexcept nogil:
    """48-bit MAC (6 bytes, first most significant) as an integer."""
    return (<uint64_t>ff_be16(p) << 32) | ff_be32(p + 2)


cdef inline void _mapped4(uint8_t *d, const uint8_t *s) noexcept nogil:
    """16-byte column from an IPv4 address: ::ffff:a.b.c.d."""
    memset(d, 0, 10)
    d[10] = 0xFF
    d[11] = 0xFF
    memcpy(d + 12, s, 4)


def _col(dtype, name):
    return <int32_t>dtype.fields[name][1]


cdef int _intern_init(Intern *t) noexcept nogil:
    memset(t, 0, sizeof(Intern))
    t.ent_cap = 1024
    t.arena_cap = 16384
    t.ent_off = <uint32_t *>malloc(t.ent_cap * sizeof(uint32_t))
    t.ent_len = <uint32_t *>malloc(t.ent_cap * sizeof(uint32_t))
    t.ent_hash = <uint32_t *>malloc(t.ent_cap * sizeof(uint32_t))
    t.arena = <uint8_t *>malloc(t.arena_cap)
    t.slot_mask = 4096 - 1
    t.slots = <uint32_t *>malloc(4096 * sizeof(uint32_t))
    if not (t.ent_off and t.ent_len and t.ent_hash and t.arena and t.slots):
        return 0
    memset(t.slots, 0, 4096 * sizeof(uint32_t))
    return 1


cdef void _intern_free(Intern *t) noexcept nogil:
    free(t.ent_off)
    free(t.ent_len)
    free(t.ent_hash)
    free(t.arena)
    free(t.slots)
    memset(t, 0, sizeof(Intern))


cdef int _intern_add(Intern *t, const uint8_t *key, uint32_t n, uint32_t h) noexcept nogil:
    """Append an entry (no lookup, no slot); 0 on allocation failure."""
    cdef uint32_t newcap
    cdef size_t acap
    cdef void *q
    if t.n == t.ent_cap:
        newcap = t.ent_cap * 2
        q = realloc(t.ent_off, newcap * sizeof(uint32_t))
        if q == NULL:
            return 0
        t.ent_off = <uint32_t *>q
        q = realloc(t.ent_len, newcap * sizeof(uint32_t))
        if q == NULL:
            return 0
        t.ent_len = <uint32_t *>q
        q = realloc(t.ent_hash, newcap * sizeof(uint32_t))
        if q == NULL:
            return 0
        t.ent_hash = <uint32_t *>q
        t.ent_cap = newcap
    if t.arena_len + n > t.arena_cap:
        acap = t.arena_cap * 2
        while t.arena_len + n > acap:
            acap *= 2
        q = realloc(t.arena, acap)
        if q == NULL:
            return 0
        t.arena = <uint8_t *>q
        t.arena_cap = acap
    if n:
        memcpy(t.arena + t.arena_len, key, n)
    t.ent_off[t.n] = <uint32_t>t.arena_len
    t.ent_len[t.n] = n
    t.ent_hash[t.n] = h
    t.arena_len += n
    t.n += 1
    return 1


cdef int _intern_rehash(Intern *t) noexcept nogil:
    """Double the slot table; 0 on allocation failure (the old table stays)."""
    cdef uint32_t size = (t.slot_mask + 1) * 2
    cdef uint32_t mask = size - 1
    cdef uint32_t *slots = <uint32_t *>malloc(size * sizeof(uint32_t))
    cdef uint32_t e, i
    if slots == NULL:
        return 0
    memset(slots, 0, size * sizeof(uint32_t))
    for e in range(t.n):
        i = t.ent_hash[e] & mask
        while slots[i] != 0:
            i = (i + 1) & mask
        slots[i] = e + 1
    free(t.slots)
    t.slots = slots
    t.slot_mask = mask
    return 1


cdef void _intern_truncate(Intern *t, uint32_t n0) noexcept nogil:
    """Forget the entries added after the first ``n0`` (those of a rolled-back datagram).

    Safe with linear probing because they are the newest entries: no older entry's probe chain
    runs through their slots.
    """
    cdef uint32_t e, i
    if t.n <= n0:
        return
    e = t.n
    while e > n0:
        e -= 1
        i = t.ent_hash[e] & t.slot_mask
        while t.slots[i] != 0 and t.slots[i] != e + 1:
            i = (i + 1) & t.slot_mask
        t.slots[i] = 0
    t.arena_len = t.ent_off[n0]
    t.n = n0


cdef int _intern_compact(Intern *t, const uint32_t *order, uint32_t m) noexcept nogil:
    """Rebuild ``t`` with only the entries ``order`` (ascending, starting with 0), renumbered
    0..m-1 in that order, with a slot table sized for them; 0 on allocation failure (``t`` is
    then unchanged)."""
    cdef Intern nt
    cdef uint32_t j, e, size = 4096, i
    if not _intern_init(&nt):
        _intern_free(&nt)
        return 0
    for j in range(m):
        e = order[j]
        if not _intern_add(&nt, t.arena + t.ent_off[e], t.ent_len[e], t.ent_hash[e]):
            _intern_free(&nt)
            return 0
    while <uint64_t>size < <uint64_t>4 * m:
        size *= 2
    free(nt.slots)
    nt.slots = <uint32_t *>malloc(size * sizeof(uint32_t))
    if nt.slots == NULL:
        _intern_free(&nt)
        return 0
    memset(nt.slots, 0, size * sizeof(uint32_t))
    nt.slot_mask = size - 1
    for e in range(nt.n):
        i = nt.ent_hash[e] & nt.slot_mask
        while nt.slots[i] != 0:
            i = (i + 1) & nt.slot_mask
        nt.slots[i] = e + 1
    _intern_free(t)
    t[0] = nt
    return 1


cdef inline void _sample_head(uint8_t *row, const SampleCols *c, const DgCtx *ctx, uint32_t seq,
                              uint32_t sid, uint32_t styp, uint32_t sidx, uint32_t mask,
                              bint expanded) noexcept nogil:
    """The columns counter and flow rows share: datagram context and the sample's header."""
    ff_stf64(row + c.ts, ctx.ts)
    ff_st32(row + c.agent, ctx.agent)
    ff_st32(row + c.sub_agent_id, ctx.sub_agent_id)
    ff_st32(row + c.uptime, ctx.uptime)
    ff_st32(row + c.dgram, ctx.dgram)
    ff_st32(row + c.sequence_number, seq)
    ff_st32(row + c.source_id, sid)
    ff_st32(row + c.source_id_type, styp)
    ff_st32(row + c.source_id_index, sidx)
    ff_st32(row + c.mask, mask)
    row[c.expanded] = expanded


cdef class Decoder:
    """sFlow v5 table decoder (Cython). See docs/internals.md section 2 for the contract."""

    def __cinit__(self, *args, **kwargs):
        memset(&self._strings, 0, sizeof(Intern))
        memset(&self._agents, 0, sizeof(Intern))

    def __init__(self, datagram_capacity: int = 4096, counter_capacity: int = 8192,
                 flow_capacity: int = 8192, *, max_interned: int = _schema.MAX_INTERNED) -> None:
        for name, cap in (("datagram_capacity", datagram_capacity),
                          ("counter_capacity", counter_capacity), ("flow_capacity", flow_capacity)):
            if int(cap) < MIN_CAPACITY:
                raise ValueError(f"{name} must be >= {MIN_CAPACITY}, got {cap}")
        self._setup(datagram_capacity, counter_capacity, flow_capacity, max_interned)
        # One spare row per table: a sample is decoded into row n even when n == capacity, and only
        # keeping it would overflow (so capacity is checked only for rows that are really kept).
        self._dg_arr = np.zeros(self.datagram_capacity + 1, _schema.DATAGRAM_DTYPE)
        self._ctr_arr = np.zeros(self.counter_capacity + 1, _schema.COUNTER_DTYPE)
        self._flow_arr = np.zeros(self.flow_capacity + 1, _schema.FLOW_DTYPE)
        self._dg = <uint8_t *><size_t>self._dg_arr.ctypes.data
        self._ctr = <uint8_t *><size_t>self._ctr_arr.ctypes.data
        self._flow = <uint8_t *><size_t>self._flow_arr.ctypes.data
        self._ctr_size = _schema.COUNTER_DTYPE.itemsize

    def _setup(self, datagram_capacity, counter_capacity, flow_capacity, max_interned):
        """What both layouts share: capacities, reason table, column offsets, intern tables."""
        for name, cap in (("datagram_capacity", datagram_capacity),
                          ("counter_capacity", counter_capacity), ("flow_capacity", flow_capacity)):
            if int(cap) > (1 << 31):
                raise ValueError(f"{name} must be < 2**31, got {cap}")
        if not 2 <= int(max_interned) <= (1 << 31):
            raise ValueError(f"max_interned must be in 2 .. 2**31, got {max_interned}")
        self.datagram_capacity = int(datagram_capacity)
        self.counter_capacity = int(counter_capacity)
        self.flow_capacity = int(flow_capacity)
        self.max_interned = int(max_interned)
        self._dg_size = _schema.DATAGRAM_DTYPE.itemsize
        self._flow_size = _schema.FLOW_DTYPE.itemsize
        self.n_datagrams = self.n_counters = self.n_flows = 0
        memset(self._errors, 0, sizeof(self._errors))
        memset(self._derr, 0, sizeof(self._derr))
        memset(self._is_error, 0, sizeof(self._is_error))
        for i, (_name, kind, _descr) in enumerate(_schema.REASONS):
            self._is_error[i] = kind == "error"
        self._busy = False
        self._init_columns()
        self._init_counter_table()
        _intern_free(&self._strings)
        _intern_free(&self._agents)
        if not (_intern_init(&self._strings) and _intern_init(&self._agents)):
            raise MemoryError("cannot allocate the intern tables")
        # index 0: "" in the string table; a reserved empty key in the agent table (agent keys
        # always hold at least the address-type byte, so it never matches a real agent)
        _intern_add(&self._strings, NULL, 0, ff_hash(NULL, 0))
        self._strings.slots[ff_hash(NULL, 0) & self._strings.slot_mask] = 1
        _intern_add(&self._agents, NULL, 0, 0)
        self._strings_text = [""]
        self._agents_text = [""]

    def __dealloc__(self):
        cdef int i
        _intern_free(&self._strings)
        _intern_free(&self._agents)
        for i in range(3):
            _gb_free(&self._gb[i])
        for i in range(32):
            _gb_free(&self._rt[i])

    # ---------------------------------------------------------------------------------------------
    # construction helpers: column offsets and the counter-record table from the schema
    # ---------------------------------------------------------------------------------------------
    def _init_columns(self):
        d = _schema.DATAGRAM_DTYPE
        c = _schema.COUNTER_DTYPE
        f = _schema.FLOW_DTYPE
        for name in ("ts", "agent", "sub_agent_id", "sequence_number", "uptime", "num_samples",
                     "n_counters", "n_flows", "length", "status", "agent_af"):
            (<int32_t *>&self._dc)[_DG_FIELDS.index(name)] = _col(d, name)
        s = _schema.SAMPLE_DTYPE if self._columns else c
        for i, name in enumerate(_SAMPLE_FIELDS):
            (<int32_t *>&self._cc)[i] = _col(s, name)
            (<int32_t *>&self._fc)[i] = _col(f, name)
        for i, name in enumerate(_HOST_FIELDS):
            (<int32_t *>&self._hc)[i] = _col(c, name)
            owner = next(r[1] for r in _schema.COUNTER_RECORDS if any(x[1] == name for x in r[3]))
            (<int32_t *>&self._hcn)[i] = _col(_schema.RECORD_DTYPES[owner], name)
        for i, name in enumerate(_FLOW_FIELDS):
            (<int32_t *>&self._f)[i] = _col(f, name)

    def _init_counter_table(self):
        cdef CRec *rec
        cdef CRun *run
        cdef CField *f
        cdef int k, nr = 0
        cdtype = _schema.COUNTER_DTYPE
        for i in range(4096):
            self._rec_by_fmt[i] = -1
        nf = 0
        recs = _schema.COUNTER_RECORDS
        if len(recs) > 32:
            raise RuntimeError("too many counter records for the decoder's table")
        for idx, (fmt, name, min_len, fields) in enumerate(recs):
            if not 0 <= fmt < 4096:
                raise RuntimeError(f"counter record format {fmt} out of range")
            rec = &self._recs[idx]
            rec.kind = {"host_descr": K_HOST_DESCR, "host_adapters": K_HOST_ADAPTERS,
                        "if_name": K_IF_NAME}.get(name, K_FIXED)
            rec.min_len = min_len
            rec.bit = 1u << _schema.COUNTER_BIT[name]
            rec.first = nf
            rec.count = 0
            rec.full_len = min_len
            if rec.kind == K_FIXED:
                for _json, col, off, typ in fields:
                    size = 8 if typ == "u64" else 4
                    if typ not in ("u32", "u64", "i32", "f32") or off is None:
                        raise RuntimeError(f"{name}.{col}: fixed layout expected, got {typ}")
                    if cdtype.fields[col][0].itemsize != size:
                        raise RuntimeError(f"{name}.{col}: column size does not match the wire")
                    if nf >= 256:
                        raise RuntimeError("too many counter fields for the decoder's table")
                    self._fields[nf].wire_off = off
                    self._fields[nf].col_off = cdtype.fields[col][1]
                    self._fields[nf].col_off_n = _schema.RECORD_DTYPES[name].fields[col][1]
                    self._fields[nf].size = size
                    rec.full_len = max(rec.full_len, off + size)
                    nf += 1
                    rec.count += 1
            # merge the fields into runs (same size, contiguous on the wire and in the row)
            rec.run_first = nr
            rec.run_count = 0
            for k in range(rec.first, rec.first + rec.count):
                f = &self._fields[k]
                if rec.run_count:
                    run = &self._runs[nr - 1]
                    if (run.size == f.size and f.wire_off == run.wire_off + run.count * run.size
                            and f.col_off == run.col_off + run.count * run.size
                            and f.col_off_n == run.col_off_n + run.count * run.size):
                        run.count += 1
                        continue
                run = &self._runs[nr]
                run.wire_off = f.wire_off
                run.col_off = f.col_off
                run.col_off_n = f.col_off_n
                run.size = f.size
                run.count = 1
                nr += 1
                rec.run_count += 1
            self._rec_by_fmt[fmt] = idx
        self._nrecs = len(recs)

    # ---------------------------------------------------------------------------------------------
    # public API
    # ---------------------------------------------------------------------------------------------
    def feed(self, buf, offsets, lengths, ts=None) -> int:
        """Decode datagrams ``buf[offsets[i]:offsets[i]+lengths[i]]``; return how many were taken.

        Fewer than ``len(offsets)`` only when a table is full: read the tables, ``clear()``, and feed
        the rest. Runs without the GIL.
        """
        cdef Py_buffer view
        cdef const int64_t[::1] offs
        cdef const int64_t[::1] lens
        cdef const double[::1] tsv
        cdef double ts0 = 0.0
        cdef bint per_ts = False
        cdef Py_ssize_t n, i, k = 0, bad = -1, blen
        cdef const uint8_t *base
        offs_a = np.ascontiguousarray(offsets, np.int64)
        lens_a = np.ascontiguousarray(lengths, np.int64)
        if offs_a.ndim != 1 or lens_a.ndim != 1 or offs_a.shape[0] != lens_a.shape[0]:
            raise ValueError("offsets and lengths must be 1-D arrays of the same length")
        n = offs_a.shape[0]
        if ts is None:
            ts0 = 0.0
        elif np.ndim(ts) == 0:
            ts0 = float(ts)
        else:
            ts_a = np.ascontiguousarray(ts, np.float64)
            if ts_a.ndim != 1 or ts_a.shape[0] != n:
                raise ValueError(f"ts must be None, a float or a float64 array of length {n}")
            tsv = ts_a
            per_ts = True
        if self._dg == NULL:
            raise RuntimeError("Decoder.__init__ was not called")
        if self._busy:
            raise RuntimeError("Decoder.feed called while another feed is running on it")
        PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
        try:
            offs = offs_a
            lens = lens_a
            blen = view.len
            with nogil:  # every pair is checked before anything is decoded
                for i in range(n):
                    if offs[i] < 0 or lens[i] < 0 or offs[i] > blen - lens[i]:
                        bad = i
                        break
            if bad >= 0:
                raise ValueError(f"datagram {bad}: offset {offs[bad]} / length {lens[bad]} is "
                                 f"outside the buffer ({blen} bytes)")
            base = <const uint8_t *>view.buf
            self._busy = True
            try:
                with nogil:
                    for i in range(n):
                        if self._datagram(base + offs[i], lens[i], tsv[i] if per_ts else ts0):
                            break
                        k += 1
            finally:
                self._busy = False
        finally:
            PyBuffer_Release(&view)
        if self._oom:
            raise MemoryError("ColumnDecoder: a table could not grow; clear() before reuse")
        return k

    def feed_list(self, datagrams, ts=None) -> int:
        """Convenience: feed a sequence of bytes-like datagrams; returns how many were taken."""
        parts = [bytes(d) for d in datagrams]
        lens = np.fromiter((len(d) for d in parts), np.int64, len(parts))
        offs = np.zeros(len(parts), np.int64)
        if len(parts) > 1:
            np.cumsum(lens[:-1], out=offs[1:])
        return self.feed(b"".join(parts), offs, lens, ts)

    def clear(self) -> None:
        """Row counts back to 0 (the intern tables and error counts are kept)."""
        cdef int i
        if self._busy:
            raise RuntimeError("Decoder.clear called while a feed is running on it")
        self.n_datagrams = self.n_counters = self.n_flows = 0
        for i in range(32):
            self._rt[i].n = 0
        self._oom = False

    @property
    def datagrams(self):
        """View of the filled datagram rows (DATAGRAM_DTYPE); valid until the next feed/clear."""
        self._rows_mode()
        return self._dg_arr[:self.n_datagrams]

    @property
    def counters(self):
        """View of the filled counter-sample rows (COUNTER_DTYPE)."""
        self._rows_mode()
        return self._ctr_arr[:self.n_counters]

    @property
    def flows(self):
        """View of the filled flow-sample rows (FLOW_DTYPE)."""
        self._rows_mode()
        return self._flow_arr[:self.n_flows]

    def _rows_mode(self):
        if self._columns:
            raise TypeError("ColumnDecoder keeps its tables until take(); use take()")

    @property
    def errors(self):
        """uint64[N_REASONS]: occurrences of each reason since the decoder was created (a copy)."""
        out = np.zeros(N_REASONS_C, np.uint64)
        for i in range(N_REASONS_C):
            out[i] = self._errors[i]
        return out

    def error_counts(self) -> dict:
        """Non-zero reason counts by name."""
        return {_schema.REASON_NAMES[i]: int(self._errors[i])
                for i in range(1, N_REASONS_C) if self._errors[i]}

    @property
    def n_strings(self) -> int:
        """Entries in the string table (index 0, "", included)."""
        return self._strings.n

    @property
    def n_agents(self) -> int:
        """Entries in the agent table (reserved index 0 included)."""
        return self._agents.n

    def strings(self) -> list:
        """The string intern table as text (index 0 == ""); a new list each call."""
        cdef Intern *t = &self._strings
        cdef uint32_t i
        cache = self._strings_text
        if cache is None:
            return []
        for i in range(len(cache), t.n):
            cache.append((<char *>t.arena)[t.ent_off[i]:t.ent_off[i] + t.ent_len[i]]
                         .decode("utf-8", "replace"))
        return list(cache)

    def agents(self) -> list:
        """The agent table as text (index 0 == ""; "unknown" for address type 0)."""
        cdef Intern *t = &self._agents
        cdef uint32_t i
        cdef const uint8_t *k
        cache = self._agents_text
        if cache is None:
            return []
        for i in range(len(cache), t.n):
            k = t.arena + t.ent_off[i]
            if t.ent_len[i] == 5 and k[0] == 1:
                cache.append(f"{k[1]}.{k[2]}.{k[3]}.{k[4]}")
            elif t.ent_len[i] == 17 and k[0] == 2:
                cache.append(str(ipaddress.IPv6Address((<char *>k)[1:17])))
            else:
                cache.append("unknown")
        return list(cache)

    def compact_interned(self, keep_strings, keep_agents):
        """Keep only the string and agent entries whose indices are in ``keep_strings`` /
        ``keep_agents`` (index 0 always stays), renumbered in their old order, and give the rest
        of the tables' memory back. Returns ``(string_map, agent_map)``: uint32 arrays, old index
        -> new index (0 for an entry dropped), for whoever holds indices to renumber theirs.
        Only between feeds, with no rows held (call :meth:`clear` first)."""
        if self.n_datagrams or self.n_counters or self.n_flows or self._busy:
            raise RuntimeError("compact_interned: the decoder holds rows; clear() first")
        smap, sorder = keep_order(keep_strings, self._strings.n)
        amap, aorder = keep_order(keep_agents, self._agents.n)
        cdef const uint32_t[::1] so = sorder
        cdef const uint32_t[::1] ao = aorder
        if not (_intern_compact(&self._strings, &so[0], <uint32_t>len(sorder)) and
                _intern_compact(&self._agents, &ao[0], <uint32_t>len(aorder))):
            raise MemoryError("cannot allocate the compacted intern tables")
        self._strings_text = [""]          # rebuilt lazily by strings() / agents()
        self._agents_text = [""]
        return smap, amap

    # ---------------------------------------------------------------------------------------------
    # the walk (all nogil)
    # ---------------------------------------------------------------------------------------------
    cdef inline void _err(self, int reason) noexcept nogil:
        self._derr[reason] += 1
        self._dn += 1
        if self._status == 0 and self._is_error[reason]:
            self._status = <uint8_t>reason

    cdef int _intern(self, Intern *t, const uint8_t *key, uint32_t n, uint32_t *out) noexcept nogil:
        """Index of ``key`` in ``t``, adding it if new; returns 1 when the table is full."""
        cdef uint32_t h = ff_hash(key, n)
        cdef uint32_t i = h & t.slot_mask
        cdef uint32_t s, e
        while True:
            s = t.slots[i]
            if s == 0:
                break
            e = s - 1
            if t.ent_hash[e] == h and t.ent_len[e] == n and \
                    memcmp(t.arena + t.ent_off[e], key, n) == 0:
                out[0] = e
                return 0
            i = (i + 1) & t.slot_mask
        if t.n >= self.max_interned:
            return 1
        if (<uint64_t>t.n + 1) * 2 > <uint64_t>t.slot_mask + 1:
            if not _intern_rehash(t):
                return 1
            i = h & t.slot_mask
            while t.slots[i] != 0:
                i = (i + 1) & t.slot_mask
        if not _intern_add(t, key, n, h):
            return 1
        t.slots[i] = t.n
        out[0] = t.n - 1
        return 0

    cdef int _datagram(self, const uint8_t *p, Py_ssize_t n, double ts) noexcept nogil:
        """Decode one datagram; 1 when a table would overflow (nothing of it kept), else 0."""
        cdef uint32_t at, alen, hdr, nsamp, i, sfmt, slen, agent = 0, s0, a0
        cdef uint8_t key[17]
        cdef const uint8_t *q
        cdef const uint8_t *pos
        cdef const uint8_t *end
        cdef const uint8_t *body
        cdef Py_ssize_t c0, f0, left
        cdef uint8_t *row
        cdef DgCtx ctx
        cdef int r, j
        cdef bint overrun = False
        self._status = 0
        if n < 4:
            self._errors[R_TRUNCATED_HEADER] += 1
            return 0
        if ff_be32(p) != 5:
            self._errors[R_BAD_VERSION] += 1
            return 0
        if n < 8:
            self._errors[R_TRUNCATED_HEADER] += 1
            return 0
        at = ff_be32(p + 4)
        if at == 0:
            alen = 0
        elif at == 1:
            alen = 4
        elif at == 2:
            alen = 16
        else:
            self._errors[R_BAD_AGENT_ADDRESS] += 1
            return 0
        hdr = 8 + alen + 16
        if hdr > n:
            self._errors[R_TRUNCATED_HEADER] += 1
            return 0
        if self.n_datagrams >= self.datagram_capacity and not (self._columns and self._grow(0)):
            return 1
        self._dn = 0
        s0 = self._strings.n
        a0 = self._agents.n
        key[0] = <uint8_t>at
        memcpy(key + 1, p + 8, alen)
        if self._intern(&self._agents, key, 1 + alen, &agent):
            agent = 0
            self._err(R_TABLE_FULL)
        q = p + 8 + alen
        ctx.ts = ts
        ctx.agent = agent
        ctx.sub_agent_id = ff_be32(q)
        ctx.uptime = ff_be32(q + 8)
        ctx.dgram = <uint32_t>self.n_datagrams
        nsamp = ff_be32(q + 12)
        c0 = self.n_counters
        f0 = self.n_flows
        pos = p + hdr
        end = p + n
        i = 0
        while i < nsamp:
            left = end - pos
            if left < 8:
                self._err(R_SAMPLE_OVERRUN)
                overrun = True
                break
            sfmt = ff_be32(pos)
            slen = ff_be32(pos + 4)
            if <uint64_t>slen > <uint64_t>(left - 8):
                self._err(R_SAMPLE_OVERRUN)
                overrun = True
                break
            body = pos + 8
            pos = body + slen
            r = 0
            if sfmt == 2 or sfmt == 4:
                r = self._counter_sample(body, pos, sfmt == 4, &ctx)
            elif sfmt == 1 or sfmt == 3 or sfmt == 5:
                r = self._flow_sample(body, pos, <int>(sfmt >> 1), &ctx)
            else:
                self._err(R_UNKNOWN_SAMPLE)
            if r:
                self.n_counters = c0
                self.n_flows = f0
                memset(self._derr, 0, sizeof(self._derr))
                _intern_truncate(&self._strings, s0)
                _intern_truncate(&self._agents, a0)
                return 1
            i += 1
        if not overrun and pos < end:
            self._err(R_TRAILING_BYTES)
        row = self._dg + self.n_datagrams * self._dg_size
        ff_stf64(row + self._dc.ts, ts)
        ff_st32(row + self._dc.agent, agent)
        ff_st32(row + self._dc.sub_agent_id, ctx.sub_agent_id)
        ff_st32(row + self._dc.sequence_number, ff_be32(q + 4))
        ff_st32(row + self._dc.uptime, ctx.uptime)
        ff_st32(row + self._dc.num_samples, nsamp)
        ff_st16(row + self._dc.n_counters, <uint16_t>(self.n_counters - c0))
        ff_st16(row + self._dc.n_flows, <uint16_t>(self.n_flows - f0))
        ff_st32(row + self._dc.length, <uint32_t>n)
        row[self._dc.status] = self._status
        row[self._dc.agent_af] = 4 if at == 1 else (6 if at == 2 else 0)
        self.n_datagrams += 1
        if self._dn:
            for j in range(N_REASONS_C):
                self._errors[j] += self._derr[j]
                self._derr[j] = 0
        return 0

    cdef bint _grow(self, int which) noexcept nogil:
        """Columnar mode: double a growable table (0 datagrams, 1 samples, 2 flows, 3 + bit a
        record table), keeping its spare row; False (and _oom set) when memory runs out."""
        cdef GBuf *g = &self._gb[which] if which < 3 else &self._rt[which - 3]
        cdef Py_ssize_t cap
        if not _gb_step(g):
            self._oom = True
            return False
        cap = g.cap
        if which == 0:
            self._dg = g.p
            self.datagram_capacity = cap
        elif which == 1:
            self._ctr = g.p
            self.counter_capacity = cap
        elif which == 2:
            self._flow = g.p
            self.flow_capacity = cap
        return True

    cdef int _counter_sample(self, const uint8_t *p, const uint8_t *end, bint expanded,
                             DgCtx *ctx) noexcept nogil:
        """Decode a 0:2 / 0:4 sample into the next counter row; 1 on overflow."""
        cdef Py_ssize_t fixed = 16 if expanded else 12
        cdef uint8_t *row
        cdef uint32_t sid, styp, sidx, nrec, r, rfmt, rlen, mask = 0
        cdef const uint8_t *q
        cdef const uint8_t *b
        cdef int idx, k, last
        cdef CRec *rec
        cdef CField *fld
        cdef CRun *run
        cdef uint8_t *dst
        cdef GBuf *gb
        cdef const CtrCols *hc = &self._hcn if self._columns else &self._hc
        cdef bint cols = self._columns, ok
        if end - p < fixed:
            self._err(R_SAMPLE_TOO_SHORT)
            return 0
        row = self._ctr + self.n_counters * self._ctr_size
        if not cols:
            memset(row, 0, self._ctr_size)
        if expanded:
            styp = ff_be32(p + 4)
            sidx = ff_be32(p + 8)
            nrec = ff_be32(p + 12)
            sid = ((styp & 0xFF) << 24) | (sidx & 0xFFFFFF)
        else:
            sid = ff_be32(p + 4)
            styp = sid >> 24
            sidx = sid & 0xFFFFFF
            nrec = ff_be32(p + 8)
        q = p + fixed
        r = 0
        while r < nrec:
            if not ff_record(&q, end, &rfmt, &rlen):
                self._err(R_RECORD_OVERRUN)
                if cols:  # the sample is dropped: so are the record rows it added
                    for k in range(self._nrecs):
                        if mask >> k & 1:
                            self._rt[k].n -= 1
                return 0
            b = q
            q = b + rlen
            r += 1
            idx = self._rec_by_fmt[rfmt] if rfmt < 4096 else -1
            if idx < 0:
                self._err(R_UNKNOWN_RECORD)
                continue
            rec = &self._recs[idx]
            if rlen < rec.min_len:
                self._err(R_RECORD_TOO_SHORT)
                continue
            # where the record's columns go: the wide row, or (columnar) a row of the record's
            # own table: the next one, or the one this sample already added (a repeated record
            # overwrites, as in the wide row). Every column of that row is written below.
            dst = row
            if cols:
                gb = &self._rt[idx]
                if mask & rec.bit:
                    dst = gb.p + (gb.n - 1) * gb.size
                else:
                    if gb.n >= gb.cap and not self._grow(3 + idx):
                        return 1
                    dst = gb.p + gb.n * gb.size
                    ff_st32(dst, <uint32_t>self.n_counters)
            if rec.kind == K_FIXED:
                last = rec.first + rec.count
                if rlen >= rec.full_len:
                    for k in range(rec.run_first, rec.run_first + rec.run_count):
                        run = &self._runs[k]
                        if run.size == 4:
                            ff_run32(dst + (run.col_off_n if cols else run.col_off),
                                     b + run.wire_off, run.count)
                        else:
                            ff_run64(dst + (run.col_off_n if cols else run.col_off),
                                     b + run.wire_off, run.count)
                else:  # optional tail (host_cpu): fields past the record stay / become 0
                    for k in range(rec.first, last):
                        fld = &self._fields[k]
                        if <uint32_t>(fld.wire_off + fld.size) <= rlen:
                            if fld.size == 4:
                                ff_cp32(dst + (fld.col_off_n if cols else fld.col_off),
                                        b + fld.wire_off)
                            else:
                                ff_cp64(dst + (fld.col_off_n if cols else fld.col_off),
                                        b + fld.wire_off)
                        else:
                            memset(dst + (fld.col_off_n if cols else fld.col_off), 0, fld.size)
                ok = True
            elif rec.kind == K_HOST_DESCR:
                ok = self._host_descr(dst, hc, b, rlen)
            elif rec.kind == K_HOST_ADAPTERS:
                ok = self._host_adapters(dst, hc, b, rlen)
            else:
                ok = self._if_name(dst, hc, b, rlen)
            if not ok:
                self._err(R_RECORD_TOO_SHORT)
                continue
            if cols and not (mask & rec.bit):
                self._rt[idx].n += 1
            mask |= rec.bit
        _sample_head(row, &self._cc, ctx, ff_be32(p), sid, styp, sidx, mask, expanded)
        if self.n_counters >= self.counter_capacity and not (cols and self._grow(1)):
            return 1
        self.n_counters += 1
        return 0

    cdef bint _host_descr(self, uint8_t *row, const CtrCols *hc, const uint8_t *p,
                          uint32_t n) noexcept nogil:
        """host_descr (0:2000); False (nothing written) when it does not fit its record."""
        cdef ff_cur c
        cdef const uint8_t *host
        cdef const uint8_t *rel
        cdef const uint8_t *uuid
        cdef uint32_t hl, rl, mt, osn, hi = 0, ri = 0
        c.p = p
        c.end = p + n
        if not ff_opaque(&c, 64, &host, &hl):
            return False
        uuid = c.p
        if not ff_skip(&c, 16):
            return False
        if not (ff_u32(&c, &mt) and ff_u32(&c, &osn)):
            return False
        if not ff_opaque(&c, 32, &rel, &rl):
            return False
        if hl and self._intern(&self._strings, host, hl, &hi):
            hi = 0
            self._err(R_TABLE_FULL)
        if rl and self._intern(&self._strings, rel, rl, &ri):
            ri = 0
            self._err(R_TABLE_FULL)
        ff_st32(row + hc.hostname, hi)
        memcpy(row + hc.uuid, uuid, 16)
        ff_st32(row + hc.machine_type, mt)
        ff_st32(row + hc.os_name, osn)
        ff_st32(row + hc.os_release, ri)
        return True

    cdef bint _if_name(self, uint8_t *row, const CtrCols *hc, const uint8_t *p,
                       uint32_t n) noexcept nogil:
        """if_name (0:1005): string if_name<255>, interned; False when it does not fit."""
        cdef ff_cur c
        cdef const uint8_t *name
        cdef uint32_t nl, ni = 0
        c.p = p
        c.end = p + n
        if not ff_opaque(&c, 255, &name, &nl):
            return False
        if nl and self._intern(&self._strings, name, nl, &ni):
            ni = 0
            self._err(R_TABLE_FULL)
        ff_st32(row + hc.ifname, ni)
        return True

    cdef bint _host_adapters(self, uint8_t *row, const CtrCols *hc, const uint8_t *p,
                             uint32_t n) noexcept nogil:
        """host_adapters (0:2001): the column is the adapter count; every adapter must fit."""
        cdef ff_cur c
        cdef uint32_t count, i, idx, macs
        c.p = p
        c.end = p + n
        if not ff_u32(&c, &count):
            return False
        i = 0
        while i < count:
            if not (ff_u32(&c, &idx) and ff_u32(&c, &macs)):
                return False
            if not ff_skip(&c, <uint64_t>macs * 8):
                return False
            i += 1
        ff_st32(row + hc.adapters, count)
        return True

    cdef int _flow_sample(self, const uint8_t *p, const uint8_t *end, int kind,
                          DgCtx *ctx) noexcept nogil:
        """Decode a flow sample (kind 0: 0:1, 1: expanded 0:3) or a discarded-packet event (kind
        2: 0:5, same records) into the next flow row; 1 on overflow."""
        cdef bint expanded = kind == 1
        cdef Py_ssize_t fixed = 44 if expanded else 32
        cdef uint32_t reason = 0
        cdef uint8_t *row
        cdef uint32_t sid, styp, sidx, nrec, r, rfmt, rlen, mask = 0
        cdef uint32_t rate, pool, drops, inp, outp, hlen, u, nseg, cnt, s, seg_first
        cdef uint32_t asn, src_as, src_peer_as, dst_as, dst_peer_as, lpref, m1, m2
        cdef const uint8_t *q
        cdef const uint8_t *b
        cdef bint seen_header = False, seen_router = False, ok
        cdef uint8_t nh[16]
        cdef ff_cur c
        cdef FlowCols *F = &self._f
        if end - p < fixed:
            self._err(R_SAMPLE_TOO_SHORT)
            return 0
        row = self._flow + self.n_flows * self._flow_size
        memset(row, 0, self._flow_size)
        if expanded:
            styp = ff_be32(p + 4)
            sidx = ff_be32(p + 8)
            sid = ((styp & 0xFF) << 24) | (sidx & 0xFFFFFF)
            rate = ff_be32(p + 12)
            pool = ff_be32(p + 16)
            drops = ff_be32(p + 20)
            inp = (ff_be32(p + 24) << 30) | (ff_be32(p + 28) & 0x3FFFFFFF)
            outp = (ff_be32(p + 32) << 30) | (ff_be32(p + 36) & 0x3FFFFFFF)
            nrec = ff_be32(p + 40)
        elif kind == 2:  # sequence, source (expanded form), drops, input, output, reason
            styp = ff_be32(p + 4)
            sidx = ff_be32(p + 8)
            sid = ((styp & 0xFF) << 24) | (sidx & 0xFFFFFF)
            rate = 1
            pool = 0
            drops = ff_be32(p + 12)
            inp = ff_be32(p + 16)
            outp = ff_be32(p + 20)
            reason = ff_be32(p + 24)
            nrec = ff_be32(p + 28)
        else:
            sid = ff_be32(p + 4)
            styp = sid >> 24
            sidx = sid & 0xFFFFFF
            rate = ff_be32(p + 8)
            pool = ff_be32(p + 12)
            drops = ff_be32(p + 16)
            inp = ff_be32(p + 20)
            outp = ff_be32(p + 24)
            nrec = ff_be32(p + 28)
        q = p + fixed
        r = 0
        while r < nrec:
            if not ff_record(&q, end, &rfmt, &rlen):
                self._err(R_RECORD_OVERRUN)
                return 0
            b = q
            q = b + rlen
            r += 1
            if rfmt == 1:  # sampled_header
                if rlen < 16:
                    self._err(R_RECORD_TOO_SHORT)
                    continue
                hlen = ff_be32(b + 12)
                if 16 + ((<uint64_t>hlen + 3) & ~(<uint64_t>3)) > rlen:
                    self._err(R_RECORD_TOO_SHORT)
                    continue
                mask |= B_HEADER
                if not seen_header:
                    seen_header = True
                    ff_st32(row + F.header_protocol, ff_be32(b))
                    ff_st32(row + F.frame_length, ff_be32(b + 4))
                    ff_st32(row + F.stripped, ff_be32(b + 8))
                    ff_st32(row + F.header_length, hlen)
                    self._header(row, ff_be32(b), b + 16, hlen)
            elif rfmt == 2:  # sampled_ethernet
                if rlen < 24:
                    self._err(R_RECORD_TOO_SHORT)
                    continue
                mask |= B_ETH
                if not seen_header:
                    ff_st32(row + F.frame_length, ff_be32(b))
                    ff_st64(row + F.eth_src, _mac(b + 4))
                    ff_st64(row + F.eth_dst, _mac(b + 12))
                    ff_st16(row + F.eth_type, <uint16_t>ff_be32(b + 20))
            elif rfmt == 3:  # sampled_ipv4
                if rlen < 32:
                    self._err(R_RECORD_TOO_SHORT)
                    continue
                mask |= B_IPV4
                if not seen_header:
                    ff_st32(row + F.frame_length, ff_be32(b))
                    row[F.ip_version] = 4
                    row[F.ip_protocol] = <uint8_t>ff_be32(b + 4)
                    _mapped4(row + F.ip_src, b + 8)
                    _mapped4(row + F.ip_dst, b + 12)
                    ff_st16(row + F.src_port, <uint16_t>ff_be32(b + 16))
                    ff_st16(row + F.dst_port, <uint16_t>ff_be32(b + 20))
                    row[F.tcp_flags] = <uint8_t>ff_be32(b + 24)
                    row[F.ip_tos] = <uint8_t>ff_be32(b + 28)
                    row[F.l4_ok] = 1
            elif rfmt == 4:  # sampled_ipv6
                if rlen < 56:
                    self._err(R_RECORD_TOO_SHORT)
                    continue
                mask |= B_IPV6
                if not seen_header:
                    ff_st32(row + F.frame_length, ff_be32(b))
                    row[F.ip_version] = 6
                    row[F.ip_protocol] = <uint8_t>ff_be32(b + 4)
                    memcpy(row + F.ip_src, b + 8, 16)
                    memcpy(row + F.ip_dst, b + 24, 16)
                    ff_st16(row + F.src_port, <uint16_t>ff_be32(b + 40))
                    ff_st16(row + F.dst_port, <uint16_t>ff_be32(b + 44))
                    row[F.tcp_flags] = <uint8_t>ff_be32(b + 48)
                    row[F.ip_tos] = <uint8_t>ff_be32(b + 52)
                    row[F.l4_ok] = 1
            elif rfmt == 1001:  # extended_switch
                if rlen < 16:
                    self._err(R_RECORD_TOO_SHORT)
                    continue
                mask |= B_SWITCH
                ff_cp32(row + F.src_vlan, b)
                ff_cp32(row + F.src_priority, b + 4)
                ff_cp32(row + F.dst_vlan, b + 8)
                ff_cp32(row + F.dst_priority, b + 12)
            elif rfmt == 1002:  # extended_router
                c.p = b
                c.end = b + rlen
                if not (ff_address(&c, nh) and ff_u32(&c, &m1) and ff_u32(&c, &m2)):
                    self._err(R_RECORD_TOO_SHORT)
                    continue
                mask |= B_ROUTER
                seen_router = True
                memcpy(row + F.nexthop, nh, 16)
                row[F.src_mask_len] = <uint8_t>m1
                row[F.dst_mask_len] = <uint8_t>m2
            elif rfmt == 1003:  # extended_gateway
                c.p = b
                c.end = b + rlen
                ok = (ff_address(&c, nh) and ff_u32(&c, &asn) and ff_u32(&c, &src_as)
                      and ff_u32(&c, &src_peer_as) and ff_u32(&c, &nseg))
                dst_as = 0
                dst_peer_as = 0
                s = 0
                while ok and s < nseg:
                    ok = ff_u32(&c, &u) and ff_u32(&c, &cnt) and ff_has(&c, <uint64_t>cnt * 4)
                    if ok:
                        if s == 0:
                            dst_peer_as = ff_be32(c.p) if cnt else 0
                        if s == nseg - 1:
                            dst_as = ff_be32(c.p + (cnt - 1) * 4) if cnt else 0
                        c.p += <uint64_t>cnt * 4
                    s += 1
                ok = ok and ff_u32(&c, &cnt) and ff_skip(&c, <uint64_t>cnt * 4) \
                    and ff_u32(&c, &lpref)
                if not ok:
                    self._err(R_RECORD_TOO_SHORT)
                    continue
                mask |= B_GATEWAY
                if not seen_router:
                    memcpy(row + F.nexthop, nh, 16)
                ff_st32(row + F.as_number, asn)
                ff_st32(row + F.src_as, src_as)
                ff_st32(row + F.src_peer_as, src_peer_as)
                ff_st32(row + F.dst_as, dst_as)
                ff_st32(row + F.dst_peer_as, dst_peer_as)
                ff_st32(row + F.local_pref, lpref)
            else:
                self._err(R_UNKNOWN_RECORD)
        _sample_head(row, &self._fc, ctx, ff_be32(p), sid, styp, sidx, mask, expanded)
        ff_st32(row + F.sampling_rate, rate)
        ff_st32(row + F.sample_pool, pool)
        ff_st32(row + F.drops, drops)
        ff_st32(row + F.input, inp)
        ff_st32(row + F.output, outp)
        row[F.discard] = kind == 2
        ff_st32(row + F.discard_reason, reason)
        if self.n_flows >= self.flow_capacity and not (self._columns and self._grow(2)):
            return 1
        self.n_flows += 1
        return 0

    # ---- sampled header: Ethernet / 802.1Q / QinQ -> IPv4 / IPv6 -> TCP / UDP / ICMP ----------
    cdef void _header(self, uint8_t *row, uint32_t proto, const uint8_t *h, uint32_t n) noexcept nogil:
        cdef FlowCols *F = &self._f
        cdef uint16_t typ, tci
        cdef uint32_t pos = 14, tags = 0
        if proto == 1:
            if n < 14:
                return
            ff_st64(row + F.eth_dst, _mac(h))
            ff_st64(row + F.eth_src, _mac(h + 6))
            typ = ff_be16(h + 12)
            while typ == 0x8100 or typ == 0x88A8 or typ == 0x9100:
                if <uint64_t>pos + 4 > n:
                    break
                tci = ff_be16(h + pos)
                typ = ff_be16(h + pos + 2)
                pos += 4
                if tags == 0:
                    ff_st16(row + F.vlan, tci & 0x0FFF)
                elif tags == 1:
                    ff_st16(row + F.inner_vlan, tci & 0x0FFF)
                tags += 1
            ff_st16(row + F.eth_type, typ)
            if typ == 0x0800:
                self._ipv4(row, h + pos, n - pos)
            elif typ == 0x86DD:
                self._ipv6(row, h + pos, n - pos)
        elif proto == 11:
            self._ipv4(row, h, n)
        elif proto == 12:
            self._ipv6(row, h, n)

    cdef void _ipv4(self, uint8_t *row, const uint8_t *h, uint32_t n) noexcept nogil:
        cdef FlowCols *F = &self._f
        cdef uint32_t ihl
        if n < 20 or (h[0] >> 4) != 4:
            return
        ihl = (h[0] & 0x0F) * 4
        if ihl < 20:
            return
        row[F.ip_version] = 4
        row[F.ip_tos] = h[1]
        ff_st16(row + F.ip_length, ff_be16(h + 2))
        row[F.ip_ttl] = h[8]
        row[F.ip_protocol] = h[9]
        _mapped4(row + F.ip_src, h + 12)
        _mapped4(row + F.ip_dst, h + 16)
        if (ff_be16(h + 6) & 0x1FFF) == 0 and ihl <= n:
            self._l4(row, h[9], h + ihl, n - ihl)

    cdef void _ipv6(self, uint8_t *row, const uint8_t *h, uint32_t n) noexcept nogil:
        cdef FlowCols *F = &self._f
        cdef uint64_t pos = 40
        cdef uint8_t nh
        cdef bint l4 = True
        if n < 40:
            return
        row[F.ip_version] = 6
        row[F.ip_tos] = ((h[0] & 0x0F) << 4) | (h[1] >> 4)
        ff_st16(row + F.ip_length, <uint16_t>(ff_be16(h + 4) + 40))
        row[F.ip_ttl] = h[7]
        memcpy(row + F.ip_src, h + 8, 16)
        memcpy(row + F.ip_dst, h + 24, 16)
        nh = h[6]
        # extension headers (each at least 8 bytes); a non-first fragment has no L4 header
        while nh == 0 or nh == 43 or nh == 60 or nh == 44:
            if pos + 8 > n:
                l4 = False
                break
            if nh == 44:
                if (ff_be16(h + pos + 2) >> 3) != 0:
                    l4 = False
                nh = h[pos]
                pos += 8
            else:
                nh = h[pos]
                pos += (<uint64_t>h[pos + 1] + 1) * 8
        row[F.ip_protocol] = nh
        if l4 and pos <= n:
            self._l4(row, nh, h + pos, <uint32_t>(n - pos))

    cdef void _l4(self, uint8_t *row, uint8_t proto, const uint8_t *h, uint32_t n) noexcept nogil:
        cdef FlowCols *F = &self._f
        if proto == 6:
            if n < 14:
                return
            ff_st16(row + F.src_port, ff_be16(h))
            ff_st16(row + F.dst_port, ff_be16(h + 2))
            row[F.tcp_flags] = h[13]
            row[F.l4_ok] = 1
        elif proto == 17:
            if n < 4:
                return
            ff_st16(row + F.src_port, ff_be16(h))
            ff_st16(row + F.dst_port, ff_be16(h + 2))
            row[F.l4_ok] = 1
        elif proto == 1 or proto == 58:
            if n < 2:
                return
            row[F.icmp_type] = h[0]
            row[F.icmp_code] = h[1]
            row[F.l4_ok] = 1


# Orders of the column-offset structs in _decode.pxd (must match their declarations).
_DG_FIELDS = ("ts", "agent", "sub_agent_id", "sequence_number", "uptime", "num_samples",
              "n_counters", "n_flows", "length", "status", "agent_af")
_SAMPLE_FIELDS = ("ts", "agent", "sub_agent_id", "uptime", "dgram", "sequence_number",
                  "source_id", "source_id_type", "source_id_index", "mask", "expanded")
_HOST_FIELDS = ("hostname", "uuid", "machine_type", "os_name", "os_release", "adapters", "ifname")
_FLOW_FIELDS = (
    "sampling_rate", "sample_pool", "drops", "input", "output", "discard", "discard_reason",
    "header_protocol", "frame_length", "stripped", "header_length",
    "eth_src", "eth_dst", "eth_type", "vlan", "inner_vlan",
    "ip_version", "ip_protocol", "ip_src", "ip_dst", "ip_tos", "ip_ttl", "ip_length",
    "src_port", "dst_port", "tcp_flags", "icmp_type", "icmp_code", "l4_ok",
    "src_vlan", "src_priority", "dst_vlan", "dst_priority",
    "nexthop", "src_mask_len", "dst_mask_len",
    "as_number", "src_as", "src_peer_as", "dst_as", "dst_peer_as", "local_pref",
)


cdef class _Owner:
    """Owns one table mapping and lends it out through the buffer protocol (numpy views of a
    ColumnDecoder's tables keep it alive; it is unmapped with the last view)."""
    cdef uint8_t *p
    cdef Py_ssize_t nbytes
    cdef size_t mapped
    cdef Py_ssize_t shape[1]
    cdef Py_ssize_t strides[1]

    def __getbuffer__(self, Py_buffer *view, int flags):
        self.shape[0] = self.nbytes
        self.strides[0] = 1
        view.buf = <void *>self.p
        view.obj = self
        view.len = self.nbytes
        view.readonly = 0
        view.itemsize = 1
        view.format = "B"
        view.ndim = 1
        view.shape = self.shape
        view.strides = self.strides
        view.suboffsets = NULL
        view.internal = NULL

    def __releasebuffer__(self, Py_buffer *view):
        pass

    def __dealloc__(self):
        if self.p != NULL:
            munmap(self.p, self.mapped)


cdef object _hand_over(GBuf *g, Py_ssize_t n, object dtype):
    """The first ``n`` rows of ``g`` as a numpy array that owns them (the mapping shrunk to fit,
    no copy); ``g`` is left empty (NULL, capacity 0)."""
    cdef _Owner o
    cdef void *q
    cdef size_t old, new
    if n == 0:
        _gb_free(g)
        return np.zeros(0, dtype)
    o = _Owner.__new__(_Owner)
    old = _mapsize(g.vcap + 1, g.size)
    new = _mapsize(n, g.size)
    q = ff_mremap(g.p, old, new) if new < old else NULL
    o.p = <uint8_t *>(q if q != NULL else g.p)
    o.mapped = new if q != NULL else old
    o.nbytes = <size_t>n * <size_t>g.size
    g.p = NULL
    g.n = g.cap = g.vcap = 0
    return np.frombuffer(o, dtype, n)


cdef class ColumnDecoder(Decoder):
    """The columnar twin of :class:`Decoder` (the notebook path, ``read_pcap``): the same walk and
    rules, into tables sized to the data that grow as needed instead of filling up.

    Counter samples become narrow ``SAMPLE_DTYPE`` rows plus one ``RECORD_DTYPES[name]`` table per
    record type present, linked by a ``sample`` column; datagrams and flows keep their dtypes.
    ``feed`` takes every datagram (``MemoryError`` if a table cannot grow); :meth:`take` hands the
    tables over (numpy arrays that own their memory, no copy) and starts new ones.
    Capacities are first sizes (rows), e.g. estimated from a capture's size.
    """

    def __init__(self, datagram_capacity: int = 4096, sample_capacity: int = 8192,
                 flow_capacity: int = 4096, *, max_interned: int = _schema.MAX_INTERNED) -> None:
        cdef int i
        self._columns = True
        self._dg_arr = self._ctr_arr = self._flow_arr = None
        caps = [max(int(datagram_capacity), 16), max(int(sample_capacity), 16),
                max(int(flow_capacity), 16)]
        self._setup(caps[0], caps[1], caps[2], max_interned)
        sizes = (_schema.DATAGRAM_DTYPE.itemsize, _schema.SAMPLE_DTYPE.itemsize,
                 _schema.FLOW_DTYPE.itemsize)
        self._ctr_size = sizes[1]
        for i in range(32):
            _gb_free(&self._rt[i])
        for i, (_fmt, name, _m, _f) in enumerate(_schema.COUNTER_RECORDS):
            self._rt[i].size = _schema.RECORD_DTYPES[name].itemsize
        self._sizes = caps
        for i in range(3):
            self._gb[i].size = sizes[i]
        self._alloc_main()

    def _alloc_main(self):
        cdef int i
        for i in range(3):
            _gb_free(&self._gb[i])
            self._gb[i].vcap = self._sizes[i]
            self._gb[i].p = _map(_mapsize(self._gb[i].vcap + 1, self._gb[i].size))
            if self._gb[i].p == NULL or not _gb_step(&self._gb[i]):
                raise MemoryError("ColumnDecoder: cannot allocate its tables")
        self._dg = self._gb[0].p
        self._ctr = self._gb[1].p
        self._flow = self._gb[2].p
        self.datagram_capacity = self._gb[0].cap
        self.counter_capacity = self._gb[1].cap
        self.flow_capacity = self._gb[2].cap

    def take(self) -> dict:
        """Hand the tables over and start empty ones (intern tables and error counts are kept).

        Returns ``{"datagrams", "samples", "flows": arrays, "records": {name: array}}``, records
        only for the types present. The arrays own their memory (no copy was made).
        """
        cdef int i
        if self._busy:
            raise RuntimeError("ColumnDecoder.take called while a feed is running on it")
        out = {
            "datagrams": _hand_over(&self._gb[0], self.n_datagrams, _schema.DATAGRAM_DTYPE),
            "samples": _hand_over(&self._gb[1], self.n_counters, _schema.SAMPLE_DTYPE),
            "flows": _hand_over(&self._gb[2], self.n_flows, _schema.FLOW_DTYPE),
        }
        records = {}
        for i, (_fmt, name, _m, _f) in enumerate(_schema.COUNTER_RECORDS):
            if self._rt[i].n:
                records[name] = _hand_over(&self._rt[i], self._rt[i].n,
                                           _schema.RECORD_DTYPES[name])
        out["records"] = records
        self.n_datagrams = self.n_counters = self.n_flows = 0
        self._alloc_main()
        self.clear()
        return out

    @property
    def n_samples(self) -> int:
        """Counter-sample rows held (the same count as ``n_counters``)."""
        return self.n_counters

    def record_counts(self) -> dict:
        """Rows held per record table (types present only)."""
        return {name: int(self._rt[i].n) for i, (_f, name, _m, _x)
                in enumerate(_schema.COUNTER_RECORDS) if self._rt[i].n}
