"""The scaling policy: a pure function from (replicas, telemetry, time, history) to a decision.

Nothing here talks to Docker or reads metrics; :mod:`fastflow.scaler.controller` gathers a :class:`Telemetry`
for each managed service and applies the :class:`Decision`. That keeps the policy testable with a
simulated load (see ``tests/test_scaler_policy.py``).

Two modes:

* ``threshold`` (the original sFlow-RT swarm scaler): one replica up when the average
  ``vir_cpu_utilization`` > ``util_max`` or the average ``vir_bytes_in + vir_bytes_out`` >
  ``bytes_max``; one down when utilisation < ``util_min`` and bytes < ``bytes_min``. A threshold left
  unset (None) is ignored (for "down" it counts as satisfied).
* ``target`` (like Kubernetes' HPA): ``desired = ceil(current * value / target)``; no change while
  ``|value / target - 1| <= tolerance``; at most ``max_step`` replicas per decision.

Safety rules applied before either mode (any failure holds the current count and says why):
the number of distinct fresh containers must equal the running replicas (and their hostnames the
running task names when those are known), every sample younger than ``staleness`` seconds.
Missing data never scales down. Results are clamped to ``[replicas_min, replicas_max]``; a step that
would pass a bound stops at the bound. ``cooldown_up`` / ``cooldown_down``: seconds since the last
change (either direction) before scaling up / down again. ``stabilization_window``: a scale-down
uses the highest recommendation seen in the last window seconds (so a brief dip does not flap).
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Mode = Literal["threshold", "target"]
Action = Literal["up", "down", "hold"]

CPU = "vir_cpu_utilization"
BYTES_IN = "vir_bytes_in"
BYTES_OUT = "vir_bytes_out"

# Keys a [[scaler.services]] table / PUT body may hold, with their defaults.
DEFAULTS: dict[str, Any] = {
    "pattern": None,            # default: re.escape(service) + r"\..*"
    "replicas_min": 1,
    "replicas_max": 10,
    "mode": "threshold",
    "util_min": 20.0,
    "util_max": 80.0,
    "bytes_min": None,
    "bytes_max": None,
    "interval": 2.0,
    "cooldown_up": 0.0,
    "cooldown_down": 0.0,
    "stabilization_window": 0.0,
    "target": 60.0,
    "metric": CPU,
    "tolerance": 0.1,
    "max_step": 4,
    "enabled": True,
    "staleness": None,          # default: max(3 * interval, 10 s)
}
MIN_STALENESS = 10.0


class PolicyError(ValueError):
    """A service policy key or value is invalid (the message names it)."""


def _num(d: Mapping[str, Any], key: str, *, allow_none: bool = False, minimum: float | None = None,
         integer: bool = False) -> Any:
    v = d[key]
    if v is None:
        if allow_none:
            return None
        raise PolicyError(f"{key}: a number is required")
    if isinstance(v, bool) or not isinstance(v, int | float) or (isinstance(v, float) and not math.isfinite(v)):
        raise PolicyError(f"{key}: expected a number, got {v!r}")
    if integer:
        if int(v) != v:
            raise PolicyError(f"{key}: expected an integer, got {v!r}")
        v = int(v)
    if minimum is not None and v < minimum:
        raise PolicyError(f"{key}: must be >= {minimum}, got {v!r}")
    return v if integer else float(v)


@dataclass(frozen=True)
class Policy:
    """One managed service's configuration (validated; build with :meth:`from_dict`)."""

    service: str
    pattern: str
    replicas_min: int = 1
    replicas_max: int = 10
    mode: Mode = "threshold"
    util_min: float | None = 20.0
    util_max: float | None = 80.0
    bytes_min: float | None = None
    bytes_max: float | None = None
    interval: float = 2.0
    cooldown_up: float = 0.0
    cooldown_down: float = 0.0
    stabilization_window: float = 0.0
    target: float = 60.0
    metric: str = CPU
    tolerance: float = 0.1
    max_step: int = 4
    enabled: bool = True
    staleness: float = MIN_STALENESS
    staleness_set: bool = False   # staleness came from the config (else derived from interval)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], base: Policy | None = None) -> Policy:
        """Validate ``d`` (config table or PUT body) over ``base`` (or the defaults).

        Unknown keys, wrong types and inconsistent values raise :class:`PolicyError`.
        """
        known = set(DEFAULTS) | {"service"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise PolicyError(f"unknown key(s): {', '.join(unknown)}")
        merged: dict[str, Any] = dict(DEFAULTS) if base is None else base.to_dict()
        if base is not None and not base.staleness_set:
            merged["staleness"] = None
        merged.update(d)
        service = merged.get("service")
        if not isinstance(service, str) or not service or "/" in service:
            raise PolicyError(f"service: a non-empty name without '/' is required, got {service!r}")
        if base is not None and service != base.service:
            raise PolicyError("service: cannot be changed")
        pattern = merged["pattern"]
        if pattern is None or pattern == "":
            pattern = re.escape(service) + r"\..*"
        if not isinstance(pattern, str):
            raise PolicyError(f"pattern: expected a string, got {pattern!r}")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise PolicyError(f"pattern: bad regular expression: {exc}") from None
        mode = merged["mode"]
        if mode not in ("threshold", "target"):
            raise PolicyError(f"mode: 'threshold' or 'target', got {mode!r}")
        enabled = merged["enabled"]
        if not isinstance(enabled, bool):
            raise PolicyError(f"enabled: expected true or false, got {enabled!r}")
        metric = merged["metric"]
        if not isinstance(metric, str) or not re.fullmatch(r"[A-Za-z0-9_]+", metric):
            raise PolicyError(f"metric: expected a metric name, got {metric!r}")
        rmin = _num(merged, "replicas_min", minimum=0, integer=True)
        rmax = _num(merged, "replicas_max", minimum=1, integer=True)
        if rmin > rmax:
            raise PolicyError(f"replicas_min ({rmin}) > replicas_max ({rmax})")
        interval = _num(merged, "interval", minimum=0.05)
        staleness = _num(merged, "staleness", allow_none=True, minimum=0.01)
        p = cls(
            service=service, pattern=pattern, replicas_min=rmin, replicas_max=rmax, mode=mode,
            util_min=_num(merged, "util_min", allow_none=True),
            util_max=_num(merged, "util_max", allow_none=True),
            bytes_min=_num(merged, "bytes_min", allow_none=True, minimum=0),
            bytes_max=_num(merged, "bytes_max", allow_none=True, minimum=0),
            interval=interval,
            cooldown_up=_num(merged, "cooldown_up", minimum=0),
            cooldown_down=_num(merged, "cooldown_down", minimum=0),
            stabilization_window=_num(merged, "stabilization_window", minimum=0),
            target=_num(merged, "target"),
            metric=metric,
            tolerance=_num(merged, "tolerance", minimum=0),
            max_step=_num(merged, "max_step", minimum=1, integer=True),
            enabled=enabled,
            staleness=staleness if staleness is not None else max(3 * interval, MIN_STALENESS),
            staleness_set=staleness is not None,
        )
        if p.target <= 0:
            raise PolicyError(f"target: must be > 0, got {p.target}")
        if p.util_min is not None and p.util_max is not None and p.util_min >= p.util_max:
            raise PolicyError(f"util_min ({p.util_min}) must be < util_max ({p.util_max})")
        if p.bytes_min is not None and p.bytes_max is not None and p.bytes_min >= p.bytes_max:
            raise PolicyError(f"bytes_min ({p.bytes_min}) must be < bytes_max ({p.bytes_max})")
        if p.mode == "threshold" and p.util_max is None and p.bytes_max is None:
            raise PolicyError("threshold mode needs util_max or bytes_max")
        return p

    def to_dict(self) -> dict[str, Any]:
        """The configuration keys (as accepted by :meth:`from_dict`)."""
        d = {k: getattr(self, k) for k in DEFAULTS}
        d["service"] = self.service
        if not self.staleness_set:
            d["staleness"] = None  # derived from interval
        return d

    def required_metrics(self) -> list[str]:
        """The per-container metrics a decision needs."""
        if self.mode == "target":
            return [self.metric]
        out = []
        if self.util_min is not None or self.util_max is not None:
            out.append(CPU)
        if self.bytes_min is not None or self.bytes_max is not None:
            out += [BYTES_IN, BYTES_OUT]
        return out


@dataclass
class Telemetry:
    """What the scaler saw for one service at one tick.

    ``containers``: hostname -> age in seconds of its newest sample (for the required metrics).
    ``values``: averages over the service's containers (metric name -> value; absent = no data).
    ``running``: running tasks according to Docker; ``task_names``: their ``svc.slot.taskid``
    names when known (None skips the name check). ``error``: set when telemetry could not be read.
    """

    containers: dict[str, float] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    running: int = 0
    task_names: set[str] | None = None
    error: str | None = None


@dataclass
class History:
    """Per-service memory of the policy: last change time and recent recommendations."""

    last_change: float | None = None
    recommendations: deque[tuple[float, int]] = field(default_factory=deque)


@dataclass
class Decision:
    """The outcome of one tick: ``desired`` replicas (== current for hold) and the reason."""

    action: Action
    current: int
    desired: int
    reason: str
    recommendation: int | None = None
    values: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "current": self.current, "desired": self.desired,
                "reason": self.reason, "recommendation": self.recommendation,
                "values": dict(self.values)}


def check_telemetry(policy: Policy, current: int, t: Telemetry) -> str | None:
    """Why the telemetry is not good enough to act on, or None when it is complete and fresh."""
    if t.error:
        return f"telemetry unavailable: {t.error}"
    if t.running != current:
        return f"tasks converging: {t.running} running of {current} replicas"
    if t.task_names is not None:
        # containers of tasks that are gone (scaled down, rescheduled) are ignored, stale or not
        seen = {h: a for h, a in t.containers.items() if h in t.task_names}
        if not seen:
            return "no telemetry from the service's containers"
        stale = sorted(h for h, age in seen.items() if not age <= policy.staleness)
        if stale:
            return (f"stale telemetry (> {policy.staleness:g}s) from {len(stale)} container(s): "
                    f"{', '.join(stale[:3])}")
        missing = sorted(t.task_names - set(seen))
        if missing:
            return (f"incomplete telemetry: {len(seen)} of {t.running} running tasks reporting "
                    f"(missing {', '.join(missing[:3])})")
    else:
        fresh = [h for h, age in t.containers.items() if age <= policy.staleness]
        if not t.containers:
            return "no telemetry from the service's containers"
        if len(fresh) != t.running:
            n_stale = len(t.containers) - len(fresh)
            kind = "stale" if n_stale and len(fresh) < t.running else "incomplete"
            return (f"{kind} telemetry: {len(fresh)} fresh containers (<= {policy.staleness:g}s), "
                    f"{n_stale} stale, {t.running} running")
    for m in policy.required_metrics():
        v = t.values.get(m)
        if v is None or not math.isfinite(v):
            return f"no value for {m}"
    return None


def recommend(policy: Policy, current: int, values: Mapping[str, float]) -> tuple[int, str]:
    """The raw recommendation (before clamping, cooldowns and stabilization) and why."""
    if policy.mode == "target":
        v = values[policy.metric]
        ratio = v / policy.target
        if current == 0:
            return (1 if v > 0 else 0), f"{policy.metric}={v:.4g} with no replicas"
        if abs(ratio - 1.0) <= policy.tolerance:
            return current, (f"{policy.metric}={v:.4g} within {policy.tolerance:g} of "
                             f"target {policy.target:g}")
        want = math.ceil(current * ratio - 1e-9)
        step = max(-policy.max_step, min(policy.max_step, want - current))
        return current + step, (f"{policy.metric}={v:.4g} target {policy.target:g}: "
                                f"ceil({current}*{ratio:.3f})={want}")
    util = values.get(CPU)
    nbytes = None
    if BYTES_IN in values and BYTES_OUT in values:
        nbytes = values[BYTES_IN] + values[BYTES_OUT]
    ups = []
    if policy.util_max is not None and util is not None and util > policy.util_max:
        ups.append(f"utilization {util:.4g} > {policy.util_max:g}")
    if policy.bytes_max is not None and nbytes is not None and nbytes > policy.bytes_max:
        ups.append(f"bytes {nbytes:.4g} > {policy.bytes_max:g}")
    if ups:
        return current + 1, " or ".join(ups)
    down_util = policy.util_min is None or (util is not None and util < policy.util_min)
    down_bytes = policy.bytes_min is None or (nbytes is not None and nbytes < policy.bytes_min)
    desc = []
    if util is not None:
        desc.append(f"utilization {util:.4g}")
    if nbytes is not None:
        desc.append(f"bytes {nbytes:.4g}")
    if down_util and down_bytes:
        return current - 1, " and ".join(desc) + " below the minimum"
    return current, " ".join(desc) + " within thresholds"


def decide(policy: Policy, current: int, telemetry: Telemetry, now: float,
           history: History) -> Decision:
    """One tick of the policy. Updates ``history`` (recommendations; call :func:`record_change`
    once a change was applied)."""
    lo, hi = policy.replicas_min, policy.replicas_max
    values = dict(telemetry.values)
    if current < lo:
        return Decision("up", current, lo, f"below replicas_min {lo}", values=values)
    if current > hi:
        return Decision("down", current, hi, f"above replicas_max {hi}", values=values)
    problem = check_telemetry(policy, current, telemetry)
    if problem is not None:
        return Decision("hold", current, current, problem, values=values)
    raw, why = recommend(policy, current, values)
    rec = max(lo, min(hi, raw))
    if rec != raw:
        why += f" (clamped to [{lo}, {hi}])"
    # stabilization window: remember recommendations; scale down only to the highest in the window
    recs = history.recommendations
    recs.append((now, rec))
    while recs and recs[0][0] < now - policy.stabilization_window:
        recs.popleft()
    desired = rec
    if rec < current and policy.stabilization_window > 0:
        desired = min(current, max(r for _, r in recs))
        if desired >= current:
            return Decision("hold", current, current,
                            f"{why}; scale-down held by the {policy.stabilization_window:g}s "
                            f"stabilization window", rec, values)
        why += f"; highest in {policy.stabilization_window:g}s window: {desired}"
    if desired == current:
        return Decision("hold", current, current, why, rec, values)
    since = None if history.last_change is None else now - history.last_change
    if desired > current:
        if since is not None and since < policy.cooldown_up:
            return Decision("hold", current, current,
                            f"{why}; cooldown_up {policy.cooldown_up:g}s ({since:.1f}s since last "
                            f"change)", rec, values)
        return Decision("up", current, desired, why, rec, values)
    if since is not None and since < policy.cooldown_down:
        return Decision("hold", current, current,
                        f"{why}; cooldown_down {policy.cooldown_down:g}s ({since:.1f}s since last "
                        f"change)", rec, values)
    return Decision("down", current, desired, why, rec, values)


def record_change(history: History, now: float) -> None:
    """Note that a change was applied at ``now`` (starts the cool-downs)."""
    history.last_change = now
