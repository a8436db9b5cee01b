"""Set-up shared by the numerical-core tests.

The JAX CPU backend must be created by :mod:`mimosa_sklearn.core.runtime` before any JAX
computation (jaxlib 0.10 thread-pool deadlock), and every core function needs float64:
each test runs inside ``runtime.jax_scope()``.
"""

from __future__ import annotations

from mimosa_sklearn.core import runtime

runtime.ensure_safe_cpu_backend()

import os  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

# Make the numpy reference implementations (core_reference.py) importable from the tests
# whatever pytest's import mode is.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _float64():
    """Run every core test in float64."""
    with runtime.jax_scope():
        yield
