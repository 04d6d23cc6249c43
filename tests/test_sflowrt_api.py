"""sFlow-RT compatibility of the REST API, pinned against sFlow-RT's documentation.

Sources (sflow-rt.com/reference.php, the REST API explorer's api.yml, the sflow-rt/prometheus app):
* ``/metric/{agent}/{metric}/json``: filters are query parameters, e.g. ``host_name=*web.*``
  (globs); prefixes max/min/sum/avg/var/sdev/med/q1/q2/q3/iqr/any.
* ``/table/{agent}/{metric}/json``: "prefixing a metric name with the token sort:, e.g.
  sort:load_one:-10 sorts the table by load_one in reverse order (largest to smallest value) and
  truncates at 10 values".
* ``/prometheus/metrics/{agent}/{metric}/txt`` example:
  ``sflow_ifinoctets{agent="192.168.0.11",datasource="15",ifname="swp10",host="leaf1"} 0``;
  ``/prometheus/analyzer/txt`` example: ``sflow_analyzer_agent_count 12``.
* thresholds ``{metric, value, byFlow, timeout, filter}``; events ``{agent, dataSource, eventID,
  metric, threshold, thresholdID, timestamp, value}``, newest first (clients keep
  ``events[0].eventID``).
Everything runs on the real pipeline fed with the shared Host sFlow capture of a docker swarm
(containers ``sflowpeer_burn.N.<task id>``).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _api_util import ServerThread, get_json, request
from _engine_util import Engine, container, rows
from fastflow.collector.glob import Glob, GlobCache, GlobError
from fastflow.collector.thresholds import ThresholdError, Thresholds
from fastflow.web.api import core_routes

TOKEN = "t0ken"
BURN = ["sflowpeer_burn.1.qcurxo9a8hwagrbbuikafgy6s", "sflowpeer_burn.2.mos76mgpj1k7xczm0glqbrymh",
        "sflowpeer_burn.3.lputndlnujz648m4r2g5e1yg4"]


# --------------------------------------------------------------------------------------------------
# Globs
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pattern,text,ok", [
    ("apache\\.*", "apache.2.x7f3k", True),          # the seed's value
    ("apache.*", "apache.2.x7f3k", True),            # the plain glob (sFlow-RT 1.60)
    ("apache\\.*", "apache", False),
    ("apache.*", "apacheX2", False),                 # "." is literal
    ("apache\\.*", "apachex.1", False),
    ("*web.*", "my-web.1", True),                    # sFlow-RT's documented example
    ("*web.*", "web1", False),
    ("a?c", "abc", True), ("a?c", "ac", False), ("a?c", "abbc", False),
    ("*", "", True), ("", "", True), ("", "x", False),
    ("a*b*c", "aXXbYYc", True), ("a*b*c", "aXXcYYb", False),
    ("*ab", "abab", True), ("ab*", "ab", True), ("a*a", "a", False),
    ("\\*", "*", True), ("\\*", "x", False), ("a\\?", "a?", True), ("a\\?", "ab", False),
    ("\\\\x", "\\x", True), ("x\\", "x\\", True),
    ("(a+)+b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", False),   # regex syntax is literal
    ("(a+)+b", "(a+)+b", True),
    ("running", "running", True), ("running", "runningx", False),
])
def test_glob_semantics(pattern: str, text: str, ok: bool) -> None:
    assert Glob(pattern).match(text) is ok


def test_glob_is_bounded() -> None:
    with pytest.raises(GlobError):
        Glob("a" * 513)
    # many stars against a long near-miss: linear-ish work, no exponential backtracking
    g = Glob("*a" * 200 + "b")
    assert not g.match("a" * 2000)
    cache = GlobCache(capacity=8)
    for i in range(100):
        cache.get(f"p{i}*")
    assert len(cache) == 8 and cache.stats()["evictions"] == 92 and cache.stats()["misses"] == 100


def test_seed_value_selects_exactly_the_service() -> None:
    """``apache\\.*`` (the seed, verbatim) and ``apache.*`` select apache.N.x, nothing else."""
    names = ["", "apache.1.k2j3h", "apache.2.x7f9q", "apache", "apachex.1.a", "web.1.apache.1"]
    e = Engine(strings=names)
    t0 = e.clock.now()
    for seq, dt in ((1, 0), (2, 10)):
        e.add(rows(*[container(i, seq, 10_000 * seq, cpu_ms=5000 * seq * i, hostname=i,
                               ts=t0 + dt) for i in range(1, 6)]))
    for value in ("apache\\.*", "apache.*"):
        r = e.metrics.query("ALL", "avg:vir_cpu_utilization,avg:vir_bytes_in",
                            {"vir_host_name": [value], "vir_cpu_state": ["running"]})
        assert r[0]["metricN"] == 2, value
        hosts = {d["hostName"] for d in e.metrics.dump("ALL", "vir_cpu_utilization",
                                                      {"vir_host_name": [value]})}
        assert hosts == {"apache.1.k2j3h", "apache.2.x7f9q"}


# --------------------------------------------------------------------------------------------------
# The real pipeline fed with the shared capture
# --------------------------------------------------------------------------------------------------
def _parts(swarm_pcap: Path, fraction: float = 1.0) -> tuple[Any, Any, Any, Any]:
    from fastflow import pcap
    from fastflow.collector.agentstats import AgentStats
    from fastflow.collector.metrics import Metrics
    from fastflow.collector.pipeline import Pipeline, ReplayClock
    from fastflow.collector.store import Store

    clock = ReplayClock()
    store = Store(depth=32, expire_after=1e9, clock=clock)
    agentstats = AgentStats(clock=clock)
    pipeline = Pipeline([store, agentstats], clock=clock)
    metrics = Metrics(store, agentstats, lock=pipeline.lock)
    cap = pcap.read(swarm_pcap)
    n = int(len(cap.offsets) * fraction)
    pipeline.feed(cap.buf, cap.offsets[:n], cap.lengths[:n], cap.ts[:n])
    return pipeline, metrics, agentstats, (cap, n, clock)


@pytest.fixture(scope="module")
def rt(swarm_pcap: Path):
    pipeline, metrics, agentstats, _ = _parts(swarm_pcap)
    th = Thresholds(metrics)
    stats = {"datagrams": 124, "kernel_drops": 0}
    routes = core_routes(pipeline, metrics, agentstats, ingest_stats=lambda: stats, thresholds=th)
    with ServerThread(routes, token=TOKEN) as s:
        yield s


def test_seed_query_on_the_capture(rt: ServerThread) -> None:
    """The seed's query shape with the capture's service: escaped and plain globs, state filter."""
    for value in ("sflowpeer_burn\\.*", "sflowpeer_burn.*", "sflowpeer_burn%5C.%2A"):
        st, body = get_json(rt.port, "/metric/ALL/avg:vir_cpu_utilization,avg:vir_bytes_in/json"
                                     f"?vir_host_name={value}&vir_cpu_state=running")
        assert st == 200 and [b["metricN"] for b in body] == [3, 3], (value, body)
    st, dump = get_json(rt.port, "/dump/ALL/vir_cpu_utilization/json?vir_host_name=sflowpeer_burn.*")
    assert sorted(d["hostName"] for d in dump) == BURN
    # the regex reading of the old implementation selected nothing with the seed's value
    st, body = get_json(rt.port, "/metric/ALL/avg:vir_cpu_utilization/json?vir_host_name=sflowpeer_burn")
    assert body[0]["metricN"] == 0 and "metricValue" not in body[0]
    assert body[0]["metricName"] == "avg:vir_cpu_utilization"


def test_agents_json_uses_sflow_rt_names(rt: ServerThread) -> None:
    st, agents = get_json(rt.port, "/agents/json")
    a = agents["192.0.2.2"]
    for k in ("firstSeen", "lastSeen", "sFlowDatagramsDuplicates", "sFlowDatagramsLost",
              "sFlowDatagramsOutOfOrder", "sFlowDatagramsReceived", "uptime"):
        assert k in a, k
    assert "sFlowDatagramsDuplicated" not in a and "lastUpdate" not in a
    assert a["sFlowDatagramsReceived"] == 124
    assert get_json(rt.port, "/agents/json?agent=192.0.2.99")[1] == {}


def test_metric_agent_json(rt: ServerThread) -> None:
    st, m = get_json(rt.port, "/metric/192.0.2.2/json")
    assert st == 200
    hosts = {k: v for k, v in m.items() if k.endswith(".vir_host_name")}
    assert sorted(hosts.values())[:3] == BURN
    ds = next(k for k, v in hosts.items() if v == BURN[0]).rsplit(".", 1)[0]
    assert isinstance(m[f"{ds}.vir_cpu_utilization"], float | int)
    assert m.get("2.1.host_name") == "vm" or any(k.endswith(".host_name") for k in m)
    for k, v in m.items():       # text metrics as text, as sFlow-RT shows them
        if k.endswith((".ifadminstatus", ".ifoperstatus")):
            assert v in ("up", "down")
    assert get_json(rt.port, "/metric/192.0.2.99/json")[0] == 404


def test_table_sort(rt: ServerThread) -> None:
    st, t = get_json(rt.port, "/table/ALL/vir_host_name,sort:vir_cpu_utilization:-2/json")
    assert st == 200 and len(t) == 2
    for row in t:
        assert [c["metricName"] for c in row] == ["vir_host_name", "vir_cpu_utilization"]
        assert set(row[0]) >= {"agent", "dataSource", "metricName", "metricValue", "lastUpdate"}
    assert t[0][1]["metricValue"] >= t[1][1]["metricValue"]
    st, full = get_json(rt.port, "/table/ALL/vir_host_name,sort:vir_cpu_utilization:3/json")
    assert [r[1]["metricValue"] for r in full] == sorted(r[1]["metricValue"] for r in full)
    st, f = get_json(rt.port, "/table/ALL/vir_host_name,vir_cpu_utilization/json"
                              "?vir_host_name=sflowpeer_burn.2*")
    assert len(f) == 1 and f[0][0]["metricValue"] == BURN[1]


def test_dump_all_all(rt: ServerThread) -> None:
    st, d = get_json(rt.port, "/dump/ALL/ALL/json")
    assert st == 200 and len(d) > 50
    assert {"vir_cpu_utilization", "vir_host_name", "load_one"} <= {e["metricName"] for e in d}


def test_analyzer(rt: ServerThread) -> None:
    st, a = get_json(rt.port, "/analyzer/json")
    assert st == 200 and a["sFlowAgents"] == 1 and a["sFlowDatagramsReceived"] == 124
    st, _, body = request(rt.port, "GET", "/prometheus/analyzer/txt")
    from prometheus_client.parser import text_string_to_metric_families
    fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert fams["sflow_analyzer_agent_count"].samples[0].value == 1


def test_prometheus_names_and_labels(rt: ServerThread) -> None:
    from prometheus_client.parser import text_string_to_metric_families
    st, hdrs, body = request(rt.port, "GET",
                             "/prometheus/metrics/ALL/vir_cpu_utilization,load_one/txt")
    assert st == 200 and hdrs["content-type"].startswith("text/plain; version=0.0.4")
    fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
    cpu = fams["sflow_vir_cpu_utilization"]
    assert cpu.type == "gauge" and len(cpu.samples) == 3
    assert sorted(s.labels["host"] for s in cpu.samples) == BURN
    assert all(set(s.labels) == {"agent", "datasource", "host"} for s in cpu.samples)
    assert fams["sflow_load_one"].samples[0].labels["datasource"] == "2.1"
    st, _, body = request(rt.port, "GET", "/prometheus/metrics/ALL/ALL/txt")
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert all(n.startswith("sflow_") for n in names) and "sflow_ifinoctets" in names


def test_own_metrics_exposition(rt: ServerThread) -> None:
    from prometheus_client.parser import text_string_to_metric_families
    st, _, body = request(rt.port, "GET", "/metrics")
    text = body.decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert "# HELP fastflow_uptime_seconds" in text and "# TYPE fastflow_uptime_seconds gauge" in text
    assert fams["fastflow_agents"].samples[0].value == 1
    # counters: the parser strips _total from the family name
    assert fams["fastflow_agent_datagrams_received"].type == "counter"
    assert fams["fastflow_decoder_rejected"].type == "counter"
    assert "fastflow_thresholds_thresholds" in fams


def test_own_metrics_scaler_series() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from fastflow.web.api import own_metrics_text
    state = {"enabled": True, "dry_run": False, "services": {"web": {
        "enabled": True, "current": 2, "desired": 3, "metrics": {"vir_cpu_utilization": 81.5},
        "config": {"replicas_min": 1, "replicas_max": 4}}}}
    events = [{"service": "web", "action": "up", "dry_run": False}] * 2
    text = own_metrics_text({"scaler": state, "scaler_events": events})
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert fams["fastflow_scaler_replicas"].samples[0].value == 2
    assert fams["fastflow_scaler_desired_replicas"].samples[0].labels == {"service": "web"}
    assert fams["fastflow_scaler_input_vir_cpu_utilization_percent"].samples[0].value == 81.5
    d = fams["fastflow_scaler_decisions"]
    assert d.type == "counter" and d.samples[0].value == 2
    assert d.samples[0].labels == {"service": "web", "action": "up", "dry_run": "false"}


# --------------------------------------------------------------------------------------------------
# Thresholds and events
# --------------------------------------------------------------------------------------------------
def test_threshold_events_from_a_replayed_capture(swarm_pcap: Path) -> None:
    """The capture replayed in ten steps, thresholds evaluated after each (as every second live)."""
    pipeline, metrics, _, (cap, n, clock) = _parts(swarm_pcap, 0.0)
    th = Thresholds(metrics, clock=clock.now)
    got: list[dict[str, Any]] = []
    th.add_listener(got.append, ["burn"])
    th.set("burn", {"metric": "vir_cpu_utilization", "value": 20,
                    "filter": {"vir_host_name": ["sflowpeer_burn\\.*"]}})
    th.set("never", {"metric": "vir_cpu_utilization", "value": 1e9})
    events: list[dict[str, Any]] = []
    bounds = np.linspace(0, len(cap.offsets), 11).astype(int)
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        pipeline.feed(cap.buf, cap.offsets[a:b], cap.lengths[a:b], cap.ts[a:b])
        events += th.evaluate()
    assert events, "two burn containers run above 20 % in the capture"
    assert {e["thresholdID"] for e in events} == {"burn"}
    assert set(events[0]) == {"agent", "dataSource", "eventID", "metric", "threshold",
                              "thresholdID", "timestamp", "value"}
    assert all(e["value"] > 20 and e["agent"] == "192.0.2.2" for e in events)
    assert all(e["metric"] == "vir_cpu_utilization" and e["threshold"] == 20 for e in events)
    assert th.evaluate() == []                      # still above: disarmed, no repeat
    newest = th.events()
    assert [e["eventID"] for e in newest] == sorted((e["eventID"] for e in events), reverse=True)
    assert th.events(after_id=newest[0]["eventID"]) == []
    assert got == events
    assert abs(events[-1]["timestamp"] / 1000 - clock.now()) < 3600


def test_threshold_spec_errors() -> None:
    th = Thresholds(Engine().metrics, max_thresholds=2)
    for bad in ({}, {"metric": "vir_cpu_utilization"}, {"metric": "nope", "value": 1},
                {"metric": "vir_host_name", "value": 1},
                {"metric": "vir_cpu_utilization", "value": float("nan")},
                {"metric": "vir_cpu_utilization", "value": 1, "filter": {"nope": ["x"]}},
                {"metric": "vir_cpu_utilization", "value": 1, "bogus": 1},
                {"metric": "vir_cpu_utilization", "value": 1, "timeout": -1}):
        with pytest.raises(ThresholdError):
            th.set("x", bad)
    th.set("a", {"metric": "vir_cpu_utilization", "value": 1})
    th.set("b", {"metric": "vir_cpu_utilization", "value": 1})
    with pytest.raises(ThresholdError, match="too many"):
        th.set("c", {"metric": "vir_cpu_utilization", "value": 1})
    with pytest.raises(ThresholdError):
        th.set("bad name/", {"metric": "vir_cpu_utilization", "value": 1})


def test_threshold_routes_and_long_poll(swarm_pcap: Path) -> None:
    pipeline, metrics, agentstats, (cap, n, clock) = _parts(swarm_pcap, 0.1)
    th = Thresholds(metrics, clock=clock.now)
    with ServerThread(core_routes(pipeline, metrics, agentstats, thresholds=th), token=TOKEN) as s:
        spec = {"metric": "vir_cpu_utilization", "value": 20, "byFlow": False, "timeout": 5}
        body = json.dumps(spec).encode()
        assert request(s.port, "PUT", "/threshold/burn/json", body)[0] == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        st, _, got = request(s.port, "PUT", "/threshold/burn/json", body, headers=auth)
        assert st == 200 and json.loads(got)["value"] == 20
        assert get_json(s.port, "/threshold/burn/json")[1]["metric"] == "vir_cpu_utilization"
        assert set(get_json(s.port, "/threshold/json")[1]) == {"burn"}
        st, _, err = request(s.port, "PUT", "/threshold/bad/json", b'{"metric": "x"}', headers=auth)
        assert st == 400 and b"value" in err
        assert th.evaluate() == []
        # a long poll waits; the loop keeps answering meanwhile; the event wakes it
        result: dict[str, Any] = {}

        def poll() -> None:
            result["r"] = get_json(s.port, "/events/json?thresholdID=burn&eventID=-1"
                                            "&maxEvents=10&timeout=30", timeout=40)
        t = threading.Thread(target=poll)
        t.start()
        assert get_json(s.port, "/healthz")[0] == 200
        pipeline.feed(cap.buf, cap.offsets[n:], cap.lengths[n:], cap.ts[n:])
        fired = th.evaluate()
        t.join(30)
        assert not t.is_alive()
        st, events = result["r"]
        assert st == 200 and events and events[0]["eventID"] == max(e["eventID"] for e in fired)
        # nothing newer: an immediate empty answer with timeout=0
        assert get_json(s.port, f"/events/json?eventID={events[0]['eventID']}")[1] == []
        assert request(s.port, "DELETE", "/threshold/burn/json", headers=auth)[0] == 204
        assert request(s.port, "DELETE", "/threshold/burn/json", headers=auth)[0] == 404


def test_snapshot_then_compute_outside_the_lock(swarm_pcap: Path) -> None:
    """Filter matching runs after the store lock is released (ingest is never held up by it)."""
    pipeline, metrics, _, _ = _parts(swarm_pcap)
    held: list[bool] = []
    from fastflow.collector import glob as glob_mod
    real = glob_mod.Glob.match

    def spy(self: Any, text: str) -> bool:
        held.append(bool(pipeline.lock._is_owned()))     # RLock: held by this thread?
        return real(self, text)

    glob_mod.Glob.match = spy      # type: ignore[method-assign]
    try:
        r = metrics.query("ALL", "vir_cpu_utilization", {"vir_host_name": ["sflowpeer_burn.*"]})
    finally:
        glob_mod.Glob.match = real     # type: ignore[method-assign]
    assert held and not any(held)
    assert r[0]["metricN"] == 3 and np.isfinite(r[0]["metricValue"])


def test_scaler_internal_filters_still_select(rt: ServerThread, swarm_pcap: Path) -> None:
    """The scaler passes re.escape'd task names (exact globs) or a compiled policy pattern."""
    import re

    _, metrics, _, _ = _parts(swarm_pcap)
    flt = {"vir_host_name": [re.escape(n) for n in BURN[:2]]}
    assert metrics.query("ALL", "avg:vir_cpu_utilization", flt)[0]["metricN"] == 2
    flt2: dict[str, Any] = {"vir_host_name": [re.compile(re.escape("sflowpeer_burn") + r"\..*")]}
    assert metrics.query("ALL", "avg:vir_cpu_utilization", flt2)[0]["metricN"] == 3


def test_trends_are_bounded(swarm_pcap: Path) -> None:
    from fastflow.web.trends import PER_HOST_POINTS, Trends

    _, metrics, _, (cap, _, clock) = _parts(swarm_pcap)
    tr = Trends(metrics, keep=PER_HOST_POINTS + 20, clock=clock.now)
    state = {"services": {"sflowpeer_burn": {"current": 3, "config": {
        "pattern": "sflowpeer_burn\\..*"}}}}
    for _ in range(PER_HOST_POINTS + 50):
        pts = tr.sample(state)
    assert pts["sflowpeer_burn"]["replicas"] == 3
    assert sorted(pts["sflowpeer_burn"]["per"]) == BURN
    ser = tr.history()["sflowpeer_burn"]
    assert len(ser) == PER_HOST_POINTS + 20
    assert all("per" not in p for p in ser[:20]) and all("per" in p for p in ser[20:])
    tr.sample({"services": {}})             # the service left the configuration: kept a while
    assert "sflowpeer_burn" in tr.history()


def test_threshold_by_flow_on_a_replayed_capture(swarm_pcap: Path) -> None:
    """A threshold on a flow definition (sFlow-RT's typical use): one event per flow key."""
    from fastflow import pcap
    from fastflow.collector.flows import FlowEngine
    from fastflow.collector.metrics import Metrics
    from fastflow.collector.pipeline import Pipeline, ReplayClock
    from fastflow.collector.store import Store

    clock = ReplayClock()
    store = Store(depth=32, expire_after=1e9, clock=clock)
    flows = FlowEngine(clock=clock, definition_ttl=None)
    pipeline = Pipeline([store, flows], clock=clock)
    th = Thresholds(Metrics(store, lock=pipeline.lock), clock=clock.now, flows=flows)
    flows.define("pairs", "ipsource,ipdestination,ipprotocol", "frames")
    th.set("busy", {"metric": "pairs", "value": 0.001, "byFlow": True})
    cap = pcap.read(swarm_pcap)
    events: list[dict[str, Any]] = []
    bounds = np.linspace(0, len(cap.offsets), 6).astype(int)
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        pipeline.feed(cap.buf, cap.offsets[a:b], cap.lengths[a:b], cap.ts[a:b])
        events += th.evaluate()
    assert events and all(e["metric"] == "pairs" and e["flowKey"] for e in events)
    assert any(e["flowKey"].startswith("127.0.0.1,127.0.0.1,") for e in events)
    assert all(e["value"] > 0.001 and e["threshold"] == 0.001 for e in events)


def test_ifname_is_a_text_metric_of_interfaces(swarm_pcap: Path) -> None:
    """hsflowd's 0:1005 ifName arrives with every interface sample: `ifname` is a text metric of
    the interface's data source (sFlow-RT's /metric/{agent}/json shows "1.ifname": "lo")."""
    from fastflow import pcap
    from fastflow.collector.metrics import Metrics
    from fastflow.collector.pipeline import Pipeline, ReplayClock
    from fastflow.collector.store import Store

    cap = pcap.read(swarm_pcap)
    clock = ReplayClock(float(cap.ts[0]))
    store = Store(clock=clock)
    metrics = Metrics(store)
    Pipeline([store], clock=clock).feed_capture(cap, step=2.0, on_step=lambda t: None)
    names = {e["dataSource"]: e["metricValue"] for e in metrics.dump("ALL", "ifname", None)}
    assert names == {"1": "lo", "5": "docker0"}
    per_agent = metrics.agent_metrics("192.0.2.2")
    assert per_agent is not None and per_agent["1.ifname"] == "lo"
