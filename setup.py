"""Build script for the optional compiled kernel; the project's metadata is in pyproject.toml.

``guardrails.expand._spmm`` (sparse times dense products for propagation) is optional:
without a C compiler the build goes on without it and ``guardrails.expand`` uses scipy's
products instead (slower with several seed categories, same results).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "guardrails.expand._spmm",
            sources=["guardrails/expand/_spmm.c"],
            optional=True,
        )
    ]
)
