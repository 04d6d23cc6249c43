"""Type stub for the Cython capture walker (see _pcap.pyx)."""


import numpy as np

SKIP_REASONS: tuple[str, ...]

_Result = tuple[
    int,         # total: payload bytes now packed at data[:total]
    np.ndarray,  # offsets: int64
    np.ndarray,  # lengths: int64
    np.ndarray,  # ts: float64
    np.ndarray,  # src_idx: int32, index into src16/af
    np.ndarray,  # src16: uint8 (m, 16) distinct sources, IPv4 in the first 4 bytes
    np.ndarray,  # af: uint8 (m,), 4 or 6
    np.ndarray,  # stats: uint64 per SKIP_REASONS code
    int,         # linktype of the first packet, -1 if none
]

def scan_classic(data: np.ndarray, big_endian: bool, ns: bool, linktype: int, port: int,
                 compact: bool = True) -> _Result:
    """Walk a classic pcap in ``data`` (uint8, whole file, one pass). ``compact``: move the
    payloads to the front of ``data`` (writable); otherwise offsets point into ``data``."""

def scan_pcapng(data: np.ndarray, port: int, compact: bool = True) -> _Result:
    """Walk a pcapng file in ``data`` (uint8, whole file); ``compact`` as for scan_classic."""
