"""The package layout is the architecture: data flows one way and no module imports downstream.

Layers (README "Architecture", docs/internals.md): the wire format at the package's top
(``decode``, ``_decode``, ``_pydecode``, ``_schema``, ``pcap``, ``_pcap``, ``encode``) ->
``collector`` -> ``scaler``; ``web`` and ``cli`` are the doors; ``sources`` stand beside the
pipeline. This test walks every import statement of every module (function-level imports included,
Cython's ``.pyx`` too) and fails on one that reaches a layer its module may not use.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "fastflow"

WIRE = "wire"
# layer -> the layers its modules may import (their own included)
ALLOWED: dict[str, set[str]] = {
    WIRE: {WIRE},
    "collector": {WIRE, "collector"},
    "scaler": {WIRE, "collector", "scaler"},
    # the script host runs sFlow-RT JavaScript over the collector's engines (scaler.swarm allowed)
    "scripts": {WIRE, "collector", "scaler", "scripts"},
    "web": {WIRE, "collector", "scaler", "scripts", "web"},
    # traffic sources stand beside the pipeline: they speak the wire format and drive the swarm
    # client (simulate --docker), but know nothing of the doors
    "sources": {WIRE, "collector", "scaler", "sources"},
    "cli": {WIRE, "collector", "scaler", "scripts", "web", "sources", "cli"},
}
# composed entry points that assemble the whole service on purpose
DOORS = {"fastflow.__main__": "cli", "fastflow.sources.demo": "cli"}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in ALLOWED and parts[1] != WIRE:
        return parts[1]
    return WIRE


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, absolute module) for every fastflow import in ``path``."""
    pkg = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out: list[tuple[int, str]] = []
    if path.suffix == ".pyx":
        for i, line in enumerate(path.read_text().splitlines(), 1):
            m = re.match(r"\s*(?:from|cimport|import)\s+(fastflow[\w.]*)", line)
            if m:
                out.append((i, m.group(1)))
        return out
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("fastflow")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("fastflow"):
                continue
            if target == "fastflow":   # from fastflow import x, y: x and y are modules (or names)
                out += [(node.lineno, f"fastflow.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, target))
    return out


def all_modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*") if p.suffix in (".py", ".pyx"))


def test_every_folder_is_a_known_layer() -> None:
    folders = {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders <= set(ALLOWED) - {WIRE}, folders - set(ALLOWED)


@pytest.mark.parametrize("path", all_modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_no_upstream_import(path: Path) -> None:
    module = module_name(path)
    own = DOORS.get(module, layer_of(module))
    bad = [f"line {line}: {target} ({layer_of(target)})"
           for line, target in imports_of(path, module)
           if layer_of(target) not in ALLOWED[own]]
    assert not bad, f"{module} ({own}) imports downstream: " + "; ".join(bad)


def test_the_walker_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    """The check itself: a nested relative import of a downstream layer is found."""
    src = PKG / "collector" / "store.py"
    found = imports_of(src, "fastflow.collector.store")
    assert any(t.startswith("fastflow.collector.pipeline") for _, t in found)
    fake = tmp_path / "x.py"
    fake.write_text("def f():\n    from ..web import http\n")
    assert imports_of(fake, "fastflow.collector.x") == [(2, "fastflow.web")]
