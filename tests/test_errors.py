"""Invalid inputs raise errors that name the offending column, row, task or parameter."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import ConvergenceWarning, NotFittedError

from mimosa_sklearn import MagmaClusterRegressor
from mimosa_sklearn.datasets import load_synth_dev

# Same data and settings as tests/test_estimator.py, so one pytest session compiles once.
FAST = {"n_clusters": 2, "max_iter": 5, "random_state": 0}


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.Series]:
    X, y = load_synth_dev()
    keep = X["ID"].isin(X["ID"].unique()[:12])
    return X[keep].reset_index(drop=True), y[keep].reset_index(drop=True)


@pytest.fixture(scope="module")
def fitted(data) -> MagmaClusterRegressor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return MagmaClusterRegressor(**FAST).fit(*data)


def _small() -> tuple[pd.DataFrame, np.ndarray]:
    X = pd.DataFrame({"ID": list("aaabbb"), "Input": [0.0, 1.0, 2.0, 0.0, 1.0, 2.0]})
    return X, np.arange(6.0)


# ---------------------------------------------------------------------- fit: X


def test_missing_task_col():
    X, y = _small()
    with pytest.raises(ValueError, match="task_col='task'.*not a column"):
        MagmaClusterRegressor(task_col="task").fit(X, y)


def test_missing_task_col_hints_column_transformer():
    X, y = _small()
    X = X.rename(columns={"ID": "remainder__ID", "Input": "scale__Input"})
    with pytest.raises(ValueError, match="verbose_feature_names_out=False"):
        MagmaClusterRegressor().fit(X, y)


def test_non_numeric_input_column():
    X, y = _small()
    X["site"] = list("xyzxyz")
    with pytest.raises(TypeError, match="'site'"):
        MagmaClusterRegressor().fit(X, y)


def test_non_numeric_input_column_in_array():
    X = np.array([["a", 1.0, "x"], ["a", 2.0, "y"]], dtype=object)
    with pytest.raises(TypeError, match="column 2"):
        MagmaClusterRegressor(task_col=0).fit(X, [1.0, 2.0])


@pytest.mark.parametrize(("value", "kind"), [(np.nan, "NaN"), (np.inf, "infinity")])
def test_non_finite_input(value, kind):
    X, y = _small()
    X.loc[4, "Input"] = value
    with pytest.raises(ValueError, match=f"{kind} in column 'Input' at row 4"):
        MagmaClusterRegressor().fit(X, y)


def test_missing_task_id():
    X, y = _small()
    X["ID"] = X["ID"].astype(object)
    X.loc[2, "ID"] = None
    with pytest.raises(ValueError, match="task id is missing.*row 2"):
        MagmaClusterRegressor().fit(X, y)


def test_empty_X():
    with pytest.raises(ValueError, match="0 sample"):
        MagmaClusterRegressor().fit(pd.DataFrame({"ID": [], "Input": []}), [])
    with pytest.raises(ValueError, match="0 sample"):
        MagmaClusterRegressor(task_col=None).fit(np.empty((0, 2)), [])


def test_only_task_column():
    X, y = _small()
    with pytest.raises(ValueError, match="1 feature"):
        MagmaClusterRegressor().fit(X[["ID"]], y)


def test_task_col_name_with_array():
    X, y = _small()
    with pytest.raises(ValueError, match="task_col='ID' is a column name"):
        MagmaClusterRegressor().fit(X["Input"].to_numpy()[:, None], y)


def test_task_col_position_out_of_range():
    with pytest.raises(ValueError, match="task_col=5 is out of range"):
        MagmaClusterRegressor(task_col=5).fit(np.ones((4, 2)), np.ones(4))


# ---------------------------------------------------------------------- fit: y


def test_y_none():
    X, _ = _small()
    with pytest.raises(ValueError, match="requires y"):
        MagmaClusterRegressor().fit(X, None)


def test_length_mismatch():
    X, y = _small()
    with pytest.raises(ValueError, match="6 rows but y has 5"):
        MagmaClusterRegressor().fit(X, y[:5])


def test_infinite_y():
    X, y = _small()
    y[3] = np.inf
    with pytest.raises(ValueError, match="infinity at row 3"):
        MagmaClusterRegressor().fit(X, y)


def test_all_nan_y():
    X, _ = _small()
    with pytest.raises(ValueError, match="NaN only"):
        MagmaClusterRegressor().fit(X, np.full(6, np.nan))


def test_task_without_observed_output():
    X, y = _small()
    y[3:] = np.nan
    with pytest.raises(ValueError, match="'b' have no observed output"):
        MagmaClusterRegressor(n_clusters=1).fit(X, y)


def test_output_never_observed():
    X, y = _small()
    Y = pd.DataFrame({"u": y, "v": np.nan})
    with pytest.raises(ValueError, match="'v'.*never observed"):
        MagmaClusterRegressor(n_clusters=1).fit(X, Y)


# ---------------------------------------------------------------------- parameters


def test_too_many_clusters():
    X, y = _small()
    with pytest.raises(ValueError, match="n_clusters=3.*2"):
        MagmaClusterRegressor(n_clusters=3).fit(X, y)


@pytest.mark.parametrize(
    ("params", "name"),
    [({"n_clusters": 0}, "n_clusters"), ({"init": "spectral"}, "init"), ({"tol": -1}, "tol")],
)
def test_invalid_parameters(params, name):
    X, y = _small()
    with pytest.raises(ValueError, match=f"'{name}' parameter"):
        MagmaClusterRegressor(**params).fit(X, y)


# ---------------------------------------------------------------------- unfitted / predict


@pytest.mark.parametrize(
    "method", ["predict", "predict_proba", "predict_frame", "sample_y", "score", "condition"]
)
def test_not_fitted(method):
    X, y = _small()
    args = (X, y) if method in ("score", "condition") else (X,)
    with pytest.raises(NotFittedError):
        getattr(MagmaClusterRegressor(), method)(*args)
    with pytest.raises(NotFittedError):
        MagmaClusterRegressor().mean_processes_


def test_predict_with_renamed_columns(fitted, data):
    X, _ = data
    with pytest.raises(ValueError, match="feature names should match"):
        fitted.predict(X.rename(columns={"Input": "Time"}))


def test_predict_with_wrong_number_of_columns(fitted, data):
    X, _ = data
    X_bad = X.assign(extra=1.0).to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "X does not have valid feature names"
        with pytest.raises(ValueError, match="X has 3 features.*expecting 2"):
            fitted.predict(X_bad)


def test_predict_with_nan_input(fitted, data):
    X, _ = data
    X_bad = X.iloc[:5].copy()
    X_bad.iloc[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN in column 'Input' at row 3"):
        fitted.predict(X_bad)


def test_condition_with_wrong_number_of_outputs(fitted, data):
    X, y = data
    X_new = X.iloc[:3].assign(ID="new")
    with pytest.raises(ValueError, match="2 output"):
        fitted.condition(X_new, np.ones((3, 2)))


def test_condition_task_without_observed_output(fitted, data):
    X, _ = data
    X_new = X.iloc[:3].assign(ID="new")
    with pytest.raises(ValueError, match="'new' have no observed output"):
        fitted.condition(X_new, np.full(3, np.nan))


def test_sample_y_bad_n_samples(fitted, data):
    X, _ = data
    with pytest.raises(ValueError, match="n_samples"):
        fitted.sample_y(X.iloc[:3], n_samples=0)
