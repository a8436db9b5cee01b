"""Small synth_dev data and fits shared by the estimator's test modules.

JAX compiles once per data shape, so ``tests/test_estimator.py`` and
``tests/test_predicting.py`` fit the same small shapes (fixtures in ``conftest.py``).
"""

from __future__ import annotations

import copy
import warnings

import pandas as pd
from sklearn.exceptions import ConvergenceWarning

from mimosa_sklearn import MagmaClusterRegressor
from mimosa_sklearn.datasets import load_synth_dev

N_TASKS = 12
FAST = {"n_clusters": 2, "max_iter": 5, "random_state": 0}


def subset(split: str, n_tasks: int) -> tuple[pd.DataFrame, pd.Series]:
    X, y = load_synth_dev(split)
    keep = X["ID"].isin(X["ID"].unique()[:n_tasks])
    return X[keep].reset_index(drop=True), y[keep].reset_index(drop=True)


def fit(X, y, **params) -> MagmaClusterRegressor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return MagmaClusterRegressor(**{**FAST, **params}).fit(X, y)


def fresh_copy(est: MagmaClusterRegressor) -> MagmaClusterRegressor:
    """Shallow copy with its own conditioned tasks (the fitted model is never mutated)."""
    out = copy.copy(est)
    out._contexts = dict(est._contexts)
    return out
