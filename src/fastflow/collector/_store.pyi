"""Type stub for the compiled store writer (fastflow.collector._store)."""

from typing import Any

import numpy as np

class StoreKernel:
    need: int
    def __init__(self, store: Any) -> None: ...
    def bind(self) -> None: ...
    def write(self, c: np.ndarray, start: int = 0) -> int: ...
