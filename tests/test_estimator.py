"""Behaviour of MagmaClusterRegressor on small synthetic data.

JAX compiles once per data shape (tens of seconds), so fitted estimators are shared
through module-scoped fixtures and the tests reuse a handful of shapes.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import ConvergenceWarning

from mimosa_sklearn import MagmaClusterRegressor
from mimosa_sklearn.datasets import load_synth_dev

N_TASKS = 12
FAST = {"n_clusters": 2, "max_iter": 5, "random_state": 0}


def _subset(split: str, n_tasks: int) -> tuple[pd.DataFrame, pd.Series]:
    X, y = load_synth_dev(split)
    keep = X["ID"].isin(X["ID"].unique()[:n_tasks])
    return X[keep].reset_index(drop=True), y[keep].reset_index(drop=True)


def _fit(X, y, **params) -> MagmaClusterRegressor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return MagmaClusterRegressor(**{**FAST, **params}).fit(X, y)


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.Series]:
    return _subset("train", N_TASKS)


@pytest.fixture(scope="module")
def new_tasks() -> tuple[pd.DataFrame, pd.Series, pd.DataFrame, pd.Series]:
    X_obs, y_obs = _subset("test_observed", 4)
    X_target, y_target = _subset("test_target", 4)
    return X_obs, y_obs, X_target, y_target


@pytest.fixture(scope="module")
def fitted(data) -> MagmaClusterRegressor:
    X, y = data
    return _fit(X, y)


@pytest.fixture(scope="module")
def fitted_2d(data) -> tuple[MagmaClusterRegressor, pd.DataFrame]:
    X, y = data
    rng = np.random.default_rng(0)
    Y = pd.DataFrame({"a": y, "b": -0.5 * y + rng.normal(0, 0.1, len(y))})
    Y.loc[::7, "b"] = np.nan  # missing outputs are allowed
    return _fit(X, Y), Y


def _fresh_copy(est: MagmaClusterRegressor) -> MagmaClusterRegressor:
    """Shallow copy with its own conditioned tasks (the fitted model is never mutated)."""
    out = copy.copy(est)
    out._contexts = dict(est._contexts)
    return out


@pytest.fixture(scope="module")
def conditioned(fitted, new_tasks) -> MagmaClusterRegressor:
    X_obs, y_obs, _, _ = new_tasks
    return _fresh_copy(fitted).condition(X_obs, y_obs)


# ---------------------------------------------------------------------- fit and attributes


def test_fitted_attributes(fitted, data):
    X, _ = data
    ids = X["ID"].unique()
    np.testing.assert_array_equal(fitted.task_ids_, ids)
    assert fitted.n_tasks_ == N_TASKS
    assert fitted.weights_.shape == (2,)
    np.testing.assert_allclose(fitted.weights_.sum(), 1.0)
    assert fitted.memberships_.shape == (N_TASKS, 2)
    assert fitted.memberships_.index.name == "ID"
    np.testing.assert_array_equal(fitted.memberships_.index, ids)
    np.testing.assert_allclose(fitted.memberships_.sum(axis=1), 1.0)
    np.testing.assert_array_equal(fitted.labels_, fitted.memberships_.to_numpy().argmax(1))
    assert fitted.n_iter_ == len(fitted.elbo_) <= 5
    assert isinstance(fitted.converged_, bool)
    assert fitted.n_features_in_ == 2
    np.testing.assert_array_equal(fitted.feature_names_in_, ["ID", "Input"])
    hps = fitted.hyperparameters_
    assert "noise" in hps and all(isinstance(v, np.ndarray) for v in hps.values())
    assert all(np.all(np.isfinite(v)) for v in hps.values())


def test_mean_processes_table(fitted):
    table = fitted.mean_processes_
    assert list(table.columns) == ["Input", "cluster", "output", "mean", "std"]
    n_grid = fitted.model_.grid.shape[0]
    assert len(table) == 2 * n_grid
    assert set(table["cluster"]) == {0, 1}
    assert (table["std"] >= 0).all() and np.isfinite(table["mean"]).all()


def test_progress_bar_and_convergence_warning(data, capsys):
    X, y = data
    with pytest.warns(ConvergenceWarning, match="max_iter=1"):
        est = MagmaClusterRegressor(**{**FAST, "max_iter": 1, "verbose": 1}).fit(X, y)
    assert est.n_iter_ == 1 and not est.converged_
    _, err = capsys.readouterr()
    assert "ELBO" in err


def test_silent_and_inputs_not_modified(data, capsys):
    X, y = data
    X0, y0 = X.copy(), y.copy()
    est = _fit(X, y, max_iter=2, verbose=0)
    est.predict(X, return_std=True)
    est.predict_proba(X)
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    pd.testing.assert_frame_equal(X, X0)
    pd.testing.assert_series_equal(y, y0)


# ---------------------------------------------------------------------- prediction


def test_predict_shapes_and_accuracy(fitted, data):
    X, y = data
    mean, std = fitted.predict(X, return_std=True)
    assert mean.shape == std.shape == (len(X),)
    assert np.all(std > 0)
    assert fitted.score(X, y) > 0.9  # training tasks: their own posterior


def test_std_matches_cov_diagonal(fitted, data):
    X, _ = data
    rows = X["ID"].isin(X["ID"].unique()[:3]).to_numpy()
    mean, std = fitted.predict(X[rows], return_std=True)
    mean_c, cov = fitted.predict(X[rows], return_cov=True)
    n = int(rows.sum())
    assert cov.shape == (n, n)
    np.testing.assert_allclose(mean_c, mean, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.sqrt(np.diag(cov)), std, rtol=1e-8)
    np.testing.assert_allclose(cov, cov.T, atol=1e-10)
    ids = X.loc[rows, "ID"].to_numpy()
    assert np.all(cov[ids[:, None] != ids[None, :]] == 0)  # no cross-task covariance


def test_return_std_and_cov_together_raises(fitted, data):
    X, _ = data
    with pytest.raises(RuntimeError, match="At most one"):
        fitted.predict(X, return_std=True, return_cov=True)


def test_predictions_follow_caller_row_order(fitted, data):
    X, _ = data
    mean, std = fitted.predict(X, return_std=True)
    perm = np.random.default_rng(1).permutation(len(X))
    mean_p, std_p = fitted.predict(X.iloc[perm], return_std=True)
    np.testing.assert_allclose(mean_p, mean[perm], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(std_p, std[perm], rtol=1e-9, atol=1e-9)


def test_include_noise_widens_intervals(fitted, data):
    X, _ = data
    _, std = fitted.predict(X, return_std=True)
    _, std_latent = fitted.predict(X, return_std=True, include_noise=False)
    assert np.all(std_latent <= std + 1e-12)


def test_predict_proba(fitted, data):
    X, _ = data
    proba = fitted.predict_proba(X)
    assert proba.shape == (len(X), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    codes = pd.Index(fitted.task_ids_).get_indexer(X["ID"])
    np.testing.assert_allclose(proba, fitted.memberships_.to_numpy()[codes])
    unseen = pd.DataFrame({"ID": ["nobody", "nobody"], "Input": [1.0, 2.0]})
    np.testing.assert_allclose(fitted.predict_proba(unseen), [fitted.weights_] * 2)


def test_unseen_task_gets_mixture_prior(fitted):
    X_new = pd.DataFrame({"ID": ["nobody"] * 4, "Input": [0.5, 2.5, 5.0, 7.5]})
    mean, std = fitted.predict(X_new, return_std=True)
    assert mean.shape == (4,) and np.all(np.isfinite(mean)) and np.all(std > 0)
    # The prior mixture mean lies between the cluster mean processes.
    table = fitted.mean_processes_
    lo, hi = table["mean"].min(), table["mean"].max()
    assert np.all((mean > lo - 3 * table["std"].max()) & (mean < hi + 3 * table["std"].max()))


def test_condition_then_predict(fitted, conditioned, new_tasks):
    _, _, X_target, y_target = new_tasks
    mean_c, std_c = conditioned.predict(X_target, return_std=True)
    mean_p, std_p = fitted.predict(X_target, return_std=True)  # unconditioned: prior
    rmse_c = np.sqrt(np.mean((mean_c - y_target.to_numpy()) ** 2))
    rmse_p = np.sqrt(np.mean((mean_p - y_target.to_numpy()) ** 2))
    assert rmse_c < rmse_p
    assert np.mean(std_c) < np.mean(std_p)
    proba = conditioned.predict_proba(X_target)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert not np.allclose(proba, fitted.weights_)


def test_condition_does_not_touch_fitted_state(fitted, conditioned):
    assert fitted._contexts == {}
    assert set(conditioned._contexts) == {f"test_000{i}" for i in range(4)}
    np.testing.assert_array_equal(conditioned.task_ids_, fitted.task_ids_)


def test_recondition_replaces_task(conditioned, new_tasks):
    X_obs, y_obs, X_target, _ = new_tasks
    est = _fresh_copy(conditioned)
    est.condition(X_obs, y_obs + 5.0 * (X_obs["ID"] == "test_0000"))  # same shapes
    assert len(est._contexts) == 4
    target = X_target[X_target["ID"] == "test_0000"]
    before = conditioned.predict(target)
    after = est.predict(target)
    assert not np.allclose(before, after)


def test_condition_rejects_training_ids(fitted, data):
    X, y = data
    with pytest.raises(ValueError, match="seen during fit"):
        fitted.condition(X.iloc[:3], y.iloc[:3])


def test_sample_y_shapes_and_seed(conditioned, new_tasks):
    _, _, X_target, _ = new_tasks
    draws = conditioned.sample_y(X_target, n_samples=3, random_state=0)
    assert draws.shape == (len(X_target), 3)
    np.testing.assert_array_equal(draws, conditioned.sample_y(X_target, 3, random_state=0))
    assert not np.allclose(draws, conditioned.sample_y(X_target, 3, random_state=1))
    one = conditioned.sample_y(X_target.iloc[:5])
    assert one.shape == (5, 1)


def test_predict_frame(conditioned, new_tasks):
    _, _, X_target, _ = new_tasks
    frame = conditioned.predict_frame(X_target)
    assert list(frame.columns) == ["ID", "Input", "mean", "std", "lower", "upper", "cluster"]
    pd.testing.assert_index_equal(frame.index, X_target.index)
    mean, std = conditioned.predict(X_target, return_std=True)
    np.testing.assert_allclose(frame["mean"], mean)
    np.testing.assert_allclose(frame["std"], std)
    np.testing.assert_allclose(frame["upper"] - frame["mean"], 1.959963984540054 * std)
    proba = conditioned.predict_proba(X_target)
    np.testing.assert_array_equal(frame["cluster"], proba.argmax(axis=1))


# ---------------------------------------------------------------------- 2-D outputs


def test_two_outputs(fitted_2d, data):
    est, Y = fitted_2d
    X, _ = data
    mean, std = est.predict(X, return_std=True)
    assert mean.shape == std.shape == (len(X), 2)
    rows = X["ID"].isin(X["ID"].unique()[:2]).to_numpy()
    _, cov = est.predict(X[rows], return_cov=True)
    assert cov.shape == (rows.sum(), rows.sum(), 2)
    np.testing.assert_allclose(np.sqrt(np.diagonal(cov, axis1=0, axis2=1)).T, std[rows], rtol=1e-8)
    assert est.sample_y(X[rows], n_samples=2, random_state=0).shape == (rows.sum(), 2, 2)
    assert np.isfinite(est.score(X, Y))  # NaN targets are ignored
    frame = est.predict_frame(X[rows])
    assert {"mean_a", "std_b", "lower_a", "upper_b", "cluster"} <= set(frame.columns)
    assert set(est.mean_processes_["output"]) == {"a", "b"}


# ---------------------------------------------------------------------- one-task mode


def test_single_task_mode(data):
    X, y = data
    rows = (X["ID"] == X["ID"].iloc[0]).to_numpy()
    X1 = X.loc[rows, ["Input"]].to_numpy()
    est = _fit(X1, y[rows].to_numpy(), task_col=None, n_clusters=1)
    assert est.n_tasks_ == 1 and est.memberships_.shape == (1, 1)
    assert est.n_features_in_ == 1 and not hasattr(est, "feature_names_in_")
    mean, std = est.predict(X1, return_std=True)
    assert mean.shape == (rows.sum(),) and np.all(std > 0)
    assert est.score(X1, y[rows].to_numpy()) > 0.9


def test_a_prior_mean_without_parameters_fits(data, fitted):
    # kernax.ZeroMean has no array leaf to map over: it used to crash the fit. Its mean
    # processes revert to 0 far from the data, where the learned constants do not.
    import kernax

    X, y = data
    zero = _fit(X, y, prior_mean=kernax.ZeroMean())
    assert not any(key.startswith("prior_mean.") for key in zero.hyperparameters_)
    assert np.isfinite(zero.elbo_).all() and np.isfinite(zero.predict(X)).all()
    far = pd.DataFrame({"ID": ["unseen"], "Input": [1e4]})
    standardised = (zero.predict(far)[0] - y.mean()) / y.std()
    assert abs(standardised) < 1e-6
    assert abs((fitted.predict(far)[0] - y.mean()) / y.std()) > 1e-3


def test_accelerate_switches_the_squarem_extrapolation(data, monkeypatch):
    from mimosa_sklearn.core import accelerate, em

    calls = []

    def spy(*args):
        calls.append(1)
        return accelerate.squarem_point(*args)

    monkeypatch.setattr(em, "squarem_point", spy)
    X, y = data
    plain = _fit(X, y, max_iter=6, tol=0.0, accelerate=False)
    assert calls == [] and plain.n_iter_ == 6
    fast = _fit(X, y, max_iter=6, tol=0.0)
    assert calls and fast.get_params()["accelerate"] is True
    # Three plain iterations come first either way; the ELBO never decreases.
    np.testing.assert_allclose(fast.elbo_[:3], plain.elbo_[:3], rtol=1e-10)
    assert np.all(np.diff(fast.elbo_) >= -1e-9 * np.abs(fast.elbo_[1:]))
