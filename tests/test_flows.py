"""Top flows (fastflow.collector.flows / fastflow.collector.flowfilter): keys, filters, rates, loss, expiry and REST.

Synthetic FLOW_DTYPE tables check the arithmetic exactly; the real captures in the corpus check the
keys against hand-computed totals (frame_length x sampling_rate per key) and, for the swarm
capture, against sflowtool's independent decode.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fastflow._schema import FLOW_BIT, FLOW_DTYPE
from fastflow.collector.flowfilter import KEYS, FilterError, parse_filter
from fastflow.collector.flows import FlowEngine
from fastflow.web.flows import flow_routes
from fastflow.web.http import HTTPError, Request

HDR = 1 << FLOW_BIT["sampled_header"]
AGENTS = ["", "10.0.0.1", "10.0.0.2"]


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def now(self) -> float:
        return self.t


def ip16(text: str) -> np.ndarray:
    import ipaddress
    a = ipaddress.ip_address(text)
    b = (b"\x00" * 10 + b"\xff\xff" + a.packed) if a.version == 4 else a.packed
    return np.frombuffer(b, np.uint8)


def rows(*specs: dict[str, Any]) -> np.ndarray:
    """FLOW_DTYPE rows: defaults are an IPv4 TCP sample from agent 1, data source 0:1."""
    out = np.zeros(len(specs), FLOW_DTYPE)
    for i, s in enumerate(specs):
        r = out[i]
        r["agent"] = s.get("agent", 1)
        r["source_id_type"] = s.get("cls", 0)
        r["source_id_index"] = s.get("ds", 1)
        r["source_id"] = (s.get("cls", 0) << 24) | s.get("ds", 1)
        r["sequence_number"] = s.get("seq", i + 1)
        r["sampling_rate"] = s.get("rate", 10)
        r["frame_length"] = s.get("len", 100)
        r["mask"] = HDR
        r["header_protocol"] = 1
        r["ts"] = s.get("ts", 0.0)
        r["eth_src"] = s.get("esrc", 0x020000000001)
        r["eth_dst"] = s.get("edst", 0x020000000002)
        r["eth_type"] = 0x0800
        r["vlan"] = s.get("vlan", 0)
        ver = s.get("ver", 4)
        r["ip_version"] = ver
        r["ip_protocol"] = s.get("proto", 6)
        r["ip_src"] = ip16(s.get("src", "192.0.2.1" if ver == 4 else "2001:db8::1"))
        r["ip_dst"] = ip16(s.get("dst", "192.0.2.2" if ver == 4 else "2001:db8::2"))
        r["src_port"] = s.get("sport", 1234)
        r["dst_port"] = s.get("dport", 80)
        r["l4_ok"] = 1
        r["input"] = s.get("inp", 3)
        r["output"] = s.get("out", 0x3FFFFFFF)
    return out


def agent_text(i: int) -> str:
    return AGENTS[i]


def engine(t: float = 1000.0) -> tuple[FlowEngine, Clock]:
    c = Clock(t)
    return FlowEngine(clock=c), c


# ------------------------------------------------------------------------------------------------
# keys and filters on synthetic tables
# ------------------------------------------------------------------------------------------------
def test_keys_text_forms_and_sampling_scale() -> None:
    fe, _ = engine()
    fe.define("f", "ipsource,ipdestination,tcpdestinationport,macsource,agent,ethernetprotocol",
              t=86400, persistent=True)
    fe.add_flows(rows({"len": 100, "rate": 10}, {"len": 200, "rate": 5},
                      {"len": 50, "rate": 7, "dport": 443}), agent_text)
    got = {f["key"]: f["total"] for f in fe.flows("f")}
    assert got == {
        "192.0.2.1,192.0.2.2,80,020000000001,10.0.0.1,2048": 100 * 10 + 200 * 5,
        "192.0.2.1,192.0.2.2,443,020000000001,10.0.0.1,2048": 50 * 7,
    }


def test_frames_value_and_undefined_keys_excluded() -> None:
    fe, _ = engine()
    fe.define("udp", "udpdestinationport", value="frames", t=86400, persistent=True)
    fe.define("v6", "ip6source", value="packets", t=86400, persistent=True)
    fe.define("v4", "ipsource", t=86400, persistent=True)
    fe.add_flows(rows({"proto": 17, "dport": 53, "rate": 3}, {"proto": 6, "rate": 4},
                      {"ver": 6, "proto": 17, "dport": 53, "rate": 5}), agent_text)
    # the TCP sample has no udpdestinationport; IPv6 is not ipsource and vice versa
    assert [(f["key"], f["total"]) for f in fe.flows("udp")] == [("53", 8.0)]
    assert [(f["key"], f["total"]) for f in fe.flows("v6")] == [("2001:db8::1", 5.0)]
    assert [(f["key"], f["total"]) for f in fe.flows("v4")] == [("192.0.2.1", 100 * 3 + 100 * 4)]


@pytest.mark.parametrize("flt,expect", [
    ("tcpdestinationport=80", {1, 2, 4}),
    ("tcpdestinationport!=80", {3, 5}),
    ("tcpdestinationport=80,443", {1, 2, 3, 4}),
    ("ipsource=192.0.2.0/24", {1, 2, 3, 5}),
    ("ipsource=10.9.9.9", {4}),
    ("ipsource~192\\.0\\.2\\..*&tcpdestinationport=443", {3}),
    ("(tcpdestinationport=443|ipsource=10.9.9.9)&agent=10.0.0.2", {4}),
    ("!(ipprotocol=6)", {5}),
    ("ipprotocol=17 | ipprotocol=6 & tcpdestinationport=443", {3, 5}),
    ("macsource=02:00:00:00:00:AA", {2}),
    ("macsource=02000000aaaa,0200000000aa", {2}),
    ("agent~10\\.0\\.0\\.1", {1, 2, 3, 5}),
    ("tcpsourceport!~1.*", {4, 5}),
    ("vlan=7", {5}),
    ("ipsrc=192.0.2.0/24", {1, 2, 3, 5}),
    ("ipsrc=10.9.9.9,::1", {4}),
    ("ipsrc~10\\..*", {4}),
])
def test_filter_semantics(flt: str, expect: set[int]) -> None:
    f = rows({"seq": 1}, {"seq": 2, "esrc": 0x0200000000AA},
             {"seq": 3, "dport": 443}, {"seq": 4, "src": "10.9.9.9", "agent": 2, "sport": 999},
             {"seq": 5, "proto": 17, "dport": 443, "vlan": 7})
    parsed = parse_filter(flt)
    assert parsed is not None
    m = parsed.mask(f, agent_text)
    assert set(f["sequence_number"][m].tolist()) == expect


@pytest.mark.parametrize("bad", ["", "ipsource", "nosuchkey=1", "ipsource=notanip", "(ipprotocol=6",
                                 "tcpdestinationport=abc", "ipsource~(", "ipprotocol=6&",
                                 "macsource=12345", "ipprotocol=6)"])
def test_filter_errors(bad: str) -> None:
    if bad == "":
        assert parse_filter(bad) is None
        return
    with pytest.raises(FilterError):
        parse_filter(bad)


def test_define_validation() -> None:
    fe, _ = engine()
    for kw in [dict(keys="bogus"), dict(keys="ipsource", value="BPS"), dict(keys="a,,b"),
               dict(keys="ipsource", fs=""), dict(keys="ipsource", dropped="yes"),
               dict(keys="ipsource", agg_mode="avg"), dict(keys="mask:ipsource:33"),
               dict(keys="mask:tcpsourceport:8"), dict(keys="prefix:ipsource:.:0"),
               dict(keys="null:ipsource"), dict(keys="[ipsource"), dict(keys="nosuch:ipsource:1"),
               dict(keys="ipsource", active_timeout=0), dict(keys="ipsource", value="octets"),
               dict(keys="ipsource", t=0), dict(keys="ipsource", t="x"),
               dict(keys="ipsource", n=0), dict(keys="ipsource", n=1.5),
               dict(keys="ipsource", filter="ipsource=")]:
        with pytest.raises(FilterError):
            fe.define("x", **kw)  # type: ignore[arg-type]
    assert fe.definitions() == {}
    with pytest.raises(FilterError):
        fe.define("a/b", "ipsource")


def test_flowkeys_cover_the_required_set() -> None:
    for k in ("ipsource ipdestination tcpsourceport tcpdestinationport udpsourceport "
              "udpdestinationport ipprotocol ethernetprotocol macsource macdestination vlan agent "
              "inputifindex outputifindex ipversion").split():
        assert k in KEYS


# ------------------------------------------------------------------------------------------------
# rates, decay, loss, expiry
# ------------------------------------------------------------------------------------------------
def test_steady_rate_reads_as_per_second() -> None:
    fe, clock = engine(0.0)
    fe.define("f", "ipsource", t=2.0, persistent=True)
    # 1000 bytes every 0.1 s for 30 s (15 time constants) = 10000 B/s
    for k in range(1, 301):
        clock.t = k * 0.1
        fe.add_flows(rows({"len": 100, "rate": 10, "ts": clock.t, "seq": k}), agent_text)
    (flow,) = fe.active_flows("ALL", "f")
    assert flow["value"] == pytest.approx(10000, rel=0.03)
    assert fe.flows("f")[0]["total"] == 300 * 1000
    # after 4 s of silence it has decayed by e^-2
    clock.t += 4.0
    assert fe.active_flows("ALL", "f")[0]["value"] == pytest.approx(flow["value"] * math.exp(-2))


def test_sample_time_within_a_batch_is_honoured() -> None:
    fe, clock = engine(10.0)
    fe.define("f", "tcpdestinationport", t=1.0, persistent=True)
    # one batch holding a sample from 3 s ago and one from now
    fe.add_flows(rows({"ts": 7.0, "dport": 1}, {"ts": 10.0, "dport": 2}), agent_text)
    v = {f["key"]: f["value"] for f in fe.flows("f")}
    assert v["2"] == pytest.approx(1000.0)
    assert v["1"] == pytest.approx(1000.0 * math.exp(-3))


def test_sequence_gaps_counted_as_lost_samples() -> None:
    fe, _ = engine()
    fe.add_flows(rows({"seq": 1}, {"seq": 2}, {"seq": 5}, {"seq": 3, "ds": 2}), agent_text)
    fe.add_flows(rows({"seq": 9}, {"seq": 4, "ds": 2}, {"seq": 1, "agent": 2}), agent_text)
    st = fe.stats()
    assert st["samples"] == 7
    assert st["lostSamples"] == 2 + 3       # 3,4 then 6,7,8 on 10.0.0.1 ds 1
    per = {(d["agent"], d["dataSource"]): d["lostSamples"] for d in st["dataSources"]}
    assert per == {("10.0.0.1", "1"): 5, ("10.0.0.1", "2"): 0, ("10.0.0.2", "1"): 0}
    # an agent restart (sequence back to 1) is not loss
    fe.add_flows(rows({"seq": 1}), agent_text)
    assert fe.stats()["lostSamples"] == 5


def test_aggregation_over_data_sources_and_agent_selection() -> None:
    fe, _ = engine()
    fe.define("f", "ipsource", t=86400, persistent=True)
    fe.add_flows(rows({"ds": 1, "len": 100}, {"ds": 2, "len": 300}, {"agent": 2, "len": 200}),
                 agent_text)
    scale = 1 / 86400
    mx = fe.active_flows("ALL", "f")
    assert mx[0]["value"] == pytest.approx(3000 * scale)
    assert (mx[0]["agent"], mx[0]["dataSource"]) == ("10.0.0.1", "2")
    sm = fe.active_flows("ALL", "f", agg_mode="sum")
    assert sm[0]["value"] == pytest.approx(6000 * scale)
    only2 = fe.active_flows("10.0.0.2", "f", agg_mode="sum")
    assert only2[0]["value"] == pytest.approx(2000 * scale) and only2[0]["agent"] == "10.0.0.2"
    assert fe.active_flows("10.0.0.9", "f") == []
    with pytest.raises(FilterError):
        fe.active_flows("ALL", "f", agg_mode="median")


def test_flow_read_as_metric_and_open_metric_names() -> None:
    """sFlow-RT reads a flow definition's name as a metric: each data source's value is its largest
    flow, aggregated over data sources by the prefix; a name that is no metric answers metricN 0."""
    from fastflow.collector.flows import query_metrics

    fe, clock = engine()
    fe.define("f", "ipsource", t=86400, persistent=True)
    fe.define("idle", "", t=2, persistent=True)         # keyless: one flow per data source
    fe.add_flows(rows({"ds": 1, "len": 100}, {"ds": 1, "len": 50, "src": "192.0.2.9"},
                      {"ds": 2, "len": 300}, {"agent": 2, "len": 200}), agent_text)
    scale = 1 / 86400
    mx = fe.metric("ALL", "f", "max", "f")
    assert mx["metricN"] == 3 and mx["metricValue"] == pytest.approx(3000 * scale)
    assert (mx["agent"], mx["dataSource"]) == ("10.0.0.1", "2")
    assert [k["key"] for k in mx["topKeys"]] == ["192.0.2.1"]
    assert fe.metric("ALL", "sum:f", "sum", "f")["metricValue"] == pytest.approx(6000 * scale)
    assert fe.metric("ALL", "min:f", "min", "f")["metricValue"] == pytest.approx(1000 * scale)
    ds1 = fe.metric("10.0.0.1", "f", "max", "f")
    assert ds1["metricN"] == 2
    assert fe.metric("10.0.0.9", "f", "max", "f") == {"metricName": "f", "metricN": 0}
    assert fe.metric("ALL", "sum:idle", "sum", "idle")["metricN"] == 3
    clock.t += 100                                       # past idle's expiry, not f's
    assert fe.metric("ALL", "idle", "max", "idle")["metricN"] == 0

    class NoCounters:
        def query(self, agents: str, names: list[str], filters: Any) -> list[dict[str, Any]]:
            return [{"metricName": n, "metricN": 7} for n in names]

    out = query_metrics(NoCounters(), fe, "ALL", "sum:f,no_such_metric,load_one,avg:f")
    assert [o["metricName"] for o in out] == ["sum:f", "no_such_metric", "load_one", "avg:f"]
    assert out[1] == {"metricName": "no_such_metric", "metricN": 0}
    assert out[2]["metricN"] == 7                       # decayed by 100 s of a 1-day t:
    assert out[3]["metricValue"] == pytest.approx(2000 * scale, rel=0.01)
    assert query_metrics(NoCounters(), None, "ALL", "f")[0]["metricN"] == 0
    with pytest.raises(ValueError, match="aggregation"):
        query_metrics(NoCounters(), fe, "ALL", "mean:f")


def test_top_n_eviction_and_idle_expiry() -> None:
    fe, clock = engine(100.0)
    fe.define("f", "tcpsourceport", t=1.0, n=5, persistent=True)
    big = [{"sport": p, "len": 1000 + p, "ts": 100.0} for p in range(5)]
    small = [{"sport": 100 + p, "len": 1, "ts": 100.0} for p in range(20)]
    fe.add_flows(rows(*big, *small), agent_text)
    keys = {f["key"] for f in fe.flows("f")}
    assert keys == {str(p) for p in range(5)}
    top = fe.active_flows("ALL", "f", max_flows=2)
    assert [f["key"] for f in top] == ["4", "3"]
    # idle for more than expire_factor * t: flows go at the next sweep
    clock.t = 100.0 + 11.0
    fe.add_flows(rows({"sport": 7, "ts": clock.t}), agent_text)
    assert {f["key"] for f in fe.flows("f")} == {"7"}
    assert fe.active_flows("ALL", "f", min_value=1e12) == []


def test_definitions_expire_when_not_queried() -> None:
    idle = [0.0]
    fe = FlowEngine(clock=Clock(), definition_ttl=300, idle_clock=lambda: idle[0])
    fe.define("kept", "ipsource", persistent=True)
    fe.define("polled", "ipsource")
    fe.define("dropped", "ipsource")
    for _ in range(4):
        idle[0] += 100
        fe.active_flows("ALL", "polled")
    assert set(fe.definitions()) == {"kept", "polled"}
    fe2 = FlowEngine(clock=Clock(), max_definitions=3, idle_clock=lambda: idle[0])
    for i in range(3):
        fe2.define(f"d{i}", "ipsource")
    with pytest.raises(FilterError, match="too many"):
        fe2.define("d3", "ipsource")
    idle[0] += 301
    fe2.define("d3", "ipsource")           # the idle ones expired, room again
    assert set(fe2.definitions()) == {"d3"}


def test_redefining_identically_keeps_state_changed_resets() -> None:
    fe, _ = engine()
    fe.define("f", "ipsource", t=86400)
    fe.add_flows(rows({}), agent_text)
    fe.define("f", "ipsource", t=86400)
    assert fe.flows("f")[0]["total"] == 1000
    fe.define("f", "ipsource", t=10)
    assert fe.flows("f") == []


# ------------------------------------------------------------------------------------------------
# REST
# ------------------------------------------------------------------------------------------------
def _call(fe: FlowEngine, method: str, path: str, body: Any = None,
          query: dict[str, list[str]] | None = None) -> tuple[int, Any]:
    for r in flow_routes(fe):
        params = r.match(path)
        if r.method == method and params is not None:
            req = Request(method, path, params, query or {}, {},
                          b"" if body is None else json.dumps(body).encode())
            try:
                resp = r.handler(req)
            except HTTPError as exc:
                return exc.status, exc.message
            assert not asyncio.iscoroutine(resp)
            return resp.status, json.loads(resp.body) if resp.body else None  # type: ignore[union-attr]
    raise AssertionError(f"no route {method} {path}")


def test_rest_handlers() -> None:
    fe, _ = engine()
    muts = {(r.method, r.pattern) for r in flow_routes(fe) if r.mutating}
    assert ("PUT", "/flow/{name}/json") in muts and ("DELETE", "/flow/{name}/json") in muts
    st, body = _call(fe, "PUT", "/flow/web/json", {"keys": "ipsource,tcpdestinationport",
                                                    "value": "bytes", "t": 5})
    assert st == 204 and body is None                   # sFlow-RT's api.yml: 204 No Content
    body = _call(fe, "GET", "/flow/web/json")[1]
    assert body == {"keys": "ipsource,tcpdestinationport", "value": "bytes", "filter": None,
                    "t": 5.0, "n": 100, "fs": ",", "dropped": False, "log": False,
                    "flowStart": False, "activeTimeout": 60.0}
    assert _call(fe, "GET", "/flow/json")[1] == {"web": body}
    assert _call(fe, "GET", "/flow/web/json")[1] == body
    for bad in [{"keys": "nope"}, {"value": "kbps"}, [1], {"keys": "ipsource", "t": -1},
                {"keys": "ipsource", "filter": "ipsource=("}, {"keys": "ipsource", "x": 1}]:
        st, msg = _call(fe, "PUT", "/flow/bad/json", bad)
        assert st == 400 and msg, bad
    fe.add_flows(rows({"len": 10}, {"dport": 443, "len": 30}), agent_text)
    st, flows = _call(fe, "GET", "/activeflows/ALL/web/json", query={"maxFlows": ["1"]})
    assert st == 200 and len(flows) == 1
    assert flows[0]["key"] == "192.0.2.1,443" and flows[0]["agent"] == "10.0.0.1"
    assert flows[0]["dataSource"] == "1" and flows[0]["value"] > 0
    assert _call(fe, "GET", "/activeflows/ALL/web/json", query={"maxFlows": ["x"]})[0] == 400
    assert _call(fe, "GET", "/activeflows/ALL/web/json", query={"aggMode": ["avg"]})[0] == 400
    assert _call(fe, "GET", "/activeflows/ALL/none/json")[0] == 404
    assert "ipsource" in _call(fe, "GET", "/flowkeys/json")[1]
    assert _call(fe, "GET", "/flowstats/json")[1]["samples"] == 2
    assert _call(fe, "DELETE", "/flow/web/json")[0] == 204
    assert _call(fe, "DELETE", "/flow/web/json")[0] == 404
    assert _call(fe, "GET", "/flow/web/json")[0] == 404


def test_rest_over_real_http() -> None:
    """The routes served by fastflow.web.api.ApiServer on 127.0.0.1, with a bearer token."""
    import fastflow.web.api as api
    fe, _ = engine()
    loop = asyncio.new_event_loop()
    server = api.ApiServer(flow_routes(fe), "127.0.0.1", 0, token="s3cret")
    th = threading.Thread(target=loop.run_forever, daemon=True)
    th.start()
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
        base = f"http://127.0.0.1:{server.port}"

        def req(method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
            data = None if body is None else json.dumps(body).encode()
            r = urllib.request.Request(base + path, data=data, method=method)
            if token:
                r.add_header("Authorization", f"Bearer {token}")
            try:
                with urllib.request.urlopen(r, timeout=10) as resp:
                    raw = resp.read()
                    return resp.status, json.loads(raw) if raw else None
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read() or b"null")

        assert req("PUT", "/flow/t/json", {"keys": "ipsource"})[0] == 401
        assert req("PUT", "/flow/t/json", {"keys": "ipsource"}, "s3cret")[0] == 204
        st, msg = req("PUT", "/flow/t/json", {"keys": "ipsourcex"}, "s3cret")
        assert st == 400 and "ipsourcex" in json.dumps(msg)
        fe.add_flows(rows({}), agent_text)
        st, flows = req("GET", "/activeflows/ALL/t/json?maxFlows=5&minValue=0")
        assert st == 200 and flows[0]["key"] == "192.0.2.1"
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        th.join(10)
        loop.close()


# ------------------------------------------------------------------------------------------------
# real captures
# ------------------------------------------------------------------------------------------------
def _decode(path: Path) -> tuple[np.ndarray, list[str]]:
    from fastflow._pydecode import Decoder
    dec = Decoder()
    if path.suffix == ".pcap":
        from fastflow import pcap
        cap = pcap.read(path)
        dec.feed(cap.buf, cap.offsets, cap.lengths, cap.ts)
    else:
        dec.feed_list([path.read_bytes()], 1000.0)
    return dec.flows.copy(), dec.agents()


def _totals(path: Path, keys: str, flt: str | None = None, value: str = "bytes") -> dict[str, float]:
    flows, agents = _decode(path)
    fe = FlowEngine(clock=Clock(0.0))
    fe.define("f", keys, value=value, filter=flt, t=86400, persistent=True)
    fe.add_flows(flows, lambda i: agents[i])
    out: dict[str, float] = defaultdict(float)
    for f in fe.flows("f"):
        out[f["key"]] += f["total"]
    return dict(out)


def test_gopacket_live_capture_tcp_flows(corpus: Path) -> None:
    p = corpus / "public/gopacket/gopacket-SFlowTestPacket1.pcap"
    got = _totals(p, "ipsource,ipdestination,tcpsourceport,tcpdestinationport")
    # six samples: (frame_length, sampling_rate) straight from the capture
    assert got == {
        "10.1.14.22,54.240.235.69,30461,80": 1490 * 16000,
        "10.1.14.16,10.1.8.19,9092,46882": 1518 * 2000,
        "10.1.14.17,10.1.0.207,9092,41023": 1094 * 2000,
        "10.1.14.16,10.1.15.17,9092,52672": 1518 * 2000,
        "10.1.14.17,10.1.14.16,9092,64041": 1518 * 2000,
        "10.1.14.16,10.1.15.16,38801,9092": 70 * 2000,
    }
    assert sum(got.values()) == 1490 * 16000 + (1518 * 3 + 1094 + 70) * 2000
    by_src = _totals(p, "ipsource", flt="tcpsourceport=9092")
    assert by_src == {"10.1.14.16": 1518 * 2 * 2000, "10.1.14.17": (1094 + 1518) * 2000}
    assert _totals(p, "vlan,ethernetprotocol", value="frames") == {"514,2048": 16000 + 5 * 2000}
    assert _totals(p, "macsource", flt="ipsource=10.1.14.22") == {"B8CA3A6DF040": 1490 * 16000}


def test_sampled_ethernet_macs(corpus: Path) -> None:
    got = _totals(corpus / "public/gopacket/gopacket-SFlowEthernetFramePacket.bin", "macsource",
                  value="frames")
    assert got and sum(got.values()) == 7 * 1000   # seven samples at 1-in-1000
    for mac in got:
        assert re.fullmatch(r"[0-9A-F]{12}", mac)


def test_ipv6_agent_and_router_gateway_keys(corpus: Path) -> None:
    v6 = _totals(corpus / "public/tcpdump/sflow-print-v6.pcap", "agent,vlan,ipprotocol")
    assert list(v6) == ["30::1:1:1,10,63"]
    bgp = _totals(corpus / "public/tcpdump/sflow_expanded.pcap",
                  "bgpsourceas,bgpdestinationas,ipnexthop,tcpsourceport")
    assert list(bgp) == ["203476,203361,54.54.54.54,22"]
    icmp = _totals(corpus / "public/goflow2/goflow2-TestSFlowDecode.bin",
                   "vlan,icmptype,icmpcode", flt="ipprotocol=1")
    assert list(icmp) == ["32,8,0"]


def test_filters_on_vflow_capture(corpus: Path) -> None:
    p = corpus / "public/vflow/vflow-TestsFlowRawPacket.bin"
    everything = _totals(p, "ipsource")
    web = _totals(p, "ipsource", flt="tcpsourceport=443")
    notweb = _totals(p, "ipsource", flt="tcpsourceport!=443")
    assert sum(web.values()) + sum(notweb.values()) == sum(everything.values())
    nets = _totals(p, "ipsource", flt="ipsource=152.195.0.0/16")
    assert set(nets) == {k for k in everything if k.startswith("152.195.")}
    rx = _totals(p, "ipsource", flt="ipsource~152\\.195\\..*")
    assert rx == nets


def _sflowtool_flows(path: Path) -> list[dict[str, str]]:
    """Flow samples from sflowtool's text dump: one dict of its fields per FLOWSAMPLE."""
    out: list[dict[str, str]] = []
    cur: dict[str, str] | None = None
    for line in path.read_text().splitlines():
        parts = line.split(" ", 1)
        if line.startswith("sampleType FLOWSAMPLE"):
            cur = {}
        elif line.startswith("endSample") and cur is not None:
            out.append(cur)
            cur = None
        elif cur is not None and len(parts) == 2:
            cur.setdefault(parts[0], parts[1].strip())
    return out


def test_swarm_capture_matches_sflowtool(swarm_pcap: Path, decoder_cls: type) -> None:
    """Every key total of the 25 swarm flow samples equals sflowtool's decode, scaled by hand."""
    oracle = _sflowtool_flows(swarm_pcap.with_name("docker-swarm.sflowtool.txt"))
    assert len(oracle) == 25
    expect_bytes: dict[str, float] = defaultdict(float)
    expect_proto_frames: dict[str, float] = defaultdict(float)
    for s in oracle:
        rate = int(s["meanSkipCount"])
        key = f"{s['srcIP']},{s['dstIP']},{s['IPProtocol']}"
        expect_bytes[key] += int(s["sampledPacketSize"]) * rate
        expect_proto_frames[s["IPProtocol"]] += rate
    from fastflow import pcap
    cap = pcap.read(swarm_pcap)
    dec = decoder_cls()
    dec.feed(cap.buf, cap.offsets, cap.lengths, cap.ts)
    agents = dec.agents()
    fe = FlowEngine(clock=Clock(float(cap.ts.max())))
    fe.define("b", "ipsource,ipdestination,ipprotocol", t=86400, persistent=True)
    fe.define("p", "ipprotocol", value="frames", t=86400, persistent=True)
    fe.define("udp", "udpdestinationport", filter="ipprotocol=17", t=86400, persistent=True)
    fe.add_flows(dec.flows.copy(), lambda i: agents[i])
    assert {f["key"]: f["total"] for f in fe.flows("b")} == expect_bytes
    assert {f["key"]: f["total"] for f in fe.flows("p")} == expect_proto_frames
    udp_expect: dict[str, float] = defaultdict(float)
    for s in oracle:
        if s["IPProtocol"] == "17":
            udp_expect[s["UDPDstPort"]] += int(s["sampledPacketSize"]) * int(s["meanSkipCount"])
    assert {f["key"]: f["total"] for f in fe.flows("udp")} == udp_expect
    assert fe.stats()["lostSamples"] == 0 and fe.stats()["samples"] == 25


def test_swarm_replay_through_pipeline(swarm_pcap: Path) -> None:
    """The engine as a real pipeline sink in a capture-time replay (ReplayClock)."""
    import fastflow.collector.pipeline as pipeline
    from fastflow import pcap
    from fastflow._pydecode import Decoder
    clock = pipeline.ReplayClock()
    fe = FlowEngine(clock=clock)
    fe.define("f", "ipsource,udpdestinationport", t=2, persistent=True)
    p = pipeline.Pipeline([fe], decoder=Decoder(), clock=clock)
    seen: list[float] = []
    p.feed_capture(pcap.read(swarm_pcap), step=10.0,
                   on_step=lambda t: seen.append(sum(f["value"]
                                                     for f in fe.active_flows("ALL", "f"))))
    assert len(seen) >= 9 and max(seen) > 0
    assert all(math.isfinite(v) for v in seen)
    assert fe.flows("f")[0]["key"] == "127.0.0.1,6343"
