"""Conditioning and prediction of MagmaClusterRegressor (:mod:`mimosa_sklearn._predicting`).

Fitted estimators come from the module-scoped fixtures of ``conftest.py`` (small
synth_dev fits shared with ``test_estimator.py``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from estimator_data import fresh_copy

from mimosa_sklearn import MagmaClusterRegressor, UnseenTaskWarning

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
    with pytest.warns(UnseenTaskWarning):
        np.testing.assert_allclose(fitted.predict_proba(unseen), [fitted.weights_] * 2)


def test_unseen_task_gets_mixture_prior(fitted):
    X_new = pd.DataFrame({"ID": ["nobody"] * 4, "Input": [0.5, 2.5, 5.0, 7.5]})
    with pytest.warns(UnseenTaskWarning, match="'nobody'"):
        mean, std = fitted.predict(X_new, return_std=True)
    assert mean.shape == (4,) and np.all(np.isfinite(mean)) and np.all(std > 0)
    # The prior mixture mean lies between the cluster mean processes.
    table = fitted.mean_processes_
    lo, hi = table["mean"].min(), table["mean"].max()
    assert np.all((mean > lo - 3 * table["std"].max()) & (mean < hi + 3 * table["std"].max()))


def test_unseen_tasks_warn_in_every_prediction_method(fitted, conditioned, data, new_tasks):
    X, _ = data
    X_obs = new_tasks[0]
    calls = {
        "predict": lambda est, Z: est.predict(Z),
        "predict_proba": lambda est, Z: est.predict_proba(Z),
        "sample_y": lambda est, Z: est.sample_y(Z, random_state=0),
        "predict_frame": lambda est, Z: est.predict_frame(Z),
    }
    unseen = pd.DataFrame({"ID": [f"new{i}" for i in range(7)], "Input": np.arange(7.0)})
    for name, call in calls.items():
        with pytest.warns(UnseenTaskWarning, match=r"7 task\(s\) in X were neither") as rec:
            call(fitted, pd.concat([X.iloc[:3], unseen]))
        message = str(rec[0].message)
        assert "'new0', 'new1', 'new2', 'new3', 'new4' and 2 more" in message, name
        assert "filterwarnings" in message and "type" not in message, name
        assert rec[0].filename == __file__, name  # points at the caller
        # Fitted and conditioned tasks are known: no warning.
        with warnings.catch_warnings():
            warnings.simplefilter("error", UnseenTaskWarning)
            call(fitted, X)
            call(conditioned, X_obs)


def test_unseen_task_warning_names_ids_that_match_after_a_type_cast():
    X = pd.DataFrame({"ID": np.repeat([7, 8], 4), "Input": np.tile(np.arange(4.0), 2)})
    y = np.r_[np.sin(X["Input"][:4]), np.cos(X["Input"][4:])]
    est = MagmaClusterRegressor(n_clusters=1, max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y)
    as_text = X.assign(ID=X["ID"].astype(str))
    with pytest.warns(UnseenTaskWarning, match=r"2 of them equal a known task id .*'7' and 7"):
        mixture = est.predict(as_text)
    # The forecasts are the mixture's, not the fitted tasks': plausible and wrong.
    assert not np.allclose(mixture, est.predict(X))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnseenTaskWarning)
        est.predict(X.assign(ID=X["ID"].astype(float)))  # 7.0 == 7: the same task
    # The documented way to silence it.
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=UnseenTaskWarning)
        est.predict(as_text)
    assert not [w for w in rec if w.category is UnseenTaskWarning]


def test_condition_then_predict(fitted, conditioned, new_tasks):
    _, _, X_target, y_target = new_tasks
    mean_c, std_c = conditioned.predict(X_target, return_std=True)
    with pytest.warns(UnseenTaskWarning):  # unconditioned: the cluster-mixture prior
        mean_p, std_p = fitted.predict(X_target, return_std=True)
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
    est = fresh_copy(conditioned)
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
