"""The pure scaling policy driven by a simulated load (demand spread over the current replicas)."""

from __future__ import annotations

import math
import random

import pytest

from fastflow.scaler.policy import (
    BYTES_IN,
    BYTES_OUT,
    CPU,
    History,
    Policy,
    PolicyError,
    Telemetry,
    decide,
    record_change,
)


def tel(replicas: int, util: float | None, nbytes: float = 0.0, age: float = 1.0,
        names: bool = True) -> Telemetry:
    hosts = {f"web.{i + 1}.task{i}": age for i in range(replicas)}
    values = {BYTES_IN: nbytes / 2, BYTES_OUT: nbytes / 2}
    if util is not None:
        values[CPU] = util
    return Telemetry(containers=hosts, values=values, running=replicas,
                     task_names=set(hosts) if names else None)


def simulate(policy: Policy, demand: list[float], start: int = 1, dt: float = 2.0,
             noise: float = 0.0, seed: int = 1) -> list[int]:
    """Replicas after each tick; utilisation per container = demand / replicas (capped at 100)."""
    rng = random.Random(seed)
    h = History()
    cur = start
    out = []
    for i, d in enumerate(demand):
        now = i * dt
        util = min(100.0, d / max(cur, 1)) * (1 + rng.uniform(-noise, noise))
        dec = decide(policy, cur, tel(cur, util), now, h)
        assert policy.replicas_min <= dec.desired <= policy.replicas_max
        if dec.desired != cur:
            record_change(h, now)
            cur = dec.desired
        out.append(cur)
    return out


def pol(**kw: object) -> Policy:
    """A v0.1-style (threshold unless told) policy: these tests predate proportional mode."""
    return Policy.from_dict({"service": "web", "mode": "threshold", **kw})


def test_defaults_and_pattern() -> None:
    p = Policy.from_dict({"service": "web"})
    assert (p.replicas_min, p.replicas_max, p.mode, p.interval, p.tolerance, p.max_step) == (
        1, 10, "proportional", 2.0, 0.1, 4)
    # an elb.js-style table (thresholds given, no mode) keeps threshold mode
    assert Policy.from_dict({"service": "web", "util_max": 50}).mode == "threshold"
    p = pol()
    assert p.pattern == r"web\..*"
    assert p.staleness == 10.0  # max(3 * interval, 10)
    assert pol(interval=5).staleness == 15.0
    assert pol(staleness=3).staleness == 3.0


@pytest.mark.parametrize("bad", [
    {"replicas_min": 5, "replicas_max": 2}, {"mode": "magic"}, {"util_min": 90, "util_max": 10},
    {"interval": 0}, {"max_step": 0}, {"target": 0}, {"pattern": "("}, {"enabled": "yes"},
    {"replicas_max": 2.5}, {"tolerance": -1}, {"nonsense": 1}, {"util_max": "high"},
    {"bytes_min": 10, "bytes_max": 5}, {"util_max": float("nan")},
])
def test_bad_config(bad: dict[str, object]) -> None:
    with pytest.raises(PolicyError):
        pol(**bad)


def test_threshold_follows_ramp_up_and_down() -> None:
    p = pol(util_min=20, util_max=80, replicas_min=1, replicas_max=8)
    demand = [50.0] * 3 + [100.0 * i for i in range(1, 8) for _ in range(4)] + \
             [100.0 * i for i in range(7, 0, -1) for _ in range(4)] + [5.0] * 20
    reps = simulate(p, demand)
    assert max(reps) >= 5
    assert reps[-1] == 1
    # steps of one in threshold mode
    assert all(abs(a - b) <= 1 for a, b in zip(reps, reps[1:], strict=False))
    # monotone up while the load rises, then back down
    peak = reps.index(max(reps))
    assert reps[: peak + 1] == sorted(reps[: peak + 1])


def test_never_leaves_bounds_and_clamps_at_max() -> None:
    p = pol(mode="target", target=50, replicas_min=2, replicas_max=5, max_step=4)
    reps = simulate(p, [1000.0] * 10 + [0.0] * 10, start=2)
    assert max(reps) == 5 and min(reps) == 2
    # a +4 step from 3 would pass 5: it stops at 5 instead of being skipped
    d = decide(p, 3, tel(3, 100.0), 0.0, History())
    assert (d.action, d.desired) == ("up", 5)
    assert "clamped" in d.reason


def test_out_of_range_current_is_brought_back() -> None:
    p = pol(replicas_min=2, replicas_max=4)
    assert decide(p, 1, tel(1, None), 0, History()).desired == 2
    assert decide(p, 7, tel(7, None), 0, History()).desired == 4


@pytest.mark.parametrize("case,telemetry", [
    ("missing", Telemetry(running=3)),
    ("stale", tel(3, 5.0, age=60.0)),
    ("incomplete", Telemetry(containers={"web.1.a": 1.0, "web.2.b": 1.0},
                             values={CPU: 5.0}, running=3)),
    ("converging", Telemetry(containers={"web.1.a": 1.0, "web.2.b": 1.0}, values={CPU: 5.0},
                             running=2)),
    ("wrong names", Telemetry(containers={"web.1.a": 1.0, "web.2.b": 1.0, "web.3.zz": 1.0},
                              values={CPU: 5.0}, running=3,
                              task_names={"web.1.a", "web.2.b", "web.3.c"})),
    ("no value", Telemetry(containers={"web.1.a": 1.0, "web.2.b": 1.0, "web.3.c": 1.0},
                           values={}, running=3)),
    ("error", Telemetry(error="metrics down", running=3)),
])
def test_holds_on_bad_data(case: str, telemetry: Telemetry) -> None:
    """Low load would scale down; bad data must hold instead (never scale down for lack of data)."""
    for p in (pol(), pol(mode="target", target=60)):
        d = decide(p, 3, telemetry, 100.0, History())
        assert (d.action, d.desired) == ("hold", 3), (case, d)
        assert d.reason


def test_stale_high_load_holds_too() -> None:
    d = decide(pol(), 3, tel(3, 99.0, age=11.0), 0, History())
    assert d.action == "hold" and "stale" in d.reason


def test_no_flapping_inside_tolerance() -> None:
    p = pol(mode="target", target=60, tolerance=0.1, replicas_max=10)
    h = History()
    cur = 4
    for i in range(200):
        util = 60 * (1 + random.Random(i).uniform(-0.09, 0.09))
        d = decide(p, cur, tel(cur, util), i * 2.0, h)
        assert d.action == "hold", d


def test_threshold_hysteresis_no_flapping_on_noise() -> None:
    p = pol(util_min=20, util_max=80, replicas_max=10)
    reps = simulate(p, [150.0] * 300, start=1, noise=0.3)
    changes = sum(1 for a, b in zip(reps, reps[1:], strict=False) if a != b)
    assert changes <= 3, reps[:20]


def test_target_math() -> None:
    p = pol(mode="target", target=60, max_step=10, replicas_max=20)
    # ceil(4 * 90 / 60) = 6
    assert decide(p, 4, tel(4, 90.0), 0, History()).desired == 6
    # ceil(4 * 30 / 60) = 2
    assert decide(p, 4, tel(4, 30.0), 0, History()).desired == 2
    # ceil(3 * 61 / 60) = 4 but inside tolerance: hold
    assert decide(p, 3, tel(3, 61.0), 0, History()).desired == 3
    assert decide(p, 3, tel(3, 70.0), 0, History()).desired == math.ceil(3 * 70 / 60)
    # max_step limits a big jump
    p2 = pol(mode="target", target=10, max_step=2, replicas_max=20)
    assert decide(p2, 2, tel(2, 100.0), 0, History()).desired == 4


def test_target_on_another_metric() -> None:
    p = pol(mode="target", metric="vir_bytes_in", target=1000, replicas_max=20)
    t = tel(2, 50.0)
    t.values["vir_bytes_in"] = 3000.0
    assert decide(p, 2, t, 0, History()).desired == 6


def test_bytes_thresholds() -> None:
    p = pol(util_min=None, util_max=None, bytes_min=1000, bytes_max=1e6)
    assert decide(p, 2, tel(2, None, nbytes=2e6), 0, History()).desired == 3
    assert decide(p, 2, tel(2, None, nbytes=10), 0, History()).desired == 1
    assert decide(p, 2, tel(2, None, nbytes=5000), 0, History()).desired == 2
    # both conditions needed for down: low bytes but busy cpu holds
    p2 = pol(util_min=20, util_max=80, bytes_min=1000, bytes_max=1e6)
    assert decide(p2, 2, tel(2, 50.0, nbytes=10), 0, History()).desired == 2
    # either condition is enough for up
    assert decide(p2, 2, tel(2, 10.0, nbytes=2e6), 0, History()).desired == 3


def test_cooldowns() -> None:
    p = pol(util_min=20, util_max=80, cooldown_up=10, cooldown_down=30, replicas_max=10)
    h = History()
    record_change(h, 100.0)
    d = decide(p, 2, tel(2, 95.0), 105.0, h)
    assert d.action == "hold" and "cooldown_up" in d.reason
    assert decide(p, 2, tel(2, 95.0), 110.0, h).action == "up"
    d = decide(p, 2, tel(2, 5.0), 120.0, h)
    assert d.action == "hold" and "cooldown_down" in d.reason
    assert decide(p, 2, tel(2, 5.0), 130.0, h).action == "down"
    # the simulated ramp with cooldowns never changes more often than the cooldown allows
    reps = simulate(pol(util_min=20, util_max=80, cooldown_up=6, cooldown_down=6),
                    [400.0] * 30 + [0.0] * 30, dt=2.0)
    change_ticks = [i for i, (a, b) in enumerate(zip(reps, reps[1:], strict=False)) if a != b]
    assert all(b - a >= 3 for a, b in zip(change_ticks, change_ticks[1:], strict=False))


def test_stabilization_window() -> None:
    p = pol(mode="target", target=50, stabilization_window=20, replicas_max=10)
    h = History()
    # high load recommends 6 at t=0; a dip at t=10 recommends 2 -> held at the window's highest
    assert decide(p, 6, tel(6, 50.0), 0.0, h).action == "hold"
    d = decide(p, 6, tel(6, 10.0), 10.0, h)
    assert d.action == "hold" and "stabilization" in d.reason
    # once the high recommendation left the window the scale-down goes through
    d = decide(p, 6, tel(6, 10.0), 25.0, h)
    assert d.action == "down" and d.desired == 2
    # scale-up is never delayed by the window
    h2 = History()
    decide(p, 2, tel(2, 10.0), 0.0, h2)
    assert decide(p, 2, tel(2, 100.0), 1.0, h2).action == "up"


def test_brief_dip_does_not_flap_with_window() -> None:
    p = pol(mode="target", target=50, stabilization_window=10, replicas_max=10)
    demand = [300.0] * 10 + [30.0] * 2 + [300.0] * 10  # a 4 s dip inside a 10 s window
    reps = simulate(p, demand, start=6, dt=2.0)
    assert min(reps) == 6


def test_policy_roundtrip_and_update() -> None:
    p = pol(mode="target", target=70)
    q = Policy.from_dict({"replicas_max": 3}, p)
    assert (q.mode, q.target, q.replicas_max) == ("target", 70.0, 3)
    with pytest.raises(PolicyError):
        Policy.from_dict({"service": "other"}, p)
    assert Policy.from_dict(p.to_dict()) == p


def test_gone_tasks_are_ignored_but_running_ones_must_report() -> None:
    """After a scale-down the removed task's samples linger (stale): they must not block decisions."""
    p = pol()
    running = {"web.1.a", "web.2.b"}
    t = Telemetry(containers={"web.1.a": 1.0, "web.2.b": 1.0, "web.3.gone": 50.0},
                  values={CPU: 5.0}, running=2, task_names=running)
    assert decide(p, 2, t, 0, History()).action == "down"
    t.containers["web.2.b"] = 50.0
    d = decide(p, 2, t, 0, History())
    assert d.action == "hold" and "stale" in d.reason
    # without task names: fresh containers must equal the running count
    t2 = Telemetry(containers={"web.1.a": 1.0, "web.2.b": 1.0, "web.3.gone": 50.0},
                   values={CPU: 5.0}, running=2)
    assert decide(p, 2, t2, 0, History()).action == "down"
    t2.containers["web.2.b"] = 50.0
    assert decide(p, 2, t2, 0, History()).action == "hold"
