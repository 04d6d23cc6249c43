"""The ``fastflow`` command: one sub-command per job, each implemented in its own module.

Every sub-command module exposes ``add_arguments(parser: argparse.ArgumentParser) -> None`` and
``main(args: argparse.Namespace) -> int``. They are imported only when chosen, so ``fastflow decode``
does not pay for the Docker SDK or the HTTP server.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from fastflow import __version__

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "decode": ("fastflow.cli.decode", "print every datagram of a capture (text or JSON lines)"),
    "run": ("fastflow.cli.run", "run the collector, metrics engine, REST API and scaler"),
    "series": ("fastflow.cli.series", "replay a capture through the engine and print a query over time"),
    "replay": ("fastflow.sources.replay", "re-send a capture's datagrams over UDP"),
    "simulate": ("fastflow.sources.simulate", "emit sFlow from a simulated swarm (UDP or pcap)"),
    "agent": ("fastflow.sources.agent", "a small Host sFlow-compatible agent for one Docker host"),
    "demo": ("fastflow.sources.demo", "collector + scaler + dashboard against a simulated swarm"),
    "plot": ("fastflow.cli.plot", "render a service chart from a capture to PNG"),
}

LOG_FORMAT = "%(asctime)s %(levelname)s: %(message)s"


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and one (still empty) sub-parser per command."""
    parser = argparse.ArgumentParser(
        prog="fastflow", description="sFlow telemetry into elastic scaling of Docker swarm services")
    parser.add_argument("--version", action="version", version=f"fastflow {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    subparsers = {}
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        subparsers[name] = p  # arguments are added in main() for the chosen command only
    return parser, subparsers


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, subparsers = build_parser()
    # Find the chosen command first so only its module is imported.
    chosen = next((a for a in argv if a in COMMANDS), None)
    if chosen is not None:
        importlib.import_module(COMMANDS[chosen][0]).add_arguments(subparsers[chosen])
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * args.verbose if chosen not in ("run", "demo", "agent") else (
        logging.DEBUG if args.verbose else logging.INFO)
    logging.basicConfig(level=level, format=LOG_FORMAT, datefmt="%Y-%m-%dT%H:%M:%S%z",
                        stream=sys.stderr)
    module = importlib.import_module(args._module)
    try:
        return int(module.main(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
