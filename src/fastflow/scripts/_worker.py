"""One sFlow-RT script in its own process: a QuickJS context driven over stdin/stdout.

Run by :class:`fastflow.scripts.host.Script` as ``python -P _worker.py`` (a file, not a module: it
imports nothing from fastflow, only ``quickjs`` from the ``fastflow[scripts]`` extra). The parent
can kill this process at any moment, which is how a script stuck in a loop is stopped; the QuickJS
memory limit (and RLIMIT_AS) bound what a runaway allocation can take.

Protocol: one JSON object per line in each direction.

parent -> worker: ``{"op": "load", "name", "source", "memory"}`` first, then
``{"op": "run", "kind": "interval"|"http"|"event", "arg": <JSON value>}``; and, while a run is
under way, answers to API calls: ``{"op": "ret", "value": <JSON text>}`` / ``{"op": "err",
"message"}``.
worker -> parent: ``{"op": "call", "fn", "args": <JSON text>}`` (the script called an API
function and waits for the answer), then ``{"op": "done", "result": {...}}`` or ``{"op": "fail",
"message", "fatal": bool}`` for the load or run.
"""

from __future__ import annotations

import json
import re
import resource
import sys
from typing import Any

PRELUDE = r"""
var __ff = {interval: null, http: null, event: null, flows: null};
function __ffc(name, args) {
  var r = JSON.parse(__ff_call(name, JSON.stringify(args)));
  if (r.err !== undefined) throw new Error(name + ': ' + r.err);
  return r.ok === null ? null : r.ok;
}
function __ffrun(kind, arg) {
  var f = __ff[kind];
  if (!f) return JSON.stringify({none: true});
  var v;
  try { v = f(JSON.parse(arg)); }
  catch (e) { if (typeof e === 'string') return JSON.stringify({thrown: e}); throw e; }
  return JSON.stringify({value: v === undefined ? null : v});
}
function setIntervalHandler(fn, interval) {
  if (typeof fn !== 'function') throw new TypeError('setIntervalHandler: not a function');
  __ff.interval = fn; __ffc('setIntervalHandler', [interval === undefined ? 1 : interval]);
}
function setHttpHandler(fn) {
  if (typeof fn !== 'function') throw new TypeError('setHttpHandler: not a function');
  __ff.http = fn; __ffc('setHttpHandler', []);
}
function setEventHandler(fn, ids) {
  if (typeof fn !== 'function') throw new TypeError('setEventHandler: not a function');
  __ff.event = fn; __ffc('setEventHandler', [ids === undefined ? null : ids]);
}
function setFlowHandler(fn, names) {
  if (typeof fn !== 'function') throw new TypeError('setFlowHandler: not a function');
  __ff.flows = function(recs) { for (var i = 0; i < recs.length; i++) fn(recs[i]); };
  __ffc('setFlowHandler', [names === undefined ? null : names]);
}
function __ffs(v) { return v === undefined ? null : '' + v; }
function logInfo(m) { __ffc('logInfo', [__ffs(m)]); }
function logWarning(m) { __ffc('logWarning', [__ffs(m)]); }
function logSevere(m) { __ffc('logSevere', [__ffs(m)]); }
function logFine(m) { __ffc('logFine', [__ffs(m)]); }
function metric(agent, metrics, filter) { return __ffc('metric', [agent, metrics, filter]); }
function table(agent, metrics, filter) { return __ffc('table', [agent, metrics, filter]); }
function dump(agent, metrics, filter) { return __ffc('dump', [agent, metrics, filter]); }
function agents(selected) { return __ffc('agents', [selected]); }
function activeFlows(agent, name, maxFlows, minValue, aggMode) {
  return __ffc('activeFlows', [agent, name, maxFlows, minValue, aggMode]);
}
function setFlow(name, spec) { __ffc('setFlow', [name, spec]); }
function clearFlow(name) { __ffc('clearFlow', [name]); }
function setThreshold(name, spec) { __ffc('setThreshold', [name, spec]); }
function clearThreshold(name) { __ffc('clearThreshold', [name]); }
function http(url, operation, type, body, user, password) {
  return __ffc('http', [url, operation, type, body, user, password]);
}
function http2(options) { return __ffc('http2', [options]); }
function storeGet(key) { return __ffc('storeGet', [key]); }
function storeSet(key, value) { __ffc('storeSet', [key, value === undefined ? null : value]); }
function sharedGet(key) { return __ffc('sharedGet', [key]); }
function sharedSet(key, value) { __ffc('sharedSet', [key, value === undefined ? null : value]); }
function getSystemProperty(name) { return __ffc('getSystemProperty', [name]); }
function flowKeys() { return __ffc('flowKeys', []); }
function scriptdir() { return __ffc('scriptdir', []); }
function include(file) { (0, eval)(__ffc('include', [file])); }
"""

# Python itself needs address space beyond the script's own heap
_RLIMIT_EXTRA = 1 << 30


class _Pipe:
    def __init__(self) -> None:
        self.inp = sys.stdin.buffer
        self.out = sys.stdout.buffer

    def send(self, msg: dict[str, Any]) -> None:
        self.out.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")
        self.out.flush()

    def recv(self) -> dict[str, Any]:
        line = self.inp.readline()
        if not line:            # the parent went away
            raise SystemExit(0)
        msg: dict[str, Any] = json.loads(line)
        return msg


_PRELUDE_FUNCS = set(re.findall(r"function (\w+)\(", PRELUDE))


def _error_text(exc: BaseException, name: str) -> str:
    """The JS error with its stack, frames of the prelude left out, ``<input>`` named."""
    lines = str(exc).strip().replace("\nundefined", "").splitlines()
    keep = [ln for ln in lines
            if not (m := re.match(r"\s+at (\S+) \(", ln)) or m.group(1) not in _PRELUDE_FUNCS]
    text = "\n".join(keep).replace("<input>", name)
    return text or type(exc).__name__


def main() -> int:
    import quickjs

    pipe = _Pipe()
    load = pipe.recv()
    memory = int(load.get("memory", 64 << 20))
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        want = memory + _RLIMIT_EXTRA
        if hard == resource.RLIM_INFINITY or want < hard:
            resource.setrlimit(resource.RLIMIT_AS, (want, hard))
    except (ValueError, OSError):
        pass
    ctx = quickjs.Context()
    ctx.set_memory_limit(memory)

    def call(fn: str, args: str) -> str:
        # never raise here: a Python exception does not cross into QuickJS cleanly
        pipe.send({"op": "call", "fn": fn, "args": args})
        while True:
            msg = pipe.recv()
            if msg.get("op") == "ret":
                return '{"ok":' + (msg.get("value") or "null") + "}"
            if msg.get("op") == "err":
                return json.dumps({"err": str(msg.get("message"))})

    ctx.add_callable("__ff_call", call)

    def fail(exc: BaseException) -> None:
        text = _error_text(exc, str(load.get("name", "script")))
        fatal = isinstance(exc, quickjs.StackOverflow | MemoryError) or "out of memory" in text
        pipe.send({"op": "fail", "message": text, "fatal": fatal})

    def pending() -> None:
        for _ in range(10000):          # promise jobs, bounded
            if not ctx.execute_pending_job():
                break

    try:
        ctx.eval(PRELUDE)
        ctx.eval(str(load["source"]))
        pending()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which logs it
        fail(exc)
        return 1
    pipe.send({"op": "done", "result": {}})
    run = ctx.get("__ffrun")
    while True:
        msg = pipe.recv()
        if msg.get("op") != "run":
            continue
        try:
            out = run(str(msg.get("kind")), json.dumps(msg.get("arg")))
            pending()
            pipe.send({"op": "done", "result": json.loads(out)})
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which logs it
            fail(exc)


if __name__ == "__main__":
    sys.exit(main())
