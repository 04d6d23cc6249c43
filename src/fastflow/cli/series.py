"""``fastflow series CAPTURE METRICS``: a metrics query over time, replayed from a capture.

The capture is replayed through the same Pipeline + Store + Metrics as the live service, with the
capture's timestamps as the clock; every ``--step`` seconds of capture time the query is answered,
exactly as the REST API ``/metric/{agents}/{metrics}/json`` would have answered at that moment.

* ``--format json`` (default): one line per step,
  ``{"t": epoch_seconds, "metrics": [{"metricName", "metricValue", "metricN"}, ...]}``
  (``metricValue`` is null when no data source contributed).
* ``--format csv``: a header row ``t,<metric>,<metric>:N,...`` then one row per step (empty value
  when no data source contributed).

Exit status (README "Exit codes"): 0 ok, 2 for a bad query (unknown metric, bad filter) or a
missing/unreadable/non-capture file, 1 for a capture damaged part-way (what was read is still
answered). On a terminal a progress line follows the capture time.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
import sys
from typing import Any

from fastflow._console import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    Progress,
    check_input_file,
    fail,
    positive_float,
)

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``fastflow series``."""
    parser.add_argument("capture", metavar="CAPTURE", help="pcap/pcapng capture of sFlow datagrams")
    parser.add_argument("metrics", metavar="METRICS",
                        help="comma-separated metrics with optional aggregation prefix, e.g. "
                             "avg:vir_cpu_utilization,sum:vir_bytes_in")
    parser.add_argument("--filter", action="append", default=[], metavar="KEY=PATTERN",
                        help="only data sources whose metric KEY fully matches the regular "
                             "expression PATTERN (repeat; the same KEY twice means either)")
    parser.add_argument("--agents", default="ALL",
                        help="ALL (default) or ;-separated agent addresses")
    parser.add_argument("--step", type=positive_float, default=10.0, metavar="SECONDS",
                        help="seconds of capture time between answers (default 10)")
    parser.add_argument("--format", choices=("json", "csv"), default="json",
                        help="output format (default json lines)")
    parser.add_argument("--port", type=int, default=6343,
                        help="UDP port of the sFlow datagrams in the capture (0: any UDP port)")
    parser.add_argument("--depth", type=int, default=32, help="samples kept per data source")
    parser.add_argument("--expire-after", type=float, default=30.0,
                        help="seconds without samples before a data source stops counting")


def parse_filters(items: list[str]) -> dict[str, list[str]]:
    """``["vir_host_name=web.*", "vir_cpu_state=running"]`` -> {key: [patterns]}."""
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, pat = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--filter wants KEY=PATTERN, got {item!r}")
        out.setdefault(key.strip(), []).append(pat)
    return out


def main(args: argparse.Namespace) -> int:
    """Run the replay and print the query at every step."""
    from fastflow.collector.metrics import Metrics, parse_metrics
    from fastflow.collector.pipeline import Pipeline, ReplayClock
    from fastflow.collector.store import Store
    from fastflow.pcap import read

    try:
        filters = parse_filters(args.filter)
        specs = [s for s, _p, _n in parse_metrics(args.metrics)]
        if not args.step > 0:
            raise ValueError(f"--step must be > 0, got {args.step}")
        clock = ReplayClock()
        store = Store(depth=args.depth, expire_after=args.expire_after, clock=clock)
    except ValueError as e:
        print(f"fastflow series: {e}", file=sys.stderr)
        return 2
    problem = check_input_file(args.capture)
    if problem:
        return fail("series", problem, EXIT_USAGE)
    try:
        cap = read(args.capture, None if args.port == 0 else args.port)
    except (OSError, ValueError) as e:
        return fail("series", f"{args.capture}: {e}", EXIT_USAGE)
    metrics = Metrics(store)
    pipeline = Pipeline([store], clock=clock)
    out = sys.stdout
    writer: Any = None
    if args.format == "csv":
        writer = csv.writer(out, lineterminator="\n")
        header = ["t"]
        for s in specs:
            header += [s, f"{s}:N"]
        writer.writerow(header)
    failure: list[str] = []
    t_first = float(cap.ts.min()) if len(cap.ts) else 0.0
    span = float(cap.ts.max()) - t_first if len(cap.ts) else 0.0
    progress = Progress("series", total=span or None, unit="s of capture time")

    def on_step(t: float) -> None:
        progress.update(t - t_first)
        if failure:
            return
        try:
            # the operator's own patterns: anchored regular expressions (trusted input; the
            # REST API reads filter values as sFlow-RT globs instead)
            compiled = {k: [re.compile(p) for p in v] for k, v in filters.items()}
            answer = metrics.query(args.agents, specs, compiled or None)
        except (ValueError, re.error) as e:    # a bad filter shows up at the first query
            failure.append(str(e))
            return
        if writer is not None:
            row: list[Any] = [round(t, 6)]
            for a in answer:
                row += [a.get("metricValue", ""), a["metricN"]]
            writer.writerow(row)
        else:
            out.write(json.dumps({"t": round(t, 6), "metrics": [
                {"metricName": a["metricName"], "metricValue": a.get("metricValue"),
                 "metricN": a["metricN"]} for a in answer]}) + "\n")

    pipeline.feed_capture(cap, step=args.step, on_step=on_step)
    progress.close()
    out.flush()
    if failure:
        return fail("series", failure[0], EXIT_USAGE)
    errs = pipeline.errors()
    log.info("%d datagrams, store %s, decoder %s", len(cap.ts), store.counts, errs)
    damage = {k: v for k, v in cap.skipped.items() if k in ("truncated", "corrupt")}
    if damage:
        return fail("series", f"{args.capture}: capture damaged after {len(cap.ts)} datagrams "
                    f"({', '.join(damage)}); the answers above cover what was read", EXIT_FAILURE)
    return EXIT_OK
