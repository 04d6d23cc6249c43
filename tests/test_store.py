"""Store: key slots, ring order, growth, duplicates / reordering / resets, expiry (hand-made tables)."""

from __future__ import annotations

import numpy as np
import pytest

from _engine_util import Engine, container, rows
from fastflow.collector.metrics import Metrics
from fastflow.collector.store import Store


@pytest.fixture(autouse=True, params=["compiled", "pure"])
def kernel(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs against the compiled write kernel and its pure-Python twin."""
    monkeypatch.setenv("FASTFLOW_PURE_PYTHON", "1" if request.param == "pure" else "0")
    return str(request.param)


def test_rejects_bad_config() -> None:
    with pytest.raises(ValueError, match="depth"):
        Store(depth=1)
    with pytest.raises(ValueError, match="expire_after"):
        Store(expire_after=0)


def test_samples_in_order_and_ring_wraps() -> None:
    e = Engine(depth=4)
    e.feed(*[container(7, seq=i, uptime_ms=1000 * i, cpu_ms=10 * i) for i in range(1, 8)])
    h = e.store.history(1, 3 << 24 | 7, "virt")
    assert h["seq"].tolist() == [4, 5, 6, 7]                 # the last `depth` samples, oldest first
    assert h["vcpu_cpu_time"].tolist() == [40, 50, 60, 70]
    assert len(e.store) == 1
    assert e.store.counts["accepted"] == 7


def test_several_samples_of_one_key_in_one_batch_keep_order() -> None:
    e = Engine()
    t = rows(container(1, 1, 1000, cpu_ms=1), container(2, 1, 1000, cpu_ms=5),
             container(1, 2, 2000, cpu_ms=2), container(1, 3, 3000, cpu_ms=3),
             container(2, 2, 2000, cpu_ms=6))
    e.add(t)
    assert e.store.history(1, 3 << 24 | 1, "virt")["vcpu_cpu_time"].tolist() == [1, 2, 3]
    assert e.store.history(1, 3 << 24 | 2, "virt")["vcpu_cpu_time"].tolist() == [5, 6]


def test_growth_by_doubling_keeps_data() -> None:
    e = Engine()
    e.store = Store(clock=e.clock, capacity=2)
    n = 1000
    t = rows(*[container(i, 1, 1000, cpu_ms=i) for i in range(n)])
    e.add(t)
    t2 = rows(*[container(i, 2, 2000, cpu_ms=2 * i) for i in range(n)])
    e.add(t2)
    assert len(e.store) == n
    assert e.store.rings["virt"].capacity >= n
    for i in (0, 1, 517, 999):
        assert e.store.history(1, 3 << 24 | i, "virt")["vcpu_cpu_time"].tolist() == [i, 2 * i]


def test_sub_agent_ignored_and_agents_distinct() -> None:
    e = Engine()
    e.feed(container(1, 1, 1000, sub_agent_id=5), container(1, 2, 2000, sub_agent_id=6),
           container(1, 1, 1000, agent=2))
    assert len(e.store) == 2
    assert len(e.store.history(1, 3 << 24 | 1, "virt")) == 2


def test_duplicate_dropped_and_counted() -> None:
    e = Engine()
    a = container(1, 5, 5000, cpu_ms=100)
    e.feed(container(1, 4, 4000, cpu_ms=50), a, dict(a))
    assert e.store.counts["duplicate"] == 1
    assert len(e.store.history(1, 3 << 24 | 1, "virt")) == 2
    # duplicate inside one batch too
    b = container(1, 6, 6000, cpu_ms=150)
    e.add(rows(b, b))
    assert e.store.counts["duplicate"] == 2
    assert e.store.history(1, 3 << 24 | 1, "virt")["seq"].tolist() == [4, 5, 6]


def test_reordered_dropped_and_counted() -> None:
    e = Engine()
    e.feed(container(1, 1, 1000), container(1, 3, 3000))
    late = container(1, 2, 2000, ts=1_700_000_003.5)   # arrives after seq 3
    e.feed(late)
    assert e.store.counts["reordered"] == 1
    assert e.store.counts["reset"] == 0
    assert e.store.history(1, 3 << 24 | 1, "virt")["seq"].tolist() == [1, 3]


def test_agent_restart_resets_the_data_source() -> None:
    e = Engine()
    e.feed(container(1, 100, 500_000, ts=1_700_000_500.0),
           container(1, 101, 510_000, ts=1_700_000_510.0))
    e.feed(container(1, 1, 2000, ts=1_700_000_520.0))        # uptime far backwards: restart
    assert e.store.counts["reset"] == 1
    assert e.store.history(1, 3 << 24 | 1, "virt")["seq"].tolist() == [1]
    e.feed(container(1, 2, 12000, ts=1_700_000_530.0))
    assert e.store.history(1, 3 << 24 | 1, "virt")["seq"].tolist() == [1, 2]


def test_repeated_backwards_samples_become_a_reset() -> None:
    """A restart that looks like reordering (short uptime) is not dropped forever."""
    e = Engine()
    e.feed(container(1, 10, 20_000), container(1, 11, 22_000))
    for i in range(1, 6):
        e.feed(container(1, i, 1000 * i, ts=1_700_000_030.0 + i))
    h = e.store.history(1, 3 << 24 | 1, "virt")
    assert h["seq"].tolist()[-1] == 5
    assert e.store.counts["reset"] == 1 and e.store.counts["reordered"] == 3


def test_sequence_restart_with_uptime_forwards_is_reset() -> None:
    e = Engine()
    e.feed(container(1, 50, 10_000), container(1, 51, 12_000), container(1, 1, 14_000))
    assert e.store.counts["reset"] == 1
    assert e.store.history(1, 3 << 24 | 1, "virt")["seq"].tolist() == [1]


def test_same_uptime_later_sequence_replaces_newest() -> None:
    """hsflowd can put two polls of one container in a datagram (same uptime): keep the later."""
    e = Engine()
    e.feed(container(1, 1, 1000, cpu_ms=1))
    e.add(rows(container(1, 2, 3000, cpu_ms=5), container(1, 3, 3000, cpu_ms=6)))
    h = e.store.history(1, 3 << 24 | 1, "virt")
    assert h["seq"].tolist() == [1, 3] and h["vcpu_cpu_time"].tolist() == [1, 6]


def test_expiry_frees_and_reuses_slots() -> None:
    e = Engine(expire_after=30.0)
    t0 = 1_700_000_000.0
    e.feed(container(1, 1, 1000, ts=t0), container(2, 1, 1000, ts=t0))
    assert len(e.store) == 2
    e.feed(container(1, 2, 41_000, ts=t0 + 40))             # container 2 silent for 40 s
    assert len(e.store) == 1
    assert e.store.counts["expired"] == 1
    assert e.store.fresh().sum() == 1
    assert len(e.store.rings["virt"].used_rows()) == 1
    e.feed(container(3, 1, 1000, ts=t0 + 41))
    assert len(e.store) == 2
    assert e.store._compact()                                # holes go, the tables shrink
    assert e.store.rings["virt"].n_rows == 2 and e.store.n_keys == 2
    assert e.store.history(1, 3 << 24 | 3, "virt")["seq"].tolist() == [1]
    assert e.store.history(1, 3 << 24 | 1, "virt")["seq"].tolist() == [1, 2]
    # container 2 comes back: a fresh data source with no history
    e.feed(container(2, 9, 50_000, ts=t0 + 50))
    assert e.store.history(1, 3 << 24 | 2, "virt")["seq"].tolist() == [9]


def test_fresh_follows_the_clock_without_writes() -> None:
    e = Engine(expire_after=30.0)
    e.feed(container(1, 1, 1000, ts=1_700_000_000.0))
    e.clock.set(1_700_000_029.0)
    assert e.store.fresh().tolist() == [True]
    e.clock.set(1_700_000_031.0)
    assert e.store.fresh().tolist() == [False]


def test_groups_only_hold_their_records() -> None:
    e = Engine()
    e.feed(container(1, 1, 1000))
    assert e.store.rings["virt"].n_rows == 1
    assert e.store.rings["host"].n_rows == 0 and e.store.rings["if"].n_rows == 0
    st = e.store.stats()
    assert st["data_sources"] == 1 and st["bytes"] > 0


def test_empty_batch_is_fine() -> None:
    e = Engine()
    e.add(rows())
    assert len(e.store) == 0
    assert np.all(e.store.fresh() == np.zeros(0, bool))


# ------------------------------------------------------------------ one batch == row by row
def _state(e: Engine) -> dict[str, object]:
    """Everything the store holds per data source (by key, not by slot / row number)."""
    s = e.store
    out: dict[str, object] = {"counts": dict(s.counts), "n": len(s)}
    for slot in range(s.n_keys):
        if not s.k["alive"][slot]:
            continue
        key = (int(s.k["agent"][slot]), int(s.k["source_id"][slot]))
        out[f"{key} key"] = [(col, s.k[col][slot].item()) for col, _dt in Store._KEY_COLUMNS]
        for g, ring in s.rings.items():
            row = s.row_of(g, slot)
            if row < 0:
                out[f"{key} {g}"] = None
                continue
            out[f"{key} {g}"] = (
                int(ring.count[row]), int(ring.head[row]),
                [(col, ring.data[col][:, row].tolist(), ring.last[col][row].item(),
                  ring.prev[col][row].item()) for col, _dt in ring.columns])
    return out


def _batch_vs_rows(samples: list[dict[str, object]], depth: int, splits: int = 1) -> None:
    """Feeding ``samples`` as ``splits`` batches leaves the store exactly as one row per batch."""
    one = Engine(depth=depth, expire_after=1e6)
    for part in np.array_split(np.arange(len(samples)), splits):
        one.add(rows(*[samples[i] for i in part]))
    each = Engine(depth=depth, expire_after=1e6)
    each.feed(*samples)
    assert _state(one) == _state(each)


def test_one_batch_with_a_source_repeated_500_times_equals_row_by_row() -> None:
    t0 = 1_700_000_000.0
    s: list[dict[str, object]] = []
    for i in range(1, 501):
        if i == 120:                                          # duplicate of the newest
            s.append(dict(s[-1]))
        if i == 200:                                          # late sample: reordered
            s.append(container(1, i - 3, 1000 * (i - 3), cpu_ms=-1 % 2**32, ts=t0 + i))
        if i == 250:                                          # same uptime, later sequence number
            s.append(container(1, i, 1000 * (i - 1), cpu_ms=7 * i, ts=t0 + i - 0.5))
            continue
        if i >= 300:                                          # agent restart at 300
            s.append(container(1, i - 299, 1000 * (i - 299), cpu_ms=5 * i, ts=t0 + i + 1))
        else:
            s.append(container(1, i, 1000 * i, cpu_ms=5 * i, ts=t0 + i))
        if i % 50 == 0:                                       # another source, now and then
            s.append(container(2, i, 1000 * i, ts=t0 + i))
    _batch_vs_rows(s, depth=32)
    e = Engine(expire_after=1e6)
    e.add(rows(*s))
    assert e.store.counts["duplicate"] == 1
    assert e.store.counts["reordered"] == 1
    assert e.store.counts["reset"] == 1
    assert e.store.history(1, 3 << 24 | 1, "virt")["seq"].tolist() == list(range(170, 202))


def _messy(rng: np.random.Generator, n: int, sources: int) -> list[dict[str, object]]:
    """Samples of a few sources with duplicates, late samples, restarts, same-uptime polls,
    uptime wrap-around, several record groups and host_descr only now and then."""
    from _engine_util import HOST_MASK, VIRT_MASK

    state = {i: [int(rng.integers(0, 2**32)), int(rng.integers(0, 2**32)), 0] for i in
             range(sources)}
    hist: dict[int, list[dict[str, object]]] = {i: [] for i in range(sources)}
    out: list[dict[str, object]] = []
    for j in range(n):
        i = int(rng.integers(sources))
        seq, up, _ = state[i]
        r = rng.random()
        ts = 1_700_000_000.0 + j * 0.1
        if r < 0.08 and hist[i]:
            d = dict(hist[i][-1])                                 # duplicate
        elif r < 0.2 and len(hist[i]) > 2:                        # late (maybe far too late)
            d = dict(hist[i][-int(rng.integers(2, len(hist[i]) + 1))])
            d["ts"] = ts
        else:
            if r < 0.26:                                          # restart
                seq, up = int(rng.integers(0, 50)), int(rng.integers(0, 5000))
            elif r < 0.3:                                         # second poll, same uptime
                seq = (seq + 1) % 2**32
            elif r < 0.32:                                        # sequence restart only
                seq, up = int(rng.integers(0, 5)), (up + 1000) % 2**32
            else:
                seq = (seq + int(rng.integers(1, 3))) % 2**32
                up = (up + int(rng.integers(0, 3)) * 1000) % 2**32
            mask = int(rng.choice([VIRT_MASK, VIRT_MASK & ~1, HOST_MASK, VIRT_MASK | HOST_MASK]))
            d = container(i, seq, up, cpu_ms=j, rx=j * 3, ts=ts, hostname=j % 5, mask=mask,
                          agent=1 + i % 2)
            state[i] = [seq, up, 0]
            hist[i].append(d)
        out.append(d)
    return out


@pytest.mark.parametrize("seed", range(12))
def test_messy_batches_equal_row_by_row(seed: int) -> None:
    rng = np.random.default_rng(seed)
    samples = _messy(rng, 400, sources=1 + seed % 4)
    _batch_vs_rows(samples, depth=4, splits=1 + seed % 3)


def test_two_agents_sharing_a_source_id_in_one_batch() -> None:
    """Interleaved sequence numbers: a restart on nearly every row (the one-row-at-a-time path)."""
    s = []
    for i in range(200):
        s.append(container(1, 1000 + i, 500_000 + 1000 * i, cpu_ms=i))
        s.append(container(1, 10 + i, 20_000 + 1000 * i, cpu_ms=2 * i))
    _batch_vs_rows(s, depth=8)


# ------------------------------------------------------------------ bounds and robust inputs
def test_compiled_kernel_is_used_unless_pure_python(kernel: str) -> None:
    assert Store().compiled == (kernel == "compiled")


def test_cap_refuses_new_sources_counts_and_evicts_the_stalest() -> None:
    e = Engine(expire_after=1e6)
    e.store = Store(clock=e.clock, max_sources=32, expire_after=1e6)
    t0 = 1_700_000_000.0
    e.clock.set(t0)
    e.store.tick()                                      # housekeeping done for this second
    e.add(rows(*[container(i, 1, 1000, ts=t0 + i * 0.01) for i in range(40)]))
    assert len(e.store) == 32
    assert e.store.counts["rejected"] == 8 and e.store.refusals()["store_full"] == 8
    assert e.store.slot_of(1, 3 << 24 | 35) is None
    e.clock.set(t0 + 2)
    e.store.tick()                                      # housekeeping: stalest 1/16 evicted
    assert e.store.counts["evicted"] == 2 and len(e.store) == 30
    assert e.store.slot_of(1, 3 << 24 | 0) is None and e.store.slot_of(1, 3 << 24 | 1) is None
    assert e.store.slot_of(1, 3 << 24 | 2) is not None
    e.add(rows(container(35, 1, 1000, ts=t0 + 2)))      # room again
    assert e.store.slot_of(1, 3 << 24 | 35) is not None
    assert e.store.stats()["max_sources"] == 32


def test_capacity_stays_near_the_cap_and_memory_comes_back_after_expiry() -> None:
    e = Engine(expire_after=10.0)
    e.store = Store(clock=e.clock, max_sources=5000, expire_after=10.0)
    e.metrics = Metrics(e.store)
    t0 = 1_700_000_000.0
    e.add(rows(*[container(i, 1, 1000, ts=t0) for i in range(8000)]))
    assert len(e.store) == 5000 - 5000 // 16 and e.store.counts["evicted"] == 5000 // 16
    assert e.store._kcap <= 5000 + 64
    assert e.store.rings["virt"].capacity <= 5000 + 64
    peak = e.store.nbytes()
    e.add(rows(container(9000, 1, 1000, ts=t0 + 20)))   # the others expire; tables shrink
    assert len(e.store) == 1 and e.store.counts["expired"] == 5000 - 5000 // 16
    assert e.store.nbytes() < peak / 20
    assert e.store.history(1, 3 << 24 | 9000, "virt")["seq"].tolist() == [1]
    e.add(rows(container(9000, 2, 11_000, cpu_ms=500, ts=t0 + 30)))
    assert e.value("vir_cpu_utilization") == pytest.approx(5.0)


def test_tick_expires_without_traffic() -> None:
    e = Engine(expire_after=5.0)
    e.feed(container(1, 1, 1000, ts=1_700_000_000.0))
    e.clock.set(1_700_000_010.0)
    e.store.tick()
    assert len(e.store) == 0 and e.store.counts["expired"] == 1


def test_uptime_slower_than_arrival_is_a_reset_not_a_huge_rate() -> None:
    """Issue #11 attack 10: uptime advancing 1 ms per 10 s of arrival time."""
    e = Engine(depth=4)
    t0 = 1_700_000_000.0
    for i in range(4):
        e.feed(container(1, 1 + i, 50_000 + i, cpu_ms=1000 * i, ts=t0 + 10 * i))
    assert e.value("vir_cpu_utilization") is None
    assert e.store.counts["uptime_mismatch"] == 3 and e.store.counts["reset"] == 3
    assert len(e.store.history(1, 3 << 24 | 1, "virt")) == 1
    # an honest agent next to it: uptime and arrival agree (jitter well inside the slack)
    for i in range(3):
        e.feed(container(2, 1 + i, 50_000 + 10_000 * i, cpu_ms=5000 * i, ts=t0 + 10 * i + 0.9 * (i % 2)))
    assert e.value("vir_cpu_utilization") == pytest.approx(50.0)
    assert e.store.counts["uptime_mismatch"] == 3


def test_uptime_faster_than_arrival_is_kept_for_replays_at_speed() -> None:
    e = Engine()
    t0 = 1_700_000_000.0
    e.feed(container(1, 1, 10_000, cpu_ms=0, ts=t0), container(1, 2, 20_000, cpu_ms=5000, ts=t0 + 0.01))
    assert e.value("vir_cpu_utilization") == pytest.approx(50.0)
    assert e.store.counts["uptime_mismatch"] == 0


def test_sequence_wrap_is_not_a_reset() -> None:
    e = Engine()
    t0 = 1_700_000_000.0
    e.feed(container(1, 0xFFFFFFFF, 10_000, cpu_ms=0, ts=t0),
           container(1, 0, 20_000, cpu_ms=2000, ts=t0 + 10))
    assert e.store.counts["reset"] == 0
    assert e.value("vir_cpu_utilization") == pytest.approx(20.0)


@pytest.mark.parametrize("seed", range(4))
def test_compaction_keeps_every_live_source_exactly(seed: int) -> None:
    """Compacting (slots and rows renumbered, tables reallocated) changes nothing a reader sees."""
    rng = np.random.default_rng(seed)
    samples = _messy(rng, 300, sources=6)
    plain = Engine(depth=4, expire_after=1e6)
    packed = Engine(depth=4, expire_after=1e6)
    for j, s in enumerate(samples):
        plain.add(rows(s))
        packed.add(rows(s))
        if j % 37 == 5:                                     # a source leaves now and then
            for e in (plain, packed):
                slot = e.store.slot_of(1 + j % 2, 3 << 24 | (j % 6))
                if slot is not None:
                    e.store._release(np.array([slot]))
        if j % 23 == 0:
            packed.store._compact()
    packed.store._compact()
    a, b = _state(plain), _state(packed)
    assert a == b
