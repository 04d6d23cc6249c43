"""sFlow-RT filter values: whole-string glob patterns, matched without regular expressions.

``*`` matches any run of characters (also none), ``?`` exactly one, ``\\`` makes the next character
literal (``apache\\.*`` and ``apache.*`` both mean "apache." then anything); every other character,
``.`` included, is literal. A pattern is split at its stars into fixed-length segments; the first is
anchored at the start, the last at the end and the middle ones are found leftmost-first, which is
exact for star/question-mark patterns. Work per text is O(len(text) × len(pattern)) at worst and a
pattern is bounded in length, so no input can make matching backtrack exponentially.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

__all__ = ["Glob", "GlobCache", "GlobError", "MAX_PATTERN"]

MAX_PATTERN = 512          # characters in one filter value


class GlobError(ValueError):
    """A filter value that is not a usable pattern (too long)."""


_ANY = None   # a '?' position inside a segment


class Glob:
    """One compiled pattern; ``match(text)`` is a whole-string match."""

    __slots__ = ("exact", "pattern", "segments", "star_first", "star_last")

    def __init__(self, pattern: str) -> None:
        if len(pattern) > MAX_PATTERN:
            raise GlobError(f"filter pattern longer than {MAX_PATTERN} characters")
        self.pattern = pattern
        segments: list[list[str | None]] = [[]]
        i = 0
        while i < len(pattern):
            c = pattern[i]
            if c == "\\" and i + 1 < len(pattern):
                segments[-1].append(pattern[i + 1])
                i += 2
                continue
            if c == "*":
                if segments[-1] or len(segments) == 1:
                    segments.append([])
            elif c == "?":
                segments[-1].append(_ANY)
            else:
                segments[-1].append(c)
            i += 1
        self.star_first = len(segments) > 1 and not segments[0]
        self.star_last = len(segments) > 1 and not segments[-1]
        self.segments: list[tuple[str | None, ...]] = [tuple(s) for s in segments]
        self.exact: str | None = None
        if len(segments) == 1 and _ANY not in segments[0]:
            self.exact = "".join(c for c in segments[0] if c is not None)

    @staticmethod
    def _at(seg: tuple[str | None, ...], text: str, pos: int) -> bool:
        if pos < 0 or pos + len(seg) > len(text):
            return False
        for j, c in enumerate(seg):
            if c is not None and text[pos + j] != c:
                return False
        return True

    @classmethod
    def _find(cls, seg: tuple[str | None, ...], text: str, start: int) -> int:
        if _ANY not in seg:
            return text.find("".join(seg), start)         # type: ignore[arg-type]
        for p in range(start, len(text) - len(seg) + 1):
            if cls._at(seg, text, p):
                return p
        return -1

    def match(self, text: str) -> bool:
        if self.exact is not None:
            return text == self.exact
        segs = self.segments
        if len(segs) == 1:
            return len(text) == len(segs[0]) and self._at(segs[0], text, 0)
        first, last = segs[0], segs[-1]
        if len(first) + len(last) > len(text):
            return False
        if not self._at(first, text, 0) or not self._at(last, text, len(text) - len(last)):
            return False
        pos, end = len(first), len(text) - len(last)
        for seg in segs[1:-1]:
            if not seg:
                continue
            p = self._find(seg, text, pos)
            if p < 0 or p + len(seg) > end:
                return False
            pos = p + len(seg)
        return True


class GlobCache:
    """A bounded LRU of compiled patterns (counted hits, misses and evictions)."""

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = capacity
        self._d: OrderedDict[str, Glob] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def get(self, pattern: str) -> Glob:
        g = self._d.get(pattern)
        if g is not None:
            self.hits += 1
            self._d.move_to_end(pattern)
            return g
        self.misses += 1
        g = Glob(pattern)
        self._d[pattern] = g
        if len(self._d) > self.capacity:
            self._d.popitem(last=False)
            self.evictions += 1
        return g

    def compile(self, patterns: Iterable[str]) -> list[Glob]:
        return [self.get(p) for p in patterns]

    def __len__(self) -> int:
        return len(self._d)

    def stats(self) -> dict[str, int]:
        return {"size": len(self._d), "capacity": self.capacity, "hits": self.hits,
                "misses": self.misses, "evictions": self.evictions}
