"""What every ``fastflow`` command shares with its operator: exit codes, one-line errors, argument
types, help with defaults, progress on a terminal and the log formats.

It sits at the package top (the wire layer, which imports nothing else of fastflow) so that the
doors (``cli/``) and the traffic sources (``sources/``) follow the same rules.

Exit codes (README "Exit codes"):

====  ==========================================================================================
0     success
1     runtime failure or damaged input: a capture cut part-way, a port already in use, an address
      that is not this host's, send errors, nothing sent
2     usage or configuration error: a bad option value, a missing/unreadable/non-capture input
      file, an output path whose directory does not exist, an invalid configuration (including a
      non-loopback ``--http-bind`` without a token, a ``tls_dir`` that does not exist)
130   interrupted (Ctrl-C)
====  ==========================================================================================
"""

from __future__ import annotations

import argparse
import datetime as _dt
import errno as _errno
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import IO, Any

__all__ = [
    "EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "EXIT_INTERRUPTED", "LOG_FORMATS",
    "CommandError", "HelpFormatter", "JsonLogFormatter", "Progress", "LOG_DATEFMT", "LOG_FORMAT",
    "bind_error", "check_destination", "check_input_file", "check_output_path", "explain_send_errno", "fail",
    "nonneg_float", "nonneg_int", "port_number", "positive_float", "positive_int",
    "setup_logging",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

LOG_FORMAT = "%(asctime)s %(levelname)s: %(message)s"
LOG_DATEFMT = "%Y-%m-%dT%H:%M:%S%z"      # 2026-11-24T21:02:54+0000, as sFlow-RT logs


class CommandError(Exception):
    """A one-line error for the operator; ``fastflow`` prints ``fastflow CMD: message`` and exits
    with ``code`` (no traceback)."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def fail(command: str, message: str, code: int) -> int:
    """Print ``fastflow COMMAND: message`` on stderr and return ``code`` (for ``return fail(...)``)."""
    print(f"fastflow {command}: {message}", file=sys.stderr, flush=True)
    return code


# ------------------------------------------------------------------------------ argument types
def _number(text: str, kind: type, lo: float | None, lo_open: bool, what: str) -> Any:
    try:
        v = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if kind is float and (v != v or v in (float("inf"), float("-inf"))):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise argparse.ArgumentTypeError(f"must be {'>' if lo_open else '>='} {lo:g}, got {text}")
    return v


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return int(_number(text, int, 1, False, "an integer"))


def nonneg_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return int(_number(text, int, 0, False, "an integer"))


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return float(_number(text, float, 0, True, "a number"))


def nonneg_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    return float(_number(text, float, 0, False, "a number"))


def port_number(text: str) -> int:
    """argparse type: a TCP/UDP port, 0-65535 (0 = any free port)."""
    v = int(_number(text, int, 0, False, "a port number"))
    if v > 65535:
        raise argparse.ArgumentTypeError(f"{v} is not a port number (0-65535; 0 = any free port)")
    return v


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description/epilog layout (examples) and appends ``(default: X)`` to options whose
    help does not already state the default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        d = action.default
        if (not action.option_strings or "default" in text.lower() or d is None or d is False
                or isinstance(action, argparse._CountAction)
                or d == [] or d is argparse.SUPPRESS or text is argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


# ------------------------------------------------------------------------------ files
def check_input_file(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be read as an input file (exit 2), or None when it can."""
    p = Path(path)
    if p.is_dir():
        return f"{p}: is a directory, not a file"
    if not p.exists():
        return f"{p}: no such file"
    if not os.access(p, os.R_OK):
        return f"{p}: permission denied"
    return None


def check_output_path(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be written as an output file (exit 2), or None when it looks writable."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        return f"cannot write {p}: it is a directory"
    if not parent.exists():
        return f"cannot write {p}: directory {parent} does not exist"
    if not parent.is_dir():
        return f"cannot write {p}: {parent} is not a directory"
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        return f"cannot write {p}: permission denied"
    return None


# ------------------------------------------------------------------------------ sockets
def bind_error(exc: BaseException, what: str, host: str, port: int, hint: str = "") -> str:
    """One line for a failed bind of ``what`` ("HTTP", "sFlow") on host:port, naming both and
    what to do (``hint`` is the option that changes the port, e.g. ``--http-port``)."""
    err = getattr(exc, "errno", None)
    change = f": choose another with {hint}, or stop the program holding it" if hint else ""
    if isinstance(exc, socket.gaierror):
        return f"{what} address {host!r} cannot be resolved ({exc.strerror})"
    if err == _errno.EADDRINUSE or "address already in use" in str(exc):
        return (f"{what} port {port} on {host} is already in use (by another fastflow or "
                f"sFlow-RT?){change}")
    if err == _errno.EADDRNOTAVAIL or "assign requested address" in str(exc):
        return (f"{what} address {host} is not an address of this host "
                "(use 127.0.0.1, 0.0.0.0 or one of this host's addresses)")
    if err == _errno.EACCES:
        return (f"{what} port {port} on {host}: permission denied (ports below 1024 need root or "
                f"CAP_NET_BIND_SERVICE){change.replace(', or stop the program holding it', '')}")
    reason = getattr(exc, "strerror", None) or str(exc)
    return f"cannot listen for {what} on {host}:{port}: {reason}"


def check_destination(host: str, port: int) -> str | None:
    """Why UDP datagrams cannot be addressed to host:port (exit 2), or None when it resolves."""
    try:
        socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        return f"cannot resolve {host!r} ({exc.strerror}): give an IP address or a known host name"
    except UnicodeError:
        return f"{host!r} is not a valid host name"
    return None


def explain_send_errno(err: int, host: str, port: int) -> str:
    """Why datagrams to host:port failed, for a summary line."""
    if err == _errno.ECONNREFUSED:
        return f"ICMP port unreachable: nothing listening on {host}:{port}"
    if err in (_errno.ENETUNREACH, _errno.EHOSTUNREACH):
        return f"no route to {host}"
    if err in (_errno.ENOBUFS, _errno.EAGAIN):
        return "the socket's send buffer was full (sending faster than the kernel drains)"
    if err == _errno.EMSGSIZE:
        return "a datagram is larger than the path allows"
    return os.strerror(err) if err else "unknown error"


# ------------------------------------------------------------------------------ progress
class Progress:
    """A one-line progress display on stderr, only when stderr is a terminal.

    ``FASTFLOW_PROGRESS=0`` turns it off, ``=1`` forces it on (e.g. under a pty-less CI log).
    Updates are throttled to five a second; ``close()`` ends the line.
    """

    def __init__(self, label: str, total: float | None = None, unit: str = "",
                 stream: IO[str] | None = None, enabled: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            env = os.environ.get("FASTFLOW_PROGRESS", "")
            enabled = env == "1" or (env != "0" and _isatty(self.stream))
        self.enabled = enabled
        self.label = label
        self.total = total
        self.unit = unit
        self.t0 = time.monotonic()
        self._last = 0.0
        self._shown = False

    def update(self, done: float, note: str = "", force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.2:
            return
        self._last = now
        el = max(now - self.t0, 1e-9)
        if self.total:
            frac = min(1.0, max(0.0, done / self.total))
            filled = int(30 * frac)
            bar = f"[{'#' * filled}{'.' * (30 - filled)}] {100 * frac:5.1f}% "
        else:
            bar = ""
        unit = f" {self.unit}" if self.unit else ""
        text = f"\r{self.label}: {bar}{done:,.0f}{unit} ({done / el:,.0f}/s){note}"
        self.stream.write(text + "\x1b[K")
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


# ------------------------------------------------------------------------------ logging
class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, and
    ``exception`` (the traceback text) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _dt.datetime.fromtimestamp(record.created, _dt.UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


LOG_FORMATS = ("text", "json")


def log_formatter(fmt: str) -> logging.Formatter:
    """The formatter for ``[log] format`` / ``--log-format``: "text" (sFlow-RT-like) or "json"."""
    if fmt == "json":
        return JsonLogFormatter()
    return logging.Formatter(LOG_FORMAT, LOG_DATEFMT)


def setup_logging(level: int | str, fmt: str = "text", stream: IO[str] | None = None) -> None:
    """Configure the root logger: one stderr handler with the chosen format (idempotent)."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
        root.addHandler(handler)
    for h in root.handlers:
        h.setFormatter(log_formatter(fmt))
    if isinstance(level, str):
        level = getattr(logging, level.upper())
    root.setLevel(level)
