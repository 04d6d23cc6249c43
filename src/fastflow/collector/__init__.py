"""The collector: ingest, pipeline, store, metrics, agent statistics, flows."""

from __future__ import annotations

import importlib
import logging
import os

log = logging.getLogger(__name__)


def compiled_or_twin(compiled: tuple[str, str], twin: tuple[str, str],
                     pure_python: bool | None = None) -> type:
    """A collector kernel class: ``compiled`` (module, class) unless ``pure_python`` (default:
    ``FASTFLOW_PURE_PYTHON=1``) or the extension is not built, else its pure-Python ``twin``."""
    if pure_python is None:
        pure_python = os.environ.get("FASTFLOW_PURE_PYTHON") == "1"
    if not pure_python:
        try:
            cls: type = getattr(importlib.import_module(compiled[0]), compiled[1])
            return cls
        except ImportError:  # pragma: no cover - depends on the build
            log.info("%s not built; using the pure-Python twin %s", compiled[0], twin[0])
    twin_cls: type = getattr(importlib.import_module(twin[0]), twin[1])
    return twin_cls
