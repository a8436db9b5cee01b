"""Keys of cached programs: every component counts, nothing unnamed gets a key."""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import kernax
import numpy as np
import pytest

from mimosa_sklearn.core import program_key

NAME = "mimosa_sklearn.core.em:em_iteration"
OPTIONS = {"xla_cpu_use_fusion_emitters": False}


def _kernel():
    return kernax.VarianceKernel(1.0) * kernax.SEKernel(0.5)


def _static(kernel, steps=50, tol=1e-3):
    leaves, treedef = jax.tree.flatten(((kernel, steps, tol), {}))
    return treedef, tuple(None if eqx.is_array(x) else x for x in leaves)


def _key(static=None, dynamic=None, name=NAME, options=OPTIONS):
    static = _static(_kernel()) if static is None else static
    dynamic = (jnp.ones((3, 4)), jnp.asarray(2.0)) if dynamic is None else dynamic
    return program_key.program_key(name, options, static, dynamic)


def test_equal_arguments_give_equal_keys():
    # Distinct but equal kernels (their jitted distance function is named by kernax).
    assert _key(_static(_kernel())) == _key(_static(_kernel()))


# Made in the test, under float64 (arrays made at import would be float32).
_CHANGES = {
    "name": lambda: {"name": "mimosa_sklearn.core.em:other"},
    "options": lambda: {"options": {}},
    "int": lambda: {"static": _static(_kernel(), steps=51)},
    "float": lambda: {"static": _static(_kernel(), tol=np.nextafter(1e-3, 1.0))},
    "kernel": lambda: {"static": _static(kernax.SEKernel(0.5))},
    "kernel part": lambda: {
        "static": _static(kernax.VarianceKernel(1.0) * kernax.Matern32Kernel(0.5))
    },
    "shape": lambda: {"dynamic": (jnp.ones((3, 5)), jnp.asarray(2.0))},
    "dtype": lambda: {"dynamic": (jnp.ones((3, 4), jnp.int32), jnp.asarray(2.0))},
    "weak type": lambda: {"dynamic": (jnp.ones((3, 4)), jnp.asarray(2.0, jnp.float64))},
}


@pytest.mark.parametrize("change", _CHANGES)
def test_every_component_changes_the_key(change):
    assert _key(**_CHANGES[change]()) != _key()


def test_jax_settings_change_the_key():
    base = _key()
    with jax.numpy_rank_promotion("raise"):
        assert _key() != base
    with jax.enable_x64(False):
        assert _key() != base
    assert _key() == base


def test_logging_settings_keep_the_key():
    # Debugging with jax_log_compiles must still hit the cache: logging cannot change
    # a program. Every unkeyed name is a real setting (a rename would key it again).
    base = _key()
    with jax.log_compiles(True), jax.explain_cache_misses(True):
        assert _key() == base
    assert program_key.UNKEYED_SETTINGS <= set(jax.config.values)


def test_the_environment_changes_the_key(monkeypatch):
    base = _key()
    monkeypatch.setitem(program_key._VERSIONED, "jax", "0.0.0")
    program_key.environment.cache_clear()
    try:
        assert _key() != base
    finally:
        monkeypatch.undo()
        program_key.environment.cache_clear()
    assert _key() == base


def test_the_environment_pins_source_cpu_and_backend():
    env = program_key.loads(program_key.environment())
    assert set(env["sources"]) == {"mimosa_sklearn", "kernax"}
    assert all(len(h) == 64 for h in env["sources"].values())
    assert env["backend"][0] == jax.default_backend()
    assert env["host"][1]  # the machine's architecture
    assert env["host"][3]  # CPU flags or the machine's name


def _user_distance(x, y):
    return jnp.sum((x - y) ** 2)


class _UserKernel(kernax.SEKernel):
    pass


@pytest.mark.parametrize(
    "static",
    [
        _static(kernax.SEKernel(0.5, distance_function=lambda x, y: jnp.sum((x - y) ** 2))),
        _static(kernax.SEKernel(0.5, distance_function=_user_distance)),
        _static(_UserKernel(0.5)),
        _static(functools.partial(_user_distance, 1.0)),
    ],
    ids=["lambda", "user function", "user class", "partial of a user function"],
)
def test_what_cannot_be_pinned_gets_no_key(static):
    with pytest.raises(program_key.Uncacheable):
        _key(static)


def test_an_argument_on_several_devices_gets_no_key(monkeypatch):
    monkeypatch.setattr(program_key.jax, "devices", lambda: [object(), object()])
    with pytest.raises(program_key.Uncacheable):
        _key()


def test_pytree_structures_come_back_equal_and_usable():
    # equinox marks absent wrapper fields with a sentinel compared by identity: a copy
    # of it made unflattening fail (and crash the process in compiled code).
    kernel = _kernel()
    leaves, treedef = jax.tree.flatten(kernel)
    back = program_key.loads(program_key.dumps(treedef))
    assert back == treedef
    rebuilt = jax.tree.unflatten(back, leaves)
    x, y = jnp.ones((2, 1)), jnp.zeros((3, 1))
    np.testing.assert_array_equal(rebuilt(x, y), kernel(x, y))
