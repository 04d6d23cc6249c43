"""The scaling policy: a pure function from (replicas, telemetry, time, history) to a decision.

Nothing here talks to Docker or reads metrics; :mod:`fastflow.scaler.controller` gathers a :class:`Telemetry`
for each managed service and applies the :class:`Decision`. That keeps the policy testable with a
simulated load (see ``tests/test_scaler_policy.py``).

Three modes:

* ``proportional`` (the default when a service sets none of ``util_min/util_max/bytes_min/bytes_max``;
  Kubernetes HPA's algorithm): ``desired = ceil(sum of the running containers' utilisation /
  target)`` (and ``ceil(sum bytes / bytes_target)`` when set; the larger wins), so 1 -> 4 is one
  decision; no change while the ratio to the current count is within ``tolerance``; then HPA's
  ``behavior`` per direction (stabilization window, Pods/Percent policies per period,
  ``select_policy``). Defaults are HPA's: scale up with no stabilization, at most max(100 %, 4 pods)
  per 15 s; scale down with a 300 s stabilization window, at most 100 % per 15 s.
* ``threshold`` (the original sFlow-RT swarm scaler): one replica up when the average
  ``vir_cpu_utilization`` > ``util_max`` or the average ``vir_bytes_in + vir_bytes_out`` >
  ``bytes_max``; one down when utilisation < ``util_min`` and bytes < ``bytes_min``. A threshold left
  unset (None) is ignored (for "down" it counts as satisfied).
* ``target`` (v0.1, kept for existing configs): ``desired = ceil(current * value / target)``; no change while
  ``|value / target - 1| <= tolerance``; at most ``max_step`` replicas per decision.

Safety rules applied before any mode (any failure holds the current count and says why) -- the
**convergence gate**: no task of the service may be starting or stopping (Docker task states), the
running tasks must equal the replicas, every running task must have exactly one trusted data source
(:mod:`fastflow.scaler.controller` decides trust), and each used sample must have been taken at
least one agent polling interval after the last change took effect. Also:
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

Mode = Literal["proportional", "threshold", "target"]
Action = Literal["up", "down", "hold"]

CPU = "vir_cpu_utilization"
BYTES_IN = "vir_bytes_in"
BYTES_OUT = "vir_bytes_out"

# Keys a [[scaler.services]] table / PUT body may hold, with their defaults.
DEFAULTS: dict[str, Any] = {
    "pattern": None,            # default: re.escape(service) + r"\..*"
    "replicas_min": 1,
    "replicas_max": 10,
    "mode": None,               # default: "threshold" when util_*/bytes_* are set, else "proportional"
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
    "bytes_target": None,       # proportional: bytes/s (in + out) per replica (None: CPU only)
    "behavior": None,           # proportional: HPA behavior (see HPA_BEHAVIOR)
    "polling_interval": None,   # agents' counter polling interval (default: [store] polling_interval)
    "manual_pause": 120.0,      # seconds an operator's own scale change is left alone
}
THRESHOLD_KEYS = ("util_min", "util_max", "bytes_min", "bytes_max")
# Kubernetes HPA (autoscaling/v2) defaults, per direction.
HPA_BEHAVIOR: dict[str, dict[str, Any]] = {
    "scale_up": {"stabilization_window": 0.0, "select_policy": "max",
                 "policies": [{"type": "percent", "value": 100.0, "period": 15.0},
                              {"type": "pods", "value": 4.0, "period": 15.0}]},
    "scale_down": {"stabilization_window": 300.0, "select_policy": "max",
                   "policies": [{"type": "percent", "value": 100.0, "period": 15.0}]},
}
MAX_PERIOD = 3600.0             # longest policy period / stabilization window (bounds History)
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
class Rules:
    """HPA scaling rules for one direction: stabilization window, policies, select_policy."""

    stabilization_window: float
    select_policy: str
    policies: tuple[tuple[str, float, float], ...]   # (type "pods"|"percent", value, period s)

    def to_dict(self) -> dict[str, Any]:
        return {"stabilization_window": self.stabilization_window,
                "select_policy": self.select_policy,
                "policies": [{"type": t, "value": v, "period": p} for t, v, p in self.policies]}


def _rules(where: str, d: Any) -> Rules:
    if not isinstance(d, Mapping):
        raise PolicyError(f"{where}: expected a table")
    unknown = sorted(set(d) - {"stabilization_window", "select_policy", "policies"})
    if unknown:
        raise PolicyError(f"{where}: unknown key(s): {', '.join(map(str, unknown))}")
    win = _num(d, "stabilization_window", minimum=0)
    if win > MAX_PERIOD:
        raise PolicyError(f"{where}.stabilization_window: at most {MAX_PERIOD:g} s")
    sel = d["select_policy"]
    if sel not in ("max", "min", "disabled"):
        raise PolicyError(f"{where}.select_policy: 'max', 'min' or 'disabled', got {sel!r}")
    pols = d["policies"]
    if not isinstance(pols, list | tuple) or not 1 <= len(pols) <= 10:
        raise PolicyError(f"{where}.policies: a list of 1 to 10 tables")
    out = []
    for i, e in enumerate(pols):
        w = f"{where}.policies[{i}]"
        if not isinstance(e, Mapping) or set(e) != {"type", "value", "period"}:
            raise PolicyError(f"{w}: a table of type, value, period")
        typ = str(e["type"]).lower()
        if typ not in ("pods", "percent"):
            raise PolicyError(f"{w}.type: 'pods' or 'percent', got {e['type']!r}")
        val = _num(e, "value", minimum=1)
        per = _num(e, "period", minimum=1)
        if per > MAX_PERIOD:
            raise PolicyError(f"{w}.period: at most {MAX_PERIOD:g} s")
        out.append((typ, val, per))
    return Rules(win, sel, tuple(out))


def _behavior(d: Any, base: Mapping[str, Any] | None) -> tuple[Rules, Rules]:
    """HPA ``behavior`` over ``base`` (a to_dict() form) or HPA's defaults, per direction."""
    if d is None:
        d = {}
    if not isinstance(d, Mapping):
        raise PolicyError("behavior: expected a table with scale_up / scale_down")
    unknown = sorted(set(d) - {"scale_up", "scale_down"})
    if unknown:
        raise PolicyError(f"behavior: unknown key(s): {', '.join(map(str, unknown))}")
    out = []
    for k in ("scale_up", "scale_down"):
        merged = dict((base or HPA_BEHAVIOR)[k])
        part = d.get(k) or {}
        if not isinstance(part, Mapping):
            raise PolicyError(f"behavior.{k}: expected a table")
        merged.update(part)
        out.append(_rules(f"behavior.{k}", merged))
    return out[0], out[1]


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
    bytes_target: float | None = None
    scale_up: Rules = field(default_factory=lambda: _behavior(None, None)[0])
    scale_down: Rules = field(default_factory=lambda: _behavior(None, None)[1])
    polling_interval: float | None = None
    manual_pause: float = 120.0
    mode_set: bool = field(default=False, compare=False)  # mode given (else derived from the keys)

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
        base_behavior = merged.get("behavior")
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
        mode_set = mode is not None
        if mode is None:   # an elb.js-style table (thresholds given) keeps threshold mode
            mode = "threshold" if any(d.get(k) is not None for k in THRESHOLD_KEYS) \
                else "proportional"
        if mode not in ("proportional", "threshold", "target"):
            raise PolicyError(f"mode: 'proportional', 'threshold' or 'target', got {mode!r}")
        up, down = _behavior(d.get("behavior") if "behavior" in d else None,
                             base_behavior if isinstance(base_behavior, Mapping) else None)
        poll = _num(merged, "polling_interval", allow_none=True, minimum=0.1)
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
            bytes_target=_num(merged, "bytes_target", allow_none=True, minimum=0),
            scale_up=up, scale_down=down, polling_interval=poll,
            manual_pause=_num(merged, "manual_pause", minimum=0), mode_set=mode_set,
        )
        if p.bytes_target == 0:
            raise PolicyError("bytes_target: must be > 0")
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
        d = {k: getattr(self, k) for k in DEFAULTS if k != "behavior"}
        d["behavior"] = {"scale_up": self.scale_up.to_dict(), "scale_down": self.scale_down.to_dict()}
        d["service"] = self.service
        if not self.staleness_set:
            d["staleness"] = None  # derived from interval
        return d

    def required_metrics(self) -> list[str]:
        """The per-container metrics a decision needs."""
        if self.mode == "target":
            return [self.metric]
        if self.mode == "proportional":
            return [self.metric] + ([BYTES_IN, BYTES_OUT] if self.bytes_target is not None else [])
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
    # -- the convergence gate (filled by the controller from Docker's task states; empty = unknown)
    starting: list[str] = field(default_factory=list)   # tasks meant to run, not running yet
    stopping: list[str] = field(default_factory=list)   # tasks being shut down, still running
    problems: list[str] = field(default_factory=list)   # untrusted/duplicate/implausible sources
    sample_times: dict[str, float] = field(default_factory=dict)  # host -> wall time of its sample
    effective_at: float | None = None    # wall time the last change took effect (Docker timestamps)
    polling_interval: float = 0.0        # a sample describes the polling interval before it
    sums: dict[str, float] = field(default_factory=dict)  # metric -> sum over running containers
    seen: list[dict[str, Any]] = field(default_factory=list)  # per container, for the explanation


@dataclass
class History:
    """Per-service memory of the policy: last change time and recent recommendations."""

    last_change: float | None = None
    recommendations: deque[tuple[float, int]] = field(default_factory=deque)
    changes: deque[tuple[float, int]] = field(default_factory=deque)   # (time, replicas delta)


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
    if t.starting or t.stopping:
        parts = []
        if t.starting:
            parts.append(f"{len(t.starting)} task(s) starting ({', '.join(t.starting[:3])})")
        if t.stopping:
            parts.append(f"{len(t.stopping)} task(s) stopping ({', '.join(t.stopping[:3])})")
        return "waiting for convergence: " + "; ".join(parts)
    if t.running != current:
        return f"waiting for convergence: tasks converging: {t.running} running of {current} replicas"
    if t.problems:
        more = f" (and {len(t.problems) - 1} more)" if len(t.problems) > 1 else ""
        return f"untrusted telemetry: {t.problems[0]}{more}"
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
    if t.effective_at is not None and t.sample_times:
        need = t.effective_at + t.polling_interval
        early = sorted((ts, h) for h, ts in t.sample_times.items() if ts < need)
        if early:
            ts, h = early[0]
            return (f"waiting for convergence: {len(early)} sample(s) describe the state before the "
                    f"last change (e.g. {h}'s, taken {ts - t.effective_at:+.1f}s after the change "
                    f"took effect; need >= {t.polling_interval:g}s, one polling interval)")
    return None


def _hpa_limit(rules: Rules, current: int, changes: deque[tuple[float, int]], now: float,
               up: bool) -> int:
    """HPA's calculateScaleUp/DownLimitWithBehaviors: the furthest count ``rules`` allow now."""
    if rules.select_policy == "disabled":
        return current
    results = []
    for typ, value, period in rules.policies:
        added = sum(d for t, d in changes if t > now - period and d > 0)
        removed = -sum(d for t, d in changes if t > now - period and d < 0)
        start = current - added + removed
        if up:
            results.append(start + int(value) if typ == "pods"
                           else math.ceil(start * (1 + value / 100.0) - 1e-9))
        else:
            results.append(start - int(value) if typ == "pods"
                           else int(start * (1 - value / 100.0)))
    # "max" = the biggest change: the highest limit up, the lowest limit down
    pick_high = (rules.select_policy == "max") == up
    return max(results) if pick_high else min(results)


def proportional(policy: Policy, current: int, t: Telemetry) -> tuple[int, str]:
    """HPA's replica calculation over the running containers: ceil(sum / target) per metric,
    ``current`` while the ratio is within ``tolerance``; the highest proposal wins."""
    proposals = []
    why = []
    n = max(current, 1)
    pairs = [(policy.metric, policy.target, t.sums.get(policy.metric))]
    if policy.bytes_target is not None:
        b = None
        if BYTES_IN in t.sums and BYTES_OUT in t.sums:
            b = t.sums[BYTES_IN] + t.sums[BYTES_OUT]
        pairs.append(("bytes", policy.bytes_target, b))
    for name, target, total in pairs:
        if total is None:
            vals = [t.values.get(m) for m in ((BYTES_IN, BYTES_OUT) if name == "bytes" else (name,))]
            if any(v is None for v in vals):
                continue
            total = sum(v for v in vals if v is not None) * n   # averages x running containers
        ratio = total / (target * n)
        if current > 0 and abs(ratio - 1.0) <= policy.tolerance:
            proposals.append(current)
            why.append(f"sum {name} {total:.4g} / target {target:g} = {total / target:.2f}, "
                       f"within tolerance {policy.tolerance:g} of {current}")
            continue
        want = math.ceil(total / target - 1e-9)
        proposals.append(want)
        why.append(f"sum {name} {total:.4g} / target {target:g} = {total / target:.2f} -> {want}")
    if not proposals:
        return current, "no value to decide on"
    return max(proposals), "; ".join(why)


def _clamp(raw: int, why: str, lo: int, hi: int) -> tuple[int, str]:
    """``raw`` within [lo, hi], and the reason saying so when it had to be moved."""
    rec = max(lo, min(hi, raw))
    return rec, (why + f" (clamped to [{lo}, {hi}])" if rec != raw else why)


def _decide_proportional(policy: Policy, current: int, telemetry: Telemetry, now: float,
                         history: History, values: dict[str, float]) -> Decision:
    lo, hi = policy.replicas_min, policy.replicas_max
    raw, why = proportional(policy, current, telemetry)
    rec, why = _clamp(raw, why, lo, hi)
    recs = history.recommendations
    recs.append((now, rec))
    keep = max(policy.scale_up.stabilization_window, policy.scale_down.stabilization_window)
    while recs and recs[0][0] < now - keep:
        recs.popleft()
    up_rec = min([rec] + [r for t, r in recs if t >= now - policy.scale_up.stabilization_window])
    down_rec = max([rec] + [r for t, r in recs
                            if t >= now - policy.scale_down.stabilization_window])
    stab = current
    if stab < up_rec:
        stab = up_rec
    if stab > down_rec:
        stab = down_rec
    if stab != rec:
        if rec < current:
            why += (f"; scale-down stabilized: highest recommendation in the last "
                    f"{policy.scale_down.stabilization_window:g}s is {down_rec}")
        else:
            why += (f"; scale-up stabilized: lowest recommendation in the last "
                    f"{policy.scale_up.stabilization_window:g}s is {up_rec}")
    desired = stab
    if stab > current:
        limit = _hpa_limit(policy.scale_up, current, history.changes, now, up=True)
        if limit < stab:
            desired = max(current, limit)
            why += f"; limited to {desired} by behavior.scale_up ({policy.scale_up.select_policy})"
    elif stab < current:
        limit = _hpa_limit(policy.scale_down, current, history.changes, now, up=False)
        if limit > stab:
            desired = min(current, limit)
            why += f"; limited to {desired} by behavior.scale_down ({policy.scale_down.select_policy})"
    desired = max(lo, min(hi, desired))
    if desired == current:
        return Decision("hold", current, current, why, rec, values)
    return Decision("up" if desired > current else "down", current, desired, why, rec, values)


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
    if policy.mode == "proportional":
        return _decide_proportional(policy, current, telemetry, now, history, values)
    raw, why = recommend(policy, current, values)
    rec, why = _clamp(raw, why, lo, hi)
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


def record_change(history: History, now: float, delta: int = 0) -> None:
    """Note that a change of ``delta`` replicas was applied at ``now`` (starts the cool-downs;
    HPA's policies count the changes made in their period)."""
    history.last_change = now
    if delta:
        history.changes.append((now, delta))
    while history.changes and history.changes[0][0] < now - MAX_PERIOD:
        history.changes.popleft()
