# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""recvmmsg(2) batch receiver for :class:`fastflow.collector.ingest.UdpIngest` (Linux).

One :class:`Receiver` owns preallocated arrays for ``batch`` datagrams: a single ``uint8`` buffer of
``batch * slot`` bytes (datagram ``i`` lands at ``i * slot``), and per datagram offset, length,
arrival time (kernel ``SO_TIMESTAMPNS`` when available, else the time the call returned) and source
address (16 bytes, IPv4 as ``::ffff:a.b.c.d``) plus source port. :meth:`Receiver.recv` blocks (GIL
released) until at least one datagram arrives or the socket's ``SO_RCVTIMEO`` expires, then takes
whatever else is queued, up to ``batch``, in the same system call. Datagrams larger than ``slot``
(``MSG_TRUNC``), or filling their slot exactly (the caller sizes slots one byte larger than the
largest datagram it accepts), are left out of the batch and counted in ``truncated``. The kernel's drop counter
(``SO_RXQ_OVFL`` ancillary data) is kept in ``kernel_drops``.
"""

from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset

import numpy as np

cimport numpy as cnp

cnp.import_array()


cdef extern from "<time.h>" nogil:
    cdef struct timespec:
        long tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec* ts)
    int CLOCK_REALTIME


cdef extern from "<sys/uio.h>" nogil:
    cdef struct iovec:
        void* iov_base
        size_t iov_len


cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    cdef struct msghdr:
        void* msg_name
        socklen_t msg_namelen
        iovec* msg_iov
        size_t msg_iovlen
        void* msg_control
        size_t msg_controllen
        int msg_flags
    cdef struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    cdef struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type
    cmsghdr* CMSG_FIRSTHDR(msghdr* m)
    cmsghdr* CMSG_NXTHDR(msghdr* m, cmsghdr* c)
    unsigned char* CMSG_DATA(cmsghdr* c)
    int recvmmsg(int fd, mmsghdr* vec, unsigned int vlen, int flags, timespec* timeout)
    int MSG_WAITFORONE
    int MSG_TRUNC
    int MSG_DONTWAIT
    int SOL_SOCKET
    int SO_RXQ_OVFL
    int SO_TIMESTAMPNS
    int SCM_TIMESTAMPNS
    int AF_INET
    int AF_INET6

# socket option numbers for the Python side (the socket module lacks some of them)
SOL_SOCKET_ = SOL_SOCKET
SO_RXQ_OVFL_ = SO_RXQ_OVFL
SO_TIMESTAMPNS_ = SO_TIMESTAMPNS

cdef enum:
    ADDR_SIZE = 128
    CTRL_SIZE = 128


cdef class Receiver:
    """Batch receiver bound to one socket file descriptor (the caller owns the socket)."""
    cdef int fd
    cdef readonly int batch
    cdef readonly int slot
    cdef mmsghdr* msgs
    cdef iovec* iovs
    cdef uint8_t* names
    cdef uint8_t* ctrls
    cdef uint8_t[::1] _buf
    cdef int64_t[::1] _off
    cdef int64_t[::1] _len
    cdef double[::1] _ts
    cdef uint8_t[:, ::1] _src
    cdef uint16_t[::1] _port
    cdef readonly object buf, offsets, lengths, ts, src, port
    cdef readonly uint64_t datagrams, bytes, calls, truncated, kernel_drops, rejected
    cdef readonly int next_slot
    cdef uint8_t* allow          # n_allow pairs of (network, mask), 16 bytes each
    cdef int n_allow

    def __cinit__(self, int fd, int batch=1024, int slot=65536):
        self.allow = NULL
        self.n_allow = 0
        self.msgs = NULL
        self.iovs = NULL
        self.names = NULL
        self.ctrls = NULL
        if batch < 1 or batch > 65536:
            raise ValueError(f"batch must be 1..65536, not {batch}")
        if slot < 64 or slot > 65536:
            raise ValueError(f"slot must be 64..65536 bytes, not {slot}")
        self.fd = fd
        self.batch = batch
        self.slot = slot
        self.msgs = <mmsghdr*>calloc(batch, sizeof(mmsghdr))
        self.iovs = <iovec*>calloc(batch, sizeof(iovec))
        self.names = <uint8_t*>calloc(batch, ADDR_SIZE)
        self.ctrls = <uint8_t*>calloc(batch, CTRL_SIZE)
        if not (self.msgs and self.iovs and self.names and self.ctrls):
            raise MemoryError()
        self.buf = np.zeros(<Py_ssize_t>batch * slot, dtype=np.uint8)
        self.offsets = np.zeros(batch, dtype=np.int64)
        self.lengths = np.zeros(batch, dtype=np.int64)
        self.ts = np.zeros(batch, dtype=np.float64)
        self.src = np.zeros((batch, 16), dtype=np.uint8)
        self.port = np.zeros(batch, dtype=np.uint16)
        self._buf = self.buf
        self._off = self.offsets
        self._len = self.lengths
        self._ts = self.ts
        self._src = self.src
        self._port = self.port
        cdef int i
        for i in range(batch):
            self.iovs[i].iov_base = &self._buf[<Py_ssize_t>i * slot]
            self.iovs[i].iov_len = slot

    def __dealloc__(self):
        free(self.allow)
        free(self.msgs)
        free(self.iovs)
        free(self.names)
        free(self.ctrls)

    def set_allow(self, nets, masks):
        """Accept only senders whose 16-byte address ``a`` has ``a & masks[j] == nets[j]`` for
        some ``j`` (``uint8 (m, 16)`` arrays); others are dropped and counted in ``rejected``.
        Empty arrays: accept every sender."""
        cdef const uint8_t[:, ::1] n = np.ascontiguousarray(nets, np.uint8).reshape(-1, 16)
        cdef const uint8_t[:, ::1] m = np.ascontiguousarray(masks, np.uint8).reshape(-1, 16)
        cdef int j, b
        if n.shape[0] != m.shape[0]:
            raise ValueError("nets and masks differ in length")
        free(self.allow)
        self.allow = NULL
        self.n_allow = 0
        if n.shape[0] == 0:
            return
        self.allow = <uint8_t*>calloc(n.shape[0] * 2, 16)
        if self.allow == NULL:
            raise MemoryError()
        for j in range(n.shape[0]):
            for b in range(16):
                self.allow[j * 32 + b] = n[j, b] & m[j, b]
                self.allow[j * 32 + 16 + b] = m[j, b]
        self.n_allow = <int>n.shape[0]

    cdef bint _allowed(self, Py_ssize_t k):
        cdef int j, b
        cdef bint ok
        for j in range(self.n_allow):
            ok = True
            for b in range(16):
                if (self._src[k, b] & self.allow[j * 32 + 16 + b]) != self.allow[j * 32 + b]:
                    ok = False
                    break
            if ok:
                return True
        return False

    def recv(self, int first=0, int k0=0, bint wait=True):
        """Receive one batch into message slots ``first..batch-1``, appending rows from ``k0``
        (so a sparse batch can be topped up: ``recv(rx.next_slot, n, wait=False)``). Returns the
        number of datagrams now at ``[0:k]`` of the arrays (``k0`` when every datagram received
        was oversize), or -1 when nothing came (timeout, interrupted, or ``wait=False`` and the
        queue was empty). Raises OSError for any other socket error."""
        cdef int i, n, k = k0, err = 0
        cdef int flags = MSG_WAITFORONE if wait else MSG_DONTWAIT
        cdef mmsghdr* m
        cdef cmsghdr* c
        cdef timespec now
        cdef timespec kts
        cdef bint have_ts
        cdef uint32_t drops
        cdef uint16_t fam
        cdef uint8_t* name
        cdef double tnow
        if first < 0 or first >= self.batch or k0 < 0 or k0 > first:
            raise ValueError("recv: need 0 <= k0 <= first < batch")
        for i in range(first, self.batch):
            m = &self.msgs[i]
            m.msg_hdr.msg_name = self.names + <Py_ssize_t>i * ADDR_SIZE
            m.msg_hdr.msg_namelen = ADDR_SIZE
            m.msg_hdr.msg_iov = &self.iovs[i]
            m.msg_hdr.msg_iovlen = 1
            m.msg_hdr.msg_control = self.ctrls + <Py_ssize_t>i * CTRL_SIZE
            m.msg_hdr.msg_controllen = CTRL_SIZE
            m.msg_hdr.msg_flags = 0
            m.msg_len = 0
        with nogil:
            n = recvmmsg(self.fd, &self.msgs[first], <unsigned int>(self.batch - first), flags, NULL)
            if n < 0:
                err = errno
            clock_gettime(CLOCK_REALTIME, &now)
        if n < 0:
            if err == EAGAIN or err == EINTR:
                return -1
            raise OSError(err, f"recvmmsg failed (errno {err})")
        self.calls += 1
        self.next_slot = first + n
        tnow = <double>now.tv_sec + <double>now.tv_nsec * 1e-9
        for i in range(first, first + n):
            m = &self.msgs[i]
            have_ts = False
            if m.msg_hdr.msg_controllen > 0:
                c = CMSG_FIRSTHDR(&m.msg_hdr)
                while c != NULL:
                    if c.cmsg_level == SOL_SOCKET:
                        if c.cmsg_type == SO_RXQ_OVFL:
                            memcpy(&drops, CMSG_DATA(c), 4)
                            if drops > self.kernel_drops:
                                self.kernel_drops = drops
                        elif c.cmsg_type == SCM_TIMESTAMPNS:
                            memcpy(&kts, CMSG_DATA(c), sizeof(timespec))
                            have_ts = True
                    c = CMSG_NXTHDR(&m.msg_hdr, c)
            if m.msg_hdr.msg_namelen == 0:  # no sender: the wake-up after shutdown(SHUT_RD)
                continue
            if (m.msg_hdr.msg_flags & MSG_TRUNC) or m.msg_len >= <unsigned int>self.slot:
                self.truncated += 1
                continue
            self._off[k] = <int64_t>i * self.slot
            self._len[k] = m.msg_len
            self._ts[k] = (<double>kts.tv_sec + <double>kts.tv_nsec * 1e-9) if have_ts else tnow
            name = self.names + <Py_ssize_t>i * ADDR_SIZE
            memcpy(&fam, name, 2)
            if fam == AF_INET:
                memset(&self._src[k, 0], 0, 10)
                self._src[k, 10] = 0xFF
                self._src[k, 11] = 0xFF
                memcpy(&self._src[k, 12], name + 4, 4)
            elif fam == AF_INET6:
                memcpy(&self._src[k, 0], name + 8, 16)
            else:
                memset(&self._src[k, 0], 0, 16)
            self._port[k] = (<uint16_t>name[2] << 8) | name[3]
            if self.n_allow and not self._allowed(k):
                self.rejected += 1
                continue
            self.datagrams += 1
            self.bytes += m.msg_len
            k += 1
        return k
