"""The ``fastflow`` command: one sub-command per job, each implemented in its own module.

Every sub-command module exposes ``add_arguments(parser: argparse.ArgumentParser) -> None`` and
``main(args: argparse.Namespace) -> int``. They are imported only when chosen, so ``fastflow decode``
does not pay for the Docker SDK or the HTTP server.

Exit codes are the same for every command (:mod:`fastflow._console`, README "Exit codes"): 0 ok,
1 runtime failure or damaged input, 2 usage or configuration error, 130 interrupted. Whatever a
command lets escape is turned into one line on stderr here (``-v`` adds the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from fastflow import __version__
from fastflow._console import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    LOG_FORMATS,
    CommandError,
    HelpFormatter,
    setup_logging,
)

# name -> (module, one-line help, examples for the help epilog)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "decode": ("fastflow.cli.decode", "print every datagram of a capture (text or JSON lines)",
               "fastflow decode docker-swarm.pcap --format json | head"),
    "run": ("fastflow.cli.run", "run the collector, metrics engine, REST API and scaler",
            "fastflow run --config /etc/fastflow.toml\n"
            "  fastflow run --sflow-port 0 --http-port 0 --no-scaler   # any free ports, no scaler"),
    "series": ("fastflow.cli.series",
               "replay a capture through the engine and print a query over time",
               "fastflow series docker-swarm.pcap avg:vir_cpu_utilization --step 5 --format csv"),
    "replay": ("fastflow.sources.replay", "re-send a capture's datagrams over UDP",
               "fastflow replay docker-swarm.pcap --to 127.0.0.1:6343 --speed 1\n"
               "  fastflow replay big.pcap --to 127.0.0.1:6343 --loop 0 --rewrite-seq "
               "--duration 30"),
    "simulate": ("fastflow.sources.simulate", "emit sFlow from a simulated swarm (UDP or pcap)",
                 "fastflow simulate --to 127.0.0.1:6343 --service apache=risefall:800:120 "
                 "--speed 10 --duration 12\n"
                 "  fastflow simulate --pcap /tmp/swarm.pcap --sim-seconds 600 --nodes 5"),
    "agent": ("fastflow.sources.agent", "a small Host sFlow-compatible agent for one Docker host",
              "sudo fastflow agent --collector 10.0.0.5:6343 --polling 5"),
    "demo": ("fastflow.sources.demo", "collector + scaler + dashboard against a simulated swarm",
             "fastflow demo\n"
             "  fastflow demo --http-port 8009 --duration 30 --speed 20"),
    "plot": ("fastflow.cli.plot", "render a service chart from a capture to PNG",
             "fastflow plot docker-swarm.pcap --service apache --hline 20 --hline 80 -o chart.png"),
    "config": ("fastflow.cli.configcmd",
               "check or show the effective configuration, or print the example file",
               "fastflow config check -c /etc/fastflow.toml\n"
               "  fastflow config show -c /etc/fastflow.toml --http-port 8009\n"
               "  fastflow config example > fastflow.toml"),
}

LOG_FORMAT = "%(asctime)s %(levelname)s: %(message)s"

_EPILOG = ("exit codes: 0 ok, 1 runtime failure or damaged input, 2 usage or configuration error, "
           "130 interrupted")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and one (still empty) sub-parser per command."""
    parser = argparse.ArgumentParser(
        prog="fastflow", description="sFlow telemetry into elastic scaling of Docker swarm services",
        formatter_class=HelpFormatter,
        epilog="example:\n  fastflow demo\n\n" + _EPILOG + "\n\n'fastflow COMMAND --help' "
        "describes each command.")
    parser.add_argument("--version", action="version", version=f"fastflow {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging; tracebacks on unexpected errors")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default=None,
                        help="log lines as text (sFlow-RT-like) or one JSON object per line "
                             "(default: [log] format for run, else text)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    subparsers = {}
    for name, (module, help_text, example) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=HelpFormatter,
                           epilog=f"example:\n  {example}\n\n{_EPILOG}")
        p.set_defaults(_module=module)
        # the common options are accepted after the command too (fastflow run --log-format json)
        p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                       help="more logging; tracebacks on unexpected errors")
        p.add_argument("--log-format", choices=LOG_FORMATS, default=argparse.SUPPRESS,
                       help="log lines as text (sFlow-RT-like) or one JSON object per line "
                            "(default: [log] format for run, else text)")
        subparsers[name] = p  # arguments are added in main() for the chosen command only
    return parser, subparsers


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, subparsers = build_parser()
    # Find the chosen command first so only its module is imported.
    chosen = next((a for a in argv if a in COMMANDS), None)
    if chosen is not None:
        importlib.import_module(COMMANDS[chosen][0]).add_arguments(subparsers[chosen])
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:     # --help, --version, or a usage error (printed; exit 2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    verbose = int(getattr(args, "verbose", 0) or 0)
    level = logging.WARNING - 10 * verbose if chosen not in ("run", "demo", "agent") else (
        logging.DEBUG if verbose else logging.INFO)
    setup_logging(max(level, logging.DEBUG), args.log_format or "text")
    module = importlib.import_module(args._module)
    try:
        return int(module.main(args) or EXIT_OK)
    except KeyboardInterrupt:
        print(f"\nfastflow {chosen}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (fastflow decode x.pcap | head): not an error; silence the
        # interpreter's own complaint when it flushes stdout at exit
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return EXIT_OK
    except CommandError as exc:
        print(f"fastflow {chosen}: {exc}", file=sys.stderr)
        return exc.code
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if verbose:
            traceback.print_exc()
        kind = "error" if isinstance(exc, OSError) else f"unexpected error ({type(exc).__name__})"
        hint = "" if verbose else " (run with -v for the traceback)"
        print(f"fastflow {chosen}: {kind}: {exc}{hint}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
