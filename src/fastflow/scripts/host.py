"""The script host: sFlow-RT JavaScript files running against fastflow's engines.

Each script gets its own QuickJS context in its own process (:mod:`fastflow.scripts._worker`) and
one thread here that owns that process and runs everything the script does, one call at a time:
loading the file, its interval handler, HTTP requests to its handler, threshold events. The thread
serves the script's API calls (:class:`fastflow.scripts.api.ScriptApi`) while the call runs, so the
event loop never waits on JavaScript and the collector's lock is held only for snapshots.

A broken script is logged and stopped, never the collector: a syntax error or an exception while
loading stops it at once; an exception in a handler is logged (once per repeat, at most every
``REPEAT_LOG_S`` seconds) and the script keeps running, as in sFlow-RT; a call that runs longer than
``call_timeout`` seconds of its own time (an infinite loop) or exhausts the memory limit kills the
script's process and stops it. A script stopped that way while running starts again (a fresh
context, loaded from its file) after a pause of ``RESTART_MIN_S`` seconds that doubles, up to
``RESTART_MAX_S``, while it keeps failing; ``restarts`` counts them (``/scripts/json``, ``/metrics``).
One that fails to load is not restarted: the file needs fixing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import logging
import os
import queue
import select
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastflow.scripts.api import ApiError, ScriptApi

log = logging.getLogger("fastflow.scripts")

WORKER = Path(__file__).resolve().parent / "_worker.py"
MAX_LINE = 32 << 20
MIN_INTERVAL = 0.1
REPEAT_LOG_S = 60.0
FLOW_POLL_S = 0.25          # how often logged flows are handed to a script's setFlowHandler
MAX_FLOWS_PER_CALL = 1000
RESTART_MIN_S = 1.0         # first pause before a stopped script starts again; doubles per failure
RESTART_MAX_S = 60.0
RESTART_RESET_S = 60.0      # a script that ran this long before stopping starts over at the minimum
_STOP = object()


class ScriptError(Exception):
    """A script's call failed; ``fatal`` when the script was stopped for it."""

    def __init__(self, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


class ScriptUnavailable(Exception):
    """The script is not running, or too many requests are waiting for it."""


@dataclass
class HttpAnswer:
    status: int
    value: Any


class Script:
    """One script file: its worker process, its thread and its queue of pending calls."""

    def __init__(self, path: Path, api: ScriptApi, *, call_timeout: float = 5.0,
                 memory: int = 64 << 20, max_pending: int = 64,
                 restart_pause: float = RESTART_MIN_S) -> None:
        self.path = path
        self.restart_pause = float(restart_pause)
        self.name = path.name
        # an sFlow-RT application's layout, app/{app}/scripts/{file}: served under /app/{app} too
        self.app = path.parent.parent.name if path.parent.name == "scripts" else None
        self.key = f"{self.app}/{self.name}" if self.app else self.name
        self.api = api
        self.call_timeout = float(call_timeout)
        self.memory = int(memory)
        self.log = logging.getLogger(f"fastflow.script.{self.name}")
        self.state = "new"                  # new, starting, running, stopped, failed
        self.reason = ""
        self.interval: float | None = None
        self.has_http = False
        self.event_ids: list[str] | None = None
        self.event_handler = False
        self._event_listener = False
        self.calls = 0
        self.errors = 0
        self.dropped = 0
        self.last_error = ""
        self._last_logged: tuple[str, float, int] = ("", 0.0, 0)
        self._queue: queue.Queue[Any] = queue.Queue(max_pending)
        self._proc: subprocess.Popen[bytes] | None = None
        self._buf = bytearray()
        self._thread: threading.Thread | None = None
        self.started = threading.Event()     # set once loaded (or failed to)
        self.restarts = 0
        self._stop_asked = threading.Event()
        self.flow_handler = False
        self.flow_names: set[str] | None = None
        self.flows_missed = 0
        self._flow_after = 0

    # -- public ----------------------------------------------------------------------------------
    def start(self) -> None:
        self.state = "starting"
        self._thread = threading.Thread(target=self._main, name=f"script-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop_asked.set()
        try:
            self._queue.put_nowait(_STOP)
        except queue.Full:
            self._kill()                      # the thread notices the dead worker
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._kill()
                self._thread.join(timeout)

    def submit(self, kind: str, arg: Any) -> concurrent.futures.Future[Any]:
        """Queue a call (``"http"``, ``"event"``); its future holds the handler's result."""
        if self.state not in ("new", "starting", "running"):      # queued until loaded
            raise ScriptUnavailable(f"script {self.name} is {self.state}"
                                    + (f": {self.reason}" if self.reason else ""))
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            self._queue.put_nowait((kind, arg, fut))
        except queue.Full:
            self.dropped += 1
            raise ScriptUnavailable(f"script {self.name} is busy ({self._queue.maxsize} calls "
                                    "waiting)") from None
        return fut

    def on_event(self, evt: Mapping[str, Any]) -> None:
        """Thresholds listener: queue the event for the script's event handler (dropped if full)."""
        ids = self.event_ids
        if not self.event_handler or (ids is not None and evt.get("thresholdID") not in ids):
            return
        try:
            self.submit("event", dict(evt))
        except ScriptUnavailable:
            pass

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "app": self.app, "path": str(self.path), "state": self.state,
                "reason": self.reason, "interval": self.interval, "httpHandler": self.has_http,
                "eventHandler": self.event_handler,
                "calls": self.calls, "errors": self.errors, "dropped": self.dropped,
                "restarts": self.restarts, "flowHandler": self.flow_handler,
                "flowsMissed": self.flows_missed,
                "lastError": self.last_error, "pending": self._queue.qsize()}

    # -- the script's thread -----------------------------------------------------------------------
    def _main(self) -> None:
        backoff = self.restart_pause
        try:
            while True:
                began = time.monotonic()
                try:
                    self._run()
                except Exception as exc:  # noqa: BLE001 - a bug here must not take the collector down
                    self.log.exception("script host failed")
                    self._stopped(f"script host failed: {exc}")
                finally:
                    self._kill()
                    self.started.set()
                    self._fail_pending()
                # a script stopped while running (time or memory limit, its worker died) starts
                # again, after a pause that doubles while it keeps failing; one that failed to load
                # (a syntax error) or was asked to stop does not
                if self.state != "stopped" or self._stop_asked.is_set():
                    return
                if time.monotonic() - began > RESTART_RESET_S:
                    backoff = self.restart_pause
                self.log.warning("%s: restarting in %g s", self.name, backoff)
                self.reason += f" (restarting in {backoff:g} s)"
                if self._stop_asked.wait(backoff):
                    return
                backoff = min(backoff * 2, max(RESTART_MAX_S, self.restart_pause))
                self.restarts += 1
                self.interval, self.has_http, self.event_ids = None, False, None
                self.event_handler = False
                self.flow_handler, self.flow_names = False, None
                self._buf.clear()
                self.state, self.reason = "starting", ""
        finally:
            remove = getattr(self.api.thresholds, "remove_listener", None)
            if self._event_listener and remove is not None:
                remove(self.on_event)

    def _run(self) -> None:
        try:
            source = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.state, self.reason = "failed", f"cannot read {self.path}: {exc}"
            self.log.error("%s", self.reason)
            return
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-P", str(WORKER)], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, bufsize=0, start_new_session=True)
        except OSError as exc:
            self.state, self.reason = "failed", f"cannot start a worker: {exc}"
            self.log.error("%s", self.reason)
            return
        try:
            self._exchange({"op": "load", "name": self.name, "source": source,
                            "memory": self.memory}, "load")
        except ScriptError as exc:
            self.state, self.reason = "failed", str(exc)
            self.log.error("%s: %s; script not started", self.name, exc)
            self.started.set()
            return
        self.state = "running"
        log.info("%s started", self.name)
        self.started.set()
        next_due = time.monotonic() + (self.interval or 0.0)
        next_flows = time.monotonic() + FLOW_POLL_S
        while True:
            now = time.monotonic()
            waits = []
            if self.interval is not None:
                waits.append(next_due - now)
            if self.flow_handler:
                waits.append(next_flows - now)
            timeout = max(0.0, min(waits)) if waits else None
            try:
                job = self._queue.get(timeout=timeout)
            except queue.Empty:
                job = None
            if job is _STOP:
                self._stopped("stopped", level=logging.DEBUG)
                return
            try:
                if job is None:
                    now = time.monotonic()
                    if self.flow_handler and now >= next_flows:
                        next_flows = now + FLOW_POLL_S
                        self._deliver_flows()
                    if self.interval is not None and now >= next_due:
                        next_due = max(next_due + self.interval, now)
                        self._call("interval", int(time.time() * 1000))
                    continue
                kind, arg, fut = job
                if fut is not None and not fut.set_running_or_notify_cancel():
                    continue
                try:
                    result = self._call(kind, arg)
                except ScriptError as exc:
                    if fut is not None:
                        fut.set_exception(exc)
                    raise
                if fut is not None:
                    fut.set_result(result)
            except ScriptError as exc:
                if exc.fatal:
                    return
            if self.interval is not None and job is not None and next_due < time.monotonic():
                next_due = time.monotonic()

    def _deliver_flows(self) -> None:
        """Run the flow handler on the flows logged since the last delivery, oldest first, in one
        call of at most ``MAX_FLOWS_PER_CALL`` (older ones past that are counted, not delivered)."""
        engine = self.api.flows
        if engine is None:
            return
        recs = engine.logged_flows(None, self._flow_after, MAX_FLOWS_PER_CALL)
        if not recs:
            return
        oldest, newest = int(recs[-1]["flowID"]), int(recs[0]["flowID"])
        if oldest > self._flow_after + 1:
            self.flows_missed += oldest - self._flow_after - 1
        self._flow_after = newest
        names = self.flow_names
        batch = [r for r in reversed(recs) if names is None or r.get("name") in names]
        if batch:
            self._call("flows", batch)

    def _call(self, kind: str, arg: Any) -> Any:
        self.calls += 1
        try:
            return self._exchange({"op": "run", "kind": kind, "arg": arg}, f"{kind} handler")
        except ScriptError as exc:
            self.errors += 1
            self.last_error = str(exc)
            if exc.fatal:
                self._stopped(str(exc))
            else:
                self._log_error(f"{kind} handler: {exc}")
            raise

    def _log_error(self, text: str) -> None:
        last, when, repeats = self._last_logged
        now = time.monotonic()
        if text == last and now - when < REPEAT_LOG_S:
            self._last_logged = (last, when, repeats + 1)
            return
        more = f" (and {repeats} more times)" if text == last and repeats else ""
        self.log.error("%s: %s%s", self.name, text, more)
        self._last_logged = (text, now, 0)

    def _stopped(self, reason: str, level: int = logging.ERROR) -> None:
        if self.state in ("stopped", "failed"):
            return
        self.state, self.reason = "stopped", reason
        self.log.log(level, "%s: %s; script stopped", self.name, reason)
        self._kill()

    def _fail_pending(self) -> None:
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not _STOP and job[2] is not None and not job[2].done():
                job[2].set_exception(ScriptUnavailable(f"script {self.name} is {self.state}"))

    def _kill(self) -> None:
        p = self._proc
        if p is not None and p.poll() is None:
            try:
                p.kill()
                p.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if p is not None:
            for f in (p.stdin, p.stdout):
                try:
                    if f is not None:
                        f.close()
                except OSError:
                    pass

    # -- the protocol ------------------------------------------------------------------------------
    def _send(self, msg: Mapping[str, Any]) -> None:
        p = self._proc
        assert p is not None and p.stdin is not None
        try:
            p.stdin.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")
        except (OSError, ValueError) as exc:
            raise ScriptError(f"worker gone ({exc})", fatal=True) from None

    def _read(self, deadline: float, what: str) -> dict[str, Any]:
        p = self._proc
        assert p is not None and p.stdout is not None
        fd = p.stdout.fileno()
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                msg: dict[str, Any] = json.loads(line)
                return msg
            if len(self._buf) > MAX_LINE:
                raise ScriptError("worker sent an oversized message", fatal=True)
            left = deadline - time.monotonic()
            if left <= 0:
                raise ScriptError(f"{what} ran longer than {self.call_timeout:g} s", fatal=True)
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                rc = p.poll()
                if rc is None:
                    try:
                        rc = p.wait(2)
                    except subprocess.TimeoutExpired:
                        rc = None
                why = "out of memory" if rc in (-9, 137) else f"exit status {rc}"
                raise ScriptError(f"worker died during {what} ({why})", fatal=True)
            self._buf += chunk

    def _exchange(self, msg: Mapping[str, Any], what: str) -> Any:
        """Send a load/run and serve the script's API calls until it is done."""
        self._send(msg)
        deadline = time.monotonic() + self.call_timeout
        while True:
            m = self._read(deadline, what)
            op = m.get("op")
            if op == "call":
                t0 = time.monotonic()
                self._serve(str(m.get("fn")), m.get("args"))
                deadline += time.monotonic() - t0   # time in the API is not the script's
            elif op == "done":
                return m.get("result")
            elif op == "fail":
                raise ScriptError(str(m.get("message")), fatal=bool(m.get("fatal")))
            else:
                raise ScriptError(f"worker sent {op!r}", fatal=True)

    def _serve(self, fn: str, args_text: Any) -> None:
        try:
            args = json.loads(args_text) if isinstance(args_text, str) else []
            if not isinstance(args, list):
                args = []
            if fn == "setIntervalHandler":
                self._set_interval(args[0] if args else 1)
                value: Any = None
            elif fn == "setHttpHandler":
                self.has_http, value = True, None
            elif fn == "setEventHandler":
                self._set_events(args[0] if args else None)
                value = None
            elif fn == "setFlowHandler":
                self._set_flows(args[0] if args else None)
                value = None
            else:
                value = self.api.call(self, fn, args)
            text = json.dumps(value, allow_nan=False, default=_json_default)
        except (ApiError, ValueError, TypeError, KeyError, OverflowError) as exc:
            self._send({"op": "err", "message": str(exc) or type(exc).__name__})
            return
        except Exception as exc:  # noqa: BLE001 - an engine bug becomes the script's exception
            self.log.exception("%s: %s() failed", self.name, fn)
            self._send({"op": "err", "message": f"internal error: {type(exc).__name__}"})
            return
        self._send({"op": "ret", "value": text})

    def _set_interval(self, seconds: Any) -> None:
        try:
            s = float(seconds)
        except (TypeError, ValueError):
            raise ApiError(f"setIntervalHandler: interval must be a number, not {seconds!r}") \
                from None
        if not s > 0 or s != s:
            raise ApiError("setIntervalHandler: interval must be > 0 seconds")
        self.interval = max(MIN_INTERVAL, s)

    def _set_flows(self, names: Any) -> None:
        engine = self.api.flows
        if engine is None:
            raise ApiError("setFlowHandler: flows are switched off ([flows] enabled = false)")
        if names is not None:
            names = {str(n) for n in (names if isinstance(names, list) else [names])}
        self.flow_names = names
        if not self.flow_handler:
            self._flow_after = int(engine.last_flow_id())     # flows logged from now on
        self.flow_handler = True

    def _set_events(self, ids: Any) -> None:
        if ids is not None:
            ids = [str(i) for i in (ids if isinstance(ids, list) else [ids])]
        self.event_ids = ids
        if not self._event_listener:
            th = self.api.thresholds
            if th is None:
                raise ApiError("setEventHandler: thresholds are not available in this service")
            th.add_listener(self.on_event)
            self._event_listener = True
        self.event_handler = True


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class ScriptHost:
    """Every configured script; start/stop them and route HTTP requests to their handlers."""

    def __init__(self, files: Sequence[str | os.PathLike[str]], api: ScriptApi, *,
                 call_timeout: float = 5.0, memory: int = 64 << 20, max_pending: int = 64,
                 token: str | None = None, restart_pause: float = RESTART_MIN_S) -> None:
        self.api = api
        self.token = token or None
        self.scripts: dict[str, Script] = {}
        for f in files:
            p = Path(f).expanduser().resolve()
            if not p.is_file():
                raise ValueError(f"script {f}: no such file")
            sc = Script(p, api, call_timeout=call_timeout, memory=memory, max_pending=max_pending,
                        restart_pause=restart_pause)
            if sc.key in self.scripts:
                raise ValueError(f"two scripts named {sc.key}: {self.scripts[sc.key].path} and {p}")
            self.scripts[sc.key] = sc
        self._ids = itertools.count()

    def start(self) -> None:
        for s in self.scripts.values():
            s.start()

    def wait_started(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        return all(s.started.wait(max(0.0, deadline - time.monotonic()))
                   for s in self.scripts.values())

    def stop(self, timeout: float = 5.0) -> None:
        for s in self.scripts.values():
            s._stop_asked.set()
            try:
                s._queue.put_nowait(_STOP)
            except queue.Full:
                s._kill()
        for s in self.scripts.values():
            s.stop(timeout)

    def get(self, name: str) -> Script | None:
        """The script keyed ``name`` (``file.js``, or ``app/file.js`` for an application's), or
        the only script whose file is called ``name``."""
        s = self.scripts.get(name)
        if s is None:
            named = [x for x in self.scripts.values() if x.name == name]
            s = named[0] if len(named) == 1 else None
        return s

    def state(self) -> list[dict[str, Any]]:
        return [s.info() for s in self.scripts.values()]

    async def http(self, name: str, req: Mapping[str, Any]) -> HttpAnswer:
        """Run ``name``'s HTTP handler on ``req`` (sFlow-RT's request object) off the event loop."""
        s = self.get(name)
        if s is None:
            apps = sorted(x.key for x in self.scripts.values() if x.name == name)
            if len(apps) > 1:
                return HttpAnswer(404, f"several scripts are called {name} ({', '.join(apps)}): "
                                       "ask for /app/{app}/scripts/" + f"{name}/...")
            return HttpAnswer(404, f"no script {name}")
        try:
            fut = s.submit("http", dict(req))
        except ScriptUnavailable as exc:
            return HttpAnswer(503, str(exc))
        try:
            res = await asyncio.wait_for(asyncio.wrap_future(fut), s.call_timeout * 4 + 5.0)
        except ScriptUnavailable as exc:
            return HttpAnswer(503, str(exc))
        except ScriptError as exc:
            return HttpAnswer(500, f"script error: {exc}")
        except TimeoutError:
            return HttpAnswer(504, f"script {name} did not answer in time")
        if not isinstance(res, dict) or res.get("none"):
            return HttpAnswer(404, f"script {name} has no HTTP handler")
        if "thrown" in res:
            thrown = str(res["thrown"])
            status = {"not_found": 404, "bad_request": 400, "not_allowed": 403,
                      "forbidden": 403}.get(thrown, 500)
            return HttpAnswer(status, thrown)
        return HttpAnswer(200, res.get("value"))
