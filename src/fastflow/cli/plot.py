"""``fastflow plot``: render a service chart from a capture to PNG (matplotlib, Agg backend).

The capture is replayed through the real engine (Pipeline -> Store -> Metrics with a ReplayClock,
``Pipeline.feed_capture(step=...)``); every ``step`` seconds of capture time the chosen metrics are
read per data source (``Metrics.dump``) for the data sources passing the filters. The chart has one
panel per metric with a thin line per container (host name), the average as a thick line, optional
threshold lines, and the number of containers reporting ("replicas") as a step line::

    fastflow plot docker-swarm.pcap --service sflowpeer_burn --hline 20 --hline 80 -o chart.png
    fastflow plot cap.pcap --metric vir_cpu_utilization --metric vir_bytes_in \\
        --filter 'vir_host_name=apache\\..*' --step 5 -o chart.png

Filters are ``metric=pattern`` (anchored regular expressions, as the REST API's query filters);
several ``--filter`` for the same metric are alternatives (OR). matplotlib is an optional extra:
``pip install fastflow[plot]``.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Series", "collect", "render", "add_arguments", "main"]

from fastflow._console import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    check_input_file,
    check_output_path,
    fail,
    positive_float,
)

log = logging.getLogger(__name__)

DEFAULT_METRIC = "vir_cpu_utilization"


@dataclass
class Series:
    """Values over capture time: ``t`` (epoch seconds) and, per metric, per host, a value list
    aligned with ``t`` (None where the host did not report)."""

    t: list[float] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    values: dict[str, dict[str, list[float | None]]] = field(default_factory=dict)
    reporting: list[int] = field(default_factory=list)   # hosts reporting the first metric
    skipped: dict[str, int] = field(default_factory=dict)  # the capture's skipped frames by reason


def parse_filters(items: list[str] | None) -> dict[str, list[str]]:
    """``["vir_host_name=apache\\..*", ...]`` -> ``{"vir_host_name": [...]}``; ValueError if bad."""
    out: dict[str, list[str]] = defaultdict(list)
    for item in items or []:
        key, sep, pattern = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--filter must be metric=pattern, got {item!r}")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"--filter {item!r}: bad regular expression: {exc}") from None
        out[key.strip()].append(pattern)
    return dict(out)


def collect(capture: str | Path, metrics: list[str], filters: dict[str, list[str]],
            step: float = 5.0) -> Series:
    """Replay ``capture`` through Pipeline/Store/Metrics and sample ``metrics`` every ``step`` s."""
    from fastflow import pcap
    from fastflow.collector.metrics import Metrics
    from fastflow.collector.pipeline import Pipeline, ReplayClock
    from fastflow.collector.store import Store

    cap = pcap.read(str(capture))
    if len(cap.ts) == 0:
        raise ValueError(f"{capture}: no sFlow datagrams (UDP port 6343) in the capture")
    clock = ReplayClock()
    store = Store(clock=clock)
    m = Metrics(store)
    pipeline = Pipeline([store], clock=clock)
    s = Series(metrics=list(metrics), values={name: {} for name in metrics},
               skipped=dict(cap.skipped))
    # the operator's own patterns: anchored regular expressions, compiled once (trusted input;
    # the REST API reads filter values as sFlow-RT globs instead)
    compiled = {k: [re.compile(p) for p in v] for k, v in (filters or {}).items()}

    def on_step(t: float) -> None:
        i = len(s.t)
        s.t.append(t)
        rows = m.dump("ALL", metrics, compiled or None)
        seen: dict[str, set[str]] = defaultdict(set)
        for r in rows:
            name = r.get("metricName")
            v = r.get("metricValue")
            if name not in s.values or not isinstance(v, (int, float)):
                continue
            host = r.get("hostName") or f"{r.get('agent')}:{r.get('dataSource')}"
            col = s.values[name].setdefault(host, [None] * i)
            col.extend([None] * (i + 1 - len(col)))
            col[i] = float(v)
            seen[name].add(host)
        for per_host in s.values.values():
            for col in per_host.values():
                col.extend([None] * (i + 1 - len(col)))
        s.reporting.append(len(seen.get(metrics[0], ())))

    pipeline.feed_capture(cap, step=step, on_step=on_step)
    return s


def render(s: Series, out: str | Path, title: str | None = None,
           hlines: list[float] | None = None, width: float = 10.0, height: float | None = None) -> None:
    """Draw ``s`` to ``out`` (PNG, or any format matplotlib knows from the suffix)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.dates as mdates
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("fastflow plot needs matplotlib: pip install fastflow[plot]") from None
    from datetime import UTC, datetime

    times = [datetime.fromtimestamp(t, tz=UTC) for t in s.t]
    n = len(s.metrics)
    fig, axes = plt.subplots(n, 1, sharex=True, squeeze=False,
                             figsize=(width, height or 3.2 * n + 0.8))
    for k, name in enumerate(s.metrics):
        ax = axes[k][0]
        per_host = s.values.get(name, {})
        for host in sorted(per_host):
            ys = [float("nan") if v is None else v for v in per_host[host]]
            ax.plot(times, ys, linewidth=1, label=host)
        avg = []
        for i in range(len(s.t)):
            vals = [v for col in per_host.values() if (v := col[i]) is not None]
            avg.append(sum(vals) / len(vals) if vals else float("nan"))
        if per_host:
            ax.plot(times, avg, color="black", linewidth=2.5, label="average")
        if k == 0:
            for h in hlines or []:
                ax.axhline(h, color="red", linestyle="--", linewidth=1)
            ax2 = ax.twinx()
            ax2.step(times, s.reporting, where="post", color="purple", linestyle=":",
                     linewidth=2, label="containers reporting")
            ax2.set_ylabel("containers")
            ax2.set_ylim(0, max(s.reporting + [1]) + 1)
            ax2.legend(loc="upper right", fontsize="small")
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
        if per_host:
            ax.legend(loc="upper left", fontsize="x-small", ncol=2)
        else:
            ax.text(0.5, 0.5, "no data for this metric / filter", transform=ax.transAxes,
                    ha="center", va="center", color="grey")
    axes[-1][0].xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    axes[-1][0].set_xlabel("capture time (UTC)")
    fig.suptitle(title or ", ".join(s.metrics))
    fig.tight_layout()
    fig.savefig(str(out), dpi=100)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``fastflow plot`` options."""
    parser.add_argument("capture", help="pcap/pcapng capture holding sFlow datagrams (UDP 6343)")
    parser.add_argument("--metric", "-m", action="append", metavar="NAME",
                        help=f"metric to chart (repeatable; default {DEFAULT_METRIC})")
    parser.add_argument("--filter", "-f", action="append", metavar="METRIC=PATTERN",
                        help="keep data sources whose METRIC matches PATTERN (anchored regex; "
                             "repeatable, same metric = OR), e.g. vir_host_name=apache\\..*")
    parser.add_argument("--service", metavar="NAME",
                        help="shortcut for --filter vir_host_name=NAME\\..* (swarm task names)")
    parser.add_argument("--step", type=positive_float, default=5.0, metavar="S",
                        help="seconds of capture time between points (default 5)")
    parser.add_argument("--hline", type=float, action="append", metavar="VALUE",
                        help="threshold line on the first metric's panel (repeatable)")
    parser.add_argument("--title", help="chart title")
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="output image (.png)")


def main(args: argparse.Namespace) -> int:
    """Run ``fastflow plot``: 0 on success, 2 on bad input or an unwritable output path, 1 when
    matplotlib is missing or the image cannot be written."""
    metrics = args.metric or [DEFAULT_METRIC]
    problem = check_input_file(args.capture) or check_output_path(args.output)
    if problem:
        return fail("plot", problem, EXIT_USAGE)
    try:
        filters = parse_filters(args.filter)
        if args.service:
            filters.setdefault("vir_host_name", []).append(re.escape(args.service) + r"\..*")
        if not args.step > 0:
            raise ValueError(f"--step must be > 0, got {args.step}")
        series = collect(args.capture, metrics, filters, args.step)
    except OSError as exc:
        return fail("plot", f"{args.capture}: {exc.strerror or exc}", EXIT_USAGE)
    except ValueError as exc:   # PcapError, bad filter, unknown metric
        return fail("plot", str(exc), EXIT_USAGE)
    title = args.title or (f"{args.service}: " if args.service else "") + ", ".join(metrics)
    try:
        render(series, args.output, title, args.hline)
    except RuntimeError as exc:
        return fail("plot", str(exc), EXIT_FAILURE)
    except OSError as exc:
        return fail("plot", f"cannot write {args.output}: {exc.strerror or exc}", EXIT_FAILURE)
    except ValueError as exc:   # matplotlib: unknown image format from the suffix
        return fail("plot", f"cannot write {args.output}: {exc}", EXIT_USAGE)
    hosts = {h for per in series.values.values() for h in per}
    print(f"wrote {args.output}: {len(series.t)} points, {len(hosts)} data sources, "
          f"metrics {', '.join(metrics)}")
    damage = [k for k in ("truncated", "corrupt") if series.skipped.get(k)]
    if damage:
        return fail("plot", f"{args.capture}: capture damaged ({', '.join(damage)}); the chart "
                    "shows what was read before", EXIT_FAILURE)
    return EXIT_OK
