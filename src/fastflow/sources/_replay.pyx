# cython: language_level=3
"""Batched UDP sending with ``sendmmsg(2)``, GIL released: the fast path of replay and simulate.

``send_batch(fd, buf, offsets, lengths)`` sends datagram ``i`` = ``buf[offsets[i]:offsets[i]+lengths[i]]``
for every ``i`` on a *connected* UDP socket ``fd``, up to 1024 messages per system call. Errors never
abort the batch: a message the kernel refuses (ECONNREFUSED from an earlier ICMP port unreachable,
EMSGSIZE, ...) is counted and skipped; EINTR is retried; EAGAIN/ENOBUFS (a full socket buffer on a
non-blocking socket) is retried after a short sleep, a bounded number of times, then counted.

``put_be32`` / ``put_be64`` write big-endian integers at arbitrary (unaligned) byte offsets of a
buffer, vectorised: the simulator patches counter fields into datagram templates with them.
"""

from libc.errno cimport EAGAIN, EINTR, ENOBUFS, errno
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

import numpy as np

cdef extern from "<sys/uio.h>":
    struct iovec:
        void *iov_base
        size_t iov_len

cdef extern from "<sys/socket.h>":
    struct msghdr:
        void *msg_name
        unsigned int msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    int sendmmsg(int sockfd, mmsghdr *msgvec, unsigned int vlen, int flags) nogil

cdef extern from "<unistd.h>":
    int usleep(unsigned int usec) nogil

DEF MAXBATCH = 1024
DEF MAX_RETRIES = 200   # EAGAIN/ENOBUFS retries (100 us apart) before a message is counted lost

MAX_BATCH = MAXBATCH


def send_batch(int fd, buf, offsets, lengths, Py_ssize_t start=0, Py_ssize_t stop=-1):
    """Send datagrams ``start..stop-1`` of (buf, offsets, lengths) on connected UDP socket ``fd``.

    Returns ``(sent, errors, last_errno)``. The GIL is released while sending.
    """
    cdef const uint8_t[::1] b = np.frombuffer(buf, dtype=np.uint8) if not isinstance(buf, np.ndarray) \
        else np.ascontiguousarray(buf).view(np.uint8).reshape(-1)
    cdef const int64_t[::1] off = np.ascontiguousarray(offsets, dtype=np.int64)
    cdef const int64_t[::1] ln = np.ascontiguousarray(lengths, dtype=np.int64)
    cdef Py_ssize_t n = off.shape[0]
    cdef Py_ssize_t nbuf = b.shape[0]
    cdef Py_ssize_t i
    if ln.shape[0] != n:
        raise ValueError("offsets and lengths differ in length")
    if stop < 0 or stop > n:
        stop = n
    if start < 0:
        start = 0
    for i in range(start, stop):
        if off[i] < 0 or ln[i] < 0 or off[i] + ln[i] > nbuf:
            raise ValueError(f"datagram {i}: offset/length outside the buffer")
    if stop <= start:
        return (0, 0, 0)
    cdef mmsghdr *msgs = <mmsghdr *> malloc(MAXBATCH * sizeof(mmsghdr))
    cdef iovec *iov = <iovec *> malloc(MAXBATCH * sizeof(iovec))
    if msgs == NULL or iov == NULL:
        free(msgs); free(iov)
        raise MemoryError()
    cdef Py_ssize_t pos = start, k, m
    cdef int r, e, retries = 0, last_errno = 0
    cdef long long sent = 0, errors = 0
    cdef const uint8_t *base = &b[0] if nbuf > 0 else NULL
    try:
        with nogil:
            memset(msgs, 0, MAXBATCH * sizeof(mmsghdr))
            while pos < stop:
                m = stop - pos
                if m > MAXBATCH:
                    m = MAXBATCH
                for k in range(m):
                    iov[k].iov_base = <void *> (base + off[pos + k])
                    iov[k].iov_len = <size_t> ln[pos + k]
                    msgs[k].msg_hdr.msg_iov = &iov[k]
                    msgs[k].msg_hdr.msg_iovlen = 1
                r = sendmmsg(fd, msgs, <unsigned int> m, 0)
                if r > 0:
                    sent += r
                    pos += r
                    retries = 0
                    continue
                e = errno
                if r == 0:
                    e = EAGAIN
                if e == EINTR:
                    continue
                last_errno = e
                if (e == EAGAIN or e == ENOBUFS) and retries < MAX_RETRIES:
                    retries += 1
                    usleep(100)
                    continue
                # the first message of the batch failed: count it, skip it, go on
                errors += 1
                pos += 1
                retries = 0
    finally:
        free(msgs)
        free(iov)
    return (sent, errors, last_errno)


cdef _put_be(uint8_t[::1] buf, offsets, values, int width):
    """``buf[o:o+width] = big-endian values[i]`` (truncated to ``width`` bytes) for every
    ``o = offsets[i]``; every offset is checked before anything is written."""
    cdef const int64_t[::1] off = np.ascontiguousarray(offsets, dtype=np.int64)
    cdef const uint64_t[::1] val = np.ascontiguousarray(values, dtype=np.uint64)
    cdef Py_ssize_t n = off.shape[0], i, nbuf = buf.shape[0]
    cdef uint64_t v
    cdef int64_t o
    cdef int j, top = 8 * (width - 1)
    if val.shape[0] != n:
        raise ValueError("offsets and values differ in length")
    for i in range(n):
        if off[i] < 0 or off[i] + width > nbuf:
            raise ValueError(f"offset {off[i]} outside the buffer")
    with nogil:
        for i in range(n):
            o = off[i]
            v = val[i]
            for j in range(width):
                buf[o + j] = (v >> (top - 8 * j)) & 0xFF


def put_be32(uint8_t[::1] buf, offsets, values):
    """``buf[o:o+4] = big-endian u32(values[i])`` for every ``o = offsets[i]`` (values wrap mod 2**32)."""
    _put_be(buf, offsets, values, 4)


def put_be64(uint8_t[::1] buf, offsets, values):
    """``buf[o:o+8] = big-endian u64(values[i])`` for every ``o = offsets[i]``."""
    _put_be(buf, offsets, values, 8)
