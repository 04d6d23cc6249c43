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
    def recv(self) -> int:
        """n datagrams now at [0:n] (0 if all were oversize), -1 on timeout; OSError otherwise."""
