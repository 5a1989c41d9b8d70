"""Helpers for the input pipeline tests."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np


def assert_iterates_without_tensorflow(make_iterator: str, batches: int) -> None:
    """Run ``make_iterator`` (Python code that binds ``iterator``) in a fresh interpreter: iterating it must
    give ``batches`` batches without importing TensorFlow."""
    code = "\n".join(
        [
            "import sys",
            textwrap.dedent(make_iterator),
            "batches = list(iterator)",
            f"assert len(batches) == {batches}, len(batches)",
            'loaded = sorted(m for m in sys.modules if m.startswith("tensorflow"))',
            'assert "tensorflow" not in sys.modules, loaded',
            'print("ok")',
        ]
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def assert_batches_equal(a, b) -> None:
    """Two lists of batches (dicts of arrays) hold the same keys and values, batch by batch."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)
