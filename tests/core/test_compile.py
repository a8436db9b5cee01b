"""The core's compile options: in use on this jaxlib, same results, safe fallback."""

from __future__ import annotations

import core_reference as ref
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mimosa_sklearn._kernels import SharingLayout
from mimosa_sklearn.core import compile as core_compile
from mimosa_sklearn.core import em


def _run(tasks, params, tau0):
    return em.run_em(
        params, jnp.asarray(tau0), ref.to_batch(tasks), max_iter=4, tol=0.0, max_steps=20
    )


@pytest.mark.skipif(
    jax.default_backend() != "cpu", reason="the options concern the CPU backend only"
)
def test_em_with_the_compile_options_equals_xla_defaults(monkeypatch):
    rng = np.random.default_rng(11)
    t = 6
    offsets = np.where(np.arange(t) % 2 == 0, -2.0, 2.0)
    grid = np.linspace(0.0, 9.0, 12)[:, None]
    tasks = ref.make_tasks(rng, t, 7, grid, 3, 7, n_outputs=1, hole_prob=0.2, offsets=offsets)
    params, _ = ref.random_params(rng, SharingLayout.from_flags(t, 2, 1))
    tau0 = np.where((np.arange(t) % 2 == 0)[:, None], [0.8, 0.2], [0.2, 0.8])
    tuned = _run(tasks, params, tau0)
    # Compiled with the options: a jaxlib that rejected them would have switched off.
    assert core_compile.options_in_use()
    monkeypatch.setitem(core_compile._state, "tuned", False)
    plain = _run(tasks, params, tau0)
    np.testing.assert_allclose(tuned.elbo_history, plain.elbo_history, rtol=1e-11)
    np.testing.assert_allclose(tuned.tau, plain.tau, rtol=1e-9, atol=1e-12)
    for a, b in zip(jax.tree.leaves(tuned.params), jax.tree.leaves(plain.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9)


def test_an_option_the_jaxlib_does_not_know_falls_back_to_xla_defaults(monkeypatch):
    monkeypatch.setitem(core_compile._state, "tuned", True)
    monkeypatch.setattr(core_compile, "COMPILER_OPTIONS", {"xla_cpu_no_such_option": True})
    double = core_compile.jit(lambda x: 2 * x + 1)
    np.testing.assert_array_equal(np.asarray(double(jnp.arange(3.0))), [1.0, 3.0, 5.0])
    assert not core_compile.options_in_use()
    # Other compile errors are not swallowed.
    monkeypatch.setitem(core_compile._state, "tuned", True)
    with pytest.raises(TypeError):
        core_compile.jit(lambda x: x @ x)(jnp.ones((2, 3)))


def test_host_values_reach_the_device_without_compiling(caplog):
    # jnp.asarray compiles a staging program per new shape; a fit used to compile a
    # dozen of them before its EM iteration.
    from padded_tasks import from_nan

    from mimosa_sklearn._batching import make_batch

    rng = np.random.default_rng(3)
    x = rng.uniform(size=(5, 7, 1))
    x[0, 5:] = np.nan
    y = np.where(np.isnan(x), np.nan, np.sin(x))
    grid = np.unique(x[~np.isnan(x)])[:, None]
    mappings = np.searchsorted(grid[:, 0], np.nan_to_num(x[..., 0]))
    tasks = from_nan(x, y, mappings)
    with jax.log_compiles(True), caplog.at_level("WARNING", logger="jax"):
        batch = make_batch(tasks, grid)
        scalar, flag = core_compile.to_device(1e-6), core_compile.to_device(True)
    assert not [r for r in caplog.records if "Compiling" in r.getMessage()]
    assert batch.x.dtype == jnp.float64 and batch.mappings.dtype == jnp.int32
    assert batch.mask.dtype == jnp.bool_
    # Python scalars keep jnp.asarray's weak type, so both hit the same compiled code.
    assert scalar.weak_type == jnp.asarray(1e-6).weak_type and scalar.dtype == jnp.float64
    assert flag.dtype == jnp.bool_ and flag.weak_type == jnp.asarray(True).weak_type


def test_the_options_are_only_passed_on_the_cpu_backend(monkeypatch):
    monkeypatch.setitem(core_compile._state, "tuned", True)
    monkeypatch.setattr(core_compile, "COMPILER_OPTIONS", {"xla_cpu_no_such_option": True})
    monkeypatch.setattr(core_compile.jax, "default_backend", lambda: "gpu")
    assert not core_compile.options_in_use()
    triple = core_compile.jit(lambda x: 3 * x)
    np.testing.assert_array_equal(np.asarray(triple(jnp.arange(3.0))), [0.0, 3.0, 6.0])
    # The bad option never reached the compiler, so nothing fell back.
    assert core_compile._state["tuned"]
