"""``fastflow config check|show|example``: the configuration as ``fastflow run`` would see it.

* ``check``: load the file, the environment and the flags exactly as ``fastflow run`` does, build
  every part without binding a port (so scaler and flow keys are validated by their owners) and run
  the start-up checks (a non-loopback API bind needs a token; a ``tls_dir`` must exist with its
  three files). Exit 0 and ``configuration OK`` or exit 2 and the error.
* ``show``: the effective configuration as TOML, each value followed by its source
  (``default``, ``file PATH``, ``env NAME`` or ``flag``); ``--json`` for a JSON object
  ``{section: {key: {"value", "source"}}}``. Tokens are masked.
* ``example``: print the example configuration installed with the package (every key with its
  default and a comment), a starting point: ``fastflow config example > fastflow.toml``.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from fastflow._console import EXIT_OK, EXIT_USAGE, fail
from fastflow.cli.config import Config, ConfigError

__all__ = ["add_arguments", "describe_sources", "example_text", "main", "preflight",
           "reload_config", "render_toml"]

EXAMPLE = "config.example.toml"
TLS_FILES = ("ca.pem", "cert.pem", "key.pem")


def example_text() -> str:
    """The example configuration shipped as package data (``fastflow/cli/config.example.toml``)."""
    return resources.files("fastflow.cli").joinpath(EXAMPLE).read_text(encoding="utf-8")


def _is_loopback(host: str) -> bool:
    from fastflow.web.server import is_loopback  # the rule the server itself applies

    return is_loopback(host)


def preflight(cfg: Config, scaler: bool = True) -> None:
    """Start-up checks beyond the loader's types and ranges; :class:`ConfigError` on the first.

    * a REST API on a non-loopback address without a token (the mutating routes would be open);
    * ``[scaler] tls_dir`` that is not a directory holding ca.pem, cert.pem and key.pem (it would
      otherwise fail at every scaler interval, for ever).
    """
    if not cfg.api.token and not _is_loopback(cfg.api.bind):
        raise ConfigError(
            f"[api] bind {cfg.api.bind!r} ({cfg.origin('api', 'bind')}) is not a loopback address "
            "and no token is set: anyone who can reach it could change the scaler and the flows. "
            "Set [api] token (or FASTFLOW_API_TOKEN), or bind 127.0.0.1")
    tls = cfg.scaler.get("tls_dir") if scaler else None
    if tls:
        d = Path(str(tls)).expanduser()
        where = f"[scaler] tls_dir {str(tls)!r} ({cfg.origin('scaler', 'tls_dir')})"
        if not d.is_dir():
            raise ConfigError(f"{where}: no such directory")
        missing = [f for f in TLS_FILES if not (d / f).is_file()]
        if missing:
            raise ConfigError(f"{where}: missing {', '.join(missing)} (needs {', '.join(TLS_FILES)})")


def describe_sources(cfg: Config) -> str:
    """One line for the start-up log: the file, and which keys came from the environment and
    from flags (``fastflow config show`` has every value)."""
    env = sorted(src[4:] for src in cfg.origins.values() if src.startswith("env "))
    flags = sorted(k for k, src in cfg.origins.items() if src == "flag")
    parts = [f"file {cfg.source}" if cfg.source != "<defaults>" else "no file (built-in defaults)"]
    if env:
        parts.append("environment " + ", ".join(env))
    if flags:
        parts.append("flags " + ", ".join(flags))
    return "; ".join(parts)


def reload_config(args: argparse.Namespace, current: Config, verbose: int = 0) -> Config:
    """SIGHUP for ``fastflow run``: read the file, environment and flags again.

    An invalid file is logged and ignored (the service keeps its configuration). ``[log] level``
    and ``format`` apply at once; every other changed key is named in the log as needing a restart
    (the listeners, stores and scaler are built at start). Returns the configuration now in force.
    """
    import logging

    from fastflow._console import setup_logging
    from fastflow.cli.run import config_from_args

    log = logging.getLogger("fastflow.service")
    try:
        new = config_from_args(args)
    except ConfigError as exc:
        log.error("SIGHUP: configuration not reloaded, keeping the running one: %s", exc)
        return current
    old = {(s, k): v for s, k, v, _src in current.effective()}
    changed = sorted({f"[{s}] {k}" for s, k, v, _src in new.effective()
                      if s != "log" and old.get((s, k)) != v}
                     | {f"[{s}] {k}" for (s, k) in old if s != "log"
                        and (s, k) not in {(s2, k2) for s2, k2, _v, _c in new.effective()}})
    setup_logging(logging.DEBUG if verbose else new.log.level, new.log.format)
    log.info("SIGHUP: configuration reloaded from %s: log level %s, format %s applied%s",
             new.source, new.log.level, new.log.format,
             f"; changed, needs a restart to apply: {', '.join(changed)}" if changed else "")
    current.log = new.log
    return current


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    return json.dumps(str(v))


def render_toml(cfg: Config) -> str:
    """The effective configuration as TOML with ``# source`` comments (it loads back)."""
    lines = [f"# effective configuration; file: {cfg.source}",
             "# each value is followed by its source: default, file PATH, env NAME or flag",
             "# ([scaler] and [flows] show the keys given; the others keep their modules' defaults)"]
    tables: list[str] = []
    section = None
    for sec, key, value, src in cfg.effective():
        if sec != section:
            lines += ["", f"[{sec}]"]
            section = sec
        if isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
            for item in value:
                tables += ["", f"[[{sec}.{key}]]  # {src}"]
                tables += [f"{k} = {_toml_value(x)}" for k, x in item.items() if x is not None]
            continue
        if value is None:
            lines.append(f"# {key} = (not set)  # {src}")
            continue
        text = f"{key} = {_toml_value(value)}"
        lines.append(f"{text:<40} # {src}")
    return "\n".join(lines + tables) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``fastflow config check|show|example``; check and show take ``fastflow run``'s options."""
    from fastflow.cli.run import add_arguments as run_arguments

    parser.add_argument("action", choices=("check", "show", "example"),
                        help="check: validate as 'fastflow run' would; show: the effective "
                             "configuration with each value's source; example: print the "
                             "example file")
    parser.add_argument("--json", action="store_true", help="show: print JSON instead of TOML")
    run_arguments(parser)


def main(args: argparse.Namespace) -> int:
    """Run ``fastflow config``: 0 ok, 2 for a configuration error."""
    from fastflow.cli.run import Service, config_from_args

    if args.action == "example":
        sys.stdout.write(example_text())
        return EXIT_OK
    try:
        cfg = config_from_args(args)
    except ConfigError as exc:
        return fail("config", f"configuration error: {exc}", EXIT_USAGE)
    if args.action == "show":
        if args.json:
            out: dict[str, dict[str, Any]] = {}
            for sec, key, value, src in cfg.effective():
                out.setdefault(sec, {})[key] = {"value": value, "source": src}
            print(json.dumps(out, indent=2, default=str))
        else:
            sys.stdout.write(render_toml(cfg))
        return EXIT_OK
    scaler = not getattr(args, "no_scaler", False)
    try:
        Service(cfg, scaler=scaler)    # builds every part; binds nothing, writes nothing
        preflight(cfg, scaler=scaler)
    except ConfigError as exc:
        return fail("config", f"configuration error: {exc}", EXIT_USAGE)
    print(f"configuration OK ({cfg.source})")
    return EXIT_OK
