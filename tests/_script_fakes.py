"""Stand-ins used ONLY by the script tests until the real modules land with the merge.

``FakeThresholds`` follows CONTRACTS C2 (``fastflow.collector.thresholds.Thresholds``: set, get,
delete, all, add_listener; events with sFlow-RT's field names); ``thresholds()`` returns the real
class when it exists, so the tests run against it after the merge.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any


class FakeThresholds:
    def __init__(self, metrics: Any = None, **kw: Any) -> None:
        self.specs: dict[str, dict[str, Any]] = {}
        self.listeners: list[tuple[Callable[[dict[str, Any]], None], Sequence[str] | None]] = []
        self.next_id = 0

    def set(self, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        if "metric" not in spec or "value" not in spec:
            raise ValueError("threshold needs metric and value")
        self.specs[name] = dict(spec)
        return dict(spec)

    def get(self, name: str) -> dict[str, Any] | None:
        return self.specs.get(name)

    def delete(self, name: str) -> bool:
        return self.specs.pop(name, None) is not None

    def all(self) -> dict[str, dict[str, Any]]:
        return dict(self.specs)

    def add_listener(self, fn: Callable[[dict[str, Any]], None],
                     threshold_ids: Sequence[str] | None = None) -> None:
        self.listeners.append((fn, threshold_ids))

    def fire(self, name: str, value: float, agent: str = "127.0.0.1",
             data_source: str = "3.100001") -> dict[str, Any]:
        """An event as the real evaluate() would append it."""
        spec = self.specs[name]
        self.next_id += 1
        evt = {"agent": agent, "dataSource": data_source, "eventID": self.next_id,
               "metric": spec["metric"], "threshold": spec["value"], "thresholdID": name,
               "timestamp": 1_700_000_000_000, "value": value}
        for fn, ids in self.listeners:
            if ids is None or name in ids:
                fn(evt)
        return evt


def thresholds(metrics: Any) -> Any:
    try:
        from fastflow.collector.thresholds import Thresholds  # type: ignore[import-not-found]
    except ImportError:
        return FakeThresholds(metrics)
    return Thresholds(metrics)
