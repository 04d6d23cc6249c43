# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled per-datagram accounting of :class:`fastflow.collector.agentstats.AgentStats`.

:class:`AgentKernel` walks a batch's datagram table (sequence numbers per sub-agent stream) and
sample tables (sequence numbers per data source) row by row, updating the numpy arrays and dicts
held by its :class:`AgentStats` (pointers refreshed by :meth:`AgentKernel.bind`), exactly as the
pure-Python twin :class:`fastflow.collector._pyagentstats.PyAgentKernel`. When a new agent or
stream needs a row that is not there it stops before that datagram, with ``need`` set (1 agent,
2 stream); the owner grows its arrays, rebinds and calls again.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

cimport numpy as cnp
from cpython.dict cimport PyDict_DelItem, PyDict_GetItem, PyDict_SetItem
from cpython.object cimport PyObject

import numpy as np

cnp.import_array()

# per-agent counter columns (agentstats.A_FIELDS order)
cdef enum:
    A_DGRAMS = 0
    A_LOST = 1
    A_DUP = 2
    A_OOO = 3
    A_RESTARTS = 4
    A_ERRORS = 5
    A_FLOWS = 6
    A_COUNTERS = 7
    A_FLOW_LOST = 8
    A_COUNTER_LOST = 9
    A_JUMPS = 10
    A_SAMPLE_JUMPS = 11
    A_UPTIME = 12
    A_STREAMS = 13
    NF = 14

# hw / global counters (agentstats.HW_FIELDS order)
cdef enum:
    H_AGENTS = 0
    H_AGENTS_LIVE = 1
    H_STREAMS = 2
    H_STREAMS_LIVE = 3
    H_REJ_AGENTS = 4
    H_REJ_STREAMS = 5
    H_REJ_SAMPLES = 6
    H_FULL = 7

cdef enum:
    WORDS = 64          # 4096-bit window of recent sequence numbers per stream


cdef inline char* _p(object arr):
    return <char*>cnp.PyArray_DATA(arr)


cdef inline uint64_t _mix(uint64_t x):
    """splitmix64's finaliser: the slot hash of a sample-state key."""
    x ^= x >> 30
    x *= <uint64_t>0xBF58476D1CE4E5B9
    x ^= x >> 27
    x *= <uint64_t>0x94D049BB133111EB
    x ^= x >> 31
    return x


cdef inline bint _bit(uint64_t* w, int64_t b):
    return (w[b >> 6] >> (b & 63)) & 1


cdef inline void _setbit(uint64_t* w, int64_t b):
    w[b >> 6] |= (<uint64_t>1) << (b & 63)


cdef void _shift(uint64_t* w, int64_t d):
    """Window bit i -> bit i + d (sequence numbers move away from the newest)."""
    cdef int64_t ws = d >> 6, j
    cdef int r = d & 63
    if d >= WORDS * 64:
        memset(w, 0, WORDS * 8)
        return
    for j in range(WORDS - 1, -1, -1):
        if j - ws < 0:
            w[j] = 0
        elif r == 0:
            w[j] = w[j - ws]
        else:
            w[j] = w[j - ws] << r
            if j - ws - 1 >= 0:
                w[j] |= w[j - ws - 1] >> (64 - r)


cdef class AgentKernel:
    """Row-by-row accounting bound to one AgentStats (see the module docstring)."""
    cdef object owner
    cdef int64_t* acnt
    cdef double* atime
    cdef uint32_t* aid
    cdef int64_t acap
    cdef uint32_t* s_max
    cdef uint32_t* s_first
    cdef uint32_t* s_up
    cdef uint32_t* s_agent
    cdef uint64_t* s_win
    cdef int64_t scap
    cdef int64_t* hw
    cdef dict aindex, sindex
    cdef int64_t max_agents, max_streams, max_jump, restart_seq, restart_up, window
    cdef readonly int need
    cdef object dg_dtype
    cdef list smp_dtype
    cdef Py_ssize_t d_size, o_agent, o_sub, o_seq, o_up, o_ts, o_status, status_size
    cdef Py_ssize_t s_size[2]
    cdef Py_ssize_t so_agent[2]
    cdef Py_ssize_t so_seq[2]
    cdef Py_ssize_t so_type[2]
    cdef Py_ssize_t so_index[2]
    cdef Py_ssize_t type_size[2]

    cdef void _dg_layout(self, object dt) except *:
        f = dt.fields
        self.d_size = dt.itemsize
        self.o_agent, self.o_sub = f["agent"][1], f["sub_agent_id"][1]
        self.o_seq, self.o_up = f["sequence_number"][1], f["uptime"][1]
        self.o_ts, self.o_status = f["ts"][1], f["status"][1]
        self.status_size = min(<Py_ssize_t>f["status"][0].itemsize, 8)
        self.dg_dtype = dt

    cdef void _smp_layout(self, object dt, int k) except *:
        f = dt.fields
        self.s_size[k] = dt.itemsize
        self.so_agent[k], self.so_seq[k] = f["agent"][1], f["sequence_number"][1]
        self.so_type[k], self.so_index[k] = f["source_id_type"][1], f["source_id_index"][1]
        self.type_size[k] = min(<Py_ssize_t>f["source_id_type"][0].itemsize, 8)
        self.smp_dtype[k] = dt

    def __cinit__(self, owner):
        self.owner = owner
        self.need = 0
        self.smp_dtype = [None, None]

    def bind(self):
        o = self.owner
        self.acnt = <int64_t*>_p(o._acnt)
        self.atime = <double*>_p(o._atime)
        self.aid = <uint32_t*>_p(o._aid)
        self.acap = o._acnt.shape[0]
        self.s_max = <uint32_t*>_p(o._smax)
        self.s_first = <uint32_t*>_p(o._sfirst)
        self.s_up = <uint32_t*>_p(o._sup)
        self.s_agent = <uint32_t*>_p(o._sagent)
        self.s_win = <uint64_t*>_p(o._swin)
        self.scap = o._smax.shape[0]
        self.hw = <int64_t*>_p(o._hw)
        self.aindex = o._aindex
        self.sindex = o._sindex
        self.max_agents = o.max_agents
        self.max_streams = o.max_streams
        self.max_jump = o.max_jump
        self.restart_seq = o.restart_seq
        self.restart_up = o.restart_uptime_ms
        self.window = WORDS * 64

    def datagrams(self, cnp.ndarray dg, object names, double now, Py_ssize_t start=0):
        """Account datagrams ``start..``; returns the first row not processed (see ``need``)."""
        cdef Py_ssize_t n = dg.shape[0], i
        if dg.dtype is not self.dg_dtype:
            self._dg_layout(dg.dtype)
        if not dg.flags.c_contiguous:
            dg = dg.copy()
        cdef Py_ssize_t size = self.d_size
        cdef Py_ssize_t o_agent = self.o_agent, o_sub = self.o_sub
        cdef Py_ssize_t o_seq = self.o_seq, o_up = self.o_up
        cdef Py_ssize_t o_ts = self.o_ts, o_status = self.o_status
        cdef Py_ssize_t status_size = self.status_size
        cdef char* base = _p(dg)
        cdef char* row
        cdef uint32_t agent, sub, seq, up
        cdef uint64_t status
        cdef double ts, t
        cdef int64_t a, s, d, back
        cdef int64_t* ac
        cdef uint64_t* w
        cdef PyObject* ao
        cdef PyObject* so
        cdef int64_t* hw = self.hw
        self.need = 0
        for i in range(start, n):
            row = base + i * size
            memcpy(&agent, row + o_agent, 4)
            memcpy(&sub, row + o_sub, 4)
            memcpy(&seq, row + o_seq, 4)
            memcpy(&up, row + o_up, 4)
            memcpy(&ts, row + o_ts, 8)
            status = 0
            memcpy(&status, row + o_status, status_size)
            akey = agent
            skey = (<uint64_t>agent << 32) | sub
            ao = PyDict_GetItem(self.aindex, akey)
            so = PyDict_GetItem(self.sindex, skey)
            if ao == NULL:
                if hw[H_AGENTS_LIVE] >= self.max_agents:
                    hw[H_REJ_AGENTS] += 1
                    hw[H_FULL] += 1
                    continue
                if hw[H_AGENTS] >= self.acap:
                    self.need = 1
                    return i
            if so == NULL and hw[H_STREAMS_LIVE] < self.max_streams and hw[H_STREAMS] >= self.scap:
                self.need = 2
                return i
            t = ts if ts > 0 else now
            if ao == NULL:
                a = hw[H_AGENTS]
                hw[H_AGENTS] += 1
                hw[H_AGENTS_LIVE] += 1
                memset(self.acnt + a * NF, 0, NF * 8)
                self.atime[3 * a] = t
                self.atime[3 * a + 1] = 0.0
                self.aid[a] = agent
                self.owner._named(a, names[agent] or "unknown")
                PyDict_SetItem(self.aindex, akey, a)
            else:
                a = <object>ao
            ac = self.acnt + a * NF
            if t > self.atime[3 * a + 1]:
                self.atime[3 * a + 1] = t
            self.atime[3 * a + 2] = now          # by the clock: what expiry goes by
            ac[A_DGRAMS] += 1
            if status != 0:
                ac[A_ERRORS] += 1
            ac[A_UPTIME] = up
            if so == NULL:
                if hw[H_STREAMS_LIVE] >= self.max_streams:
                    hw[H_REJ_STREAMS] += 1
                    hw[H_FULL] += 1
                    continue
                s = hw[H_STREAMS]
                hw[H_STREAMS] += 1
                hw[H_STREAMS_LIVE] += 1
                ac[A_STREAMS] += 1
                self.s_max[s] = seq
                self.s_first[s] = seq
                self.s_up[s] = up
                self.s_agent[s] = agent
                w = self.s_win + s * WORDS
                memset(w, 0, WORDS * 8)
                w[0] = 1
                PyDict_SetItem(self.sindex, skey, s)
                continue
            s = <object>so
            w = self.s_win + s * WORDS
            d = <int32_t>(seq - self.s_max[s])
            if d > 0:
                if d > self.max_jump:                  # implausible: not loss, start again here
                    ac[A_JUMPS] += 1
                    memset(w, 0, WORDS * 8)
                    w[0] = 1
                    self.s_first[s] = seq
                else:
                    ac[A_LOST] += d - 1
                    _shift(w, d)
                    w[0] |= 1
                self.s_max[s] = seq
            elif d == 0:
                ac[A_DUP] += 1
            else:
                back = -d
                if (<int64_t>up + self.restart_up < <int64_t>self.s_up[s]
                        or (seq <= self.restart_seq and back > self.window // 4)):
                    ac[A_RESTARTS] += 1
                    self.s_max[s] = seq
                    self.s_first[s] = seq
                    self.s_up[s] = up
                    memset(w, 0, WORDS * 8)
                    w[0] = 1
                    continue
                if back < self.window and _bit(w, back):
                    ac[A_DUP] += 1
                else:
                    if back < self.window:
                        _setbit(w, back)
                    ac[A_OOO] += 1
                    if <int32_t>(seq - self.s_first[s]) > 0:
                        ac[A_LOST] -= 1
            if up > self.s_up[s]:
                self.s_up[s] = up
        return n

    def samples(self, cnp.ndarray tab, bint flow, object table, int64_t cap,
                int64_t sample_reset):
        """Per data source sample-sequence gaps of a flow or counter table, state in ``table``
        (a :class:`SeqTable`: open addressing, two generations; it has room for ``len(tab)``
        more keys when called)."""
        cdef Py_ssize_t n = tab.shape[0], i
        cdef int k = 1 if flow else 0
        if tab.dtype is not self.smp_dtype[k]:
            self._smp_layout(tab.dtype, k)
        if not tab.flags.c_contiguous:
            tab = tab.copy()
        cdef Py_ssize_t size = self.s_size[k]
        cdef Py_ssize_t o_agent = self.so_agent[k], o_seq = self.so_seq[k]
        cdef Py_ssize_t o_type = self.so_type[k], o_index = self.so_index[k]
        cdef Py_ssize_t type_size = self.type_size[k]
        cdef char* base = _p(tab)
        cdef char* row
        cdef uint32_t agent, seq, index, hi
        cdef uint64_t stype, key, h
        cdef int64_t a = -1, d
        cdef uint32_t last_agent = 0
        cdef int64_t* ac
        cdef PyObject* ao
        cdef int col_n = A_FLOWS if flow else A_COUNTERS
        cdef int col_l = A_FLOW_LOST if flow else A_COUNTER_LOST
        cdef uint64_t* tkeys = <uint64_t*>_p(table.keys)
        cdef uint32_t* thi = <uint32_t*>_p(table.hi)
        cdef uint32_t* tstamp = <uint32_t*>_p(table.stamp)
        cdef int64_t* meta = <int64_t*>_p(table.meta)      # gen, n_cur, n_old, used, evicted
        cdef uint64_t mask = <uint64_t>table.keys.shape[0] - 1
        cdef bint found
        for i in range(n):
            row = base + i * size
            memcpy(&agent, row + o_agent, 4)
            memcpy(&seq, row + o_seq, 4)
            memcpy(&index, row + o_index, 4)
            stype = 0
            memcpy(&stype, row + o_type, type_size)
            if agent != last_agent or a < 0:     # a datagram's samples share their agent
                akey = agent
                ao = PyDict_GetItem(self.aindex, akey)
                if ao == NULL:
                    self.hw[H_REJ_SAMPLES] += 1
                    continue
                a = <object>ao
                last_agent = agent
            ac = self.acnt + a * NF
            ac[col_n] += 1
            key = ((<uint64_t>agent << 40) | ((stype & 0xFF) << 32) | index) + 1
            h = _mix(key) & mask
            while tkeys[h] != 0 and tkeys[h] != key:
                h = (h + 1) & mask
            found = tkeys[h] == key and <int64_t>tstamp[h] >= meta[0] - 1
            if not found:                        # new (or an entry of a dropped generation)
                if tkeys[h] == 0:
                    tkeys[h] = key
                    meta[3] += 1
                thi[h] = seq
                tstamp[h] = <uint32_t>meta[0]
                meta[1] += 1
                if meta[1] >= cap:               # full: the older generation goes now
                    meta[4] += meta[2]
                    meta[2] = meta[1]
                    meta[1] = 0
                    meta[0] += 1
                continue
            if <int64_t>tstamp[h] != meta[0]:     # from the older generation: now current
                tstamp[h] = <uint32_t>meta[0]
                meta[2] -= 1
                meta[1] += 1
            hi = thi[h]
            d = <int32_t>(seq - hi)
            if d > 0:
                if d > self.max_jump:
                    ac[A_SAMPLE_JUMPS] += 1
                else:
                    ac[col_l] += d - 1
                thi[h] = seq
            elif -d > sample_reset:
                thi[h] = seq
        return n

    def rehash(self, object table, int64_t capacity):
        """Move ``table``'s entries of the two live generations into fresh arrays of
        ``capacity`` slots (a power of two); entries of dropped generations are left behind."""
        cdef uint64_t* ok = <uint64_t*>_p(table.keys)
        cdef uint32_t* ohi = <uint32_t*>_p(table.hi)
        cdef uint32_t* ost = <uint32_t*>_p(table.stamp)
        cdef int64_t old_n = table.keys.shape[0], j, used = 0
        cdef int64_t min_stamp = table.meta[0] - 1
        keys = np.zeros(capacity, np.uint64)
        hi = np.zeros(capacity, np.uint32)
        stamp = np.zeros(capacity, np.uint32)
        cdef uint64_t* nk = <uint64_t*>_p(keys)
        cdef uint32_t* nhi = <uint32_t*>_p(hi)
        cdef uint32_t* nst = <uint32_t*>_p(stamp)
        cdef uint64_t mask = <uint64_t>capacity - 1, h
        for j in range(old_n):
            if ok[j] == 0 or <int64_t>ost[j] < min_stamp:
                continue
            h = _mix(ok[j]) & mask
            while nk[h] != 0:
                h = (h + 1) & mask
            nk[h] = ok[j]
            nhi[h] = ohi[j]
            nst[h] = ost[j]
            used += 1
        table.keys, table.hi, table.stamp = keys, hi, stamp
        table.meta[3] = used
