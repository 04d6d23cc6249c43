"""Run sFlow-RT JavaScript applications (e.g. the ``elb.js`` of the original experiment) on fastflow.

``fastflow run --script elb.js`` (or ``[scripts] files = ["elb.js"]``) loads each file into its own
QuickJS context (the ``fastflow[scripts]`` extra, package ``quickjs-ng``) and gives it sFlow-RT's
script API over fastflow's engines; its HTTP handler is served at ``/script/{file}/json``. See
docs/scripts.md.
"""

from __future__ import annotations

import importlib.util
import os
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastflow.scripts.api import ApiError, ScriptApi
from fastflow.scripts.fetch import AllowList
from fastflow.scripts.host import HttpAnswer, Script, ScriptError, ScriptHost, ScriptUnavailable

__all__ = ["ApiError", "AllowList", "HttpAnswer", "Script", "ScriptApi", "ScriptError",
           "ScriptHost", "ScriptUnavailable", "SECTION_KEYS", "from_config", "default_allow",
           "available"]

SECTION_KEYS = {"files", "http_allow", "call_timeout", "memory_mb", "max_pending", "state_dir",
                "properties", "http_timeout"}


def available() -> str | None:
    """None when the JavaScript engine is installed, else how to get it."""
    # find_spec, not import: importing quickjs starts a (non-daemon) thread pool in this process,
    # and only the workers need the engine
    if importlib.util.find_spec("quickjs") is None:
        return "the JavaScript engine is missing: pip install 'fastflow[scripts]' (quickjs-ng)"
    return None


def default_allow(docker_host: str | None) -> list[str]:
    """The Docker API host (``tcp://host:port`` of the scaler config or DOCKER_HOST), if any."""
    host = docker_host or os.environ.get("DOCKER_HOST") or ""
    if not host.startswith(("tcp://", "http://", "https://")):
        return []
    u = urllib.parse.urlsplit(host)
    if not u.hostname:
        return []
    port = u.port or 2376
    h = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
    return [f"{h}:{port}"]


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "fastflow"


def _positive(section: Mapping[str, Any], key: str, default: float) -> float:
    v = section.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
        raise ValueError(f"[scripts] {key}: expected a positive number, got {v!r}")
    return float(v)


def from_config(section: Mapping[str, Any], *, metrics: Any, agentstats: Any = None,
                flows: Any = None, thresholds: Any = None, lock: Any = None,
                docker_host: str | None = None, token: str | None = None) -> ScriptHost:
    """A ScriptHost from the ``[scripts]`` keys; ValueError on a bad key or value."""
    unknown = sorted(set(section) - SECTION_KEYS)
    if unknown:
        raise ValueError(f"[scripts]: unknown key(s) {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(SECTION_KEYS))}")
    files = section.get("files", [])
    if isinstance(files, str):
        files = [files]
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise ValueError("[scripts] files: expected a list of file names")
    allow = section.get("http_allow")
    if allow is None:
        allow = default_allow(docker_host)
    if isinstance(allow, str):
        allow = [allow]
    if not isinstance(allow, list):
        raise ValueError("[scripts] http_allow: expected a list of host:port")
    props = section.get("properties", {})
    if not isinstance(props, Mapping):
        raise ValueError("[scripts] properties: expected a table of name = value")
    state_dir = section.get("state_dir") or ""
    api = ScriptApi(metrics, agentstats=agentstats, flows=flows, thresholds=thresholds,
                    lock=lock, allow=AllowList(allow), properties=props,
                    state_dir=Path(state_dir).expanduser() if state_dir else _default_state_dir(),
                    http_timeout=_positive(section, "http_timeout", 10.0))
    if files:
        missing = available()
        if missing:
            raise ValueError(f"[scripts] files given but {missing}")
    return ScriptHost(files, api, call_timeout=_positive(section, "call_timeout", 5.0),
                      memory=int(_positive(section, "memory_mb", 64) * (1 << 20)),
                      max_pending=int(_positive(section, "max_pending", 64)), token=token)
