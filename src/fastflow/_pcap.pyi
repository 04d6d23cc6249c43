"""Type stub for the Cython capture walker (see _pcap.pyx)."""

from typing import Any

import numpy as np

SKIP_REASONS: tuple[str, ...]

_Result = tuple[
    np.ndarray,  # buf: uint8, payloads back to back
    np.ndarray,  # offsets: int64
    np.ndarray,  # lengths: int64
    np.ndarray,  # ts: float64
    np.ndarray,  # src16: uint8 (n, 16), IPv4 in the first 4 bytes
    np.ndarray,  # af: uint8 (4 or 6)
    np.ndarray,  # stats: uint64 per SKIP_REASONS code
    int,         # linktype of the first packet, -1 if none
]

def scan_classic(data: Any, big_endian: bool, ns: bool, linktype: int, port: int) -> _Result: ...
def scan_pcapng(data: Any, port: int) -> _Result: ...
