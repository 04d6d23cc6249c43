"""Shared fixtures: the sFlow corpus in ../shared/data and the two decoder implementations."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent


def corpus_dir() -> Path | None:
    """``$FASTFLOW_CORPUS`` or ``../shared/data`` beside the checkout; None when absent."""
    env = os.environ.get("FASTFLOW_CORPUS")
    candidates = [Path(env)] if env else []
    candidates += [_HERE.parent.parent / "shared" / "data", _HERE.parent / ".." / "shared" / "data"]
    for c in candidates:
        if (c / "hsflowd" / "docker-swarm.pcap").exists():
            return c.resolve()
    return None


@pytest.fixture(scope="session")
def corpus() -> Path:
    d = corpus_dir()
    if d is None:
        pytest.skip("sFlow corpus not found: set FASTFLOW_CORPUS or place shared/data beside the "
                    "checkout (CI has it)")
    return d


@pytest.fixture(scope="session")
def swarm_pcap(corpus: Path) -> Path:
    return corpus / "hsflowd" / "docker-swarm.pcap"


def _impls() -> list[str]:
    return ["cython", "python"]


@pytest.fixture(params=_impls())
def decoder_cls(request: pytest.FixtureRequest) -> type:
    """Each table-decoder implementation in turn: the Cython one and the pure-Python reference."""
    if request.param == "cython":
        if os.environ.get("FASTFLOW_PURE_PYTHON") == "1":
            pytest.skip("FASTFLOW_PURE_PYTHON=1: Cython decoder disabled")
        from fastflow._decode import Decoder  # must import: a missing build is a failure
        return Decoder
    from fastflow._pydecode import Decoder as PyDecoder
    return PyDecoder


# The scaler's default state file lives under $XDG_STATE_HOME (docs/scaler.md): every test run
# (and every `fastflow run` subprocess it starts) gets a private one, never the user's home.
if "FASTFLOW_TEST_STATE_HOME" not in os.environ:
    import tempfile

    os.environ["FASTFLOW_TEST_STATE_HOME"] = os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(
        prefix="fastflow-test-state-")
