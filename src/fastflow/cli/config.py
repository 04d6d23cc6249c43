"""Configuration of ``fastflow run``: a TOML file, environment overrides and command-line overrides.

Precedence, lowest first: built-in defaults < TOML file < ``FASTFLOW_<SECTION>_<KEY>`` environment
variables < command-line flags. Every option of the fixed sections ([collector], [store], [api],
[log]) is a typed dataclass field, validated with a message that names the key. The [scaler],
[flows] and [ha] sections belong to their modules and are passed through as dictionaries.

``docs/config.example.toml`` documents every key with its default.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ApiConfig",
    "CollectorConfig",
    "Config",
    "ConfigError",
    "LogConfig",
    "StoreConfig",
    "ENV_PREFIX",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "load_config",
]

ENV_PREFIX = "FASTFLOW_"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type or out of range (message names the key)."""


@dataclass
class CollectorConfig:
    """[collector]: the sFlow UDP listener."""

    bind: str = "0.0.0.0"          # address to receive sFlow on ("::" for IPv6 + IPv4)
    port: int = 6343               # UDP port (0: any free port, logged at start)
    rcvbuf: int = 8388608          # SO_RCVBUF bytes requested (the kernel may cap it: net.core.rmem_max)
    batch: int = 1024              # datagrams read per recvmmsg batch
    linger: float = 0.02           # seconds a sparse batch waits to fill up (0: hand on at once)
    reuseport: bool = False        # SO_REUSEPORT (several collectors sharing a port)
    agents: list[str] = field(default_factory=list)  # allowed senders (addresses / CIDRs); [] = all
    max_sources: int = 300000      # data sources tracked (store, sample-loss state); more: refused
    max_agents: int = 65536        # agents in the statistics; more: refused, stalest evicted
    max_streams: int = 131072      # (agent, sub-agent) sequence streams; more: refused
    dt_tolerance: float = 2.0      # s of slack before uptime lagging arrival time is a reset (<0: off)


@dataclass
class StoreConfig:
    """[store]: the counter ring buffers."""

    depth: int = 2                 # samples kept per (agent, data source); rates need 2
    polling_interval: float = 10.0  # agents' counter polling interval, seconds
    expire_after: float | None = None  # seconds without samples before a data source is dropped;
    #                                    None (default): 3 polling intervals


@dataclass
class ApiConfig:
    """[api]: the REST API and dashboard."""

    bind: str = "127.0.0.1"        # a non-loopback bind needs a token when mutating routes exist
    port: int = 8008               # TCP port (0: any free port, logged at start)
    token: str = ""                # bearer token for mutating routes ("" = none; loopback only)
    allowed_hosts: str = ""        # extra Host names accepted (comma-separated; "*" = any);
    #                                localhost, IP literals and the bind name always are
    max_connections: int = 0       # concurrent HTTP connections (0: half the fd limit, <= 4096)
    idle_timeout: float = 30.0     # seconds an idle keep-alive connection is kept
    header_timeout: float = 10.0   # seconds a new connection has to send its request head
    body_timeout: float = 30.0     # seconds to receive a request body
    max_request_bytes: int = 1048576  # largest request body accepted


@dataclass
class LogConfig:
    """[log]."""

    level: str = "info"            # debug, info, warning, error, critical
    format: str = "text"           # text (sFlow-RT-like lines) or json (one object per line)


@dataclass
class Config:
    """The whole configuration of ``fastflow run``."""

    collector: CollectorConfig = field(default_factory=CollectorConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    scaler: dict[str, Any] = field(default_factory=dict)   # owned by fastflow.scaler.controller
    flows: dict[str, Any] = field(default_factory=dict)    # owned by fastflow.collector.flows
    ha: dict[str, Any] = field(default_factory=dict)       # owned by fastflow.scaler.lease
    scripts: dict[str, Any] = field(default_factory=dict)  # owned by fastflow.scripts
    log: LogConfig = field(default_factory=LogConfig)
    source: str = "<defaults>"     # where the file part came from (for messages)
    # "section.key" -> where its value came from: "file PATH", "env NAME" or "flag"; keys not
    # in here have their built-in default
    origins: dict[str, str] = field(default_factory=dict)

    def origin(self, section: str, key: str) -> str:
        """Where ``[section] key`` came from: "default", "file PATH", "env NAME" or "flag"."""
        return self.origins.get(f"{section}.{key}", "default")

    def effective(self) -> list[tuple[str, str, Any, str]]:
        """``(section, key, value, source)`` for every typed key and every key given in the
        pass-through sections ([scaler], [flows]: their other keys keep their modules' defaults).
        Tokens are masked."""
        data = self.to_dict()
        out: list[tuple[str, str, Any, str]] = []
        for sec in SECTIONS:
            for key, value in data.get(sec, {}).items():
                src = self.origin(sec, key)
                if sec == "store" and key == "expire_after" and src == "default":
                    src = "default (3 x polling_interval)"
                out.append((sec, key, value, src))
        return out

    @property
    def expire_after(self) -> float:
        """The effective [store] expire_after (3 polling intervals when not set)."""
        if self.store.expire_after is not None:
            return self.store.expire_after
        return 3.0 * self.store.polling_interval

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain data (for logging / the API); the tokens are masked."""
        out = {
            "collector": dataclasses.asdict(self.collector),
            "store": dataclasses.asdict(self.store) | {"expire_after": self.expire_after},
            "api": dataclasses.asdict(self.api),
            "scaler": dict(self.scaler),
            "flows": dict(self.flows),
            "ha": dict(self.ha),
            "scripts": dict(self.scripts),
            "log": dataclasses.asdict(self.log),
        }
        for sec in ("api", "scaler"):
            if out[sec].get("token"):
                out[sec]["token"] = "***"
        return out


_TYPED: dict[str, type] = {
    "collector": CollectorConfig,
    "store": StoreConfig,
    "api": ApiConfig,
    "log": LogConfig,
}
_PASSTHROUGH = ("scaler", "flows", "ha", "scripts")
SECTIONS = tuple(_TYPED) + _PASSTHROUGH

# field name -> "int" | "float" | "bool" | "str" | "float?" (float or None)
_FIELD_KIND: dict[tuple[str, str], str] = {}
for _sec, _cls in _TYPED.items():
    for _f in dataclasses.fields(_cls):
        _t = str(_f.type)
        _FIELD_KIND[(_sec, _f.name)] = {"int": "int", "float": "float", "bool": "bool", "str": "str",
                                         "float | None": "float?", "list[str]": "strs"}[_t]


def _suggest(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _coerce(section: str, key: str, value: Any, origin: str) -> Any:
    """Check/convert one value of a typed section; ``origin`` says where it came from."""
    kind = _FIELD_KIND[(section, key)]
    where = f"[{section}] {key} ({origin})"
    if isinstance(value, str) and origin != "file":
        value = _parse_text(kind, value, where)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if kind in ("float", "float?"):
        if value is None and kind == "float?":
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if kind == "strs":
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        return list(value)
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse_text(kind: str, text: str, where: str) -> Any:
    """Parse an environment / command-line string for a field of ``kind``."""
    t = text.strip()
    try:
        if kind == "bool":
            if t.lower() in _TRUE:
                return True
            if t.lower() in _FALSE:
                return False
            raise ValueError
        if kind == "int":
            return int(t, 0)
        if kind == "float?" and t.lower() in ("", "none", "auto"):
            return None
        if kind in ("float", "float?"):
            return float(t)
    except ValueError:
        raise ConfigError(f"{where}: cannot read {text!r} as {kind.rstrip('?')}") from None
    return text


def _parse_passthrough(text: str) -> Any:
    """An environment value for a pass-through section: a TOML value when it parses, else text."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


_HOST_RX = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


def _check_bind(where: str, value: str) -> None:
    if not value:
        raise ConfigError(f"{where}: empty address (use 0.0.0.0 for all IPv4 interfaces)")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not _HOST_RX.match(value):
            raise ConfigError(f"{where}: {value!r} is not an IP address or host name") from None


def _validate(cfg: Config) -> None:
    c, s, a = cfg.collector, cfg.store, cfg.api
    _check_bind("[collector] bind", c.bind)
    _check_bind("[api] bind", a.bind)
    for where, port in (("[collector] port", c.port), ("[api] port", a.port)):
        if not 0 <= port <= 65535:
            raise ConfigError(f"{where}: {port} is not a port number (0-65535; 0 = any free port)")
    if not 0 < c.rcvbuf <= 1 << 31:
        raise ConfigError(f"[collector] rcvbuf: {c.rcvbuf} must be between 1 and 2147483648 bytes")
    if not 1 <= c.batch <= 65536:
        raise ConfigError(f"[collector] batch: {c.batch} must be between 1 and 65536 datagrams")
    if not 0 <= c.linger <= 1:
        raise ConfigError(f"[collector] linger: {c.linger} must be between 0 and 1 seconds")
    for key in ("max_sources", "max_agents", "max_streams"):
        if not 1 <= getattr(c, key) <= 1 << 26:
            raise ConfigError(f"[collector] {key}: {getattr(c, key)} must be between 1 and 67108864")
    for spec in c.agents:
        try:
            ipaddress.ip_network(spec.strip(), strict=False)
        except ValueError:
            raise ConfigError(f"[collector] agents: {spec!r} is not an address or CIDR "
                              "(e.g. 10.0.0.0/8)") from None
    if not 2 <= s.depth <= 1 << 16:
        raise ConfigError(f"[store] depth: {s.depth} must be between 2 and 65536 samples "
                          "(rates need two samples)")
    if not 0 < s.polling_interval <= 86400:
        raise ConfigError(f"[store] polling_interval: {s.polling_interval} must be > 0 and <= 86400 s")
    if s.expire_after is not None and not 0 < s.expire_after <= 7 * 86400:
        raise ConfigError(f"[store] expire_after: {s.expire_after} must be > 0 and <= 604800 s")
    if cfg.log.format.lower() not in LOG_FORMATS:
        raise ConfigError(f"[log] format: {cfg.log.format!r} is not one of {', '.join(LOG_FORMATS)}")
    cfg.log.format = cfg.log.format.lower()
    if cfg.log.level.lower() not in LOG_LEVELS:
        raise ConfigError(f"[log] level: {cfg.log.level!r} is not one of {', '.join(LOG_LEVELS)}")
    cfg.log.level = cfg.log.level.lower()
    if any(ch.isspace() for ch in a.token):
        raise ConfigError("[api] token: must not contain whitespace")
    if not 0 <= a.max_connections <= 1 << 20:
        raise ConfigError(f"[api] max_connections: {a.max_connections} must be 0 (auto) or a "
                          "positive number below the file-descriptor limit")
    for key in ("idle_timeout", "header_timeout", "body_timeout"):
        if not 0 < getattr(a, key) <= 3600:
            raise ConfigError(f"[api] {key}: {getattr(a, key)} must be > 0 and <= 3600 s")
    if not 1024 <= a.max_request_bytes <= 1 << 30:
        raise ConfigError(f"[api] max_request_bytes: {a.max_request_bytes} must be between 1024 "
                          "and 1073741824")
    for h in a.allowed_hosts.split(","):
        h = h.strip()
        if h and h != "*" and not _HOST_RX.match(h.strip("[]").replace(":", "")):
            raise ConfigError(f"[api] allowed_hosts: {h!r} is not a host name")
    for sec in _PASSTHROUGH:
        if not isinstance(getattr(cfg, sec), dict):
            raise ConfigError(f"[{sec}] must be a table")


def _apply(cfg: Config, section: str, key: str, value: Any, origin: str) -> None:
    if section not in SECTIONS:
        raise ConfigError(f"unknown section [{section}] ({origin}){_suggest(section, SECTIONS)}; "
                          f"known: {', '.join(SECTIONS)}")
    if section in _PASSTHROUGH:
        target: dict[str, Any] = getattr(cfg, section)
        # environment text is read as a TOML value ("true", "5", "[1, 2]"), else kept as text
        from_env = origin.startswith("environment")
        target[key] = _parse_passthrough(value) if isinstance(value, str) and from_env else value
        cfg.origins[f"{section}.{key}"] = _origin_kind(origin)
        return
    obj = getattr(cfg, section)
    names = [f.name for f in dataclasses.fields(obj)]
    if key not in names:
        raise ConfigError(f"unknown key {key!r} in [{section}] ({origin}){_suggest(key, names)}; "
                          f"known: {', '.join(names)}")
    setattr(obj, key, _coerce(section, key, value, origin))
    cfg.origins[f"{section}.{key}"] = _origin_kind(origin)


def _origin_kind(origin: str) -> str:
    """"file" -> "file PATH" is filled in by load_config; environment NAME -> "env NAME";
    command line ... -> "flag"."""
    if origin.startswith("environment "):
        return "env " + origin.split(" ", 1)[1]
    if origin.startswith("command line"):
        return "flag"
    return origin


def load_config(path: str | os.PathLike[str] | None = None,
                env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """Build the configuration: defaults, then ``path`` (TOML), then ``env``, then ``overrides``.

    ``env`` defaults to ``os.environ``; only ``FASTFLOW_<SECTION>_<KEY>`` names whose section is
    known are read (other ``FASTFLOW_*`` variables belong to other tools). ``overrides`` maps
    ``"section.key"`` to a value (typed, or a string parsed like an environment value); None values
    are ignored, so argparse defaults of None pass through. Raises :class:`ConfigError`.
    """
    cfg = Config()
    if path is not None:
        p = Path(path)
        try:
            with p.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {str(p)!r} not found") from None
        except OSError as exc:
            raise ConfigError(f"cannot read config file {str(p)!r}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {str(p)!r} is not valid TOML: {exc}") from None
        cfg.source = str(p)
        for section, table in data.items():
            if not isinstance(table, dict):
                raise ConfigError(f"{p}: top-level key {section!r} must be a [section] table"
                                  f"{_suggest(section, SECTIONS)}")
            if section in _PASSTHROUGH:
                setattr(cfg, section, dict(table))
                cfg.origins.update({f"{section}.{k}": f"file {p}" for k in table})
                continue
            for key, value in table.items():
                _apply(cfg, section, key, value, "file")
                cfg.origins[f"{section}.{key}"] = f"file {p}"
    environ = os.environ if env is None else env
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX):].lower()
        section, _, key = rest.partition("_")
        if section not in SECTIONS or not key:
            continue
        _apply(cfg, section, key, environ[name], f"environment {name}")
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        _apply(cfg, section, key, value, f"command line {dotted}")
    _validate(cfg)
    return cfg
