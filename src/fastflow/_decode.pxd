# cython: language_level=3
"""Declarations of the Cython table decoder (``_decode.pyx``).

The C helpers below are the only way the decoder touches wire bytes: big-endian loads from a pointer
the caller has already bounds-checked, stores into the little-endian (packed) numpy rows, and a tiny
read cursor (``ff_cur``: ``p`` .. ``end``) whose readers return 0 instead of reading past ``end``.
They are plain ``static inline`` C so that the hot loop compiles to straight loads/bswaps.
"""

from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>

    /* ---- unchecked big-endian loads (caller checked the bounds) ---------------------------- */
    static inline uint16_t ff_be16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return __builtin_bswap16(v); }
    static inline uint32_t ff_be32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return __builtin_bswap32(v); }
    static inline uint64_t ff_be64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return __builtin_bswap64(v); }

    /* ---- little-endian stores into packed rows (host is little-endian, checked at import) --- */
    static inline void ff_st8(uint8_t *d, uint8_t v) { *d = v; }
    static inline void ff_st16(uint8_t *d, uint16_t v) { memcpy(d, &v, 2); }
    static inline void ff_st32(uint8_t *d, uint32_t v) { memcpy(d, &v, 4); }
    static inline void ff_st64(uint8_t *d, uint64_t v) { memcpy(d, &v, 8); }
    static inline void ff_stf64(uint8_t *d, double v) { memcpy(d, &v, 8); }
    /* byte-swapping copies of a big-endian wire field into a little-endian column */
    static inline void ff_cp32(uint8_t *d, const uint8_t *s) { uint32_t v; memcpy(&v, s, 4); v = __builtin_bswap32(v); memcpy(d, &v, 4); }
    static inline void ff_cp64(uint8_t *d, const uint8_t *s) { uint64_t v; memcpy(&v, s, 8); v = __builtin_bswap64(v); memcpy(d, &v, 8); }

    /* ---- bounds-checked read cursor --------------------------------------------------------- */
    typedef struct { const uint8_t *p; const uint8_t *end; } ff_cur;
    static inline size_t ff_left(const ff_cur *c) { return (size_t)(c->end - c->p); }
    static inline int ff_has(const ff_cur *c, uint64_t n) { return (uint64_t)(c->end - c->p) >= n; }
    static inline int ff_u32(ff_cur *c, uint32_t *out) {
        if (c->end - c->p < 4) return 0;
        *out = ff_be32(c->p); c->p += 4; return 1;
    }
    static inline int ff_skip(ff_cur *c, uint64_t n) {
        if ((uint64_t)(c->end - c->p) < n) return 0;
        c->p += n; return 1;
    }
    /* XDR opaque/string: u32 length (<= maxlen) + bytes padded to 4. 0 on overrun or too long. */
    static inline int ff_opaque(ff_cur *c, uint32_t maxlen, const uint8_t **data, uint32_t *len) {
        uint32_t n;
        if (!ff_u32(c, &n)) return 0;
        if (n > maxlen) return 0;
        uint64_t padded = ((uint64_t)n + 3u) & ~(uint64_t)3u;
        if ((uint64_t)(c->end - c->p) < padded) return 0;
        *data = c->p; *len = n; c->p += padded; return 1;
    }
    /* One flow/counter record: data_format u32 + length u32 + body. Moves *q to the body and
       gives the format and length; 0 when the header or the body runs past end. */
    static inline int ff_record(const uint8_t **q, const uint8_t *end, uint32_t *fmt, uint32_t *len) {
        if (end - *q < 8) return 0;
        *fmt = ff_be32(*q);
        *len = ff_be32(*q + 4);
        if ((uint64_t)*len > (uint64_t)(end - *q - 8)) return 0;
        *q += 8; return 1;
    }
    /* sFlow address: u32 type + 0/4/16 bytes, written as 16 bytes (IPv4 as ::ffff:a.b.c.d). */
    static inline int ff_address(ff_cur *c, uint8_t out[16]) {
        uint32_t t;
        if (!ff_u32(c, &t)) return 0;
        memset(out, 0, 16);
        if (t == 0) return 1;
        if (t == 1) {
            if (c->end - c->p < 4) return 0;
            out[10] = 0xff; out[11] = 0xff; memcpy(out + 12, c->p, 4); c->p += 4; return 1;
        }
        if (t == 2) {
            if (c->end - c->p < 16) return 0;
            memcpy(out, c->p, 16); c->p += 16; return 1;
        }
        return 0;
    }
    /* hash of an intern key (hostnames ~10-64 bytes): 8 bytes per step, the tail read as one
       overlapping word (no byte loop, no store-forwarding stall) */
    static inline uint64_t ff_mix(uint64_t h, uint64_t v) {
        h = (h ^ v) * 0xff51afd7ed558ccdull; return h ^ (h >> 29);
    }
    static inline uint32_t ff_hash(const uint8_t *p, uint32_t n) {
        uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)n, v;
        uint32_t i = 0, a, b;
        if (n >= 8) {
            for (; i + 8 <= n; i += 8) { memcpy(&v, p + i, 8); h = ff_mix(h, v); }
            if (i < n) { memcpy(&v, p + n - 8, 8); h = ff_mix(h, v); }
        } else if (n >= 4) {
            memcpy(&a, p, 4); memcpy(&b, p + n - 4, 4); h = ff_mix(h, ((uint64_t)a << 32) | b);
        } else if (n > 0) {
            h = ff_mix(h, (uint64_t)p[0] | ((uint64_t)p[n / 2] << 8) | ((uint64_t)p[n - 1] << 16));
        }
        h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53ull; h ^= h >> 33;
        return (uint32_t)h;
    }
    /* runs of consecutive big-endian fields -> consecutive little-endian columns (vectorises) */
    static inline void ff_run32(uint8_t *d, const uint8_t *s, int n) {
        for (int i = 0; i < n; i++) {
            uint32_t v; memcpy(&v, s + 4 * i, 4); v = __builtin_bswap32(v); memcpy(d + 4 * i, &v, 4);
        }
    }
    static inline void ff_run64(uint8_t *d, const uint8_t *s, int n) {
        for (int i = 0; i < n; i++) {
            uint64_t v; memcpy(&v, s + 8 * i, 8); v = __builtin_bswap64(v); memcpy(d + 8 * i, &v, 8);
        }
    }
    """
    ctypedef struct ff_cur:
        const uint8_t *p
        const uint8_t *end
    uint16_t ff_be16(const uint8_t *p) noexcept nogil
    uint32_t ff_be32(const uint8_t *p) noexcept nogil
    uint64_t ff_be64(const uint8_t *p) noexcept nogil
    void ff_st8(uint8_t *d, uint8_t v) noexcept nogil
    void ff_st16(uint8_t *d, uint16_t v) noexcept nogil
    void ff_st32(uint8_t *d, uint32_t v) noexcept nogil
    void ff_st64(uint8_t *d, uint64_t v) noexcept nogil
    void ff_stf64(uint8_t *d, double v) noexcept nogil
    void ff_cp32(uint8_t *d, const uint8_t *s) noexcept nogil
    void ff_cp64(uint8_t *d, const uint8_t *s) noexcept nogil
    size_t ff_left(const ff_cur *c) noexcept nogil
    bint ff_has(const ff_cur *c, uint64_t n) noexcept nogil
    bint ff_u32(ff_cur *c, uint32_t *out) noexcept nogil
    bint ff_skip(ff_cur *c, uint64_t n) noexcept nogil
    bint ff_opaque(ff_cur *c, uint32_t maxlen, const uint8_t **data, uint32_t *len) noexcept nogil
    bint ff_record(const uint8_t **q, const uint8_t *end, uint32_t *fmt, uint32_t *len) noexcept nogil
    bint ff_address(ff_cur *c, uint8_t *out) noexcept nogil
    uint32_t ff_hash(const uint8_t *p, uint32_t n) noexcept nogil
    void ff_run32(uint8_t *d, const uint8_t *s, int n) noexcept nogil
    void ff_run64(uint8_t *d, const uint8_t *s, int n) noexcept nogil


# A C intern table: entries are byte strings in one arena, found through an open-addressing hash
# table of entry indices (slot value 0 = empty, otherwise index + 1).
ctypedef struct Intern:
    uint8_t *arena
    size_t arena_len
    size_t arena_cap
    uint32_t *ent_off
    uint32_t *ent_len
    uint32_t *ent_hash
    uint32_t n
    uint32_t ent_cap
    uint32_t *slots
    uint32_t slot_mask


# One fixed-layout counter field: wire offset in the record, column offset in the row, size 4 or 8.
ctypedef struct CField:
    int32_t wire_off
    int32_t col_off      # in the wide COUNTER_DTYPE row
    int32_t col_off_n    # in the record's own RECORD_DTYPES row (columnar mode)
    int32_t size


# A run of ``count`` consecutive fields of one size, consecutive on the wire and in the row.
ctypedef struct CRun:
    int32_t wire_off
    int32_t col_off
    int32_t col_off_n
    int32_t count
    int32_t size


# One known counter record. kind: 0 fixed layout (fields[first:first+count]), 1 host_descr,
# 2 host_adapters, 3 if_name. full_len: length that holds every field (no per-field checks needed).
ctypedef struct CRec:
    int32_t kind
    uint32_t min_len
    uint32_t full_len
    uint32_t bit
    int32_t first
    int32_t count
    int32_t run_first
    int32_t run_count


# Column offsets (bytes into a row) of the hand-coded columns.
ctypedef struct DgCols:
    int32_t ts, agent, sub_agent_id, sequence_number, uptime, num_samples
    int32_t n_counters, n_flows, length, status, agent_af

ctypedef struct SampleCols:   # the columns counters and flows share
    int32_t ts, agent, sub_agent_id, uptime, dgram, sequence_number
    int32_t source_id, source_id_type, source_id_index, mask, expanded

ctypedef struct CtrCols:
    int32_t hostname, uuid, machine_type, os_name, os_release, adapters, ifname

ctypedef struct FlowCols:
    int32_t sampling_rate, sample_pool, drops, input, output, discard, discard_reason
    int32_t header_protocol, frame_length, stripped, header_length
    int32_t eth_src, eth_dst, eth_type, vlan, inner_vlan
    int32_t ip_version, ip_protocol, ip_src, ip_dst, ip_tos, ip_ttl, ip_length
    int32_t src_port, dst_port, tcp_flags, icmp_type, icmp_code, l4_ok
    int32_t src_vlan, src_priority, dst_vlan, dst_priority
    int32_t nexthop, src_mask_len, dst_mask_len
    int32_t as_number, src_as, src_peer_as, dst_as, dst_peer_as, local_pref


# A growable table of the columnar mode: ``vcap + 1`` rows allocated (one spare, as for the fixed
# tables of the row mode), ``n`` filled, ``size`` bytes per row. realloc moves big ones by mremap.
ctypedef struct GBuf:
    uint8_t *p
    Py_ssize_t n
    Py_ssize_t cap       # rows usable now (pre-faulted in steps, see _decode._grow)
    Py_ssize_t vcap      # rows allocated (address space)
    Py_ssize_t size


# Per-datagram context handed down the walk.
ctypedef struct DgCtx:
    double ts
    uint32_t agent
    uint32_t sub_agent_id
    uint32_t uptime
    uint32_t dgram


cdef class Decoder:
    cdef readonly Py_ssize_t datagram_capacity
    cdef readonly Py_ssize_t counter_capacity
    cdef readonly Py_ssize_t flow_capacity
    cdef readonly Py_ssize_t n_datagrams
    cdef readonly Py_ssize_t n_counters
    cdef readonly Py_ssize_t n_flows
    cdef readonly uint32_t max_interned

    cdef object _dg_arr
    cdef object _ctr_arr
    cdef object _flow_arr
    cdef uint8_t *_dg
    cdef uint8_t *_ctr
    cdef uint8_t *_flow
    cdef Py_ssize_t _dg_size
    cdef Py_ssize_t _ctr_size
    cdef Py_ssize_t _flow_size

    cdef uint64_t _errors[16]
    cdef uint32_t _derr[16]        # this datagram's reason counts, committed when it is kept
    cdef uint8_t _is_error[16]
    cdef uint8_t _status           # first error reason of the current datagram
    cdef uint32_t _dn              # number of reasons counted in the current datagram
    cdef bint _busy                # a feed is running (guards against concurrent feeds)

    cdef DgCols _dc
    cdef SampleCols _cc
    cdef SampleCols _fc
    cdef CtrCols _hc
    cdef FlowCols _f
    cdef int16_t _rec_by_fmt[4096]
    cdef CRec _recs[32]
    cdef CField _fields[256]
    cdef CRun _runs[256]
    cdef int _nrecs

    cdef bint _columns             # columnar mode (ColumnDecoder): growable narrow tables
    cdef bint _oom                 # a growable table could not grow (feed raises MemoryError)
    cdef GBuf _gb[3]               # columnar mode: datagrams, counter samples, flows
    cdef GBuf _rt[32]              # columnar mode: one table per counter record (by COUNTER_BIT)
    cdef CtrCols _hcn              # hand-coded record columns in their own record tables

    cdef Intern _strings
    cdef Intern _agents
    cdef list _strings_text
    cdef list _agents_text

    cdef inline void _err(self, int reason) noexcept nogil
    cdef int _intern(self, Intern *t, const uint8_t *key, uint32_t n, uint32_t *out) noexcept nogil
    cdef int _datagram(self, const uint8_t *p, Py_ssize_t n, double ts) noexcept nogil
    cdef bint _grow(self, int which) noexcept nogil
    cdef int _counter_sample(self, const uint8_t *p, const uint8_t *end, bint expanded,
                             DgCtx *ctx) noexcept nogil
    cdef int _flow_sample(self, const uint8_t *p, const uint8_t *end, int kind,
                          DgCtx *ctx) noexcept nogil
    cdef bint _host_descr(self, uint8_t *row, const CtrCols *hc, const uint8_t *p,
                          uint32_t n) noexcept nogil
    cdef bint _host_adapters(self, uint8_t *row, const CtrCols *hc, const uint8_t *p,
                             uint32_t n) noexcept nogil
    cdef bint _if_name(self, uint8_t *row, const CtrCols *hc, const uint8_t *p,
                       uint32_t n) noexcept nogil
    cdef void _header(self, uint8_t *row, uint32_t proto, const uint8_t *h, uint32_t n) noexcept nogil
    cdef void _ipv4(self, uint8_t *row, const uint8_t *h, uint32_t n) noexcept nogil
    cdef void _ipv6(self, uint8_t *row, const uint8_t *h, uint32_t n) noexcept nogil
    cdef void _l4(self, uint8_t *row, uint8_t proto, const uint8_t *h, uint32_t n) noexcept nogil


cdef class ColumnDecoder(Decoder):
    cdef object _sizes
