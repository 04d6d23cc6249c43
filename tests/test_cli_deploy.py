"""deploy/: the Grafana dashboard and the Prometheus alert rules use only series that a running
``fastflow run`` really exports (checked against a live service fed by ``fastflow simulate``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from _service_util import Proc

yaml = pytest.importorskip("yaml", reason="pyyaml (in the 'test' extra)")

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
# PromQL words that are not series names
_WORDS = {"sum", "avg", "count", "rate", "increase", "by", "without", "label_replace", "max",
          "min", "and", "or", "unless", "on", "ignoring", "humanize", "bool", "offset"}
_NAME = re.compile(r"(?<![\w\"$.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?=[{\[)]|\s*[<>=!/*+-]|\s*$)")


def series_in(expr: str) -> set[str]:
    """Series names in a PromQL expression (labels, strings and functions left out)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)          # drop string literals
    expr = re.sub(r"\{[^}]*\}", "{}", expr)                  # drop label matchers
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)
    names = {m.group(1) for m in _NAME.finditer(expr)}
    return {n for n in names if n not in _WORDS and not n.isdigit()}


def alert_exprs() -> list[str]:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert rules
    for r in rules:
        assert {"alert", "expr", "labels", "annotations"} <= set(r), r
        assert r["labels"]["severity"] in ("warning", "critical")
        assert "summary" in r["annotations"]
    return [str(r["expr"]) for r in rules]


def dashboard_exprs() -> list[str]:
    dash = json.loads((DEPLOY / "grafana" / "fastflow.json").read_text())
    assert dash["uid"] and dash["schemaVersion"] >= 30
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dash["templating"]["list"] if v.get("definition")]
    assert exprs
    return exprs


def test_parser_finds_series() -> None:
    assert series_in('sum by (reason) (rate(fastflow_decoder_rejected_total{kind="error"}[5m]))'
                     ' > 1') == {"fastflow_decoder_rejected_total"}
    assert series_in('avg(vir_cpu_utilization{host=~"$service\\\\..+"})') == \
        {"vir_cpu_utilization"}
    assert series_in("fastflow_agent_last_update / 1000") == {"fastflow_agent_last_update"}


def test_deploy_series_exist_in_a_live_service(tmp_path: Path) -> None:
    names: set[str] = set()
    for e in alert_exprs() + dashboard_exprs():
        names |= series_in(e.replace("label_values(sflow_vir_cpu_utilization, host)",
                                     "sflow_vir_cpu_utilization"))
    names.discard("up")      # Prometheus' own per-target series
    env = {"HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state")}
    p = Proc("--sflow-port", "0", "--http-port", "0", "--bind", "127.0.0.1", "--no-scaler",
             env=env)
    try:
        sflow, http = p.port("sFlow"), p.port("HTTP")
        r = subprocess.run([sys.executable, "-m", "fastflow", "simulate", "--to",
                            f"127.0.0.1:{sflow}", "--nodes", "2", "--duration", "1",
                            "--speed", "40"], capture_output=True, text=True, timeout=60,
                           env={**os.environ, **env})
        assert r.returncode == 0, r.stderr
        text = ""
        for path in ("/metrics", "/prometheus/metrics/ALL/ALL/txt"):   # the two scrape jobs
            with urllib.request.urlopen(f"http://127.0.0.1:{http}{path}", timeout=10) as resp:
                text += resp.read().decode()
    finally:
        assert p.stop() == 0
    exported = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    missing = sorted(names - exported)
    assert not missing, f"deploy/ uses series the service does not export: {missing}"
    # the labels the dashboard and the rules select on are there too
    assert re.search(r'^sflow_vir_cpu_utilization\{[^}]*host="apache\.', text, re.M)
    assert re.search(r'^fastflow_decoder_rejected_total\{reason="[^"]+",kind="error"\}', text,
                     re.M)
    assert re.search(r'^fastflow_agent_datagrams_lost_total\{agent="', text, re.M)
