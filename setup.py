"""Build script for the optional compiled kernel; the project's metadata is in pyproject.toml.

``guardrails.expand._spmm`` (sparse times dense products for propagation) is optional:
without a C compiler the build goes on without it and ``guardrails.expand`` uses scipy's
products instead (slower with several seed categories, same results).
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
        )
    ]
)
