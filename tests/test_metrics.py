"""Metrics against hand-computed values, and the forecast scorer's split and signs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator
from sklearn.metrics import r2_score

from mimosa_sklearn import make_forecast_scorer
from mimosa_sklearn.metrics import coverage, nlpd

# ---------------------------------------------------------------------- nlpd / coverage


def test_nlpd_hand_computed():
    y = np.array([1.0, 2.0, 3.0])
    mean = np.array([1.5, 2.0, 2.0])
    std = np.array([1.0, 0.5, 2.0])
    expected = np.mean(0.5 * np.log(2 * np.pi * std**2) + (y - mean) ** 2 / (2 * std**2))
    assert nlpd(y, mean, std) == pytest.approx(expected, rel=1e-12)
    assert nlpd([0.0], [0.0], [1.0]) == pytest.approx(0.5 * np.log(2 * np.pi), rel=1e-12)


def test_nlpd_ignores_nan_targets_and_accepts_2d():
    y = np.array([[1.0, np.nan], [2.0, 0.0]])
    mean = np.zeros((2, 2))
    std = np.ones((2, 2))
    assert nlpd(y, mean, std) == pytest.approx(nlpd([1.0, 2.0, 0.0], [0, 0, 0], [1, 1, 1]))


def test_coverage_hand_computed():
    y = np.array([0.0, 1.9, 2.0, -3.0])
    mean, std = np.zeros(4), np.ones(4)
    assert coverage(y, mean, std) == 0.5  # z = 1.96: 0 and 1.9 inside
    assert coverage(y, mean, std, level=0.5) == 0.25  # z = 0.674: only 0
    assert coverage([1.0, np.nan], [1.0, 5.0], [1.0, 1.0]) == 1.0


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (([1.0, 2.0], [1.0], [1.0]), "shape"),
        (([1.0], [1.0], [0.0]), "std must be positive"),
        (([np.nan], [1.0], [1.0]), "no observed"),
        (([np.inf], [1.0], [1.0]), "infinities"),
    ],
)
def test_metric_errors(args, match):
    with pytest.raises(ValueError, match=match):
        nlpd(*args)


def test_coverage_level_error():
    with pytest.raises(ValueError, match="level"):
        coverage([1.0], [1.0], [1.0], level=1.0)


# ---------------------------------------------------------------------- forecast scorer


class _Stub(BaseEstimator):
    """Stands in for a fitted MagmaClusterRegressor: predicts 0 ± 1, records its inputs."""

    task_col = "ID"
    n_features_in_ = 2
    feature_names_in_ = np.array(["ID", "Input"], dtype=object)

    def forecast(self, X_obs, y_obs, X_new):
        self.X_obs, self.y_obs, self.X_new = X_obs, y_obs, X_new
        return np.zeros(len(X_new)), np.ones(len(X_new))


@pytest.fixture
def rows() -> tuple[pd.DataFrame, np.ndarray]:
    X = pd.DataFrame(
        {
            "ID": ["a"] * 4 + ["b"] * 6 + ["c"],
            "Input": [3.0, 1.0, 2.0, 0.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0, 7.0],
        }
    )
    perm = np.random.default_rng(0).permutation(len(X))  # the order of rows is irrelevant
    y = np.arange(len(X), dtype=float) - 4.0
    return X.iloc[perm].reset_index(drop=True), y[perm]


def test_scorer_conditions_on_earliest_points(rows):
    X, y = rows
    stub = _Stub()
    make_forecast_scorer("r2")(stub, X, y)
    observed = stub.X_obs.groupby("ID")["Input"].apply(sorted).to_dict()
    assert observed == {"a": [0.0, 1.0], "b": [0.0, 1.0, 2.0]}  # half, rounded down
    targets = stub.X_new.groupby("ID")["Input"].apply(sorted).to_dict()
    assert targets == {"a": [2.0, 3.0], "b": [3.0, 4.0, 5.0], "c": [7.0]}  # c: 1 point
    np.testing.assert_array_equal(stub.y_obs, y[X.index.isin(stub.X_obs.index)])


def test_scorer_n_observed(rows):
    X, y = rows
    stub = _Stub()
    make_forecast_scorer(n_observed=5)(stub, X, y)
    # Capped at all points but one.
    assert stub.X_obs.groupby("ID").size().to_dict() == {"a": 3, "b": 5}


def test_scorer_signs(rows):
    X, y = rows
    stub = _Stub()
    r2 = make_forecast_scorer("r2")(stub, X, y)
    y_new = y[stub.X_new.index]
    assert r2 == pytest.approx(r2_score(y_new, np.zeros_like(y_new)))
    rmse = make_forecast_scorer("rmse")(stub, X, y)
    assert rmse == pytest.approx(-np.sqrt(np.mean(y_new**2)))
    score = make_forecast_scorer("nlpd")(stub, X, y)
    assert score == pytest.approx(-nlpd(y_new, np.zeros_like(y_new), np.ones_like(y_new)))
    assert rmse < 0 and score < 0  # greater is better: losses are negated


def test_scorer_needs_a_magma_model(rows):
    X, y = rows
    with pytest.raises(TypeError, match="MagmaClusterRegressor"):
        make_forecast_scorer()(object(), X, y)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"metric": "mae"}, "metric"),
        ({"observed_fraction": 1.0}, "observed_fraction"),
        ({"n_observed": 0}, "n_observed"),
    ],
)
def test_scorer_parameter_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_forecast_scorer(**kwargs)


def test_scorer_repr():
    assert "rmse" in repr(make_forecast_scorer("rmse", n_observed=3))
