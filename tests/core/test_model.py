"""The fitted model as one pytree (``mimosa_sklearn.core.model``).

Proven on a small hand-built model (hyperposterior from an E-step of random
hyperparameters): every leaf of :class:`Model` is a JAX array (the static settings of
the task batch are not leaves) and flattening round-trips; ``dataclasses.replace``
drops the training tasks and memberships and keeps every other field as the same
object; the compiled :func:`core.predict.predict_new_tasks` gives bit-identical results
with and without the training tasks, and without them two models fitted on different
numbers of tasks present the same structure, shapes and dtypes (so one compiled program
serves both).
"""

from __future__ import annotations

import dataclasses

import core_reference as ref
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mimosa_sklearn._kernels import SharingLayout
from mimosa_sklearn.core import em, runtime
from mimosa_sklearn.core import predict as pr
from mimosa_sklearn.core.compile import jit
from mimosa_sklearn.core.model import Model

GRID = np.linspace(0.0, 7.0, 8)[:, None]
e_step = jit(lambda *args: em.e_step(*args)[:2])


def _model(n_tasks: int, seed: int) -> Model:
    rng = np.random.default_rng(seed)
    tasks = ref.make_tasks(rng, n_tasks, 6, GRID, 3, 6)
    layout = SharingLayout.from_flags(1, 2, 1)
    params, _ = ref.random_params(np.random.default_rng(0), layout)  # same for every model
    tau = jnp.asarray(rng.dirichlet(np.ones(2), size=n_tasks))
    weights = jnp.asarray([0.4, 0.6])
    batch = ref.to_batch(tasks)
    post, _ = e_step(params, weights, tau, batch, 1e-6, False)
    jitter = jnp.asarray(1e-6, jnp.float64)
    return Model(params, post, batch.grid, batch.grid_mask, weights, jitter, batch, tau)


@pytest.fixture(scope="module")
def model() -> Model:
    with runtime.jax_scope():  # the autouse float64 scope is per test, this is per module
        return _model(4, seed=1)


def test_model_is_a_pytree_of_arrays(model):
    leaves, treedef = jax.tree.flatten(model)
    assert leaves and all(isinstance(leaf, jax.Array) for leaf in leaves)
    # The training tasks add their seven arrays and the memberships; their static
    # settings (shared_inputs, task_chunk) live in the structure, not in the leaves.
    parts = (model.params, model.post, model.grid, model.grid_mask, model.weights, model.jitter)
    assert len(leaves) == len(jax.tree.leaves(parts)) + 7 + 1
    assert any(leaf is model.tau for leaf in leaves)
    assert eqx.tree_equal(jax.tree.unflatten(treedef, leaves), model)
    floats = [leaf for leaf in leaves if leaf.dtype.kind == "f"]
    assert floats and all(leaf.dtype == np.float64 for leaf in floats)


def test_replace_drops_tasks_and_keeps_params(model):
    light = dataclasses.replace(model, tasks=None, tau=None)
    assert light.tasks is None and light.tau is None
    for field in ("params", "post", "grid", "grid_mask", "weights", "jitter"):
        assert getattr(light, field) is getattr(model, field), field
    assert model.tasks is not None and model.tau is not None  # the original is untouched
    assert len(jax.tree.leaves(light)) == len(jax.tree.leaves(model)) - 8


def _signature(tree):
    return jax.tree.structure(tree), [(leaf.shape, leaf.dtype) for leaf in jax.tree.leaves(tree)]


def test_new_task_program_does_not_depend_on_training_tasks(model):
    rng = np.random.default_rng(3)
    p = 2
    tasks = ref.make_tasks(rng, p, 6, GRID, 2, 5)
    x_pred = jnp.asarray(rng.uniform(-1.0, 8.0, size=(p, 5, 1)))
    real = jnp.ones(model.params.log_noise.shape[0], bool)
    task_params = pr.typical_task_params(model.params, real, p)
    # Every row its own input (the programs take inputs as indices into ``u``).
    u = jnp.concatenate([jnp.asarray(tasks.x).reshape(-1, 1), x_pred.reshape(-1, 1)])
    obs_index = jnp.arange(tasks.x[..., 0].size).reshape(tasks.x.shape[:2])
    pred_index = obs_index.size + jnp.arange(x_pred[..., 0].size).reshape(x_pred.shape[:2])
    y_mask = map(jnp.asarray, (tasks.y, tasks.mask))
    args = (u, False, task_params, obs_index, *y_mask, pred_index, True)
    light = dataclasses.replace(model, tasks=None, tau=None)
    extension = pr.extension_of(light)
    with_tasks = pr.predict_new_tasks(model, extension, *args)
    without = pr.predict_new_tasks(light, extension, *args)
    for a, b in zip(with_tasks, without, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    mean, cov, tau = without
    assert mean.shape == (p, 1, 5) and cov.shape == (p, 1, 5, 5) and tau.shape == (p, 2)
    assert np.isfinite(np.asarray(mean)).all()
    np.testing.assert_allclose(np.asarray(tau).sum(1), 1.0, atol=1e-12)
    # Another fit with twice the tasks: different with its tasks, the same without.
    other = _model(8, seed=2)
    assert _signature(other) != _signature(model)
    assert _signature(dataclasses.replace(other, tasks=None, tau=None)) == _signature(light)
