"""The sFlow-RT JavaScript API functions, served in Python for the scripts (sflow-rt.com/reference.php).

Each function takes the script and the JSON-decoded arguments the script passed and returns a JSON
value, or raises :class:`ApiError` (the script sees an ``Error`` it can catch). They run on the
script's own thread (never the event loop); engine reads take the collector's lock only for the
snapshot.

| JavaScript | fastflow |
|---|---|
| ``metric(agent, metrics, filter)`` | ``query_metrics``: counters from ``Metrics.query``, flow names from ``FlowEngine.metric``, others ``metricN: 0`` |
| ``table(agent, metrics, filter)`` | ``Metrics.table`` |
| ``dump(agent, metrics, filter)`` | ``Metrics.dump`` |
| ``agents([selected])`` | ``AgentStats.snapshot`` |
| ``activeFlows(agent, name, maxFlows, minValue, aggMode)`` | ``FlowEngine.active_flows`` |
| ``setFlow(name, spec)`` / ``clearFlow(name)`` | ``FlowEngine.define_spec`` / ``delete`` |
| ``flowKeys()`` | the flow keys fastflow decodes (``GET /flowkeys/json``) |
| ``include(file)`` / ``scriptdir()`` | a file read from the script's directory (or an absolute path) and evaluated in its global scope / that directory |
| ``setThreshold(name, spec)`` / ``clearThreshold(name)`` | ``Thresholds.set`` / ``delete`` |
| ``http(url, op, type, body, user, pw)`` / ``http2({...})`` | :mod:`fastflow.scripts.fetch` |
| ``logInfo/logWarning/logSevere/logFine(msg)`` | logger ``fastflow.script.<file>`` (INFO, WARNING, SEVERE, FINE) |
| ``storeGet(key)`` / ``storeSet(key, value)`` | a JSON file per script under the state directory |
| ``sharedGet(key)`` / ``sharedSet(key, value)`` | values shared by all scripts, in memory (10k keys, 16 MB) |
| ``getSystemProperty(name)`` | ``[scripts] properties`` |
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastflow.collector.flowfilter import key_descriptions
from fastflow.collector.flows import query_metrics
from fastflow.scripts import fetch

if TYPE_CHECKING:
    from fastflow.scripts.host import Script

MAX_STORE_BYTES = 1 << 20
MAX_INCLUDE_BYTES = 1 << 20
MAX_SHARED_KEYS = 10_000
MAX_SHARED_BYTES = 16 << 20
# sFlow-RT's log levels (java.util.logging): SEVERE and FINE, between Python's own so that level
# filters behave (SEVERE shows wherever ERROR does, FINE only at debug), printed by their names
SEVERE = logging.ERROR + 1
FINE = logging.DEBUG + 5
logging.addLevelName(SEVERE, "SEVERE")
logging.addLevelName(FINE, "FINE")


class ApiError(Exception):
    """A bad call from a script: the script gets an exception with this message."""


def _agents_arg(agent: Any) -> str:
    if agent is None:
        return "ALL"
    if isinstance(agent, list | tuple):
        return ";".join(str(a) for a in agent) or "ALL"
    return str(agent)


def _metrics_arg(metrics: Any) -> str | list[str]:
    if isinstance(metrics, list | tuple):
        return [str(m) for m in metrics]
    if not isinstance(metrics, str) or not metrics:
        raise ApiError("metrics must be a string such as 'avg:vir_cpu_utilization' or an array")
    return metrics


def _filter_arg(flt: Any) -> dict[str, list[str]] | None:
    """sFlow-RT filter object: metric name -> value or array of values (globs)."""
    if flt is None:
        return None
    if not isinstance(flt, dict):
        raise ApiError("filter must be an object such as {'vir_host_name': ['apache\\\\.*']}")
    out: dict[str, list[str]] = {}
    for k, v in flt.items():
        vals = v if isinstance(v, list) else [v]
        out[str(k)] = [str(x) for x in vals if x is not None]
    return out


class Store:
    """``storeGet``/``storeSet``: one JSON object per script, written through atomically."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.data: dict[str, Any] = {}
        if path is not None and path.is_file():
            try:
                loaded = json.loads(path.read_text())
                if isinstance(loaded, dict):
                    self.data = loaded
            except (OSError, ValueError) as exc:
                logging.getLogger("fastflow.scripts").warning("store %s unreadable (%s): starting "
                                                              "empty", path, exc)

    def get(self, key: str) -> Any:
        with self.lock:
            return self.data.get(key)

    def set(self, key: str, value: Any) -> None:
        with self.lock:
            new = dict(self.data)
            if value is None:
                new.pop(key, None)
            else:
                new[key] = value
            text = json.dumps(new, separators=(",", ":"))
            if len(text) > MAX_STORE_BYTES:
                raise ApiError(f"storeSet: the store would exceed {MAX_STORE_BYTES} bytes")
            self.data = new
            if self.path is None:
                return
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(text)
                os.replace(tmp, self.path)
            except OSError as exc:
                raise ApiError(f"storeSet: cannot write {self.path}: {exc}") from None


class ScriptApi:
    """The engines a script reaches, and the functions over them (see the module docstring)."""

    def __init__(self, metrics: Any, *, agentstats: Any = None, flows: Any = None,
                 thresholds: Any = None, lock: AbstractContextManager[Any] | None = None,
                 allow: fetch.AllowList | None = None, properties: Mapping[str, Any] | None = None,
                 state_dir: Path | None = None, http_timeout: float = fetch.DEFAULT_TIMEOUT) -> None:
        self.metrics = metrics
        self.agentstats = agentstats
        self.flows = flows
        self.thresholds = thresholds
        self.lock: AbstractContextManager[Any] = lock if lock is not None else contextlib.nullcontext()
        self.allow = allow if allow is not None else fetch.AllowList(())
        self.properties = {str(k): str(v) for k, v in (properties or {}).items()}
        self.state_dir = state_dir
        self.http_timeout = http_timeout
        self._stores: dict[str, Store] = {}
        self._shared: dict[str, str] = {}          # sharedSet values, as JSON text
        self._shared_bytes = 0
        self._shared_lock = threading.Lock()
        self._stores_lock = threading.Lock()
        self.functions: dict[str, Callable[[Script, list[Any]], Any]] = {
            "metric": self.metric, "table": self.table, "dump": self.dump, "agents": self.agents,
            "activeFlows": self.active_flows, "setFlow": self.set_flow,
            "clearFlow": self.clear_flow, "flowKeys": self.flow_keys, "setThreshold": self.set_threshold,
            "clearThreshold": self.clear_threshold, "http": self.http, "http2": self.http2,
            "storeGet": self.store_get, "storeSet": self.store_set,
            "sharedGet": self.shared_get, "sharedSet": self.shared_set,
            "getSystemProperty": self.get_system_property, "scriptdir": self.scriptdir,
            "include": self.include,
            "logInfo": self._log(logging.INFO), "logWarning": self._log(logging.WARNING),
            "logSevere": self._log(SEVERE), "logFine": self._log(FINE),
        }

    def call(self, script: Script, fn: str, args: Sequence[Any]) -> Any:
        f = self.functions.get(fn)
        if f is None:
            raise ApiError(f"{fn} is not available in fastflow")
        a = list(args) + [None] * 6
        return f(script, a)

    # -- logging ---------------------------------------------------------------------------------
    @staticmethod
    def _log(level: int) -> Callable[[Script, list[Any]], None]:
        def fn(script: Script, a: list[Any]) -> None:
            script.log.log(level, "%s", "undefined" if a[0] is None else a[0])
        return fn

    # -- metrics ---------------------------------------------------------------------------------
    def metric(self, script: Script, a: list[Any]) -> Any:
        return query_metrics(self.metrics, self.flows, _agents_arg(a[0]), _metrics_arg(a[1]),
                             _filter_arg(a[2]))

    def table(self, script: Script, a: list[Any]) -> Any:
        fn = getattr(self.metrics, "table", None)
        if fn is None:
            raise ApiError("table() needs fastflow.collector.metrics.Metrics.table")
        with self.lock:
            return fn(_agents_arg(a[0]), _metrics_arg(a[1]), _filter_arg(a[2]))

    def dump(self, script: Script, a: list[Any]) -> Any:
        return self.metrics.dump(_agents_arg(a[0]), _metrics_arg(a[1]), _filter_arg(a[2]))

    def agents(self, script: Script, a: list[Any]) -> Any:
        if self.agentstats is None:
            return {}
        with self.lock:
            snap = self.agentstats.snapshot()
        sel = a[0]
        if sel is None:
            return snap
        want = {str(x) for x in (sel if isinstance(sel, list) else [sel])}
        return {k: v for k, v in snap.items() if k in want}

    # -- flows -----------------------------------------------------------------------------------
    def _flows(self) -> Any:
        if self.flows is None:
            raise ApiError("flows are switched off ([flows] enabled = false)")
        return self.flows

    def active_flows(self, script: Script, a: list[Any]) -> Any:
        engine = self._flows()
        max_flows = None if a[2] is None else int(a[2])
        min_value = 0.0 if a[3] is None else float(a[3])
        try:
            return engine.active_flows(_agents_arg(a[0]), str(a[1]), max_flows, min_value,
                                       str(a[4] or "max"))
        except KeyError:
            return []                       # sFlow-RT: no such flow, no flows
        except ValueError as exc:
            raise ApiError(str(exc)) from None

    def set_flow(self, script: Script, a: list[Any]) -> None:
        try:
            self._flows().define_spec(str(a[0]), a[1] if a[1] is not None else {},
                                      persistent=True)
        except ValueError as exc:           # FilterError is a ValueError
            raise ApiError(str(exc)) from None

    def flow_keys(self, script: Script, a: list[Any]) -> Any:
        return key_descriptions()

    def clear_flow(self, script: Script, a: list[Any]) -> None:
        self._flows().delete(str(a[0]))

    # -- thresholds ------------------------------------------------------------------------------
    def _thresholds(self) -> Any:
        if self.thresholds is None:
            raise ApiError("thresholds are not available in this service")
        return self.thresholds

    def set_threshold(self, script: Script, a: list[Any]) -> None:
        if not isinstance(a[1], dict):
            raise ApiError("setThreshold(name, {metric, value, filter, byFlow, timeout})")
        try:
            self._thresholds().set(str(a[0]), a[1])
        except ValueError as exc:           # ThresholdError is a ValueError
            raise ApiError(str(exc)) from None

    def clear_threshold(self, script: Script, a: list[Any]) -> None:
        self._thresholds().delete(str(a[0]))

    # -- HTTP ------------------------------------------------------------------------------------
    def _certs(self, script: Script, certs: Any) -> Path | None:
        if not certs:
            return None
        p = Path(str(certs)).expanduser()
        return p if p.is_absolute() else script.path.parent / p

    def http2(self, script: Script, a: list[Any]) -> Any:
        o = a[0]
        if not isinstance(o, dict) or "url" not in o:
            raise ApiError("http2({url, operation|method, headers, body, certs, user, password})")
        try:
            return fetch.request(o["url"], o.get("operation") or o.get("method") or "GET",
                                 o.get("headers"), o.get("body"), self._certs(script, o.get("certs")),
                                 o.get("user"), o.get("password"), allow=self.allow,
                                 timeout=self.http_timeout)
        except fetch.FetchError as exc:
            raise ApiError(str(exc)) from None

    def http(self, script: Script, a: list[Any]) -> Any:
        url, op, ctype, body, user, password = a[:6]
        headers = {"Content-Type": str(ctype)} if ctype else None
        try:
            r = fetch.request(url, op or "GET", headers, body, None, user, password,
                              allow=self.allow, timeout=self.http_timeout)
        except fetch.FetchError as exc:
            raise ApiError(str(exc)) from None
        if r["status"] >= 400:
            raise ApiError(f"{url}: HTTP {r['status']}")
        return r["body"]

    # -- store and properties ----------------------------------------------------------------------
    def _store(self, script: Script) -> Store:
        with self._stores_lock:
            key = script.key.replace("/", "__")      # an application's: {app}__{file}
            s = self._stores.get(key)
            if s is None:
                path = None if self.state_dir is None else \
                    self.state_dir / "scripts" / f"{key}.store.json"
                s = self._stores[key] = Store(path)
            return s

    def store_get(self, script: Script, a: list[Any]) -> Any:
        return self._store(script).get(str(a[0]))

    def store_set(self, script: Script, a: list[Any]) -> None:
        self._store(script).set(str(a[0]), a[1])

    def shared_get(self, script: Script, a: list[Any]) -> Any:
        with self._shared_lock:
            text = self._shared.get(str(a[0]))
        return None if text is None else json.loads(text)

    def shared_set(self, script: Script, a: list[Any]) -> None:
        """sFlow-RT's ``sharedSet``: a value every script can read, in memory, bounded."""
        key = str(a[0])
        text = None if a[1] is None else json.dumps(a[1], separators=(",", ":"))
        with self._shared_lock:
            old = self._shared.pop(key, None)
            size = self._shared_bytes - (0 if old is None else len(key) + len(old))
            if text is not None:
                if len(self._shared) >= MAX_SHARED_KEYS or \
                        size + len(key) + len(text) > MAX_SHARED_BYTES:
                    if old is not None:
                        self._shared[key] = old
                    raise ApiError(f"sharedSet: the shared store is full ({MAX_SHARED_KEYS} keys, "
                                   f"{MAX_SHARED_BYTES} bytes)")
                self._shared[key] = text
                size += len(key) + len(text)
            self._shared_bytes = size

    def get_system_property(self, script: Script, a: list[Any]) -> Any:
        return self.properties.get(str(a[0]))

    # -- files -----------------------------------------------------------------------------------
    def scriptdir(self, script: Script, a: list[Any]) -> str:
        return str(script.path.parent)

    def include(self, script: Script, a: list[Any]) -> str:
        """The text of a ``.js`` file (relative paths from the script's directory), for the
        script to evaluate in its global scope, as sFlow-RT's ``include`` does."""
        if not isinstance(a[0], str) or not a[0]:
            raise ApiError("include(file) needs a file name")
        p = Path(a[0]).expanduser()
        p = p if p.is_absolute() else script.path.parent / p
        if p.suffix != ".js":
            raise ApiError(f"include: {a[0]}: only .js files can be included")
        try:
            if p.stat().st_size > MAX_INCLUDE_BYTES:
                raise ApiError(f"include: {p} is larger than {MAX_INCLUDE_BYTES} bytes")
            return p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ApiError(f"include: cannot read {p}: {exc}") from None
