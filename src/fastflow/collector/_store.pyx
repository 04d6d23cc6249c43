# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled write path of :class:`fastflow.collector.store.Store` (one pass, row by row, in C).

:class:`StoreKernel` decides the fate of every counter sample against the newest kept sample of its
data source and writes the kept ones into the store's key table and ring rows, exactly as the
pure-Python twin :class:`fastflow.collector._pystore.PyStoreKernel` does (same rules, same arrays,
tested by the same suite). It owns no memory of its own: it holds raw pointers into the numpy
arrays of the :class:`Store`, refreshed by :meth:`StoreKernel.bind` whenever the store reallocates
them. When a new data source or ring row needs room that is not there, :meth:`StoreKernel.write`
stops *before* touching that row and returns its index with ``need`` set; the store grows (or
compacts) its arrays, rebinds and calls again from that row.
"""

from libc.math cimport fabs
from libc.stdint cimport int32_t, int64_t, intptr_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset

cimport numpy as cnp
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.object cimport PyObject

import numpy as np

cnp.import_array()

# fates (ordered as in store.py: fate <= RESET means kept)
cdef enum:
    ACCEPT = 0
    SAME = 1
    RESET = 2
    DUP = 3
    REORDER = 4

# counter slots (store.COUNT_NAMES order)
cdef enum:
    C_SAMPLES = 0
    C_ACCEPTED = 1
    C_DUP = 2
    C_REORDER = 3
    C_RESET = 4
    C_MISMATCH = 5
    C_REJECTED = 6

# hw slots
cdef enum:
    H_KEYS = 0
    H_LIVE = 1
    H_FULL = 2
    H_ROWS = 3

cdef enum:
    MAXG = 8


cdef struct Col:
    Py_ssize_t src          # offset in the counter row
    Py_ssize_t dst          # offset in the ring record
    Py_ssize_t size


cdef struct Group:
    uint32_t bits
    int ncols
    Col* cols
    char* last              # records of ``rsize`` bytes, one per row
    char* prev
    char* data              # (depth, capacity) records, NULL without history
    Py_ssize_t rsize
    int64_t* rowmap
    int64_t* head
    int64_t* count
    int64_t* key_of_row
    int64_t capacity


# the key table's record (Store.KEY_DTYPE, numpy align=True: the same layout)
cdef struct KeyRow:
    uint64_t key
    double last_ts
    double last_seen
    uint32_t agent
    uint32_t source_id
    uint32_t last_seq
    uint32_t last_uptime
    uint32_t text[4]        # hostname, machine_type, os_name, os_release
    uint8_t alive
    uint8_t has
    uint8_t run


cdef inline char* _p(object arr):
    return <char*>cnp.PyArray_DATA(arr)


cdef class StoreKernel:
    """The compiled store writer bound to one :class:`Store` (see the module docstring)."""
    cdef object store
    cdef Group groups[MAXG]
    cdef int ngroups
    cdef int depth
    cdef int64_t reorder_ms, wrap_ms, tol_ms, max_sources
    cdef uint32_t host_descr_bit
    cdef KeyRow* K
    cdef int64_t kcap
    cdef int64_t* hw
    cdef int64_t* cnt
    cdef dict index
    cdef object dtype
    cdef Py_ssize_t itemsize, o_agent, o_sid, o_seq, o_up, o_ts, o_mask
    cdef Py_ssize_t o_text[4]
    cdef readonly int need

    def __cinit__(self, store):
        self.store = store
        self.ngroups = 0
        self.dtype = None
        self.need = 0

    def __dealloc__(self):
        self._free_groups()

    cdef void _free_groups(self):
        cdef int g
        for g in range(self.ngroups):
            free(self.groups[g].cols)
            self.groups[g].cols = NULL
        self.ngroups = 0

    def bind(self):
        """Refresh every pointer from the store's arrays (after any reallocation)."""
        s = self.store
        self.depth = s.depth
        self.reorder_ms = s.reorder_window_ms
        self.wrap_ms = s._wrap_ms
        self.tol_ms = s.dt_tolerance_ms
        self.max_sources = s.max_sources
        self.host_descr_bit = s._host_descr_bit
        self.index = s._index
        k = s.k
        cdef KeyRow probe
        if k.dtype.itemsize != sizeof(KeyRow) or \
                k.dtype.fields["run"][1] != <char*>&probe.run - <char*>&probe or \
                k.dtype.fields["os_release"][1] != <char*>&probe.text[3] - <char*>&probe:
            raise TypeError("Store.KEY_DTYPE does not match the kernel's KeyRow")
        self.K = <KeyRow*>_p(k)
        self.kcap = s._kcap
        self.hw = <int64_t*>_p(s._hw)
        self.cnt = <int64_t*>_p(s._cnt)
        self._free_groups()
        rings = list(s.rings.items())
        if len(rings) > MAXG:
            raise ValueError("too many ring groups")
        self.dtype = None                      # column offsets are set again on the next write
        cdef Group* gr
        for g, (name, ring) in enumerate(rings):
            gr = &self.groups[g]
            gr.bits = ring.bits
            gr.ncols = len(ring.sources)
            gr.cols = <Col*>calloc(max(gr.ncols, 1), sizeof(Col))
            if gr.cols == NULL:
                raise MemoryError()
            self.ngroups = g + 1
            gr.rowmap = <int64_t*>_p(s._row[name])
            gr.head = <int64_t*>_p(ring.head)
            gr.count = <int64_t*>_p(ring.count)
            gr.key_of_row = <int64_t*>_p(ring.key_of_row)
            gr.capacity = ring.capacity
            gr.rsize = ring.dtype.itemsize
            gr.last = _p(ring.last)
            gr.prev = _p(ring.prev)
            gr.data = _p(ring.data) if ring.keeps_history else NULL
            for j, (col, _src) in enumerate(ring.sources):
                gr.cols[j].size = ring.dtype.fields[col][0].itemsize
                gr.cols[j].dst = ring.dtype.fields[col][1]

    cdef void _set_dtype(self, object dt) except *:
        f = dt.fields
        self.itemsize = dt.itemsize
        self.o_agent = f["agent"][1]
        self.o_sid = f["source_id"][1]
        self.o_seq = f["sequence_number"][1]
        self.o_up = f["uptime"][1]
        self.o_ts = f["ts"][1]
        self.o_mask = f["mask"][1]
        for j, col in enumerate(self.store._text_cols):
            self.o_text[j] = f[col][1]
        cdef int g
        for g, (name, ring) in enumerate(self.store.rings.items()):
            for j, (col, src) in enumerate(ring.sources):
                fd = f[src]
                if fd[0].itemsize != self.groups[g].cols[j].size:
                    raise TypeError(f"counter column {src} is {fd[0]}, the ring holds "
                                    f"{ring.dtype.fields[col][0]}")
                self.groups[g].cols[j].src = fd[1]
        self.dtype = dt

    def write(self, cnp.ndarray c, Py_ssize_t start=0):
        """Store rows ``start..`` of the C-contiguous counter table ``c``; returns the index of the
        first row not processed (``len(c)`` when done; otherwise ``need`` says what is missing:
        1 a key slot, 2+g a row of ring g)."""
        cdef Py_ssize_t n = c.shape[0], i
        if c.dtype is not self.dtype:
            self._set_dtype(c.dtype)
        cdef char* base = _p(c)
        cdef char* row
        cdef uint32_t agent, sid, seq, up, mask, lseq, lup, fwd
        cdef double t, lts, dts
        cdef uint64_t key
        cdef int64_t slot, r, c0, pos
        cdef int g, j, code, run
        cdef int32_t dseq
        cdef bint has, up_back, backwards
        cdef PyObject* obj
        cdef Group* gr
        cdef Col* col
        cdef KeyRow* kr
        cdef char* lrow
        cdef int64_t* hw = self.hw
        cdef int64_t* cnt = self.cnt
        cdef int depth = self.depth
        self.need = 0
        for i in range(start, n):
            row = base + i * self.itemsize
            memcpy(&agent, row + self.o_agent, 4)
            memcpy(&sid, row + self.o_sid, 4)
            memcpy(&seq, row + self.o_seq, 4)
            memcpy(&up, row + self.o_up, 4)
            memcpy(&t, row + self.o_ts, 8)
            memcpy(&mask, row + self.o_mask, 4)
            key = (<uint64_t>agent << 32) | sid
            pkey = key
            obj = PyDict_GetItem(self.index, pkey)
            if obj == NULL:
                if hw[H_LIVE] >= self.max_sources:
                    cnt[C_SAMPLES] += 1
                    cnt[C_REJECTED] += 1
                    hw[H_FULL] += 1
                    continue
                if hw[H_KEYS] >= self.kcap:
                    self.need = 1
                    return i
                for g in range(self.ngroups):
                    if (mask & self.groups[g].bits) and hw[H_ROWS + g] >= self.groups[g].capacity:
                        self.need = 2 + g
                        return i
                slot = hw[H_KEYS]
                hw[H_KEYS] += 1
                hw[H_LIVE] += 1
                kr = &self.K[slot]
                memset(kr, 0, sizeof(KeyRow))
                kr.key = key
                kr.agent = agent
                kr.source_id = sid
                kr.alive = 1
                for g in range(self.ngroups):
                    self.groups[g].rowmap[slot] = -1
                PyDict_SetItem(self.index, pkey, slot)
            else:
                slot = <object>obj
                for g in range(self.ngroups):
                    gr = &self.groups[g]
                    if (mask & gr.bits) and gr.rowmap[slot] < 0 and hw[H_ROWS + g] >= gr.capacity:
                        self.need = 2 + g
                        return i
            cnt[C_SAMPLES] += 1
            # ---- fate against the newest kept sample
            code = ACCEPT
            kr = &self.K[slot]
            has = kr.has
            if has:
                lseq = kr.last_seq
                lup = kr.last_uptime
                lts = kr.last_ts
                run = kr.run
                dseq = <int32_t>(seq - lseq)
                fwd = up - lup
                if seq == lseq and up == lup:
                    code = DUP
                else:
                    up_back = up < lup and not (fwd <= <uint64_t>self.wrap_ms and dseq > 0)
                    backwards = up_back or (up == lup and dseq < 0)
                    if (backwards and <int64_t>lup - <int64_t>up <= self.reorder_ms and dseq < 0
                            and run < 3):
                        code = REORDER
                    elif backwards or dseq < 0:
                        code = RESET
                    elif up == lup and fabs(t - lts) < 1.0:
                        code = SAME
                    elif fwd > 0 and self.tol_ms >= 0:
                        dts = (t - lts) * 1000.0
                        if <double>fwd * 2.0 + <double>self.tol_ms < dts:
                            code = RESET            # uptime far slower than arrival time
                            cnt[C_MISMATCH] += 1
            if code == DUP:
                cnt[C_DUP] += 1
                continue
            if code == REORDER:
                cnt[C_REORDER] += 1
                kr.run += 1
                continue
            if code == RESET:
                cnt[C_RESET] += 1
                for g in range(self.ngroups):
                    r = self.groups[g].rowmap[slot]
                    if r >= 0:
                        self.groups[g].count[r] = 0
            cnt[C_ACCEPTED] += 1
            kr.has = 1
            kr.last_seq = seq
            kr.last_uptime = up
            kr.last_ts = t
            if t > kr.last_seen:
                kr.last_seen = t
            kr.run = 0
            if mask & self.host_descr_bit:
                for j in range(4):
                    memcpy(&kr.text[j], row + self.o_text[j], 4)
            for g in range(self.ngroups):
                gr = &self.groups[g]
                if not (mask & gr.bits):
                    continue
                r = gr.rowmap[slot]
                if r < 0:
                    r = hw[H_ROWS + g]
                    hw[H_ROWS + g] += 1
                    gr.key_of_row[r] = slot
                    gr.rowmap[slot] = r
                    gr.count[r] = 0
                    gr.head[r] = depth - 1
                c0 = gr.count[r]
                lrow = gr.last + r * gr.rsize
                if code == SAME and c0 > 0:
                    pos = gr.head[r]
                else:
                    pos = (gr.head[r] + 1) % depth
                    gr.head[r] = pos
                    gr.count[r] = c0 + 1 if c0 < depth else depth
                    memcpy(gr.prev + r * gr.rsize, lrow, gr.rsize)
                for j in range(gr.ncols):
                    col = &gr.cols[j]
                    memcpy(lrow + col.dst, row + col.src, col.size)
                if gr.data != NULL:
                    memcpy(gr.data + (pos * gr.capacity + r) * gr.rsize, lrow, gr.rsize)
        return n
