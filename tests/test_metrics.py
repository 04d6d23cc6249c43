"""Metrics: formulas, wrap/reset/unknown handling, aggregations against numpy, filters, queries."""

from __future__ import annotations

import math

import numpy as np
import pytest

from _engine_util import HOST_MASK, IF_MASK, Engine, container, rows
from fastflow.collector.metrics import AGGREGATIONS, METRICS, parse_metrics

T0 = 1_700_000_000.0


def two(e: Engine, index: int, cpu0: int, cpu1: int, dt_ms: int = 10_000, **kw: object) -> None:
    e.feed(container(index, 1, 10_000, cpu_ms=cpu0, **kw),  # type: ignore[arg-type]
           container(index, 2, 10_000 + dt_ms, cpu_ms=cpu1, **kw))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ formulas
def test_vir_cpu_utilization_and_rates() -> None:
    e = Engine()
    e.feed(container(1, 1, 10_000, cpu_ms=1000, rx=0, tx=100),
           container(1, 2, 20_000, cpu_ms=6000, rx=50_000, tx=100 + 20_000))
    assert e.value("vir_cpu_utilization") == pytest.approx(50.0)
    assert e.value("vir_bytes_in") == pytest.approx(5000.0)
    assert e.value("vir_bytes_out") == pytest.approx(2000.0)
    assert e.value("vir_memory") == 1 << 20
    assert e.value("vir_memory_utilization") == pytest.approx(25.0)
    assert e.value("vir_cpu_state") == "running"
    assert e.value("vir_host_name") == "web.1.abc"


def test_one_sample_gives_gauges_but_no_rates() -> None:
    e = Engine()
    e.feed(container(1, 1, 10_000, cpu_ms=1000))
    assert e.value("vir_cpu_utilization") is None
    assert e.metrics.query("ALL", "vir_cpu_utilization")[0]["metricN"] == 0
    assert e.value("vir_memory") == 1 << 20


def test_dt_falls_back_to_arrival_time_without_uptime() -> None:
    e = Engine()
    e.feed(container(1, 1, 0, cpu_ms=0, ts=T0), container(1, 2, 0, cpu_ms=2500, ts=T0 + 10))
    assert e.value("vir_cpu_utilization") == pytest.approx(25.0)


def test_cpu_time_u32_wrap() -> None:
    e = Engine()
    before = 2**32 - 2000
    two(e, 1, before, 3000)                                    # +5000 ms across the wrap in 10 s
    assert e.value("vir_cpu_utilization") == pytest.approx(50.0)


def test_agent_uptime_u32_wrap_is_not_a_restart() -> None:
    e = Engine()
    up0 = 2**32 - 4000                                        # 49.7 days of agent uptime
    e.feed(container(1, 1, up0, cpu_ms=1000, ts=T0), container(1, 2, 6000, cpu_ms=6000, ts=T0 + 10))
    assert e.store.counts["reset"] == 0
    assert e.value("vir_cpu_utilization") == pytest.approx(50.0)


def test_counter_backwards_is_a_reset_not_a_huge_or_negative_rate() -> None:
    e = Engine()
    two(e, 1, 500_000, 1_000)             # cgroup recreated: cpu time back to ~0
    assert e.value("vir_cpu_utilization") is None
    e2 = Engine()
    e2.feed(container(1, 1, 10_000, rx=10**9), container(1, 2, 20_000, rx=5))  # u64 backwards
    assert e2.value("vir_bytes_in") is None
    # the next sample after the reset gives a rate again
    e.feed(container(1, 3, 30_000, cpu_ms=3_000))
    assert e.value("vir_cpu_utilization") == pytest.approx(20.0)


def test_u32_counter_wrap_vs_reset() -> None:
    e = Engine()
    e.feed(container(1, 1, 10_000, vnet_rx_packets=2**32 - 10),
           container(1, 2, 20_000, vnet_rx_packets=90))
    assert e.value("vir_packets_in") == pytest.approx(10.0)   # 100 packets in 10 s
    e.feed(container(1, 3, 30_000, vnet_rx_packets=50))       # backwards by 40: reset
    assert e.value("vir_packets_in") is None


def test_agent_restart_gives_no_value_until_two_new_samples() -> None:
    e = Engine()
    e.feed(container(1, 100, 900_000, cpu_ms=400_000, ts=T0),
           container(1, 101, 910_000, cpu_ms=405_000, ts=T0 + 10))
    assert e.value("vir_cpu_utilization") == pytest.approx(50.0)
    e.feed(container(1, 1, 3_000, cpu_ms=100, ts=T0 + 20))   # agent rebooted
    assert e.value("vir_cpu_utilization") is None
    e.feed(container(1, 2, 13_000, cpu_ms=1100, ts=T0 + 30))
    assert e.value("vir_cpu_utilization") == pytest.approx(10.0)


def test_duplicated_datagrams_do_not_corrupt_rates() -> None:
    e = Engine()
    a = container(1, 1, 10_000, cpu_ms=1000)
    b = container(1, 2, 20_000, cpu_ms=4000)
    e.feed(a, b, dict(b), dict(b))
    assert e.value("vir_cpu_utilization") == pytest.approx(30.0)
    assert e.store.counts["duplicate"] == 2


def test_reordered_datagrams_do_not_corrupt_rates() -> None:
    e = Engine()
    s1 = container(1, 1, 10_000, cpu_ms=1000)
    s2 = container(1, 2, 20_000, cpu_ms=2000)
    s3 = container(1, 3, 30_000, cpu_ms=5000)
    s2["ts"] = s3["ts"] + 0.5                                 # s2 delayed behind s3
    e.feed(s1, s3, s2)
    assert e.store.counts["reordered"] == 1
    assert e.value("vir_cpu_utilization") == pytest.approx(20.0)   # (5000-1000)/20 s


def test_all_ones_unknown_values_left_out() -> None:
    e = Engine()
    e.feed(container(1, 1, 10_000, vmem_memory=2**64 - 1, vnet_rx_bytes=2**64 - 1),
           container(1, 2, 20_000, vmem_memory=2**64 - 1, vnet_rx_bytes=2**64 - 1),
           container(2, 1, 10_000, vmem_memory=1000),
           container(2, 2, 20_000, vmem_memory=3000))
    r = e.metrics.query("ALL", "avg:vir_memory,avg:vir_bytes_in")
    assert r[0]["metricN"] == 1 and r[0]["metricValue"] == 3000
    assert r[1]["metricN"] == 1 and r[1]["metricValue"] == 0.0


def test_host_metrics() -> None:
    e = Engine()
    base = {"agent": 1, "source_id": 2 << 24 | 1, "mask": HOST_MASK, "hostname": 4,
            "machine_type": 3, "os_name": 2, "os_release": 1, "mem_total": 1000, "mem_free": 100,
            "mem_buffers": 100, "mem_cached": 300, "load_one": 0.5, "cpu_num": 2,
            "disk_total": 200, "disk_free": 50, "part_max_used": 6890}
    s1 = dict(base, sequence_number=1, uptime=10_000, ts=T0 + 10, cpu_user=1000, cpu_idle=1000,
              cpu_system=0, bytes_in=0)
    s2 = dict(base, sequence_number=2, uptime=20_000, ts=T0 + 20, cpu_user=1600, cpu_idle=1200,
              cpu_system=200, bytes_in=10_000)
    e.add(rows(s1))
    e.add(rows(s2))
    assert e.value("host_name") == "vm"
    assert e.value("machine_type") == "x86_64" and e.value("os_name") == "linux"
    assert e.value("mem_utilization") == pytest.approx(50.0)
    assert e.value("cpu_utilization") == pytest.approx(80.0)   # idle 200 of 1000
    assert e.value("cpu_user") == pytest.approx(60.0)
    assert e.value("load_one") == pytest.approx(0.5)
    assert e.value("bytes_in") == pytest.approx(1000.0)
    assert e.value("disk_utilization") == pytest.approx(75.0)
    assert e.value("part_max_used") == pytest.approx(68.9)
    # containers don't count as hosts and vice versa
    assert e.metrics.query("ALL", "vir_host_name")[0]["metricN"] == 0


def test_interface_metrics_with_unknown_parts() -> None:
    e = Engine()
    base = {"agent": 1, "source_id": 5, "mask": IF_MASK, "if_index": 5, "if_speed": 10**9,
            "if_status": 3, "if_in_multicast_pkts": 2**32 - 1, "if_in_broadcast_pkts": 2**32 - 1}
    e.add(rows(dict(base, sequence_number=1, uptime=10_000, ts=T0 + 10, if_in_octets=0,
                    if_in_ucast_pkts=0)))
    e.add(rows(dict(base, sequence_number=2, uptime=20_000, ts=T0 + 20,
                    if_in_octets=125_000_000 * 10, if_in_ucast_pkts=1000)))
    assert e.value("ifinoctets") == pytest.approx(125_000_000)
    assert e.value("ifinutilization") == pytest.approx(100.0)
    assert e.value("ifinpkts") == pytest.approx(100.0)           # unknown multicast/broadcast out
    assert e.value("ifinmulticastpkts") is None
    assert e.value("ifoperstatus") == "up" and e.value("ifadminstatus") == "up"
    assert e.value("ifindex") == 5
    assert e.metrics.dump("ALL", "ifinoctets")[0]["dataSource"] == "5"


# ------------------------------------------------------------------------------ aggregation
@pytest.fixture()
def fleet() -> tuple[Engine, np.ndarray]:
    """Seven containers with known cpu utilizations (different hosts/states)."""
    e = Engine()
    utils = np.array([10.0, 55.0, 3.0, 90.0, 47.5, 47.5, 20.0])
    names = [1, 1, 2, 2, 3, 3, 1]
    states = [1, 1, 1, 2, 1, 3, 1]
    for i, u in enumerate(utils):
        e.feed(container(i, 1, 10_000, cpu_ms=0, hostname=names[i], state=states[i], agent=1 + i % 2),
               container(i, 2, 20_000, cpu_ms=int(u * 100), hostname=names[i], state=states[i],
                         agent=1 + i % 2))
    return e, utils


@pytest.mark.parametrize("prefix", AGGREGATIONS)
def test_each_aggregation_against_numpy(fleet: tuple[Engine, np.ndarray], prefix: str) -> None:
    e, x = fleet
    expect = {
        "max": x.max(), "min": x.min(), "sum": x.sum(), "avg": x.mean(), "var": x.var(),
        "sdev": x.std(), "med": np.median(x), "q1": np.percentile(x, 25),
        "q2": np.percentile(x, 50), "q3": np.percentile(x, 75),
        "iqr": np.percentile(x, 75) - np.percentile(x, 25)}
    r = e.metrics.query("ALL", f"{prefix}:vir_cpu_utilization")[0]
    assert r["metricN"] == len(x)
    assert r["metricName"] == f"{prefix}:vir_cpu_utilization"
    if prefix == "any":
        assert r["metricValue"] in x.tolist()
    else:
        assert r["metricValue"] == pytest.approx(float(expect[prefix]))
    if prefix in ("max", "min", "any"):
        assert r["agent"] in ("192.0.2.1", "192.0.2.2") and r["dataSource"].startswith("3.")
    for k in ("lastUpdate", "lastUpdateMax", "lastUpdateMin"):
        assert isinstance(r[k], int) and r[k] >= 0


def test_default_prefix_is_max_and_holder_reported(fleet: tuple[Engine, np.ndarray]) -> None:
    e, x = fleet
    r = e.metrics.query("ALL", "vir_cpu_utilization")[0]
    assert r["metricValue"] == pytest.approx(90.0)
    assert r["dataSource"] == "3.3" and r["agent"] == "192.0.2.2"


def test_filters(fleet: tuple[Engine, np.ndarray]) -> None:
    e, x = fleet
    q = e.metrics.query
    # anchored: "web" alone matches nothing, "web.*" the web containers (names 1, 2)
    assert q("ALL", "sum:vir_cpu_utilization", {"vir_host_name": ["web"]})[0]["metricN"] == 0
    r = q("ALL", "sum:vir_cpu_utilization", {"vir_host_name": ["web.*"]})[0]
    assert r["metricN"] == 5 and r["metricValue"] == pytest.approx(x[[0, 1, 2, 3, 6]].sum())
    # several patterns are OR; "\\." is an escaped (literal) dot, as in the seed's "apache\\.*"
    r = q("ALL", "sum:vir_cpu_utilization", {"vir_host_name": ["web\\.1.*", "db.*"]})[0]
    assert r["metricN"] == 5 and r["metricValue"] == pytest.approx(10 + 55 + 20 + 47.5 + 47.5)
    # a plain string is one pattern
    assert q("ALL", "vir_cpu_utilization", {"vir_host_name": "db.*"})[0]["metricN"] == 2
    # state filter (text from the virDomainState code)
    r = q("ALL", "avg:vir_cpu_utilization", {"vir_cpu_state": ["running"]})[0]
    assert r["metricN"] == 5
    r = q("ALL", "max:vir_cpu_utilization",
          {"vir_host_name": ["web.*"], "vir_cpu_state": ["blocked", "paused"]})[0]
    assert r["metricN"] == 1 and r["metricValue"] == pytest.approx(90.0)
    # numeric filter on another metric of the same data source
    assert q("ALL", "vir_cpu_utilization", {"vir_cpu_count": ["1"]})[0]["metricN"] == 7
    assert q("ALL", "vir_cpu_utilization", {"vir_cpu_count": ["2"]})[0]["metricN"] == 0
    # agents
    r = q("192.0.2.1", "sum:vir_cpu_utilization")[0]
    assert r["metricN"] == 4 and r["metricValue"] == pytest.approx(x[::2].sum())
    assert q("192.0.2.1;192.0.2.2", "vir_cpu_utilization")[0]["metricN"] == 7
    assert q("198.51.100.9", "vir_cpu_utilization")[0]["metricN"] == 0
    # repeated query hits the match cache and gives the same answer
    r2 = q("ALL", "sum:vir_cpu_utilization", {"vir_host_name": ["web.*"]})[0]
    assert r2["metricN"] == 5


def test_bad_requests_raise_valueerror(fleet: tuple[Engine, np.ndarray]) -> None:
    e, _ = fleet
    with pytest.raises(ValueError, match="unknown metric"):
        e.metrics.query("ALL", "avg:no_such_metric")
    with pytest.raises(ValueError, match="aggregation"):
        e.metrics.query("ALL", "mean:vir_cpu_utilization")
    with pytest.raises(ValueError, match="numeric"):
        e.metrics.query("ALL", "avg:vir_host_name")
    with pytest.raises(ValueError, match="filter"):
        e.metrics.query("ALL", "vir_cpu_utilization", {"nope": ["x"]})
    with pytest.raises(ValueError, match="pattern"):
        e.metrics.query("ALL", "vir_cpu_utilization", {"vir_host_name": ["x" * 600]})
    # regex syntax is literal text in a glob: no error, no match
    assert e.metrics.query("ALL", "vir_cpu_utilization",
                           {"vir_host_name": ["(unclosed"]})[0]["metricN"] == 0
    with pytest.raises(ValueError, match="unknown metric"):
        e.metrics.dump("ALL", "no_such_metric")
    with pytest.raises(ValueError):
        parse_metrics("")


def test_text_metric_aggregations(fleet: tuple[Engine, np.ndarray]) -> None:
    e, _ = fleet
    assert e.value("max:vir_host_name") == "web.2.def"
    assert e.value("min:vir_host_name") == "db.1.xyz"
    assert e.value("any:vir_cpu_state") in ("running", "blocked", "paused")


def test_expired_containers_do_not_count() -> None:
    e = Engine(expire_after=30.0)
    two(e, 1, 0, 5000)
    e.feed(container(2, 1, 10_000, cpu_ms=0, ts=T0 + 10), container(2, 2, 20_000, cpu_ms=1000,
                                                                     ts=T0 + 20))
    e.feed(container(2, 3, 45_000, cpu_ms=3500, ts=T0 + 45))   # container 1 silent since T0+20
    assert e.metrics.query("ALL", "avg:vir_cpu_utilization")[0]["metricN"] == 2
    e.clock.set(T0 + 51)                                       # 31 s after container 1's last
    r = e.metrics.query("ALL", "avg:vir_cpu_utilization")[0]
    assert r["metricN"] == 1 and r["metricValue"] == pytest.approx(10.0)


def test_dump_and_names(fleet: tuple[Engine, np.ndarray]) -> None:
    e, x = fleet
    d = e.metrics.dump("ALL", "vir_cpu_utilization,vir_host_name", {"vir_host_name": ["db.*"]})
    assert {(r["metricName"], r["dataSource"]) for r in d} == {
        ("vir_cpu_utilization", "3.4"), ("vir_cpu_utilization", "3.5"),
        ("vir_host_name", "3.4"), ("vir_host_name", "3.5")}
    for r in d:
        assert r["hostName"] == "db.1.xyz" and r["agent"] in ("192.0.2.1", "192.0.2.2")
    n = e.metrics.names()
    assert "vir_cpu_utilization" in n and "load_one" not in n
    assert all(isinstance(v, int) and v >= 0 for v in n.values())
    assert set(n) <= set(METRICS)


def test_cache_follows_store_generation() -> None:
    e = Engine()
    two(e, 1, 0, 1000)
    assert e.value("vir_cpu_utilization") == pytest.approx(10.0)
    e.feed(container(1, 3, 30_000, cpu_ms=4000))
    assert e.value("vir_cpu_utilization") == pytest.approx(30.0)


def test_nan_never_reported() -> None:
    e = Engine()
    e.feed(container(1, 1, 10_000, vmem_max_memory=0), container(1, 2, 20_000, vmem_max_memory=0))
    r = e.metrics.query("ALL", "avg:vir_memory_utilization")[0]
    assert r["metricN"] == 0 and "metricValue" not in r
    for m in ("vir_cpu_utilization", "vir_bytes_in", "vir_memory"):
        v = e.value(m)
        assert v is None or math.isfinite(v)
