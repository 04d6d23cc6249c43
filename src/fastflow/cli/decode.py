"""``fastflow decode CAPTURE``: print every sFlow datagram of a capture, as text or JSON lines.

* ``--format json``: one object per datagram per line, the shape of docs/internals.md section 3
  plus ``"source"`` (the sender's address in the capture). A rejected datagram prints as
  ``{"error": reason, "message", "timestamp", "length", "source", "data": hex}``.
* ``--format text`` (default): sflowtool-like ``startDatagram`` / ``key value`` lines /
  ``startSample`` ... ``endSample`` / ``endDatagram``; record fields use fastflow's snake_case names.

A file that is not a pcap/pcapng capture but is at most 65535 bytes and starts like an sFlow v5
datagram (version 5) is decoded as one raw datagram (``.bin``/``.dat`` test vectors), with a note on
stderr. Rejected datagrams never stop the run; a summary (datagrams, rejections and error reasons by
name) goes to stderr at the end. On a terminal, a progress line counts the datagrams.
Exit status (README "Exit codes"): 0 ok; 1 when the capture is damaged part-way (cut inside a
record, an impossible record length) or a raw datagram is rejected; 2 for a missing, unreadable,
directory or non-capture file.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from fastflow._console import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Progress, check_input_file, fail

log = logging.getLogger(__name__)

MAX_RAW_DATAGRAM = 65535  # largest UDP payload: bigger non-capture files are refused


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``fastflow decode``."""
    parser.add_argument("capture", metavar="CAPTURE",
                        help="pcap/pcapng capture, or a raw single-datagram file (.bin/.dat)")
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="output format (default: text, sflowtool-like)")
    parser.add_argument("--port", type=int, default=6343,
                        help="UDP port of the sFlow datagrams in the capture (0: any; "
                             "default 6343)")


def _sample_name(s: dict[str, Any]) -> str:
    t = s.get("type")
    if t == "flow":
        return "FLOWSAMPLE"
    if t == "counters":
        return "COUNTERSSAMPLE"
    if t == "discard":
        return "DISCARDSAMPLE"
    return "UNKNOWNSAMPLE"


def _flat(prefix: str, value: Any, out: list[tuple[str, Any]]) -> None:
    """Flatten nested dicts/lists into ``key value`` pairs (adapters_0_macs_0 ...)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}_{k}" if prefix else k, v, out)
    elif isinstance(value, list):
        if all(not isinstance(v, dict | list) for v in value):
            out.append((prefix, ",".join(str(v) for v in value)))
        else:
            for i, v in enumerate(value):
                _flat(f"{prefix}_{i}", v, out)
    else:
        out.append((prefix, value))


def _text(obj: dict[str, Any], src: str, w: IO[str]) -> None:
    ts = float(obj.get("timestamp", 0.0))
    stamp = _dt.datetime.fromtimestamp(ts, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")
    lines = ["startDatagram =================================",
             f"datagramSourceIP {src}", f"datagramSize {obj.get('length', 0)}",
             f"pcapTimestamp {stamp}", f"pcapTimestamp_uS {round(ts % 1 * 1e6) % 1000000}"]
    if "error" in obj:
        lines += [f"error {obj['error']}", f"message {obj['message']}", f"data {obj['data']}",
                  "endDatagram   ================================="]
        w.write("\n".join(lines) + "\n")
        return
    lines += ["datagramVersion 5", f"agentSubId {obj['sub_agent_id']}", f"agent {obj['agent']}",
              f"packetSequenceNo {obj['sequence_number']}", f"sysUpTime {obj['uptime']}",
              f"samplesInPacket {obj['num_samples']}"]
    for s in obj["samples"]:
        lines.append("startSample ----------------------")
        if "format" in s:
            lines.append(f"sampleType_tag {s['format']}")
        lines.append(f"sampleType {_sample_name(s)}")
        for key, label in (("sequence_number", "sampleSequenceNo"), ("source_id", "sourceId"),
                           ("sampling_rate", "meanSkipCount"), ("sample_pool", "samplePool"),
                           ("drops", "dropEvents"), ("input", "inputPort"),
                           ("output", "outputPort"), ("reason", "discardCode")):
            if key in s:
                lines.append(f"{label} {s[key]}")
        for key in ("input_format", "output_format"):
            if s.get(key):
                lines.append(f"{key} {s[key]}")
        tag = "counterBlock_tag" if s.get("type") == "counters" else "flowBlock_tag"
        for r in s.get("records", ()):
            lines.append(f"{tag} {r['format']}")
            if r.get("name") == "if_name" and "error" not in r:  # as sflowtool prints it
                lines.append(f"ifName {r['if_name']}")
                continue
            pairs: list[tuple[str, Any]] = []
            _flat("", {k: v for k, v in r.items() if k != "format"}, pairs)
            lines += [f"{k} {v}" for k, v in pairs]
        for key in ("error", "length", "padding", "data"):
            if key in s:
                lines.append(f"{key} {s[key]}")
        lines.append("endSample   ----------------------")
    if "trailing" in obj:
        lines.append(f"trailing {obj['trailing']}")
    if obj.get("errors"):
        lines.append(f"errors {','.join(obj['errors'])}")
    lines.append("endDatagram   =================================")
    w.write("\n".join(lines) + "\n")


SFLOW_V5 = b"\x00\x00\x00\x05"


def _datagrams(path: Path, port: int | None, skipped: dict[str, int] | None = None
               ) -> tuple[Iterator[tuple[float, str, bytes]], str]:
    """(datagram iterator, kind) for a capture, or for a small raw sFlow v5 file as one datagram.
    PcapError for anything else."""
    from fastflow.pcap import PcapError, iter_datagrams

    try:
        it = iter_datagrams(path, port=port, skipped=skipped)
        first = next(it)
    except StopIteration:
        return iter(()), "capture"
    except PcapError:
        size = path.stat().st_size
        if size > MAX_RAW_DATAGRAM:
            raise
        data = path.read_bytes()
        if not data.startswith(SFLOW_V5):
            raise
        return iter([(0.0, "-", data)]), "raw"

    def chain() -> Iterator[tuple[float, str, bytes]]:
        yield first
        yield from it
    return chain(), "capture"


def main(args: argparse.Namespace) -> int:
    """Print the capture; returns the exit status."""
    from fastflow._pydecode import DecodeError, parse
    from fastflow.decode import IMPLEMENTATION
    from fastflow.pcap import PcapError

    log.info("decoder implementation: %s", IMPLEMENTATION)
    path = Path(args.capture)
    problem = check_input_file(path)
    if problem:
        return fail("decode", problem, EXIT_USAGE)
    port = None if args.port == 0 else int(args.port)
    skipped: dict[str, int] = {}
    try:
        datagrams, kind = _datagrams(path, port, skipped)
    except PcapError as e:
        return fail("decode", f"{path}: not a pcap/pcapng capture, nor a raw sFlow v5 datagram "
                    f"({e})", EXIT_USAGE)
    except OSError as e:
        return fail("decode", f"{path}: {e.strerror or e}", EXIT_USAGE)
    if kind == "raw":
        print(f"fastflow decode: {path} is not a capture; decoding it as one raw sFlow datagram",
              file=sys.stderr)
    out = sys.stdout
    total = rejected = 0
    reasons: Counter[str] = Counter()
    status = EXIT_OK
    progress = Progress(f"decoding {path.name}", unit="datagrams")
    try:
        for ts, src, data in datagrams:
            total += 1
            progress.update(total)
            try:
                obj = parse(data, ts)
            except DecodeError as e:
                rejected += 1
                reasons[e.reason] += 1
                obj = {"error": e.reason, "message": e.message, "timestamp": ts,
                       "length": len(data), "source": src, "data": data.hex()}
            else:
                obj["source"] = src
                reasons.update(obj["errors"])
                for s in obj["samples"]:
                    if s.get("type") == "unknown":
                        reasons["unknown_sample"] += 1
                    for r in s.get("records", ()):
                        if r.get("name") == "unknown":
                            reasons["unknown_record"] += 1
            if args.format == "json":
                out.write(json.dumps(obj) + "\n")
            else:
                _text(obj, src, out)
    except PcapError as e:
        progress.close()
        print(f"fastflow decode: {path}: capture damaged after {total} datagrams: {e}",
              file=sys.stderr)
        status = EXIT_FAILURE
    progress.close()
    out.flush()
    if total == 0 and skipped.get("wrong_port"):
        print(f"fastflow decode: {path}: no datagrams to UDP port {args.port}, but "
              f"{skipped['wrong_port']} UDP datagrams to other ports: try --port 0 (any) or "
              "--port N", file=sys.stderr)
    damage = {k: v for k, v in skipped.items() if k in ("truncated", "corrupt")}
    if damage:
        what = ("cut short inside a record (an interrupted or partial copy?)"
                if "truncated" in damage else "an impossible record length: reading stopped there")
        print(f"fastflow decode: {path}: capture damaged after {total} datagrams: {what}",
              file=sys.stderr)
        status = EXIT_FAILURE
    if kind == "raw" and rejected:
        status = EXIT_FAILURE
    detail = ", ".join(f"{k}={v}" for k, v in sorted(reasons.items()))
    print(f"fastflow decode: {total} datagrams, {rejected} rejected"
          + (f"; reasons: {detail}" if detail else ""), file=sys.stderr)
    return status
