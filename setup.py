"""Build script for the optional compiled kernel; the project's metadata is in pyproject.toml.

``guardrails.expand._spmm`` (sparse times dense products for propagation) and
``guardrails.core._tile`` (the guarded kernel's selection step over a scored tile) are
optional: without a C compiler the build goes on without them, ``guardrails.expand`` uses
scipy's products and the kernel selects in numpy instead (slower, same results).
"""

import sys

from setuptools import Extension, setup

# No contraction of a * b + c into FMA (GCC's default on aarch64, for example): the
# compiled products keep scipy's float32 rounding on every platform.
FLAGS = [] if sys.platform == "win32" else ["-ffp-contract=off"]

setup(
    ext_modules=[
        Extension(
            "guardrails.expand._spmm",
            sources=["guardrails/expand/_spmm.c"],
            extra_compile_args=FLAGS,
            optional=True,
        ),
        # The kernel's fused-path selection step; without it the kernel selects in numpy
        # (same results).
        Extension(
            "guardrails.core._tile",
            sources=["guardrails/core/_tile.c"],
            extra_compile_args=FLAGS,
            optional=True,
        ),
    ]
)
