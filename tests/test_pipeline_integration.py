"""MagmaClusterRegressor inside Pipeline / GridSearchCV / cross_val_score, and persistence.

The data share one set of inputs across tasks and the folds hold the same number of
tasks, so every fold has the same padded shapes and JAX compiles once per n_clusters.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import joblib
import kernax
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, GroupKFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from mimosa_sklearn import MagmaClusterRegressor, make_forecast_scorer
from mimosa_sklearn.datasets import make_magma_data

REPO_ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _pipeline(**params) -> Pipeline:
    scale = ColumnTransformer(
        [("scale", StandardScaler(), ["Input"])],
        remainder="passthrough",
        verbose_feature_names_out=False,
    ).set_output(transform="pandas")
    model = MagmaClusterRegressor(
        task_col="ID", **{"n_clusters": 2, "max_iter": 5, "random_state": 0, **params}
    )
    return Pipeline([("scale", scale), ("magma", model)])


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.Series]:
    X, y, _ = make_magma_data(
        n_tasks=12, n_points=10, n_clusters=2, irregular=False, random_state=0
    )
    return X, y


@pytest.fixture(scope="module")
def fitted(data) -> Pipeline:
    X, y = data
    return _pipeline().fit(X, y)


def test_pipeline_fit_predict(fitted, data):
    X, y = data
    model = fitted[-1]
    # ColumnTransformer moves the passthrough task column last; it is found by name.
    np.testing.assert_array_equal(model.feature_names_in_, ["Input", "ID"])
    mean, std = fitted.predict(X, return_std=True)
    assert mean.shape == std.shape == (len(X),)
    assert fitted.score(X, y) > 0.9


def test_grid_search_with_group_kfold_and_forecast_scorer(data):
    X, y = data
    search = GridSearchCV(
        _pipeline(),
        {"magma__n_clusters": [1, 2]},
        cv=GroupKFold(n_splits=3),
        scoring=make_forecast_scorer("rmse", observed_fraction=0.5),
        error_score="raise",
    )
    search.fit(X, y, groups=X["ID"])
    scores = search.cv_results_["mean_test_score"]
    assert np.all(np.isfinite(scores)) and np.all(scores < 0)
    assert search.best_params_["magma__n_clusters"] in (1, 2)
    assert search.best_estimator_[-1]._contexts == {}  # scoring left no state behind


@pytest.mark.slow
def test_grid_search_in_two_worker_processes_equals_one_process(data):
    # n_jobs=2: joblib's loky workers are new processes, each with its own JAX (one XLA
    # thread) and the shared compile cache; the scores are those of n_jobs=1.
    X, y = data
    searches = [
        GridSearchCV(
            _pipeline(),
            {"magma__n_clusters": [1, 2]},
            cv=GroupKFold(n_splits=2),
            scoring=make_forecast_scorer("rmse", observed_fraction=0.5),
            error_score="raise",
            n_jobs=n_jobs,
        ).fit(X, y, groups=X["ID"])
        for n_jobs in (1, 2)
    ]
    one, two = (s.cv_results_ for s in searches)
    np.testing.assert_allclose(two["mean_test_score"], one["mean_test_score"], rtol=1e-9)
    np.testing.assert_allclose(two["split1_test_score"], one["split1_test_score"], rtol=1e-9)
    assert np.all(np.isfinite(one["mean_test_score"]))


def test_cross_val_score(data):
    X, y = data
    forecast = cross_val_score(
        _pipeline(),
        X,
        y,
        groups=X["ID"],
        cv=GroupKFold(n_splits=3),
        scoring=make_forecast_scorer("r2"),
        error_score="raise",
    )
    prior = cross_val_score(
        _pipeline(), X, y, groups=X["ID"], cv=GroupKFold(n_splits=3), error_score="raise"
    )
    assert forecast.shape == prior.shape == (3,)
    assert np.all(np.isfinite(forecast)) and np.all(np.isfinite(prior))
    # Conditioning on half of each held-out task beats the cluster-mixture prior.
    assert forecast.mean() > prior.mean()


def test_scorer_leaves_estimator_unchanged(fitted, data):
    X, y = data
    held_out = X["ID"].isin(X["ID"].unique()[:3])
    before = fitted.predict(X[held_out])
    make_forecast_scorer("nlpd")(fitted, X[held_out], y[held_out])
    assert fitted[-1]._contexts == {}
    np.testing.assert_array_equal(fitted.predict(X[held_out]), before)


def test_clone_with_kernel_parameters():
    kernel = kernax.VarianceKernel(1.0) * kernax.SEKernel(2.0)
    est = MagmaClusterRegressor(mean_kernel=kernel, task_kernel=kernel)
    twin = clone(est)
    assert twin.get_params()["mean_kernel"] is not None
    restored = pickle.loads(pickle.dumps(est))  # kernax kernels alone do not pickle
    assert type(restored.mean_kernel) is type(kernel)
    for got, want in zip(
        jax.tree_util.tree_leaves(restored.mean_kernel),
        jax.tree_util.tree_leaves(kernel),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


# ---------------------------------------------------------------------- persistence


@pytest.fixture(scope="module")
def fitted_with_kernel(data) -> Pipeline:
    # Same structure as the default kernel (no recompilation), but a user kernax object
    # that stdlib pickle cannot handle on its own.
    X, y = data
    kernel = kernax.VarianceKernel(1.0) * kernax.SEKernel(1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return _pipeline(mean_kernel=kernel).fit(X, y)


def _conditioned(pipe: Pipeline, X: pd.DataFrame, y: pd.Series) -> Pipeline:
    new = X["ID"].isin(X["ID"].unique()[:2])
    X_obs = pipe[:-1].transform(X[new].assign(ID=X.loc[new, "ID"] + "_new"))
    pipe[-1].condition(X_obs.iloc[::2], y[new].iloc[::2])
    return pipe


def test_pickle_and_joblib_round_trips(fitted_with_kernel, data, tmp_path):
    X, y = data
    pipe = _conditioned(fitted_with_kernel, X, y)
    X_pred = pd.concat([X, X.iloc[:10].assign(ID=X["ID"].iloc[0] + "_new")])
    expected = pipe.predict(X_pred, return_std=True)
    restored_pickle = pickle.loads(pickle.dumps(pipe))
    joblib.dump(pipe, tmp_path / "model.joblib")
    restored_joblib = joblib.load(tmp_path / "model.joblib")
    for restored in (restored_pickle, restored_joblib):
        got = restored.predict(X_pred, return_std=True)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
        assert set(restored[-1]._contexts) == set(pipe[-1]._contexts)


def test_joblib_round_trip_in_fresh_process(fitted_with_kernel, data, tmp_path):
    X, _ = data
    joblib.dump(fitted_with_kernel, tmp_path / "model.joblib")
    X.to_pickle(tmp_path / "X.pkl")
    np.save(tmp_path / "expected.npy", fitted_with_kernel.predict(X))
    code = (
        "import sys, joblib, numpy as np, pandas as pd\n"
        f"d = {str(tmp_path)!r}\n"
        "model = joblib.load(d + '/model.joblib')\n"
        "got = model.predict(pd.read_pickle(d + '/X.pkl'))\n"
        "np.testing.assert_array_equal(got, np.load(d + '/expected.npy'))\n"
        "assert 'mimosa_sklearn' in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
