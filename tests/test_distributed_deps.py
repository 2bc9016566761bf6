"""Without the dask extra: importable, and a clear error naming the extra when used."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_importing_guardrails_does_not_import_dask():
    proc = _run(
        """
        import sys
        import guardrails
        import guardrails.distributed
        heavy = [m for m in ("dask", "distributed", "pandas", "pyarrow") if m in sys.modules]
        print(heavy)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_missing_dask_names_the_extra():
    proc = _run(
        """
        import sys
        for name in ("dask", "distributed"):
            sys.modules[name] = None  # as if not installed
        import numpy as np
        import guardrails as gr
        from guardrails.distributed import personalized_pagerank, recommend_all
        from guardrails.exceptions import MissingDependencyError
        guard = gr.Guard(gr.FactorModel(np.ones((3, 2)), np.ones((4, 2))))
        for call in (lambda: recommend_all(guard, [0, 1], None),
                     lambda: personalized_pagerank(None, None)):
            try:
                call()
            except MissingDependencyError as exc:
                assert isinstance(exc, ImportError)
                print(exc)
            else:
                raise SystemExit("no error")
        """
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        assert "pip install 'recsys-guardrails[dask]'" in line and "'dask'" in line
    assert "recommend_all" in lines[0] and "personalized_pagerank" in lines[1]
