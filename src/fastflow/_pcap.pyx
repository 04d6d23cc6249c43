# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Single-pass capture walker: records -> link/IP/UDP parsing -> payloads packed back to back.

The C twin of the pure-Python reader in :mod:`fastflow.pcap` (which stays the reference: both must
give identical results). ``pcap.read`` sniffs the format, reads the whole file into a writable
``uint8`` array and calls :func:`scan_classic` or :func:`scan_pcapng` on it. The payloads are
compacted IN PLACE at the front of that array (the write position never passes the record being
read), so no second buffer is allocated. Each returns ``(total, offsets, lengths, ts, src_idx,
src16, af, stats, linktype)``: payload bytes now at ``data[:total]``; per datagram offsets, lengths,
timestamps and an index into the distinct sources ``src16`` (n, 16) / ``af`` (4 or 6); ``stats``
counts per reason code (indices of ``fastflow.pcap.SKIP_REASONS``, mirrored as
:data:`SKIP_REASONS`); ``linktype`` of the first packet or -1.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy, memmove, memset

import numpy as np

cimport numpy as cnp

cnp.import_array()

SKIP_REASONS = (
    "ok", "not_ip", "not_udp", "wrong_port", "fragment", "short_frame", "bad_ip", "snapped",
    "unsupported_linktype", "truncated", "corrupt",
)

cdef enum:
    R_OK = 0
    R_NOT_IP = 1
    R_NOT_UDP = 2
    R_WRONG_PORT = 3
    R_FRAGMENT = 4
    R_SHORT = 5
    R_BAD_IP = 6
    R_SNAPPED = 7
    R_LINKTYPE = 8
    R_TRUNCATED = 9
    R_CORRUPT = 10
    N_REASONS = 11

cdef uint64_t MAX_CAPLEN = 1 << 28


cdef struct Out:
    Py_ssize_t off
    Py_ssize_t length
    int af
    uint8_t src[16]


cdef inline uint32_t be16(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 8) | p[1]


cdef inline uint32_t rd16(const uint8_t* p, bint big) noexcept nogil:
    if big:
        return (<uint32_t>p[0] << 8) | p[1]
    return (<uint32_t>p[1] << 8) | p[0]


cdef inline uint32_t rd32(const uint8_t* p, bint big) noexcept nogil:
    if big:
        return ((<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3])
    return ((<uint32_t>p[3] << 24) | (<uint32_t>p[2] << 16) | (<uint32_t>p[1] << 8) | p[0])


cdef int parse_ip(const uint8_t* fr, Py_ssize_t n, Py_ssize_t off, int version, int port,
                  Out* o) noexcept nogil:
    cdef Py_ssize_t ihl, l4, hlen
    cdef uint32_t frag, fo, dport, ulen
    cdef int nh
    cdef bint more = False, nonfirst = False
    if version == 4:
        if n - off < 20:
            return R_SHORT
        ihl = (fr[off] & 0x0F) * 4
        if (fr[off] >> 4) != 4 or ihl < 20:
            return R_BAD_IP
        if n - off < ihl:
            return R_SHORT
        frag = be16(fr + off + 6)
        if fr[off + 9] != 17:
            return R_NOT_UDP
        if frag & 0x1FFF:
            return R_FRAGMENT
        more = (frag & 0x2000) != 0
        memset(o.src, 0, 16)
        memcpy(o.src, fr + off + 12, 4)
        l4 = off + ihl
        o.af = 4
    elif version == 6:
        if n - off < 40:
            return R_SHORT
        if (fr[off] >> 4) != 6:
            return R_BAD_IP
        nh = fr[off + 6]
        memcpy(o.src, fr + off + 8, 16)
        l4 = off + 40
        while nh == 0 or nh == 43 or nh == 44 or nh == 51 or nh == 60:
            if n - l4 < 8:
                return R_SHORT
            if nh == 44:
                fo = be16(fr + l4 + 2)
                if fo >> 3:
                    nonfirst = True
                if fo & 1:
                    more = True
                hlen = 8
            elif nh == 51:
                hlen = (fr[l4 + 1] + 2) * 4
            else:
                hlen = (fr[l4 + 1] + 1) * 8
            nh = fr[l4]
            l4 += hlen
        if nh != 17:
            return R_NOT_UDP
        if nonfirst:
            return R_FRAGMENT
        o.af = 6
    else:
        return R_BAD_IP
    if n - l4 < 8:
        return R_FRAGMENT if more else R_SHORT
    dport = be16(fr + l4 + 2)
    if port >= 0 and dport != <uint32_t>port:
        return R_WRONG_PORT
    ulen = be16(fr + l4 + 4)
    if ulen < 8:
        return R_BAD_IP
    if <Py_ssize_t>(ulen - 8) > n - l4 - 8:
        return R_FRAGMENT if more else R_SNAPPED
    if more:
        return R_FRAGMENT
    o.off = l4 + 8
    o.length = ulen - 8
    return R_OK


cdef inline int version_of(uint32_t et) noexcept nogil:
    if et == 0x0800:
        return 4
    if et == 0x86DD:
        return 6
    return 0


cdef int parse_frame(int lt, const uint8_t* fr, Py_ssize_t n, int port, Out* o) noexcept nogil:
    cdef uint32_t et, fam
    cdef Py_ssize_t off = 0
    cdef int version = 0
    if lt == 1:
        if n < 14:
            return R_SHORT
        et = be16(fr + 12)
        off = 14
        while et == 0x8100 or et == 0x88A8 or et == 0x9100:
            if n - off < 4:
                return R_SHORT
            et = be16(fr + off + 2)
            off += 4
        version = version_of(et)
    elif lt == 113:
        if n < 16:
            return R_SHORT
        version = version_of(be16(fr + 14))
        off = 16
    elif lt == 276:
        if n < 20:
            return R_SHORT
        version = version_of(be16(fr))
        off = 20
    elif lt == 101 or lt == 12 or lt == 14:
        if n < 1:
            return R_SHORT
        version = fr[0] >> 4
        if version != 4 and version != 6:
            version = 0
    elif lt == 228:
        version = 4
    elif lt == 229:
        version = 6
    elif lt == 0 or lt == 108:
        if n < 4:
            return R_SHORT
        if lt == 108:
            fam = rd32(fr, True)
        else:
            fam = rd32(fr, False)
            if fam > 0xFFFF:
                fam = rd32(fr, True)
        off = 4
        if fam == 2:
            version = 4
        elif fam == 10 or fam == 23 or fam == 24 or fam == 28 or fam == 30:
            version = 6
    else:
        return R_LINKTYPE
    if version == 0:
        return R_NOT_IP
    return parse_ip(fr, n, off, version, port, o)


cdef struct SrcKey:
    uint8_t addr[16]
    uint8_t af


cdef inline uint64_t key_hash(const uint8_t* addr, uint8_t af) noexcept nogil:
    cdef uint64_t h = 1469598103934665603ULL ^ af
    cdef int i
    for i in range(16):
        h = (h ^ addr[i]) * 1099511628211ULL
    return h


cdef class _Sink:
    """Output being filled: per datagram offsets/lengths/ts and an index into a table of distinct
    source addresses. With ``compact`` the payloads are moved in place to the front of the file
    buffer (a private copy); without, offsets point at the payloads where they lie in ``base`` (a
    read-only mapping: nothing is written, no page is copied)."""
    cdef uint8_t* out
    cdef const uint8_t* base
    cdef bint compact
    cdef int64_t[::1] offsets
    cdef int64_t[::1] lengths
    cdef double[::1] ts
    cdef int32_t[::1] src_idx
    cdef uint64_t[::1] stats
    cdef Py_ssize_t k
    cdef Py_ssize_t total
    cdef int first_lt
    # distinct sources: keys[0..nkeys) and an open-addressing hash of their indices (-1 = empty)
    cdef SrcKey* keys
    cdef int32_t* slots
    cdef Py_ssize_t nkeys, capkeys, nslots
    cdef object np_off, np_len, np_ts, np_idx, np_stats

    def __cinit__(self):
        self.keys = NULL
        self.slots = NULL

    def __dealloc__(self):
        free(self.keys)
        free(self.slots)

    def __init__(self, Py_ssize_t nrec):
        self.np_off = np.empty(nrec, dtype=np.int64)
        self.np_len = np.empty(nrec, dtype=np.int64)
        self.np_ts = np.empty(nrec, dtype=np.float64)
        self.np_idx = np.empty(nrec, dtype=np.int32)
        self.np_stats = np.zeros(N_REASONS, dtype=np.uint64)
        self.offsets = self.np_off
        self.lengths = self.np_len
        self.ts = self.np_ts
        self.src_idx = self.np_idx
        self.stats = self.np_stats
        self.k = 0
        self.total = 0
        self.first_lt = -1
        self.nkeys = 0
        self.capkeys = 0
        self.nslots = 0

    cdef int grow(self) except -1:
        """Double the per-datagram arrays (one pass over the file: no counting pass first)."""
        cdef Py_ssize_t cap = max(2 * self.offsets.shape[0], 1024)
        self.np_off = np.resize(self.np_off, cap)
        self.np_len = np.resize(self.np_len, cap)
        self.np_ts = np.resize(self.np_ts, cap)
        self.np_idx = np.resize(self.np_idx, cap)
        self.offsets = self.np_off
        self.lengths = self.np_len
        self.ts = self.np_ts
        self.src_idx = self.np_idx
        return 0

    cdef int32_t intern(self, Out* o) except -1:
        cdef uint64_t h = key_hash(o.src, <uint8_t>o.af)
        cdef Py_ssize_t i, mask, j
        cdef int32_t e
        cdef SrcKey* nk
        cdef int32_t* ns
        if self.nslots:
            mask = self.nslots - 1
            i = <Py_ssize_t>(h & <uint64_t>mask)
            while True:
                e = self.slots[i]
                if e < 0:
                    break
                if self.keys[e].af == o.af and memcmp(self.keys[e].addr, o.src, 16) == 0:
                    return e
                i = (i + 1) & mask
        # new key; grow the tables when half full
        if self.nkeys == self.capkeys:
            self.capkeys = self.capkeys * 2 + 16
            nk = <SrcKey*>realloc(self.keys, self.capkeys * sizeof(SrcKey))
            if nk == NULL:
                raise MemoryError()
            self.keys = nk
        if (self.nkeys + 1) * 2 > self.nslots:
            ns = <int32_t*>malloc(max(self.nslots * 2, 64) * sizeof(int32_t))
            if ns == NULL:
                raise MemoryError()
            free(self.slots)
            self.slots = ns
            self.nslots = max(self.nslots * 2, 64)
            for j in range(self.nslots):
                self.slots[j] = -1
            mask = self.nslots - 1
            for j in range(self.nkeys):
                i = <Py_ssize_t>(key_hash(self.keys[j].addr, self.keys[j].af) & <uint64_t>mask)
                while self.slots[i] >= 0:
                    i = (i + 1) & mask
                self.slots[i] = <int32_t>j
        mask = self.nslots - 1
        i = <Py_ssize_t>(h & <uint64_t>mask)
        while self.slots[i] >= 0:
            i = (i + 1) & mask
        e = <int32_t>self.nkeys
        memcpy(self.keys[e].addr, o.src, 16)
        self.keys[e].af = <uint8_t>o.af
        self.slots[i] = e
        self.nkeys += 1
        return e

    cdef inline int frame(self, int lt, const uint8_t* fr, Py_ssize_t caplen, double ts,
                          int port) except -1:
        cdef Out o
        cdef int r
        if self.first_lt < 0:
            self.first_lt = lt
        if self.k >= self.offsets.shape[0]:
            self.grow()
        r = parse_frame(lt, fr, caplen, port, &o)
        if r != R_OK:
            self.stats[r] += 1
            return 0
        if self.compact:
            # in place: the write position never passes the frame being read
            memmove(self.out + self.total, fr + o.off, o.length)
            self.offsets[self.k] = self.total
        else:
            self.offsets[self.k] = (fr + o.off) - self.base
        self.lengths[self.k] = o.length
        self.ts[self.k] = ts
        self.src_idx[self.k] = self.intern(&o)
        self.k += 1
        self.total += o.length
        return 0

    cdef tuple result(self):
        cdef Py_ssize_t k = self.k, j
        src16 = np.zeros((self.nkeys, 16), dtype=np.uint8)
        af = np.zeros(self.nkeys, dtype=np.uint8)
        cdef uint8_t[:, ::1] sv = src16
        for j in range(self.nkeys):
            memcpy(&sv[j, 0], self.keys[j].addr, 16)
            af[j] = self.keys[j].af
        return (self.total, self.np_off[:k], self.np_len[:k], self.np_ts[:k], self.np_idx[:k],
                src16, af, self.np_stats, self.first_lt)


def scan_classic(const uint8_t[::1] data, bint big_endian, bint ns, int linktype, int port,
                 bint compact=True):
    """Walk a classic pcap (``data`` is the whole file, header included). ``compact`` moves the
    payloads to the front of ``data`` (which must then be writable); otherwise offsets are into
    ``data`` as it is."""
    cdef Py_ssize_t n = data.shape[0]
    cdef const uint8_t* d = &data[0] if n else NULL
    cdef Py_ssize_t pos
    cdef uint32_t sec, frac, caplen
    cdef double scale = 1e-9 if ns else 1e-6
    # one pass: every record header is a cache miss, so the arrays grow instead of being sized
    # by a counting pass first
    cdef _Sink s = _Sink(max(1024, n // 512))
    s.out = <uint8_t*>d
    s.base = d
    s.compact = compact
    pos = 24
    while True:
        if pos == n:
            break
        if n - pos < 16:
            s.stats[R_TRUNCATED] += 1
            break
        sec = rd32(d + pos, big_endian)
        frac = rd32(d + pos + 4, big_endian)
        caplen = rd32(d + pos + 8, big_endian)
        if caplen > MAX_CAPLEN:
            s.stats[R_CORRUPT] += 1
            break
        if <Py_ssize_t>caplen > n - pos - 16:
            s.stats[R_TRUNCATED] += 1
            break
        s.frame(linktype, d + pos + 16, caplen, <double>sec + <double>frac * scale, port)
        pos += 16 + caplen
    return s.result()


cdef struct Iface:
    int linktype
    uint64_t units
    int64_t tsoff
    uint32_t snap


def scan_pcapng(const uint8_t[::1] data, int port, bint compact=True):
    """Walk a pcapng file: sections, interfaces, Enhanced/Simple/obsolete Packet Blocks
    (``compact`` as for :func:`scan_classic`)."""
    cdef Py_ssize_t n = data.shape[0]
    cdef const uint8_t* d = &data[0] if n else NULL
    cdef Py_ssize_t pos, nrec = 0, blen, p, olen, caplen, bodylen
    cdef const uint8_t* body
    cdef bint big = False
    cdef uint32_t btype, code, iid, r, orig
    cdef uint64_t ticks, units
    cdef int64_t tsoff
    cdef Iface* ifaces = NULL
    cdef Iface* tmp
    cdef Py_ssize_t nif = 0, capif = 0
    cdef double ts
    cdef uint32_t j
    # pass 1: count packet blocks
    pos = 0
    while n - pos >= 12:
        if rd32(d + pos, False) == 0x0A0D0D0A:
            big = d[pos + 8] == 0x1A
        blen = rd32(d + pos + 4, big)
        if blen < 12 or blen % 4 or blen > n - pos:
            break
        btype = rd32(d + pos, big)
        if btype == 2 or btype == 3 or btype == 6:
            nrec += 1
        pos += blen
    cdef _Sink s = _Sink(nrec)
    s.out = <uint8_t*>d
    s.base = d
    s.compact = compact
    big = False
    pos = 0
    try:
        while True:
            if pos == n:
                break
            if n - pos < 8:
                s.stats[R_TRUNCATED] += 1
                break
            if rd32(d + pos, False) == 0x0A0D0D0A:
                if n - pos < 12:
                    s.stats[R_TRUNCATED] += 1
                    break
                if d[pos + 8] == 0x4D and d[pos + 9] == 0x3C and d[pos + 10] == 0x2B and d[pos + 11] == 0x1A:
                    big = False
                elif d[pos + 8] == 0x1A and d[pos + 9] == 0x2B and d[pos + 10] == 0x3C and d[pos + 11] == 0x4D:
                    big = True
                else:
                    s.stats[R_CORRUPT] += 1
                    break
                blen = rd32(d + pos + 4, big)
                if blen < 28 or blen % 4 or <uint64_t>blen > MAX_CAPLEN:
                    s.stats[R_CORRUPT] += 1
                    break
                if blen > n - pos:
                    s.stats[R_TRUNCATED] += 1
                    break
                nif = 0
                pos += blen
                continue
            btype = rd32(d + pos, big)
            blen = rd32(d + pos + 4, big)
            if blen < 12 or blen % 4 or <uint64_t>blen > MAX_CAPLEN:
                s.stats[R_CORRUPT] += 1
                break
            if blen > n - pos:
                s.stats[R_TRUNCATED] += 1
                break
            body = d + pos + 8
            bodylen = blen - 12
            if btype == 1:
                if bodylen < 8:
                    s.stats[R_CORRUPT] += 1
                    break
                if nif == capif:
                    capif = capif * 2 + 8
                    tmp = <Iface*>realloc(ifaces, capif * sizeof(Iface))
                    if tmp == NULL:
                        raise MemoryError()
                    ifaces = tmp
                ifaces[nif].linktype = rd16(body, big)
                ifaces[nif].snap = rd32(body + 4, big)
                ifaces[nif].units = 1000000
                ifaces[nif].tsoff = 0
                p = 8
                while p + 4 <= bodylen:
                    code = rd16(body + p, big)
                    olen = rd16(body + p + 2, big)
                    p += 4
                    if code == 0 or p + olen > bodylen:
                        break
                    if code == 9 and olen >= 1:
                        r = body[p]
                        if r & 0x80:
                            if (r & 0x7F) <= 62:
                                ifaces[nif].units = (<uint64_t>1) << (r & 0x7F)
                        elif r <= 18:
                            units = 1
                            for j in range(r):
                                units *= 10
                            ifaces[nif].units = units
                    elif code == 14 and olen >= 8:
                        ifaces[nif].tsoff = <int64_t>((<uint64_t>rd32(body + p, big) << 32) | rd32(body + p + 4, big)) if big else <int64_t>((<uint64_t>rd32(body + p + 4, big) << 32) | rd32(body + p, big))
                    p += (olen + 3) & ~3
                nif += 1
            elif btype == 6 or btype == 2:
                if bodylen < 20:
                    s.stats[R_CORRUPT] += 1
                    break
                if btype == 6:
                    iid = rd32(body, big)
                else:
                    iid = rd16(body, big)
                ticks = (<uint64_t>rd32(body + 4, big) << 32) | rd32(body + 8, big)
                caplen = rd32(body + 12, big)
                if caplen > bodylen - 20 or iid >= nif:
                    s.stats[R_CORRUPT] += 1
                    break
                units = ifaces[iid].units
                ts = <double>(<int64_t>(ticks // units) + ifaces[iid].tsoff) + <double>(ticks % units) / <double>units
                s.frame(ifaces[iid].linktype, body + 20, caplen, ts, port)
            elif btype == 3:
                if bodylen < 4 or nif == 0:
                    s.stats[R_CORRUPT] += 1
                    break
                orig = rd32(body, big)
                caplen = min(<Py_ssize_t>orig, bodylen - 4)
                if ifaces[0].snap:
                    caplen = min(caplen, <Py_ssize_t>ifaces[0].snap)
                s.frame(ifaces[0].linktype, body + 4, caplen, 0.0, port)
            pos += blen
    finally:
        free(ifaces)
    return s.result()
