"""Build the Cython extensions of fastflow.

Every ``src/fastflow/**/_*.pyx`` is compiled to an extension module of the same dotted name
(``src/fastflow/collector/_ingest.pyx`` -> ``fastflow.collector._ingest``), with numpy's
headers on the include path. ``pip install .`` (or ``-e .``) runs this through pyproject.toml.
"""

from __future__ import annotations

import glob
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def extensions() -> list[Extension]:
    # FASTFLOW_BUILD_ONLY=_decode,_pcap builds just those modules (for quick in-place rebuilds).
    only = {m for m in os.environ.get("FASTFLOW_BUILD_ONLY", "").split(",") if m}
    exts = []
    pattern = os.path.join("src", "fastflow", "**", "_*.pyx")
    for pyx in sorted(glob.glob(pattern, recursive=True)):
        stem = os.path.splitext(os.path.basename(pyx))[0]
        if only and stem not in only:
            continue
        name = os.path.splitext(os.path.relpath(pyx, "src"))[0].replace(os.sep, ".")
        exts.append(
            Extension(
                name,
                [pyx],
                include_dirs=[numpy.get_include(), os.path.join("src", "fastflow")],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                extra_compile_args=["-O3"],
            )
        )
    return exts


setup(
    ext_modules=cythonize(
        extensions(),
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
        include_path=[os.path.join("src", "fastflow")],
    ),
)
