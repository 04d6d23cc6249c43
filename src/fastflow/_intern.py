"""What both decoders (``_decode.pyx`` and its twin ``_pydecode``) share about their intern
tables: the renumbering a compaction hands to whoever holds indices."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["keep_order", "renumber"]


def keep_order(keep: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(old -> new index map, kept old indices ascending) for the indices ``keep`` of an intern
    table of ``n`` entries. Index 0 is always kept; indices out of range are ignored; an entry
    not kept maps to 0 (the empty string, the unknown agent)."""
    idx = np.asarray(keep, np.int64).ravel()
    mask = np.zeros(max(int(n), 1), np.bool_)
    mask[idx[(idx >= 0) & (idx < n)]] = True
    mask[0] = True
    order = np.flatnonzero(mask).astype(np.uint32)
    out = np.zeros(len(mask), np.uint32)
    out[order] = np.arange(len(order), dtype=np.uint32)
    return out, np.ascontiguousarray(order)


def renumber(index_map: np.ndarray, old: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(new indices, dropped mask) of the indices ``old`` through a compaction's ``index_map``;
    an index the map does not cover, or whose entry was dropped (mapped to 0), is dropped."""
    old = np.asarray(old, np.int64)
    inside = old < len(index_map)
    new = index_map[np.where(inside, old, 0)]
    return new, ~inside | ((new == 0) & (old != 0))
