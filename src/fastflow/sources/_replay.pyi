"""Batched UDP sending with sendmmsg(2) (GIL released) and unaligned big-endian writes."""

from typing import Any

import numpy as np
import numpy.typing as npt

MAX_BATCH: int

def send_batch(fd: int, buf: Any, offsets: npt.ArrayLike, lengths: npt.ArrayLike,
               start: int = 0, stop: int = -1) -> tuple[int, int, int]:
    """Send datagrams start..stop-1 on a connected UDP socket; (sent, errors, last_errno)."""

def put_be32(buf: npt.NDArray[np.uint8], offsets: npt.ArrayLike, values: npt.ArrayLike) -> None:
    """Write big-endian u32 values at byte offsets of buf."""

def put_be64(buf: npt.NDArray[np.uint8], offsets: npt.ArrayLike, values: npt.ArrayLike) -> None:
    """Write big-endian u64 values at byte offsets of buf."""
