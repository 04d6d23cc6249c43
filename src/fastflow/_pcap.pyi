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

def scan_classic(data: np.ndarray, big_endian: bool, ns: bool, linktype: int, port: int) -> _Result:
    """Walk a classic pcap in ``data`` (writable uint8, whole file); compacts payloads in place."""

def scan_pcapng(data: np.ndarray, port: int) -> _Result:
    """Walk a pcapng file in ``data`` (writable uint8, whole file); compacts payloads in place."""
