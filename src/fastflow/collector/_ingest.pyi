"""Type stub for the recvmmsg batch receiver (see _ingest.pyx)."""

import numpy as np

SOL_SOCKET_: int
SO_RXQ_OVFL_: int
SO_TIMESTAMPNS_: int

class Receiver:
    """Receives up to ``batch`` datagrams per recvmmsg call into preallocated arrays."""

    batch: int
    slot: int
    buf: np.ndarray       # uint8, batch * slot; datagram slot i at i * slot
    offsets: np.ndarray   # int64
    lengths: np.ndarray   # int64
    ts: np.ndarray        # float64 arrival time (kernel timestamp when available)
    src: np.ndarray       # uint8 (batch, 16), IPv4 as ::ffff:a.b.c.d
    port: np.ndarray      # uint16 source port
    datagrams: int
    bytes: int
    calls: int
    truncated: int
    kernel_drops: int

    def __init__(self, fd: int, batch: int = 1024, slot: int = 65536) -> None: ...
    next_slot: int
    def recv(self, first: int = 0, k0: int = 0, wait: bool = True) -> int:
        """Datagrams into slots first.., rows appended from k0; the row count now at [0:k],
        -1 when nothing came (timeout, or wait=False and the queue was empty); OSError otherwise."""
