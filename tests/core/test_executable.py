"""Compiled programs as bytes: loaded back bit for bit, refused when loading is unsafe."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mimosa_sklearn.core import compile as core_compile
from mimosa_sklearn.core import executable, program_key


def _factor(x):
    return jnp.linalg.cholesky(x @ x.T + jnp.eye(x.shape[0])), jnp.sum(x)


def test_a_loaded_program_gives_the_same_results():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 4)))
    lowered = jax.jit(lambda xs: _factor(*xs)).lower((x,))
    compiled = lowered.compile()
    loaded = executable.load(executable.dump(compiled, lowered), (x,))
    for a, b in zip(compiled((x,)), loaded((x,)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_only_lapack_custom_calls_are_written():
    # LAPACK kernels are set up before loading; a callback (or anything else that only
    # lowering prepares) keeps its program off the disk.
    x = jnp.ones((3, 3))
    lowered = jax.jit(_factor).lower(x)
    assert any(n.startswith("lapack_") for n in executable.custom_calls(lowered))
    assert executable.dump(lowered.compile(), lowered)

    def with_callback(x):
        return jax.pure_callback(np.sin, jax.ShapeDtypeStruct(x.shape, x.dtype), x)

    lowered = jax.jit(with_callback).lower(x)
    assert executable.custom_calls(lowered)
    with pytest.raises(program_key.Uncacheable, match="custom calls"):
        executable.dump(lowered.compile(), lowered)


def test_static_outputs_must_come_back_equal():
    # An object compared by identity would be a copy after loading (the wrapper of
    # static outputs is a class of the package, so pickling names it).
    def tagged(tag):
        return jax.jit(lambda x: (2 * x, core_compile._Static(tag))).lower(jnp.ones(2))

    lowered = tagged(object())
    with pytest.raises(program_key.Uncacheable, match="output structure"):
        executable.dump(lowered.compile(), lowered)
    lowered = tagged("a label")
    assert executable.dump(lowered.compile(), lowered)
