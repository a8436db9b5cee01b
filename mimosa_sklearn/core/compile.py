"""``jit`` for the core's programs, with XLA options that halve their CPU compile time.

XLA's CPU backend lowers every fused loop of a program through its MLIR "fusion
emitters" by default. Our EM iteration holds about 430 such fusions (L-BFGS, line
search, per-task Cholesky algebra), and compiling them through MLIR took 5.3 s of a
9.8 s cold fit of 1000 tasks. The older LLVM IR emitters
(``xla_cpu_use_fusion_emitters=False``) compile the same program in 2.7 s, and it runs
10-25% faster, with the same results (``tests/core/test_compile.py``).

The options are passed per program (``jax.jit(..., compiler_options=...)``), so the
user's own JAX code keeps XLA's defaults. They only concern the CPU backend and are
passed only when JAX runs on the CPU (on a GPU the programs compile with XLA's
defaults). A jaxlib that no longer knows one of them rejects it when compiling, and the
programs then fall back to XLA's defaults for the rest of the process.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import numpy as np

__all__ = ["jit", "to_device", "COMPILER_OPTIONS", "options_in_use"]

COMPILER_OPTIONS: dict[str, Any] = {"xla_cpu_use_fusion_emitters": False}
_state = {"tuned": True}


def options_in_use() -> bool:
    """Whether programs compile with :data:`COMPILER_OPTIONS` (False after a fallback
    and on other backends than the CPU)."""
    return _state["tuned"] and jax.default_backend() == "cpu"


def _unknown_option(err: Exception) -> bool:
    return "No such compile option" in str(err)


def jit(fn: Callable) -> Callable:
    """:func:`equinox.filter_jit` of ``fn`` compiled with :data:`COMPILER_OPTIONS`."""
    plain = eqx.filter_jit(fn)
    tuned = eqx.filter_jit(fn, compiler_options=COMPILER_OPTIONS)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if options_in_use():
            try:
                return tuned(*args, **kwargs)
            except jax.errors.JaxRuntimeError as err:
                if not _unknown_option(err):
                    raise
                _state["tuned"] = False
        return plain(*args, **kwargs)

    return call


def to_device(value, dtype=None) -> jax.Array:
    """A host value (numpy array or Python scalar) as a JAX array, compiling nothing.

    ``jnp.asarray`` of a numpy array compiles a small staging program for every new
    shape and dtype (20-50 ms each on CPU; a fit used to compile a dozen of them);
    ``jax.device_put`` only copies. Python scalars keep ``jnp.asarray``'s weak type, so
    both spellings hit the same compiled programs.
    """
    if dtype is None and isinstance(value, bool | int | float):
        return jax.device_put(value)
    return jax.device_put(np.asarray(value, dtype))
