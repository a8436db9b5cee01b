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
from estimator_data import FAST, N_TASKS, fit, fresh_copy
from sklearn.exceptions import ConvergenceWarning

from mimosa_sklearn import MagmaClusterRegressor, UnseenTaskWarning

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


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_fit_leaves_the_estimator_as_it_was(fitted, data, monkeypatch, error):
    from mimosa_sklearn import _fit

    X, y = data
    est = fresh_copy(fitted)
    before = dict(vars(est))

    def interrupted(*args, **kwargs):
        raise error("stopped in the middle of the EM")

    monkeypatch.setattr(_fit, "fit_magma", interrupted)
    # Other columns: validation alone would record three features and their names.
    other = X.assign(extra=1.0)
    with pytest.raises(error):
        est.fit(other, y)
    assert vars(est).keys() == before.keys()
    assert all(vars(est)[k] is v for k, v in before.items())
    np.testing.assert_array_equal(est.feature_names_in_, ["ID", "Input"])
    # A never-fitted estimator stays unfitted.
    new = MagmaClusterRegressor(n_clusters=2)
    with pytest.raises(error):
        new.fit(other, y)
    assert not hasattr(new, "n_features_in_") and not hasattr(new, "model_")


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
    est = fit(X, y, max_iter=2, verbose=0)
    est.predict(X, return_std=True)
    est.predict_proba(X)
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    pd.testing.assert_frame_equal(X, X0)
    pd.testing.assert_series_equal(y, y0)


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
    est = fit(X1, y[rows].to_numpy(), task_col=None, n_clusters=1)
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
    zero = fit(X, y, prior_mean=kernax.ZeroMean())
    assert not any(key.startswith("prior_mean.") for key in zero.hyperparameters_)
    assert np.isfinite(zero.elbo_).all() and np.isfinite(zero.predict(X)).all()
    far = pd.DataFrame({"ID": ["unseen"], "Input": [1e4]})
    with pytest.warns(UnseenTaskWarning):  # the cluster mixture, far from any data
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
    plain = fit(X, y, max_iter=6, tol=0.0, accelerate=False)
    assert calls == [] and plain.n_iter_ == 6
    fast = fit(X, y, max_iter=6, tol=0.0)
    assert calls and fast.get_params()["accelerate"] is True
    # Three plain iterations come first either way; the ELBO never decreases.
    np.testing.assert_allclose(fast.elbo_[:3], plain.elbo_[:3], rtol=1e-10)
    assert np.all(np.diff(fast.elbo_) >= -1e-9 * np.abs(fast.elbo_[1:]))


# ---------------------------------------------------------------------- warm start


def _converged(X, y, **params) -> MagmaClusterRegressor:
    return fit(X, y, max_iter=100, **params)


@pytest.fixture(scope="module")
def converged(data) -> MagmaClusterRegressor:
    """A cold fit to convergence, shared: ``warm_start`` plays no part in a first fit
    (there is no previous model), so a copy with it switched on is a warm-startable fit."""
    X, y = data
    return _converged(X, y)


def _warm_copy(est: MagmaClusterRegressor) -> MagmaClusterRegressor:
    return copy.deepcopy(est).set_params(warm_start=True)


@pytest.mark.parametrize(
    "shared", [True, pytest.param(False, marks=pytest.mark.slow, id="task-specific")]
)
def test_warm_start_refit_starts_at_the_previous_elbo(data, converged, shared):
    X, y = data
    if shared:  # the default
        est = _warm_copy(converged)
    else:
        est = _converged(X, y, warm_start=True, shared_task_hps=shared)
    final = est.elbo_[-1]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "fitting from scratch"
        est.fit(X, y)
    assert est.elbo_[0] >= final - 1e-9 * abs(final)
    assert est.n_iter_ <= 3 and est.converged_


def test_warm_start_with_new_tasks_converges_faster_than_a_cold_fit(data, converged):
    X, y = data
    first = X["ID"].isin(X["ID"].unique()[:8])
    warm = _converged(X[first], y[first], warm_start=True)
    warm.fit(X, y)  # four tasks more
    cold = converged
    assert warm.converged_ and cold.converged_
    assert warm.n_iter_ < cold.n_iter_
    # The known tasks kept their clusters, the new ones got theirs.
    assert warm.elbo_[-1] >= cold.elbo_[-1] - 1e-3 * abs(cold.elbo_[-1])
    np.testing.assert_array_equal(warm.task_ids_, cold.task_ids_)


def test_warm_start_with_other_settings_fits_from_scratch(data, converged):
    X, y = data
    est = _warm_copy(converged)
    est.set_params(n_clusters=3)
    with pytest.warns(UserWarning, match="n_clusters changed since the previous fit"):
        est.fit(X, y)
    cold = _converged(X, y, n_clusters=3)
    np.testing.assert_array_equal(est.elbo_, cold.elbo_)
    # Without warm_start a second fit ignores the first: it repeats the cold fit.
    again = copy.deepcopy(converged)
    again.fit(X.assign(Input=X["Input"] * 1.0), y)
    np.testing.assert_array_equal(again.elbo_, converged.elbo_)
