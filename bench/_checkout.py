"""Which fastflow the benchmarks measure.

This checkout's ``src/`` when its Cython extensions are built there (an editable install, or
``python setup.py build_ext --inplace``), otherwise the installed package: after the README's
``pip install '.[test]'`` the compiled modules live only in the installed copy, and a ``src/``
put first on the path would hide them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def built_in_place() -> bool:
    """True when ``src/fastflow`` holds a compiled decoder."""
    return any((SRC / "fastflow").glob("_decode*.so"))


def use_checkout() -> None:
    """Put ``src/`` first on ``sys.path`` when it is built in place (else: the installed package)."""
    if built_in_place() and str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process that must import the same fastflow as this one."""
    env = dict(os.environ, **(extra or {}))
    if built_in_place():
        env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"]
                                        if env.get("PYTHONPATH") else "")
    return env
