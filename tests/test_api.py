"""The HTTP server (edge cases over a real TCP socket) and the core routes (on a real pipeline)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from _api_util import ServerThread, get_json, read_response, request
from fastflow.web.api import ApiServer, core_routes, prometheus_text
from fastflow.web.http import HTTPError, Request, Response, Route, json_response

# --------------------------------------------------------------------------------------------------
# A small set of test routes (real handlers, no mocks)
# --------------------------------------------------------------------------------------------------
STATE: dict[str, Any] = {}


def _echo(req: Request) -> Response:
    return json_response({"path": req.path, "params": req.params, "query": req.query,
                          "method": req.method})


async def _async_echo(req: Request) -> Response:
    await asyncio.sleep(0)
    return json_response({"async": True, "body": req.body.decode()})


def _set(req: Request) -> Response:
    STATE["value"] = req.json()
    return json_response({"ok": True})


def _boom(req: Request) -> Response:
    raise RuntimeError("secret internal detail /etc/passwd")


def _bad(req: Request) -> Response:
    raise HTTPError(422, "unprocessable thing")


def _value_error(req: Request) -> Response:
    raise ValueError("bad number 'x'")


def _key_error(req: Request) -> Response:
    return json_response({"x": req.query["missing"]})


def _not_a_response(req: Request) -> Any:
    return {"oops": 1}


ROUTES = [
    Route("GET", "/echo/{a}/{b}", _echo),
    Route("POST", "/async", _async_echo),
    Route("PUT", "/state", _set, mutating=True),
    Route("GET", "/state", lambda r: json_response(STATE.get("value"))),
    Route("GET", "/boom", _boom),
    Route("GET", "/bad", _bad),
    Route("GET", "/valueerror", _value_error),
    Route("GET", "/keyerror", _key_error),
    Route("GET", "/notresponse", _not_a_response),
]


@pytest.fixture(scope="module")
def srv():
    with ServerThread(ROUTES) as s:
        yield s


@pytest.fixture(scope="module")
def tsrv():
    with ServerThread(ROUTES, token="s3cret") as s:
        yield s


def test_basic_get_and_params(srv: ServerThread) -> None:
    status, body = get_json(srv.port, "/echo/x/y?k=1&k=2&z=")
    assert status == 200
    assert body["params"] == {"a": "x", "b": "y"}
    assert body["query"] == {"k": ["1", "2"], "z": [""]}


def test_percent_decoding(srv: ServerThread) -> None:
    status, body = get_json(srv.port, "/echo/avg%3Avir_cpu/a%2Fb?vir_host_name=apache%2E.%2A&s=a+b")
    assert status == 200
    # %2F inside a segment stays inside the parameter, it does not split the path
    assert body["params"] == {"a": "avg:vir_cpu", "b": "a/b"}
    assert body["query"] == {"vir_host_name": ["apache..*"], "s": ["a b"]}
    status, body = get_json(srv.port, "/%65cho/x/y")
    assert status == 200 and body["params"] == {"a": "x", "b": "y"}


def test_bad_percent_encoding_is_400(srv: ServerThread) -> None:
    status, _, body = request(srv.port, "GET", "/echo/%ff%fe/x")
    assert status == 400 and b"percent" in body
    status, _, _ = request(srv.port, "GET", "/echo/%00/x")
    assert status == 400


def test_404_and_405(srv: ServerThread) -> None:
    status, hdrs, body = request(srv.port, "GET", "/nope")
    assert status == 404 and json.loads(body)["error"]
    assert hdrs["content-type"].startswith("application/json")
    status, hdrs, body = request(srv.port, "DELETE", "/echo/a/b")
    assert status == 405
    assert "GET" in hdrs["allow"] and "HEAD" in hdrs["allow"]


def test_head(srv: ServerThread) -> None:
    status, hdrs, _ = request(srv.port, "GET", "/echo/a/b")
    with srv.connect() as s:
        s.sendall(b"HEAD /echo/a/b HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        st, h, body = read_response(s, head_only=True)
        assert st == 200 and body == b""
        # same length as the GET answer (the echo names the method: HEAD is one byte longer)
        assert int(h["content-length"]) == int(hdrs["content-length"]) + 1
        # the connection is still usable: no body bytes were sent after the HEAD answer
        s.sendall(b"GET /echo/c/d HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        st, _, body = read_response(s)
        assert st == 200 and json.loads(body)["params"] == {"a": "c", "b": "d"}


def test_keep_alive_many_requests_one_connection(srv: ServerThread) -> None:
    with srv.connect() as s:
        for i in range(20):
            s.sendall(f"GET /echo/{i}/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            st, h, body = read_response(s)
            assert st == 200 and h.get("connection", "keep-alive") == "keep-alive"
            assert json.loads(body)["params"]["a"] == str(i)
        # pipelined requests are answered in order
        s.sendall(b"GET /echo/p1/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /echo/p2/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert json.loads(read_response(s)[2])["params"]["a"] == "p1"
        assert json.loads(read_response(s)[2])["params"]["a"] == "p2"
        # a stray CRLF between requests is tolerated
        s.sendall(b"\r\nGET /echo/crlf/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert json.loads(read_response(s)[2])["params"]["a"] == "crlf"
        s.sendall(b"GET /echo/last/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        st, h, _ = read_response(s)
        assert st == 200
        assert s.recv(10) == b""


def test_http10_closes(srv: ServerThread) -> None:
    with srv.connect() as s:
        s.sendall(b"GET /echo/a/b HTTP/1.0\r\n\r\n")
        st, h, _ = read_response(s)
        assert st == 200
        assert s.recv(10) == b""


def test_post_body_sync_and_async(srv: ServerThread) -> None:
    status, _, body = request(srv.port, "POST", "/async", b"hello")
    assert status == 200 and json.loads(body) == {"async": True, "body": "hello"}


def test_expect_100_continue(srv: ServerThread) -> None:
    with srv.connect() as s:
        s.sendall(b"POST /async HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert s.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(b"hello")
        st, _, body = read_response(s)
        assert st == 200 and json.loads(body)["body"] == "hello"


def test_413_request_too_large(srv: ServerThread) -> None:
    with srv.connect() as s:
        s.sendall(b"POST /async HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2000000\r\n\r\n")
        st, _, body = read_response(s)
        assert st == 413 and b"exceeds" in body


def test_huge_header_block_is_431(srv: ServerThread) -> None:
    with srv.connect() as s:
        try:
            s.sendall(b"GET /echo/a/b HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        st, _, _ = read_response(s)
        assert st in (400, 431)          # aiohttp: 400 "Got more than 8190 bytes"


@pytest.mark.parametrize("raw", [
    b"GARBAGE\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET /a b HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"GET noslash HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"G(T / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nno colon here\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",                        # HTTP/1.1 without Host
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
])
def test_malformed_requests_are_400(srv: ServerThread, raw: bytes, caplog) -> None:
    """aiohttp's parser answers 400 (plain text); no traceback is logged, the server goes on."""
    with srv.connect() as s:
        s.sendall(raw)
        st, _, body = read_response(s)
        assert st == 400, body
        assert b"Traceback" not in body
    assert not any(r.exc_info for r in caplog.records)
    assert request(srv.port, "GET", "/echo/a/b")[0] == 200


def test_unsupported_version_and_chunked(srv: ServerThread) -> None:
    with srv.connect() as s:
        s.sendall(b"GET / HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_response(s)[0] in (400, 404, 505)
    with srv.connect() as s:   # aiohttp reads chunked bodies
        s.sendall(b"POST /async HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5\r\nhello\r\n0\r\n\r\n")
        st, _, body = read_response(s)
        assert st == 200 and json.loads(body)["body"] == "hello"


def test_handler_exception_is_500_without_internals(srv: ServerThread, caplog) -> None:
    status, _, body = request(srv.port, "GET", "/boom")
    assert status == 500
    assert b"secret" not in body and b"Traceback" not in body
    assert json.loads(body)["error"] == "internal server error"
    status, _, _ = request(srv.port, "GET", "/notresponse")
    assert status == 500
    # and the server still answers
    assert request(srv.port, "GET", "/echo/a/b")[0] == 200


def test_http_value_key_errors_are_4xx(srv: ServerThread) -> None:
    assert request(srv.port, "GET", "/bad")[0] == 422
    st, _, body = request(srv.port, "GET", "/valueerror")
    assert st == 400 and b"bad number" in body
    st, _, body = request(srv.port, "GET", "/keyerror")
    assert st == 400 and b"missing" in body


def test_bad_json_body_is_400(tsrv: ServerThread) -> None:
    st, _, _ = request(tsrv.port, "PUT", "/state", b"{not json",
                       headers={"Authorization": "Bearer s3cret"})
    assert st == 400


def test_token_required_for_mutating_routes(tsrv: ServerThread) -> None:
    STATE.clear()
    st, h, _ = request(tsrv.port, "PUT", "/state", b'{"v": 1}')
    assert st == 401 and "bearer" in h["www-authenticate"].lower()
    st, _, _ = request(tsrv.port, "PUT", "/state", b'{"v": 2}',
                       headers={"Authorization": "Bearer wrong"})
    assert st == 401
    st, _, _ = request(tsrv.port, "PUT", "/state", b'{"v": 3}',
                       headers={"Authorization": "Basic s3cret"})
    assert st == 401
    assert "value" not in STATE          # nothing changed
    st, _, _ = request(tsrv.port, "PUT", "/state", b'{"v": 4}',
                       headers={"Authorization": "Bearer s3cret"})
    assert st == 200 and STATE["value"] == {"v": 4}
    # reading routes need no token
    assert get_json(tsrv.port, "/state") == (200, {"v": 4})


def test_no_token_loopback_allows_mutation(srv: ServerThread) -> None:
    st, _, _ = request(srv.port, "PUT", "/state", b'{"v": 9}')
    assert st == 200


def test_refuses_non_loopback_without_token() -> None:
    async def go() -> None:
        server = ApiServer(ROUTES, "0.0.0.0", 0)
        with pytest.raises(ValueError, match="token"):
            await server.start()
        assert server.sockets == []        # refused before binding anything
    asyncio.run(go())


def test_header_timeout_closes() -> None:
    with ServerThread(ROUTES, header_timeout=0.3) as s, s.connect() as c:
        c.sendall(b"GET /echo/a/b HTTP/1.1\r\n")   # never finishes the header block
        assert c.recv(10) == b""                     # closed by the header timeout
        assert s.server.stats["header_timeouts"] == 1


def test_idle_keepalive_connection_is_closed() -> None:
    with ServerThread(ROUTES, idle_timeout=0.3) as s, s.connect() as c:
        c.sendall(b"GET /echo/a/b HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_response(c)[0] == 200
        t0 = time.monotonic()
        assert c.recv(10) == b""
        assert time.monotonic() - t0 < 5


def test_client_disconnect_mid_body_does_not_hurt(srv: ServerThread) -> None:
    with srv.connect() as c:
        c.sendall(b"POST /async HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nshort")
    assert request(srv.port, "GET", "/echo/a/b")[0] == 200


def test_static_files(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<html>dash</html>")
    (tmp_path / "app.js").write_text("let x = 1;")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.css").write_text("body{}")
    secret = tmp_path.parent / f"{tmp_path.name}-secret.txt"
    secret.write_text("nope")
    with ServerThread(ROUTES, static_dir=tmp_path) as s:
        st, h, body = request(s.port, "GET", "/")
        assert st == 200 and body == b"<html>dash</html>" and h["content-type"].startswith("text/html")
        st, h, _ = request(s.port, "GET", "/app.js")
        assert st == 200 and "javascript" in h["content-type"]
        assert request(s.port, "GET", "/sub/a.css")[0] == 200
        assert request(s.port, "HEAD", "/sub/a.css")[0] == 200
        assert request(s.port, "GET", f"/../{secret.name}")[0] == 404
        assert request(s.port, "GET", f"/%2e%2e/{secret.name}")[0] == 404
        assert request(s.port, "GET", "/missing.js")[0] == 404
        # routes win over files
        assert request(s.port, "GET", "/echo/a/b")[0] == 200


def test_many_concurrent_connections(srv: ServerThread) -> None:
    socks = [srv.connect() for _ in range(50)]
    try:
        for i, s in enumerate(socks):
            s.sendall(f"GET /echo/{i}/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        for i, s in enumerate(socks):
            assert json.loads(read_response(s)[2])["params"]["a"] == str(i)
    finally:
        for s in socks:
            s.close()


def test_half_open_connection_then_close(srv: ServerThread) -> None:
    c = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    c.close()
    assert request(srv.port, "GET", "/echo/a/b")[0] == 200


# --------------------------------------------------------------------------------------------------
# Prometheus text
# --------------------------------------------------------------------------------------------------
def test_prometheus_text_format() -> None:
    entries: list[dict[str, Any]] = [
        {"agent": "192.0.2.2", "dataSource": "3.100550", "metricName": "vir_cpu_utilization",
         "metricValue": 12.5, "hostName": 'web"1\\x'},
        {"agent": "192.0.2.2", "dataSource": "3.100550", "metricName": "vir_host_name",
         "metricValue": "web1"},
        {"agent": "192.0.2.2", "dataSource": "2.1", "metricName": "load-one", "metricValue": 3},
    ]
    own = {"fastflow_decoder_rejected_total": [({"reason": "bad_version"}, 7)],
           "fastflow_agents": [({}, 1)]}
    text = prometheus_text(entries, own)
    lines = text.splitlines()
    # sFlow-RT's names: sflow_<metric>{agent, datasource, host}
    assert "# TYPE sflow_vir_cpu_utilization gauge" in lines
    assert ('sflow_vir_cpu_utilization{agent="192.0.2.2",datasource="3.100550",'
            'host="web\\"1\\\\x"} 12.5' in lines)
    assert not any(line.startswith("sflow_vir_host_name") for line in lines)   # text: no sample
    assert 'sflow_load_one{agent="192.0.2.2",datasource="2.1"} 3' in lines
    assert "# TYPE fastflow_decoder_rejected_total counter" in lines
    assert 'fastflow_decoder_rejected_total{reason="bad_version"} 7' in lines
    assert "fastflow_agents 1" in lines
    assert text.endswith("\n")


# --------------------------------------------------------------------------------------------------
# Core routes on a real pipeline fed with the real capture
# --------------------------------------------------------------------------------------------------
def _real_parts():
    """(Pipeline, Metrics, AgentStats) of the real engine."""
    from fastflow.collector.agentstats import AgentStats
    from fastflow.collector.metrics import Metrics
    from fastflow.collector.pipeline import Pipeline, ReplayClock
    from fastflow.collector.store import Store

    agentstats: Any = AgentStats()
    clock = ReplayClock()
    store = Store(depth=32, expire_after=1e9, clock=clock)
    sinks = [store] + ([agentstats] if agentstats is not None else [])
    pipeline = Pipeline(sinks, clock=clock)
    metrics = Metrics(store, agentstats)
    return pipeline, metrics, agentstats


@pytest.fixture(scope="module")
def core(swarm_pcap: Path):
    from fastflow import pcap
    pipeline, metrics, agentstats = _real_parts()
    cap = pcap.read(swarm_pcap)
    pipeline.feed(cap.buf, cap.offsets, cap.lengths, cap.ts)
    junk = b"\x00\x00\x00\x04" + b"x" * 40
    import numpy as np
    buf = np.frombuffer(junk * 3, np.uint8)
    pipeline.feed(buf, np.array([0, 44, 88]), np.array([44, 44, 44]), float(cap.ts[-1]))
    stats = {"datagrams": len(cap.offsets) + 3, "kernel_drops": 0}
    with ServerThread(core_routes(pipeline, metrics, agentstats, ingest_stats=lambda: stats)) as s:
        s.agents = agentstats is not None
        yield s


def test_core_metric_query(core: ServerThread) -> None:
    st, body = get_json(core.port,
                        "/metric/ALL/avg:vir_cpu_utilization,max:vir_cpu_utilization/json"
                        "?vir_host_name=sflowpeer_burn.*")
    assert st == 200 and isinstance(body, list) and len(body) == 2
    assert body[0]["metricName"] == "avg:vir_cpu_utilization" or \
        body[0]["metricName"] == "vir_cpu_utilization"
    assert body[0]["metricN"] == 3
    assert 0 <= body[0]["metricValue"] <= 100 * 2
    st, body = get_json(core.port, "/metric/ALL/avg:vir_cpu_utilization/json?vir_host_name=nomatch.*")
    assert st == 200 and body[0]["metricN"] == 0 and "metricValue" not in body[0]


def test_core_metric_filters_or(core: ServerThread) -> None:
    st, body = get_json(core.port, "/metric/ALL/sum:vir_cpu_utilization/json"
                        "?vir_host_name=sflowpeer_burn\\.1\\.*&vir_host_name=sflowpeer_burn.2.*")
    assert st == 200 and body[0]["metricN"] == 2


def test_core_bad_queries_are_4xx(core: ServerThread) -> None:
    for target in ["/metric/ALL/avg:vir_cpu_utilization/json?vir_host_name=" + "x" * 600,
                   "/metric/ALL/avg:vir_cpu_utilization/json?nosuchmetric=x",
                   "/metric/ALL/%20/json", "/dump/ALL/,,/json"]:
        st, _, body = request(core.port, "GET", target)
        assert 400 <= st < 500, (target, body)
        assert "error" in json.loads(body)


def test_core_agents_metrics_dump_version(core: ServerThread) -> None:
    st, agents = get_json(core.port, "/agents/json")
    assert st == 200 and isinstance(agents, dict)
    st, names = get_json(core.port, "/metrics/json")
    assert st == 200 and "vir_cpu_utilization" in names
    st, dump = get_json(core.port, "/dump/ALL/vir_cpu_utilization/json")
    assert st == 200 and len(dump) >= 3 and all(d["agent"] == "192.0.2.2" for d in dump)
    st, _, body = request(core.port, "GET", "/version")
    assert st == 200 and body.decode()[0].isdigit()
    assert get_json(core.port, "/version/json")[1]["implementation"] == "fastflow"


def test_core_health_errors_prometheus(core: ServerThread) -> None:
    st, h = get_json(core.port, "/healthz")
    assert st == 200 and h["status"] == "ok" and h["ingest"]["datagrams"] == 127
    st, e = get_json(core.port, "/errors/json")
    assert st == 200 and e["errors"].get("bad_version") == 3
    st, hdrs, body = request(core.port, "GET", "/prometheus/metrics/ALL/ALL/txt")
    assert st == 200 and hdrs["content-type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert "sflow_vir_cpu_utilization{agent=\"192.0.2.2\"" in text
    assert 'host="sflowpeer_burn.1.' in text
    st, hdrs, body = request(core.port, "GET", "/metrics")       # fastflow's own
    assert st == 200 and hdrs["content-type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert 'fastflow_decoder_rejected_total{reason="bad_version",kind="error"} 3' in text
    if core.agents:   # AgentStats available: per-agent loss counters, sFlow prefix dropped
        assert 'fastflow_agent_datagrams_received_total{agent="192.0.2.2"} 124' in text
        assert 'fastflow_agent_datagrams_lost_total{agent="192.0.2.2"} 0' in text
        assert "# TYPE fastflow_agent_datagrams_lost_total counter" in text


def test_body_timeout_408() -> None:
    with ServerThread(ROUTES, body_timeout=0.3) as s, s.connect() as c:
        c.sendall(b"POST /async HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nshort")
        st, _, body = read_response(c)
        assert st == 408 and b"timeout" in body
        assert s.server.stats["body_timeouts"] == 1


def test_connection_cap_evicts_the_idle() -> None:
    with ServerThread(ROUTES, max_connections=4) as s:
        idle = [s.connect() for _ in range(6)]
        try:
            assert request(s.port, "GET", "/echo/a/b")[0] == 200
            assert s.server.connections <= 4
            assert s.server.stats["connections_evicted"] >= 3
        finally:
            for c in idle:
                c.close()


def test_unknown_host_is_421_ip_literals_and_allowed_names_pass() -> None:
    with ServerThread(ROUTES, allowed_hosts=["fastflow.example"]) as s:
        assert request(s.port, "GET", "/echo/a/b", headers={"Host": "evil.example"})[0] == 421
        for host in ("127.0.0.1", f"127.0.0.1:{s.port}", "[::1]:80", "localhost:1",
                     "fastflow.example:8008", "10.1.2.3"):
            assert request(s.port, "GET", "/echo/a/b", headers={"Host": host})[0] == 200, host


def test_cross_site_change_refused_same_origin_and_configured_names_pass() -> None:
    with ServerThread(ROUTES, allowed_hosts=["dash.example"]) as s:
        host = f"127.0.0.1:{s.port}"
        put = lambda hdrs: request(s.port, "PUT", "/state", b'{"v": 1}',  # noqa: E731
                                   headers={"Host": host, **hdrs})[0]
        assert put({"Origin": "http://evil.example"}) == 403
        assert put({"Referer": "http://evil.example/x"}) == 403
        assert put({"Sec-Fetch-Site": "cross-site"}) == 403
        assert put({"Origin": f"http://{host}"}) == 200
        assert put({"Origin": "https://dash.example"}) == 200          # behind a proxy
        assert put({}) == 200                                          # curl
        # reads are never refused for their origin
        assert request(s.port, "GET", "/state", headers={"Origin": "http://evil.example"})[0] == 200


def test_state_param_is_a_change_on_any_route() -> None:
    """sFlow-RT's GET ...?state= switch is guarded even on a route without flags."""
    with ServerThread(ROUTES, token="s3cret") as s:
        host = {"Host": f"127.0.0.1:{s.port}"}
        assert request(s.port, "GET", "/echo/a/b?state=enabled", headers=host)[0] == 401
        assert request(s.port, "GET", "/echo/a/b?state=enabled",
                       headers={**host, "Authorization": "Bearer s3cret",
                                "Origin": "http://evil.example"})[0] == 403
        assert request(s.port, "GET", "/echo/a/b?state=enabled",
                       headers={**host, "Authorization": "Bearer s3cret"})[0] == 200
        assert request(s.port, "GET", "/echo/a/b?other=1", headers=host)[0] == 200
