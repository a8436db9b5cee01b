"""Approximate grid (``grid=<int or array>``): mean processes on inducing inputs.

* With the one-hot projection of the exact grid, the dense-projection path of the core
  gives the exact path's results (hyperposteriors, ELBO history, hyperparameters and
  predictions), which checks every place where the projection replaces the integer
  mappings.
* With ~20 inducing inputs on continuous random inputs, forecasts are as accurate as
  with the exact union grid.
* Prediction, conditioning, sampling and pickling work in approximate mode, and bad
  ``grid`` values raise clear errors.

Few data shapes on purpose: JAX compilation per shape dominates the run time.
"""

from __future__ import annotations

import pickle
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from padded_tasks import from_nan

from mimosa_sklearn import MagmaClusterRegressor, _batching
from mimosa_sklearn import _fit as fit_module
from mimosa_sklearn._auto_grid import inducing_inputs
from mimosa_sklearn._data import build_task_data, encode_task_ids
from mimosa_sklearn.core import runtime
from mimosa_sklearn.core.approx import prior_offsets
from mimosa_sklearn.datasets import make_magma_data
from mimosa_sklearn.metrics import nlpd

K = 2
N_TRAIN_TASKS = 8
N_FIT = 4  # first points of every task used for fitting; the last 2 are forecast
M = 20  # inducing inputs


@pytest.fixture(scope="module")
def data():
    """Continuous random inputs: every input is distinct.

    The exact grid has G = 8 x 4 = 32 points, padded like M = 20 inducing inputs (to
    32), so the exact and approximate fits share the compiled programs of the one-hot
    test: the whole file compiles two EM iterations.
    """
    X, y, _ = make_magma_data(n_tasks=N_TRAIN_TASKS + 3, n_points=6, n_clusters=K, random_state=0)
    pos = X.groupby("ID").cumcount().to_numpy()
    train_task = X["ID"].isin(X["ID"].unique()[:N_TRAIN_TASKS]).to_numpy()
    fit = train_task & (pos < N_FIT)
    target = train_task & (pos >= N_FIT)
    new_obs = ~train_task & (pos < 3)
    new_target = ~train_task & (pos >= 3)
    return {
        name: (X[rows], y[rows])
        for name, rows in [
            ("fit", fit),
            ("target", target),
            ("new_obs", new_obs),
            ("new_target", new_target),
        ]
    }


def _fit(X, y, grid):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning is irrelevant here
        return MagmaClusterRegressor(n_clusters=K, grid=grid, random_state=0, max_iter=20).fit(X, y)


@pytest.fixture(scope="module")
def models(data):
    X, y = data["fit"]
    return {"exact": _fit(X, y, None), "approx": _fit(X, y, M)}


# --------------------------------------------------------------------------- one-hot


def _leaves(tree):
    return [np.asarray(a) for a in jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))]


def _close(a, b):
    for u, v in zip(_leaves(a), _leaves(b), strict=True):
        np.testing.assert_allclose(u, v, atol=1e-8, rtol=1e-8)


def test_one_hot_projection_equals_exact_path(data, monkeypatch):
    X, y = data["fit"]
    codes, ids = encode_task_ids(X["ID"].to_numpy())
    yy = y.to_numpy()
    td = build_task_data(codes, ids.size, X[["Input"]].to_numpy(), (yy - yy.mean()) / yy.std())
    X_t, _ = data["target"]
    x_target = build_task_data(
        encode_task_ids(X_t["ID"].to_numpy())[0], td.n_tasks, X_t[["Input"]].to_numpy()
    ).tasks

    def one_hot(params, batch, jitter):
        # Padded rows carry the sentinel index G: one_hot gives them a zero row.
        proj = jax.nn.one_hot(batch.mappings, batch.grid.shape[0], dtype=jnp.float64)
        return eqx.tree_at(lambda b: b.mappings, batch, proj)

    # The approximate fit path with the exact grid as "inducing inputs" and its
    # one-hot projection in place of c(x, u) c(u, u)^{-1}.
    monkeypatch.setattr(fit_module, "_with_projection", one_hot)
    config = fit_module.FitConfig(n_clusters=K, max_iter=3, tol=0.0)
    args = (td.tasks, td.grid, config)
    exact = fit_module.fit_magma(*args)
    proj = fit_module.fit_magma(*args, approximate=True)

    # Three EM iterations and the final E-step: E-step, ELBO and M-step all agree.
    np.testing.assert_allclose(proj.elbo_history, exact.elbo_history, rtol=1e-10)
    np.testing.assert_allclose(proj.elbo, exact.elbo, rtol=1e-10)
    np.testing.assert_allclose(proj.tau, exact.tau, atol=1e-8)
    _close(proj.post, exact.post)
    _close(proj.params, exact.params)
    with runtime.jax_scope():
        batch = _batching.make_batch(td.tasks, td.grid)
        assert prior_offsets(exact.params, batch) is None
        np.testing.assert_array_equal(prior_offsets(exact.params, one_hot(0, batch, 0)), 0.0)
    x_new = from_nan(np.linspace(-2.0, 12.0, 3)[None, :, None].repeat(td.n_tasks, axis=0))
    for f in (
        lambda m: m.predict_training_tasks(np.arange(td.n_tasks), x_target),
        lambda m: m.predict_new_tasks(None, x_new),
    ):
        for u, v in zip(f(proj), f(exact), strict=True):
            np.testing.assert_allclose(u, v, atol=1e-8, rtol=1e-8)


# --------------------------------------------------------------------------- accuracy


def _scores(model, X, y):
    mean, std = model.predict(X, return_std=True)
    rmse = float(np.sqrt(np.mean((mean - y.to_numpy()) ** 2)))
    return rmse, nlpd(y.to_numpy(), mean, std)


def test_approximate_grid_is_as_accurate_as_exact_grid(data, models):
    assert models["exact"].model_.n_grid == N_TRAIN_TASKS * N_FIT
    assert models["approx"].model_.n_grid == M
    X, y = data["target"]
    rmse_e, nlpd_e = _scores(models["exact"], X, y)
    rmse_a, nlpd_a = _scores(models["approx"], X, y)
    # Measured (8 tasks, G = 32 vs M = 20): RMSE 1.2865 vs 1.2846 (exact), NLPD 1.6081
    # vs 1.6070; the tolerances leave a margin of more than 10x.
    assert abs(rmse_a - rmse_e) <= 0.02 * rmse_e, (rmse_a, rmse_e)
    assert abs(nlpd_a - nlpd_e) <= 0.02, (nlpd_a, nlpd_e)
    # The clustering agrees too.
    same = models["approx"].labels_ == models["exact"].labels_
    assert same.all() or (~same).all()


# --------------------------------------------------------------------------- end to end


def test_approximate_grid_end_to_end(data, models):
    model = models["approx"]
    X, y = data["target"]
    mean, cov = model.predict(X, return_cov=True)
    assert mean.shape == (len(X),) and cov.shape == (len(X), len(X))
    assert np.all(np.isfinite(cov)) and np.all(np.diag(cov) > 0)
    proba = model.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    table = model.mean_processes_
    assert len(table) == K * M and np.all(table["std"] >= 0)

    X_obs, y_obs = data["new_obs"]
    X_new, y_new = data["new_target"]
    unseen_mean, unseen_std = model.predict(X_new, return_std=True)
    model.condition(X_obs, y_obs)
    cond_mean, cond_std = model.predict(X_new, return_std=True)
    assert np.all(np.isfinite(cond_mean)) and np.all(cond_std > 0)
    # A few observed points help the forecast of new tasks.
    assert np.mean((cond_mean - y_new.to_numpy()) ** 2) < np.mean(
        (unseen_mean - y_new.to_numpy()) ** 2
    )
    draws = model.sample_y(X_new, n_samples=3, random_state=0)
    assert draws.shape == (len(X_new), 3) and np.all(np.isfinite(draws))

    clone = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(clone.predict(X_new), cond_mean, rtol=1e-10, atol=1e-12)


def test_user_inducing_inputs_array(data, models):
    # The inducing inputs of grid=M, given explicitly (shuffled): the same model.
    u = models["approx"].model_.grid[::-1]
    X, y = data["fit"]
    model = _fit(X, y, u)
    np.testing.assert_array_equal(model.model_.grid, models["approx"].model_.grid)
    X_t, _ = data["target"]
    np.testing.assert_allclose(model.predict(X_t), models["approx"].predict(X_t), atol=1e-10)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("grid", "match"),
    [
        (1, "grid"),
        (True, "grid"),
        (np.zeros((3, 2)), "one column per input"),
        (np.array([0.0, np.nan, 1.0]), "finite"),
        (np.zeros((0, 1)), "no rows"),
    ],
)
def test_bad_grid_values_raise(data, grid, match):
    X, y = data["fit"]
    with pytest.raises(ValueError, match=match):
        MagmaClusterRegressor(n_clusters=K, grid=grid).fit(X, y)


def test_inducing_input_rules():
    x = np.linspace(0.0, 1.0, 11)
    # A lattice from the smallest to the largest input with one input column.
    np.testing.assert_allclose(inducing_inputs(x, 5)[:, 0], np.linspace(0.0, 1.0, 5))
    # At least as many inducing inputs as distinct inputs: the exact grid is used.
    assert inducing_inputs(np.repeat(x, 3), 11) is None
    # Several inputs: k-means centres inside the data range, sorted, reproducible.
    rng = np.random.default_rng(0)
    x2 = rng.uniform(0.0, 10.0, size=(500, 2))
    u = inducing_inputs(x2, 12, seed=3)
    assert u.shape == (12, 2)
    assert np.all((u >= 0.0) & (u <= 10.0))
    np.testing.assert_array_equal(u, inducing_inputs(x2, 12, seed=3))
    # Arrays: 1-D accepted for one input, duplicates merged.
    np.testing.assert_allclose(inducing_inputs(x, [0.5, 0.0, 0.5])[:, 0], [0.0, 0.5])
    with pytest.raises(ValueError, match="int >= 2"):
        inducing_inputs(x, 2.5)
    with pytest.raises(ValueError, match=">= 2"):
        inducing_inputs(x, 1)
