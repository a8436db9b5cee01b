"""The numpy facade of a fitted model (``mimosa_sklearn._fitted``).

One tiny model (five tasks, two clusters, two EM iterations) fitted by
:func:`mimosa_sklearn._fit.fit_magma` serves every test. Proven: :meth:`Context.task`
then :meth:`Context.stack` gives back a context's arrays (NaN padding aside), on a
hand-made context with per-task hyperparameters and on one from ``condition``, whose
predictions are the same either way; :meth:`FittedMagma.predict_tasks` routes every
row to the right predictor (training task, conditioned new task, task never seen) and
equals those predictors called separately, tasks never seen getting the mixture
weights; the hyperposterior read back at its own grid points; a round trip through the
persistence codec and pickle with JAX's global x64 off keeps a float64 model and
bit-identical predictions; many new tasks, grouped by their distinct inputs (several
groups, shared and not, or one), predict as the per-task formulas of the core do, and
task-specific hyperparameters of new tasks do not depend on the grouping. Only the
per-task reference enters ``jax_scope`` itself: the facade must work from plain numpy.
"""

from __future__ import annotations

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from padded_tasks import from_nan

from mimosa_sklearn import _fit, _fitted
from mimosa_sklearn._distinct import group_by_inputs
from mimosa_sklearn._fitted import Context, FittedMagma
from mimosa_sklearn._padded import take
from mimosa_sklearn._spec import decode, encode
from mimosa_sklearn.core import predict as pr
from mimosa_sklearn.core import runtime
from mimosa_sklearn.core.compile import jit

GRID = np.linspace(0.0, 5.0, 8)[:, None]


def _tasks(n_tasks: int, width: int, seed: int):
    """Tasks on ``GRID`` (3 to ``width`` rows, real rows first), two groups by offset."""
    rng = np.random.default_rng(seed)
    x = np.full((n_tasks, width, 1), np.nan)
    maps = np.zeros((n_tasks, width), dtype=np.int64)
    for i in range(n_tasks):
        k = int(rng.integers(3, width + 1))
        idx = np.sort(rng.choice(GRID.shape[0], k, replace=False))
        x[i, :k], maps[i, :k] = GRID[idx], idx
    offset = np.where(np.arange(n_tasks) % 2, 2.0, -2.0)[:, None, None]
    y = np.sin(x) + offset + 0.1 * rng.normal(size=x.shape)
    return x, y, maps


@pytest.fixture(scope="module")
def fitted() -> FittedMagma:
    x, y, maps = _tasks(5, 6, seed=0)
    config = _fit.FitConfig(n_clusters=2, max_iter=2, max_steps=5)
    return _fit.fit_magma(from_nan(x, y, maps), GRID, config)


@pytest.fixture(scope="module")
def new_tasks():
    """Three new tasks of 4, 2 and 3 rows in a width of 6, one output value missing."""
    x = np.full((3, 6, 1), np.nan)
    for i, rows in enumerate([[0.0, 1.5, 3.0, 4.5], [0.5, 2.0], [1.0, 2.5, 4.0]]):
        x[i, : len(rows), 0] = rows
    y = np.sin(x) + np.array([-2.0, 2.0, -1.0])[:, None, None]
    y[0, 1, 0] = np.nan
    return from_nan(x, y)


@pytest.fixture(scope="module")
def context(fitted, new_tasks) -> Context:
    return fitted.condition(new_tasks)


# ---------------------------------------------------------------------- Context


def test_context_task_and_stack_round_trip_by_hand():
    rng = np.random.default_rng(1)
    lengths = [5, 2, 3]
    x = np.full((3, 6, 2), np.nan)
    y = np.full((3, 6, 2), np.nan)
    for i, n in enumerate(lengths):
        x[i, :n] = rng.normal(size=(n, 2))
        y[i, :n] = rng.normal(size=(n, 2))
    y[1, 0, 1] = np.nan  # a missing output on a real row stays
    tasks = from_nan(x, y)
    tau = rng.dirichlet(np.ones(2), size=3)
    params = (rng.normal(size=(3, 1, 2)), rng.normal(size=(3,)), "static")
    ctx = Context(tasks=tasks, tau=tau, task_params=params)

    fields = ("x", "rows", "y", "observed")
    singles = [ctx.task(i) for i in range(3)]
    for i, single in enumerate(singles):
        assert (single.tasks.n_tasks, single.tasks.n_slots) == (1, 1)
        for name in fields:
            np.testing.assert_array_equal(getattr(single.tasks, name)[0], getattr(tasks, name)[i])
        np.testing.assert_array_equal(single.tau, tau[i : i + 1])
        np.testing.assert_array_equal(single.task_params[0], params[0][i : i + 1])
        np.testing.assert_array_equal(single.task_params[1], params[1][i : i + 1])
        assert single.task_params[2] == "static"

    back = Context.stack(singles)
    assert back.tasks.n_tasks == 3
    for name in fields:
        np.testing.assert_array_equal(getattr(back.tasks, name)[:3], getattr(tasks, name)[:3])
    assert not back.tasks.rows[3:].any()  # 3 tasks in 4 slots
    np.testing.assert_array_equal(back.tau, tau)
    for got, want in zip(back.task_params[:2], params[:2], strict=True):
        np.testing.assert_array_equal(got, want)
    assert back.task_params[2] == "static"
    # Any subset, in any order.
    two = Context.stack([singles[2], singles[0]])
    np.testing.assert_array_equal(two.tasks.x, tasks.x[[2, 0]])
    np.testing.assert_array_equal(two.task_params[1], params[1][[2, 0]])


def test_context_round_trip_of_conditioned_tasks(fitted, new_tasks, context):
    assert not context.tasks.rows[:, 4:].any()  # no task is longer than 4 rows
    singles = [context.task(i) for i in range(3)]
    back = Context.stack(singles)
    for name in ("x", "rows", "y", "observed"):
        np.testing.assert_array_equal(getattr(back.tasks, name), getattr(context.tasks, name))
    np.testing.assert_array_equal(back.tau, context.tau)
    leaves = jax.tree.leaves(context.task_params)
    assert leaves and all(np.shape(leaf)[0] == 3 for leaf in leaves)
    for got, want in zip(jax.tree.leaves(back.task_params), leaves, strict=True):
        np.testing.assert_array_equal(got, want)
    x_pred = from_nan(np.repeat(GRID[None, ::2], 3, axis=0))
    whole = fitted.predict_new_tasks(context, x_pred)
    parts = fitted.predict_new_tasks(singles, x_pred)
    for a, b in zip(whole, parts, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------- predict_tasks


@pytest.mark.parametrize("full_cov", [False, True])
def test_predict_tasks_routes_every_row(fitted, context, full_cov):
    # Rows: training task 3, new task 1, a task never seen, training task 0, new task 0,
    # and training task 1 given a context too (a training row wins: the context is ignored).
    rng = np.random.default_rng(2)
    x_nan = rng.uniform(0.0, 5.0, size=(6, 3, 1))
    x_nan[2, 2] = np.nan  # a task with one row fewer
    x_pred = from_nan(x_nan)
    train_rows = np.array([3, -1, -1, 0, -1, 1])
    ctx = [context.task(i) for i in range(3)]
    contexts = [None, ctx[1], None, None, ctx[0], ctx[2]]
    kw = {"full_cov": full_cov}
    mean, second, tau = fitted.predict_tasks(x_pred, train_rows, contexts, **kw)

    train = fitted.predict_training_tasks(np.array([3, 0, 1]), from_nan(x_nan[[0, 3, 5]]), **kw)
    new = fitted.predict_new_tasks([ctx[1], ctx[0]], from_nan(x_nan[[1, 4]]), **kw)
    unseen = fitted.predict_new_tasks(None, from_nan(x_nan[[2]]), **kw)
    for rows, want in (([0, 3, 5], train), ([1, 4], new), ([2], unseen)):
        for got, ref in zip((mean, second, tau), want, strict=True):
            np.testing.assert_array_equal(got[rows], ref)
    np.testing.assert_array_equal(tau[[0, 3, 5]], fitted.tau[[3, 0, 1]])
    np.testing.assert_allclose(tau[2], fitted.weights, rtol=1e-12)  # no data: the mixture
    np.testing.assert_array_equal(tau[[1, 4]], context.tau[[1, 0]])
    assert mean.shape == (6, 8, 1) and not mean[2, 2:].any()  # empty row slots are zero
    # The rows really differ: a routing mistake cannot go unseen.
    assert np.abs(mean[1, :3] - mean[4, :3]).min() > 1e-3
    assert np.abs(mean[0, :3] - mean[3, :3]).min() > 1e-3


# ---------------------------------------------------------------------- inspection


def test_mean_processes_at_the_grid_are_the_hyperposterior(fitted):
    mean, var = fitted.mean_processes(GRID)
    post_mean = np.asarray(fitted.post.mean)[..., : fitted.n_grid]
    post_var = np.diagonal(np.asarray(fitted.post.cov), axis1=-2, axis2=-1)[..., : fitted.n_grid]
    assert mean.shape == var.shape == (2, 1, 8)
    # Equal up to the jitter of the factorisations (the clusters sit ~4 apart).
    np.testing.assert_allclose(mean, post_mean, atol=1e-4)
    np.testing.assert_allclose(var, post_var, atol=1e-4)
    np.testing.assert_array_equal(fitted.grid, GRID)
    assert fitted.vbic() == fitted.elbo - 0.5 * fitted.n_parameters() * np.log(5)


# ---------------------------------------------------------------------- persistence


def test_pickle_round_trip_with_x64_off(fitted, context):
    x_pred = from_nan(np.repeat(GRID[None, 1::3], 3, axis=0))
    before = (
        fitted.predict_training_tasks(np.arange(3), x_pred),
        fitted.predict_new_tasks(context, x_pred),
        fitted.predict_new_tasks(None, x_pred),
    )
    with jax.enable_x64(False):
        assert not jax.config.jax_enable_x64
        # The facade has no pickling hooks of its own: the estimator's state goes
        # through the codec (mimosa_sklearn._spec), and so does it here.
        again = decode(pickle.loads(pickle.dumps(encode(fitted))))
        assert not jax.config.jax_enable_x64
    assert type(again) is FittedMagma and again is not fitted
    leaves = jax.tree.leaves(again.model)
    assert all(isinstance(leaf, jax.Array) for leaf in leaves)  # back on the device
    floats = [leaf for leaf in leaves if leaf.dtype.kind == "f"]
    assert floats and all(leaf.dtype == np.float64 for leaf in floats)
    after = (
        again.predict_training_tasks(np.arange(3), x_pred),
        again.predict_new_tasks(context, x_pred),
        again.predict_new_tasks(None, x_pred),
    )
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------- many tasks


def _many_new_tasks(seed: int):
    """Twelve new tasks: six on grid points (shared inputs), six at inputs of their own;
    observed rows (3 to 5, one output missing) and prediction rows (2 to 4)."""
    rng = np.random.default_rng(seed)
    x_obs, x_pred = np.full((12, 5, 1), np.nan), np.full((12, 4, 1), np.nan)
    for i in range(12):
        n_obs, n_pred = int(rng.integers(3, 6)), int(rng.integers(2, 5))
        if i < 6:
            x_obs[i, :n_obs] = GRID[rng.choice(8, n_obs, replace=False)]
            x_pred[i, :n_pred] = GRID[rng.choice(8, n_pred, replace=False)]
        else:
            x_obs[i, :n_obs, 0] = rng.uniform(-1.0, 6.0, n_obs)
            x_pred[i, :n_pred, 0] = rng.uniform(-1.0, 6.0, n_pred)
    y = np.sin(x_obs) + np.where(np.arange(12) % 2, 2.0, -2.0)[:, None, None]
    y[3, 1, 0] = np.nan
    return from_nan(x_obs, y), from_nan(x_pred)


def _per_task_reference(fitted, context, x_pred):
    """Every new task alone through the per-task formulas (its own extension of the
    hyperposterior, no grouping, no gathering)."""
    model = fitted._new_task_model()
    predict_new = jit(pr.predict_new_task)
    out = []
    with runtime.jax_scope():  # the core itself, not the facade
        for i in range(context.tasks.n_tasks):
            mean, cov, tau = _one_task(model, predict_new, context, x_pred, i)
            # The view runs with the padded clusters of a small fit: they hold nothing.
            assert not tau[fitted.n_clusters :].any()
            out.append((mean, cov, tau[: fitted.n_clusters]))
    return out


def _one_task(model, predict_new, context, x_pred, i):
    obs, rows = context.tasks, x_pred.rows[i]
    params = jax.tree.map(lambda a: jnp.asarray(a[i]) if np.ndim(a) else a, context.task_params)
    mean, cov, tau = predict_new(
        model,
        params,
        *(jnp.asarray(a[i]) for a in (obs.x, obs.y, obs.observed)),
        jnp.asarray(x_pred.x[i][rows]),
        True,
    )
    return np.asarray(mean)[0], np.asarray(cov)[0], np.asarray(tau)


@pytest.mark.parametrize("min_inputs", [20, 10_000])
def test_grouped_predictions_of_many_tasks_equal_the_per_task_formulas(
    fitted, monkeypatch, min_inputs
):
    # min_inputs=20: groups of at most 20 distinct inputs, the tasks on grid points in
    # one (shared), the others a few at a time (not shared); 10_000: one group.
    seen = []

    def spy(parts, cap):
        groups = group_by_inputs(parts, cap)
        seen.append(groups)
        return groups

    monkeypatch.setattr(_fitted, "_MIN_GROUP_INPUTS", min_inputs)
    monkeypatch.setattr(_fitted, "group_by_inputs", spy)
    obs, x_pred = _many_new_tasks(seed=3)
    context = fitted.condition(obs)
    mean, cov, tau = fitted.predict_new_tasks(context, x_pred, full_cov=True)
    groups = seen[-1]
    if min_inputs == 20:
        assert len(groups) >= 3 and {g.shared for g in groups} == {True, False}
    else:
        assert len(groups) == 1
    reference = _per_task_reference(fitted, context, x_pred)
    for i, (ref_mean, ref_cov, ref_tau) in enumerate(reference):
        n = ref_mean.shape[0]
        np.testing.assert_allclose(mean[i, :n, 0], ref_mean, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(cov[i, 0, :n, :n], ref_cov, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(tau[i], ref_tau, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(context.tau[i], ref_tau, rtol=1e-10, atol=1e-12)
    # The tasks really differ (a mix-up of rows between tasks cannot go unseen).
    assert np.ptp(mean[:, 0, 0]) > 1.0
    # Training tasks: grouped equals one task at a time.
    train = fitted.predict_training_tasks(np.arange(5), take(x_pred, np.arange(5)))
    for i in range(5):
        one = fitted.predict_training_tasks(np.array([i]), take(x_pred, np.array([i])))
        for a, b in zip(train, one, strict=True):
            np.testing.assert_allclose(a[i], b[0], rtol=1e-10, atol=1e-12)


def test_own_task_hyperparameters_do_not_depend_on_the_groups(monkeypatch):
    x, y, maps = _tasks(5, 6, seed=0)
    config = _fit.FitConfig(n_clusters=2, max_iter=2, max_steps=5, shared_task_hps=False)
    own = _fit.fit_magma(from_nan(x, y, maps), GRID, config)
    obs, x_pred = _many_new_tasks(seed=4)
    outs = []
    for min_inputs in (20, 10_000):
        monkeypatch.setattr(_fitted, "_MIN_GROUP_INPUTS", min_inputs)
        context = own.condition(obs)
        outs.append((context.tau, *jax.tree.leaves(context.task_params)))
        outs[-1] += own.predict_new_tasks(context, x_pred)
    leaves = jax.tree.leaves(outs[0][1:])
    assert leaves and all(np.shape(leaf)[0] == 12 for leaf in leaves[:2])
    for a, b in zip(*outs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
