"""The script host: each sFlow-RT JavaScript API function against its documentation
(https://sflow-rt.com/reference.php, writing_applications.php), and the safety rules: a broken
script (syntax error, exception, infinite loop, runaway allocation) is logged and stopped, never the
collector; script HTTP handlers follow the API's token and origin rules.

Real parts: a real QuickJS worker per script, real UDP telemetry into a real Pipeline/Store/Metrics
(tests/_sflow_util.TelemetryRig), a real FlowEngine, a real ApiServer on 127.0.0.1, real HTTP and
HTTPS servers on 127.0.0.1 for http()/http2(), the real Thresholds.
"""

from __future__ import annotations

import http.server
import json
import logging
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _api_util import ServerThread, request
from _service_util import wait_for
from _sflow_util import TelemetryRig
from fastflow.cli.config import ConfigError, load_config
from fastflow.collector.flows import FlowEngine
from fastflow.collector.thresholds import Thresholds
from fastflow.scripts import AllowList, ScriptApi, ScriptHost, default_allow, from_config
from fastflow.web.scripts import script_routes

pytest.importorskip("quickjs", reason="the fastflow[scripts] extra (quickjs-ng) is not installed")


# ------------------------------------------------------------------------------------- helpers
class Hosts:
    """Builds ScriptHosts over given sources and stops them all at teardown."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.hosts: list[ScriptHost] = []

    def __call__(self, sources: dict[str, str], *, metrics: Any = None, start: bool = True,
                 call_timeout: float = 3.0, memory: int = 32 << 20, token: str | None = None,
                 restart_pause: float = 3600.0, **api_kw: Any) -> ScriptHost:
        files = []
        for name, src in sources.items():
            p = self.tmp / name                 # may be an application's app/{app}/scripts/{file}
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(src)
            files.append(p)
        api_kw.setdefault("state_dir", self.tmp / "state")
        api = ScriptApi(metrics, **api_kw)
        host = ScriptHost(files, api, call_timeout=call_timeout, memory=memory, token=token,
                          restart_pause=restart_pause)
        self.hosts.append(host)
        if start:
            host.start()
            assert host.wait_started(30)
        return host

    def close(self) -> None:
        for h in self.hosts:
            h.stop()


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Hosts]:
    h = Hosts(tmp_path)
    yield h
    h.close()


@pytest.fixture
def rig() -> Iterator[TelemetryRig]:
    r = TelemetryRig()
    yield r
    r.close()


def http_json(port: int, method: str, target: str, body: Any = None,
              headers: dict[str, str] | None = None) -> tuple[int, Any]:
    raw = b"" if body is None else json.dumps(body).encode()
    status, _, out = request(port, method, target, raw, headers)
    return status, json.loads(out) if out else None


def records(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == name]


# ------------------------------------------------------------------------------ lifecycle, logs
def test_started_logged_like_sflow_rt(hosts: Hosts, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    host = hosts({"ok.js": "logInfo('apache set replicas=2');"})
    assert host.get("ok.js").state == "running"                     # type: ignore[union-attr]
    msgs = [r.getMessage() for r in caplog.records]
    assert "ok.js started" in msgs                  # "INFO: ok.js started" in the service log
    assert "apache set replicas=2" in msgs


def test_log_functions_levels(hosts: Hosts, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    hosts({"log.js": "logInfo('i'); logWarning('w'); logSevere('s'); logFine('f'); logInfo(42);"})
    got = [(r.levelname, r.getMessage()) for r in records(caplog, "fastflow.script.log.js")]
    # sFlow-RT's level names: "SEVERE: s" shows wherever ERROR does, "FINE: f" only at debug
    assert got == [("INFO", "i"), ("WARNING", "w"), ("SEVERE", "s"), ("FINE", "f"), ("INFO", "42")]
    levels = {r.getMessage(): r.levelno for r in records(caplog, "fastflow.script.log.js")}
    assert levels["s"] > logging.ERROR and logging.DEBUG < levels["f"] < logging.INFO


def test_broken_scripts_are_stopped_not_the_others(hosts: Hosts,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    host = hosts({"syntax.js": "function (", "throws.js": "null.foo;",
                  "good.js": "setHttpHandler(function(req) { return 'fine'; });"})
    assert host.get("syntax.js").state == "failed"                  # type: ignore[union-attr]
    assert "SyntaxError" in host.get("syntax.js").reason            # type: ignore[union-attr]
    assert "syntax.js:1" in host.get("syntax.js").reason            # type: ignore[union-attr]
    assert host.get("throws.js").state == "failed"                  # type: ignore[union-attr]
    assert host.get("good.js").state == "running"                   # type: ignore[union-attr]
    assert any("syntax.js" in r.getMessage() and r.levelno == logging.ERROR
               for r in caplog.records)


def test_infinite_loop_and_runaway_allocation_stop_the_script(hosts: Hosts) -> None:
    host = hosts({
        "loop.js": "setHttpHandler(function(req) { while (true) {} });",
        "interval.js": "var n = 0; setIntervalHandler(function() { n++; }, 0.1);"
                       "setHttpHandler(function(req) { return n; });",
    }, call_timeout=1.0)
    mem = hosts({"alloc.js": "setHttpHandler(function(req) { var a = []; "
                             "while (true) a.push(new Array(100000).fill(1)); });"},
                call_timeout=60.0, memory=16 << 20)
    host.scripts.update(mem.scripts)        # one route table for both hosts' scripts
    with ServerThread(script_routes(host)) as srv:
        status, body = http_json(srv.port, "GET", "/script/loop.js/json")
        assert status == 500 and "longer than 1 s" in body["error"]
        assert host.get("loop.js").state == "stopped"               # type: ignore[union-attr]
        status, body = http_json(srv.port, "GET", "/script/loop.js/json")
        assert status == 503
        status, body = http_json(srv.port, "GET", "/script/alloc.js/json")
        assert status == 500 and "out of memory" in body["error"]
        assert host.get("alloc.js").state == "stopped"              # type: ignore[union-attr]
        # the collector side and the other scripts carry on
        status, n = http_json(srv.port, "GET", "/script/interval.js/json")
        assert status == 200 and n > 0
        status, listing = http_json(srv.port, "GET", "/scripts/json")
        states = {s["name"]: s["state"] for s in listing}
        assert states == {"loop.js": "stopped", "alloc.js": "stopped", "interval.js": "running"}


def test_a_script_stopped_while_running_starts_again(hosts: Hosts,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """A stopped script comes back from its file, with fresh state, after a growing pause."""
    host = hosts({"flaky.js": "var n = 0; setHttpHandler(function(req) {"
                              "  if (req.query.hang) while (true) {} return ++n; });"},
                 call_timeout=1.0, restart_pause=0.2)
    s = host.get("flaky.js")
    assert s is not None
    with ServerThread(script_routes(host)) as srv:
        assert http_json(srv.port, "GET", "/script/flaky.js/json")[1] == 1
        assert http_json(srv.port, "GET", "/script/flaky.js/json?hang=1")[0] == 500
        assert wait_for(lambda: s.state == "running" and s.restarts == 1, 10)
        assert http_json(srv.port, "GET", "/script/flaky.js/json")[1] == 1    # a fresh context
        assert http_json(srv.port, "GET", "/script/flaky.js/json?hang=1")[0] == 500
        assert wait_for(lambda: s.state == "running" and s.restarts == 2, 10)
        listing = http_json(srv.port, "GET", "/scripts/json")[1]
    assert listing[0]["restarts"] == 2
    assert any("restarting in 0.4 s" in r.getMessage() for r in caplog.records)   # doubled


def test_exception_in_handler_is_logged_and_script_keeps_running(
        hosts: Hosts, caplog: pytest.LogCaptureFixture) -> None:
    host = hosts({"e.js": "var n = 0; setIntervalHandler(function() { n++; null.foo; }, 0.1);"
                          "setHttpHandler(function(req) { return n; });"})
    with ServerThread(script_routes(host)) as srv:
        wait_for(lambda: http_json(srv.port, "GET", "/script/e.js/json")[1] >= 3, 10)
        assert http_json(srv.port, "GET", "/script/e.js/json")[1] >= 3
    errs = [r for r in caplog.records if "TypeError" in r.getMessage()]
    assert len(errs) == 1            # the same error repeated is logged once a minute, not 10/s
    assert host.get("e.js").state == "running"                      # type: ignore[union-attr]


def test_a_busy_script_does_not_block_the_event_loop(hosts: Hosts) -> None:
    """While one script's handler runs, the server answers other requests."""
    host = hosts({"slow.js": "setHttpHandler(function(req) { var end = Date.now() + 3000; "
                             "while (Date.now() < end) {} return 'done'; });"}, call_timeout=20)
    with ServerThread(script_routes(host)) as srv:
        out: list[Any] = []
        t = threading.Thread(target=lambda: out.append(
            http_json(srv.port, "GET", "/script/slow.js/json")))
        t.start()
        assert wait_for(lambda: host.get("slow.js").calls >= 1, 10)    # type: ignore[union-attr]
        status, listing = http_json(srv.port, "GET", "/scripts/json")
        assert status == 200 and listing[0]["name"] == "slow.js"
        assert t.is_alive() and not out          # answered while the slow handler still runs
        t.join(30)
    assert out == [(200, "done")]


# ------------------------------------------------------------------------ setIntervalHandler
def test_set_interval_handler_passes_now_in_ms(hosts: Hosts) -> None:
    host = hosts({"i.js": "var calls = []; setIntervalHandler(function(now) { calls.push(now); }"
                          ", 0.2); setHttpHandler(function() { return calls; });"})
    with ServerThread(script_routes(host)) as srv:
        wait_for(lambda: len(http_json(srv.port, "GET", "/script/i.js/json")[1]) >= 3, 10)
        calls = http_json(srv.port, "GET", "/script/i.js/json")[1]
    assert len(calls) >= 3
    assert all(isinstance(c, int) for c in calls)
    assert calls[0] > 1_600_000_000_000                      # ms since the epoch, not seconds
    assert calls == sorted(calls) and len(set(calls)) == len(calls)


# ---------------------------------------------------------------------------- setHttpHandler
ECHO = """setHttpHandler(function(req) {
  if (req.path.length && req.path[0] === 'missing') throw 'not_found';
  if (req.path.length && req.path[0] === 'bad') throw 'bad_request';
  return {method: req.method, path: req.path, query: req.query, body: req.body || null,
          format: req.format, error: req.error || null};
});"""


def test_http_handler_request_object(hosts: Hosts) -> None:
    host = hosts({"echo.js": ECHO})
    with ServerThread(script_routes(host)) as srv:
        s, r = http_json(srv.port, "GET", "/script/echo.js/json?state=enabled&a=1&a=2")
        assert s == 200
        assert r == {"method": "GET", "path": [], "query": {"state": ["enabled"], "a": ["1", "2"]},
                     "body": None, "format": "json", "error": None}
        s, r = http_json(srv.port, "POST", "/script/echo.js/x/y/json", {"k": [1, 2]})
        assert (s, r["method"], r["path"], r["body"]) == (200, "POST", ["x", "y"], {"k": [1, 2]})
        s, r = http_json(srv.port, "PUT", "/script/echo.js/json", "text")
        assert (s, r["method"], r["body"]) == (200, "PUT", "text")
        s, r = http_json(srv.port, "DELETE", "/script/echo.js/a/b/c/json")
        assert (s, r["method"], r["path"]) == (200, "DELETE", ["a", "b", "c"])
        status, _, out = request(srv.port, "POST", "/script/echo.js/json", b"{not json")
        assert status == 200 and json.loads(out)["error"]
        assert http_json(srv.port, "GET", "/script/echo.js/missing/json")[0] == 404
        assert http_json(srv.port, "GET", "/script/echo.js/bad/json")[0] == 400
        assert http_json(srv.port, "GET", "/script/nosuch.js/json")[0] == 404


def test_http_handler_string_answer_is_json(hosts: Hosts) -> None:
    host = hosts({"s.js": "setHttpHandler(function(req) { return 'enabled'; });",
                  "none.js": "logInfo('no handler');"})
    with ServerThread(script_routes(host)) as srv:
        status, headers, out = request(srv.port, "GET", "/script/s.js/json?state=enabled")
        assert status == 200 and json.loads(out) == "enabled"
        assert headers["content-type"].startswith("application/json")
        assert http_json(srv.port, "GET", "/script/none.js/json")[0] == 404


def test_token_and_origin_rules(hosts: Hosts) -> None:
    host = hosts({"echo.js": ECHO}, token="s3cret")
    auth = {"Authorization": "Bearer s3cret"}
    with ServerThread(script_routes(host), token="s3cret") as srv:
        assert http_json(srv.port, "GET", "/script/echo.js/json")[0] == 200
        assert http_json(srv.port, "GET", "/script/echo.js/json?state=enabled")[0] == 401
        assert http_json(srv.port, "GET", "/script/echo.js/json?state=enabled",
                         headers=auth)[0] == 200
        for m in ("POST", "PUT", "DELETE"):
            assert http_json(srv.port, m, "/script/echo.js/json", {})[0] == 401
            assert http_json(srv.port, m, "/script/echo.js/json", {}, headers=auth)[0] == 200
        evil = {**auth, "Origin": "http://evil.example"}
        assert http_json(srv.port, "POST", "/script/echo.js/json", {}, headers=evil)[0] == 403
        assert http_json(srv.port, "GET", "/script/echo.js/json?state=enabled",
                         headers=evil)[0] == 403
        same = {**auth, "Origin": "http://127.0.0.1"}
        assert http_json(srv.port, "POST", "/script/echo.js/json", {}, headers=same)[0] == 200
        # without a token (loopback), the origin rule still holds
    with ServerThread(script_routes(host, token=None)) as srv:
        host.token = None
        assert http_json(srv.port, "GET", "/script/echo.js/json?x=1",
                         headers={"Sec-Fetch-Site": "cross-site"})[0] == 403


# ---------------------------------------------------------------------- metric / dump / agents
METRIC_JS = """setHttpHandler(function(req) {
  var f = {'vir_host_name': ['apache\\\\.*'], 'vir_cpu_state': ['running']};
  return {
    metric: metric('ALL', 'avg:vir_cpu_utilization,avg:vir_bytes_in,avg:vir_bytes_out', f),
    dump: dump('ALL', 'vir_cpu_utilization', f),
    list: metric(['127.0.0.1'], ['max:vir_cpu_utilization']),
    agents: agents(), some: agents(['192.0.2.99'])
  };
});"""


def _glob_filters(metrics: Any) -> bool:
    """True when the engine reads filters as sFlow-RT globs (CONTRACTS C3), not regexes."""
    r = metrics.query("ALL", "max:vir_cpu_utilization", {"vir_host_name": ["apache\\.*"]})
    return bool(r[0]["metricN"])


def test_metric_dump_agents(hosts: Hosts, rig: TelemetryRig) -> None:
    from fastflow.collector.agentstats import AgentStats

    stats = AgentStats()
    rig.pipeline.sinks.append(stats)
    names = ["apache.1.aaaa", "apache.2.bbbb", "other.1.cccc"]
    for _ in range(3):
        rig.send(names, util=50.0, bytes_per_s=1000.0)
        time.sleep(0.3)
    assert wait_for(lambda: rig.received >= 9, 5)
    host = hosts({"m.js": METRIC_JS}, metrics=rig.metrics, agentstats=stats)
    with ServerThread(script_routes(host)) as srv:
        s, r = http_json(srv.port, "GET", "/script/m.js/json")
    assert s == 200
    m = r["metric"]
    assert [x["metricName"] for x in m] == ["avg:vir_cpu_utilization", "avg:vir_bytes_in",
                                            "avg:vir_bytes_out"]
    assert isinstance(m[0]["metricN"], int)        # sFlow-RT: metricN is an integer count
    one = r["list"][0]
    assert isinstance(one["lastUpdate"], int)      # ms since the newest contributing sample
    assert one["agent"] == "127.0.0.1" and one["dataSource"]    # max: names its holder
    if _glob_filters(rig.metrics):
        assert m[0]["metricN"] == 2                 # apache.1 and apache.2, not other.1
        assert m[0]["metricValue"] == pytest.approx(50.0, rel=0.3)
        assert len(r["dump"]) == 2
    assert r["list"][0]["metricN"] == 3            # an array of agents / metrics is accepted
    assert "127.0.0.1" in r["agents"] and r["some"] == {}
    assert r["agents"]["127.0.0.1"]["sFlowDatagramsReceived"] >= 9


def test_table_against_contract(hosts: Hosts, rig: TelemetryRig) -> None:
    if not hasattr(rig.metrics, "table"):
        pytest.skip("Metrics.table (CONTRACTS C3) lands with the metrics change")
    rig.send(["apache.1.aaaa"], util=10.0)
    time.sleep(0.3)
    rig.send(["apache.1.aaaa"], util=10.0)
    wait_for(lambda: rig.received >= 2, 5)
    host = hosts({"t.js": "setHttpHandler(function() { return table('ALL', "
                          "'vir_host_name,vir_cpu_utilization'); });"}, metrics=rig.metrics)
    with ServerThread(script_routes(host)) as srv:
        s, r = http_json(srv.port, "GET", "/script/t.js/json")
    assert s == 200 and isinstance(r, list)


# -------------------------------------------------------------------- setFlow / activeFlows
def test_set_flow_active_flows_clear_flow(hosts: Hosts) -> None:
    engine = FlowEngine()
    host = hosts({"f.js": """
      setFlow('pair', {keys: 'ipsource,ipdestination', value: 'bytes', t: 2});
      var bad; try { setFlow('bad', {keys: 'no_such_key'}); } catch (e) { bad = '' + e; }
      setHttpHandler(function(req) {
        if (req.query.clear) { clearFlow('pair'); return 'cleared'; }
        return {flows: activeFlows('ALL', 'pair', 10, 0, 'sum'),
                unknown: activeFlows('ALL', 'nosuch', 10), bad: bad};
      });"""}, flows=engine)
    assert "pair" in engine.definitions()
    with ServerThread(script_routes(host)) as srv:
        s, r = http_json(srv.port, "GET", "/script/f.js/json")
        assert s == 200 and r["flows"] == [] and r["unknown"] == []
        assert "setFlow" in r["bad"]                # a bad spec is an exception the script catches
        assert http_json(srv.port, "GET", "/script/f.js/json?clear=1")[1] == "cleared"
    assert "pair" not in engine.definitions()


# ------------------------------------------------------- setThreshold / setEventHandler / clear
def test_thresholds_and_events(hosts: Hosts, rig: TelemetryRig,
                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    th = Thresholds(rig.metrics)
    host = hosts({"t.js": """
      setThreshold('hot', {metric: 'vir_cpu_utilization', value: 50});
      setEventHandler(function(evt) {
        logInfo('event ' + evt.thresholdID + ' ' + evt.metric + ' ' + (evt.value > 50));
      }, ['hot']);
      setHttpHandler(function(req) { clearThreshold('hot'); return 'ok'; });"""},
        metrics=rig.metrics, thresholds=th)
    hot = th.get("hot")
    assert hot is not None and hot["metric"] == "vir_cpu_utilization"
    for _ in range(3):                              # drive the real thresholds with telemetry
        rig.send(["apache.1.aaaa"], util=90.0)
        time.sleep(0.3)
    th.evaluate()
    assert wait_for(lambda: any(r.getMessage() == "event hot vir_cpu_utilization true"
                                for r in caplog.records), 10)
    with ServerThread(script_routes(host)) as srv:
        assert http_json(srv.port, "GET", "/script/t.js/json")[1] == "ok"
    assert th.get("hot") is None


# ------------------------------------------ what sFlow-RT's published applications rely on
# (sflow-rt/top-flows, flow-trend, dashboard-example, prometheus: include/scriptdir, flowKeys,
# setFlow with query-string values and fs, flow names read by metric(), app/{app}/scripts routes,
# deep paths and /txt answers). The scripts below are ours, written in the applications' style.
def test_include_scriptdir_and_flow_keys(hosts: Hosts, tmp_path: Path) -> None:
    app = tmp_path / "app" / "trend" / "scripts"
    (app / "inc").mkdir(parents=True)
    (app / "inc" / "lib.js").write_text("function Lib(n) { this.n = n; }\n"
                                        "Lib.prototype.twice = function() { return 2 * this.n; };\n"
                                        "var fromLib = 'yes';\n")
    (app / "inc" / "notjs.txt").write_text("var x = 1;")
    host = hosts({"app/trend/scripts/main.js": """
      include(scriptdir() + '/inc/lib.js');
      include('inc/lib.js');                                   // relative to the script too
      var lib = new Lib(21), errs = [];
      ['inc/notjs.txt', 'inc/missing.js'].forEach(function(f) {
        try { include(f); } catch (e) { errs.push('' + e); }
      });
      setHttpHandler(function(req) {
        var keys = flowKeys(), names = [];
        for (var k in keys) names.push(k);
        return {dir: scriptdir(), twice: lib.twice(), fromLib: fromLib, errs: errs,
                hasIpsource: names.indexOf('ipsource') >= 0, description: keys['ipsource']};
      });"""})
    with ServerThread(script_routes(host)) as srv:
        s, r = http_json(srv.port, "GET", "/app/trend/scripts/main.js/json")
    assert s == 200
    assert r["dir"] == str(app.resolve()) and r["twice"] == 42 and r["fromLib"] == "yes"
    assert "only .js files" in r["errs"][0] and "cannot read" in r["errs"][1]
    assert r["hasIpsource"] and isinstance(r["description"], str)


def test_application_routes_deep_paths_and_text(hosts: Hosts) -> None:
    echo = """setHttpHandler(function(req) {
      if (req.path[0] === 'metrics') return '# TYPE x gauge\\nx{path="' + req.path.join('/') + '"} 1\\n';
      return {app: '%s', path: req.path, format: req.format};
    });"""
    host = hosts({"app/one/scripts/top.js": echo % "one", "app/two/scripts/top.js": echo % "two",
                  "solo.js": echo % "solo"})
    with ServerThread(script_routes(host)) as srv:
        s, r = http_json(srv.port, "GET", "/app/two/scripts/top.js/a/b/c/d/e/json")
        assert (s, r) == (200, {"app": "two", "path": ["a", "b", "c", "d", "e"], "format": "json"})
        assert http_json(srv.port, "GET", "/app/one/scripts/top.js/json")[1]["app"] == "one"
        # the file name alone is ambiguous here; it says where to ask
        s, r = http_json(srv.port, "GET", "/script/top.js/json")
        assert s == 404 and "/app/{app}/scripts/top.js" in r["error"]
        assert http_json(srv.port, "GET", "/script/solo.js/x/json")[1]["path"] == ["x"]
        # /txt: a returned string is the plain-text answer (the Prometheus exporter's way)
        status, headers, out = request(srv.port, "GET", "/app/one/scripts/top.js/metrics/ALL/txt")
        assert status == 200 and headers["content-type"].startswith("text/plain")
        assert out == b'# TYPE x gauge\nx{path="metrics/ALL"} 1\n'
        assert http_json(srv.port, "GET", "/script/solo.js/x/txt")[1]["format"] == "txt"
        assert http_json(srv.port, "GET", "/script/solo.js/x/html")[0] == 404
        assert http_json(srv.port, "GET", "/script/solo.js/" + "a/" * 40 + "json")[0] == 404
        assert http_json(srv.port, "GET", "/app/three/scripts/top.js/json")[0] == 404
    assert {i["app"] for i in host.state()} == {"one", "two", None}


def test_set_flow_as_applications_do_and_flows_read_as_metrics(hosts: Hosts) -> None:
    from test_flows import agent_text, engine, rows

    fe, _ = engine()
    host = hosts({"f.js": """
      var SEP = '_SEP_';
      setFlow('app_total', {value: 'bytes', t: 2, fs: SEP});              // no keys
      setFlow('app_pairs', {keys: 'ipsource,ipdestination', value: 'bytes', filter: null,
                            t: '20', n: '10', fs: SEP, dropped: false});  // query-string numbers
      setFlow('app_empty_filter', {keys: 'ipsource', value: 'frames', filter: ''});
      var bad = [];
      [{keys: 'ipsource', n: 'ten'}, {keys: 'ipsource', colour: 'red'}].forEach(function(spec) {
        try { setFlow('bad', spec); } catch (e) { bad.push('' + e); }
      });
      setHttpHandler(function(req) {
        return {metric: metric('ALL', 'sum:app_total,max:app_pairs,no_such_metric'),
                top: activeFlows('ALL', 'app_pairs', 5, 0, 'max'), bad: bad};
      });"""}, flows=fe)
    specs = fe.definitions()
    assert specs["app_pairs"]["n"] == 10 and specs["app_pairs"]["t"] == 20
    assert specs["app_pairs"]["fs"] == "_SEP_" and specs["app_empty_filter"]["filter"] in (None, "")
    fe.add_flows(rows({"ds": 1, "len": 100}, {"ds": 2, "len": 300, "dst": "192.0.2.7"}), agent_text)
    with ServerThread(script_routes(host)) as srv:
        s, r = http_json(srv.port, "GET", "/script/f.js/json")
    assert s == 200
    total, pairs, unknown = r["metric"]
    assert total["metricName"] == "sum:app_total" and total["metricN"] == 2
    assert total["metricValue"] > pairs["metricValue"] > 0
    assert pairs["topKeys"][0]["key"] == "192.0.2.1_SEP_192.0.2.7"
    assert unknown == {"metricName": "no_such_metric", "metricN": 0}
    assert r["top"][0]["key"] == "192.0.2.1_SEP_192.0.2.7"
    assert "must be a number" in r["bad"][0] and "unknown flow definition field" in r["bad"][1]


def test_set_flow_handler_gets_logged_flows(hosts: Hosts) -> None:
    """setFlowHandler(fn, [names]): each flow logged from then on (``log: true`` definitions),
    oldest first, for the named definitions only (the sFlow blog's ICMP-unreachable scripts)."""
    from test_flows import agent_text, engine, rows

    fe, _ = engine()
    host = hosts({"fl.js": """
      var seen = [];
      setFlow('pairs', {keys: 'ipsource,ipdestination', value: 'frames', log: true,
                        flowStart: true});
      setFlow('sources', {keys: 'ipsource', value: 'frames', log: true, flowStart: true});
      setFlowHandler(function(rec) {
        seen.push([rec.name, rec.flowKeys, rec.agent, typeof rec.value]);
      }, ['pairs']);
      setHttpHandler(function(req) { return seen; });"""}, flows=fe)
    fe.add_flows(rows({"ds": 1}, {"ds": 1, "src": "192.0.2.9"}), agent_text)
    want = [["pairs", "192.0.2.1,192.0.2.2", "10.0.0.1", "number"],
            ["pairs", "192.0.2.9,192.0.2.2", "10.0.0.1", "number"]]
    with ServerThread(script_routes(host)) as srv:
        assert wait_for(lambda: http_json(srv.port, "GET", "/script/fl.js/json")[1] == want, 10), \
            http_json(srv.port, "GET", "/script/fl.js/json")
    info = host.state()[0]
    assert info["flowHandler"] and info["flowsMissed"] == 0


# --------------------------------------------------------------------------- http / http2
class _Handler(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode()
        status = 404 if self.path.startswith("/missing") else 200
        out = json.dumps({"method": self.command, "path": self.path, "body": body,
                          "ctype": self.headers.get("Content-Type"),
                          "auth": self.headers.get("Authorization")}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *a: Any) -> None:
        pass


@pytest.fixture
def web() -> Iterator[http.server.ThreadingHTTPServer]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_http2_and_http(hosts: Hosts, web: http.server.ThreadingHTTPServer) -> None:
    port = web.server_address[1]
    base = f"http://127.0.0.1:{port}"
    host = hosts({"h.js": f"""setHttpHandler(function(req) {{
      var r = http2({{url: '{base}/services/apache', method: 'POST',
                     headers: {{'Content-Type': 'application/json'}}, body: JSON.stringify({{a: 1}})}});
      var g = http('{base}/x?y=1');
      var p = http('{base}/p', 'put', 'text/plain', 'hello', 'u', 'pw');
      var e1, e2;
      try {{ http('{base}/missing'); }} catch (e) {{ e1 = '' + e; }}
      try {{ http2({{url: 'http://127.0.0.2:{port}/'}}); }} catch (e) {{ e2 = '' + e; }}
      return {{status: r.status, body: JSON.parse(r.body), hdr: r.headers['Content-Type'],
              g: JSON.parse(g), p: JSON.parse(p), e1: e1, e2: e2,
              missing: http2({{url: '{base}/missing'}}).status}};
    }});"""}, allow=AllowList([f"127.0.0.1:{port}"]))
    with ServerThread(script_routes(host)) as srv:
        s, r = http_json(srv.port, "GET", "/script/h.js/json")
    assert s == 200, r
    assert r["status"] == 200 and r["hdr"] == "application/json"
    assert r["body"]["method"] == "POST" and r["body"]["path"] == "/services/apache"
    assert json.loads(r["body"]["body"]) == {"a": 1}
    assert r["g"]["method"] == "GET" and r["g"]["path"] == "/x?y=1"
    assert r["p"]["method"] == "PUT" and r["p"]["body"] == "hello"
    assert r["p"]["ctype"] == "text/plain" and r["p"]["auth"].startswith("Basic ")
    assert "404" in r["e1"]                          # http() throws on an error status
    assert r["missing"] == 404                       # http2() returns it
    assert "not allowed" in r["e2"]                  # only the allowed hosts are reached


def test_http2_certs_client_tls(hosts: Hosts, tmp_path: Path) -> None:
    """``certs``: a directory of ca.pem, cert.pem, key.pem, as docker --tlsverify wants."""
    from _tls_engine import make_certs

    srv_dir, cli_dir = make_certs(tmp_path / "pki")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(srv_dir / "cert.pem", srv_dir / "key.pem")
    ctx.load_verify_locations(srv_dir / "ca.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED              # the client must present its certificate
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    web.socket = ctx.wrap_socket(web.socket, server_side=True)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    port = web.server_address[1]
    (tmp_path / "tls").symlink_to(cli_dir)
    try:
        host = hosts({"tls.js": f"""setHttpHandler(function(req) {{
          var ok = http2({{url: 'https://127.0.0.1:{port}/version', certs: 'tls/'}});
          var no; try {{ http2({{url: 'https://127.0.0.1:{port}/version'}}); }}
          catch (e) {{ no = '' + e; }}
          return {{status: ok.status, no: no}};
        }});"""}, allow=AllowList([f"127.0.0.1:{port}"]))
        with ServerThread(script_routes(host)) as srv:
            s, r = http_json(srv.port, "GET", "/script/tls.js/json")
        assert s == 200 and r["status"] == 200
        assert "CERTIFICATE_VERIFY_FAILED" in r["no"] or "certificate" in r["no"].lower()
    finally:
        web.shutdown()
        web.server_close()


def test_allow_list_entries() -> None:
    a = AllowList(["127.0.0.1:2376", "manager", "[::1]:8080", "https://10.0.0.1:2376"])
    assert a.allows("127.0.0.1", 2376) and not a.allows("127.0.0.1", 2377)
    assert a.allows("MANAGER", 1) and a.allows("::1", 8080) and a.allows("10.0.0.1", 2376)
    assert default_allow("tcp://127.0.0.1:2376") == ["127.0.0.1:2376"]
    assert default_allow("unix:///var/run/docker.sock") == []


# ------------------------------------------------------------ storeGet/storeSet, properties
def test_store_persisted_and_system_property(tmp_path: Path) -> None:
    js = {"s.js": """
      var before = storeGet('count') || 0;
      storeSet('count', before + 1); storeSet('obj', {a: [1, 2]}); storeSet('gone', 1);
      storeSet('gone');
      setHttpHandler(function() { return {count: storeGet('count'), obj: storeGet('obj'),
        gone: storeGet('gone'), prop: getSystemProperty('elb.service'),
        none: getSystemProperty('no.such')}; });"""}
    for expect in (1, 2):                           # a second run reads what the first stored
        h = Hosts(tmp_path)
        host = h(js, properties={"elb.service": "apache"})
        with ServerThread(script_routes(host)) as srv:
            r = http_json(srv.port, "GET", "/script/s.js/json")[1]
        h.close()
        assert r == {"count": expect, "obj": {"a": [1, 2]}, "gone": None, "prop": "apache",
                     "none": None}
    assert json.loads((tmp_path / "state" / "scripts" / "s.js.store.json").read_text())["count"] == 2


def test_shared_values_between_scripts(hosts: Hosts, monkeypatch: pytest.MonkeyPatch) -> None:
    import fastflow.scripts.api as api_mod

    monkeypatch.setattr(api_mod, "MAX_SHARED_BYTES", 200)
    host = hosts({"writer.js": """
      sharedSet('config', {replicas: [1, 3]}); sharedSet('tmp', 1); sharedSet('tmp');
      var full = null;
      try { sharedSet('big', new Array(300).join('x')); } catch (e) { full = '' + e; }
      setHttpHandler(function() { return full; });""",
                  "reader.js": """
      setHttpHandler(function() {
        return {config: sharedGet('config'), tmp: sharedGet('tmp'), big: sharedGet('big')};
      });"""})
    with ServerThread(script_routes(host)) as srv:
        assert "shared store is full" in http_json(srv.port, "GET", "/script/writer.js/json")[1]
        r = http_json(srv.port, "GET", "/script/reader.js/json")[1]
    assert r == {"config": {"replicas": [1, 3]}, "tmp": None, "big": None}


# ---------------------------------------------------------------------------------- config
def test_config_scripts_section(tmp_path: Path) -> None:
    js = tmp_path / "a.js"
    js.write_text("logInfo('a');")
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text(f'[scripts]\nfiles = ["{js}"]\nhttp_allow = ["127.0.0.1:2376"]\n'
                        'call_timeout = 2\n[scripts.properties]\n"elb.x" = "y"\n')
    cfg = load_config(cfg_file, env={})
    assert cfg.scripts["files"] == [str(js)]
    host = from_config(cfg.scripts, metrics=None)
    assert list(host.scripts) == ["a.js"]
    assert host.api.allow.allows("127.0.0.1", 2376) and host.api.properties == {"elb.x": "y"}
    with pytest.raises(ValueError, match="unknown key"):
        from_config({"files": [], "bogus": 1}, metrics=None)
    with pytest.raises(ValueError, match="no such file"):
        from_config({"files": [str(tmp_path / "nope.js")]}, metrics=None)
    with pytest.raises(ValueError, match="positive"):
        from_config({"call_timeout": 0}, metrics=None)
    # the default allow-list is the scaler's Docker API host
    assert from_config({}, metrics=None, docker_host="tcp://127.0.0.1:2376").api.allow.allows(
        "127.0.0.1", 2376)


def test_cli_script_flag_appends(tmp_path: Path) -> None:
    import argparse

    from fastflow.cli.run import add_arguments, config_from_args

    p = argparse.ArgumentParser()
    add_arguments(p)
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('[scripts]\nfiles = ["one.js"]\n')
    args = p.parse_args(["--config", str(cfg_file), "--script", "two.js", "--script", "three.js"])
    assert config_from_args(args).scripts["files"] == ["one.js", "two.js", "three.js"]


def test_service_config_error_for_missing_script(tmp_path: Path) -> None:
    from fastflow.cli.run import Service

    cfg = load_config(overrides={"collector.port": 0, "api.port": 0}, env={})
    cfg.scripts["files"] = [str(tmp_path / "missing.js")]
    with pytest.raises(ConfigError, match="no such file"):
        Service(cfg, scaler=False)


def test_service_runs_scripts_and_serves_their_routes(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """``fastflow run`` wiring in-process: the host is built, started, routed and stopped."""
    import asyncio

    from fastflow.cli.run import Service

    caplog.set_level(logging.INFO)
    js = tmp_path / "svc.js"
    js.write_text("var hits = 0; setHttpHandler(function(req) { hits++; "
                  "return {hits: hits, agents: agents(), m: metric('ALL', 'max:load_one')}; });")
    cfg = load_config(overrides={"collector.port": 0, "collector.bind": "127.0.0.1",
                                 "api.port": 0}, env={})
    cfg.scripts.update({"files": [str(js)], "state_dir": str(tmp_path / "state")})
    svc = Service(cfg, scaler=False)

    async def run() -> tuple[Any, ...]:
        await svc.start()
        try:
            assert svc.scripts is not None
            await asyncio.to_thread(svc.scripts.wait_started, 30)
            port = svc.http_port
            assert port is not None
            one = await asyncio.to_thread(http_json, port, "GET", "/script/svc.js/json")
            two = await asyncio.to_thread(http_json, port, "POST", "/script/svc.js/json", {})
            listing = await asyncio.to_thread(http_json, port, "GET", "/scripts/json")
            prom = await asyncio.to_thread(request, port, "GET", "/metrics")
            return one, two, listing, prom
        finally:
            await svc.stop()

    one, two, listing, prom = asyncio.run(run())
    from prometheus_client.parser import text_string_to_metric_families
    samples = {(s.name, s.labels.get("script")): s.value
               for f in text_string_to_metric_families(prom[2].decode()) for s in f.samples}
    assert samples[("fastflow_script_running", "svc.js")] == 1
    assert samples[("fastflow_script_calls_total", "svc.js")] == 2
    assert samples[("fastflow_script_restarts_total", "svc.js")] == 0
    assert one[0] == 200 and one[1]["hits"] == 1 and one[1]["agents"] == {}
    assert one[1]["m"][0]["metricName"] == "max:load_one"
    assert two == (200, {"hits": 2, "agents": {}, "m": one[1]["m"]})
    assert listing[1][0]["name"] == "svc.js" and listing[1][0]["state"] == "running"
    assert "svc.js started" in [r.getMessage() for r in caplog.records]
    assert not [t for t in threading.enumerate() if t.name.startswith("script-") and t.is_alive()]
