"""fastflow: sFlow v5 telemetry into elastic scaling of Docker swarm services."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
