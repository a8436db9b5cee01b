"""Fixtures shared by the estimator's test modules: small synth_dev fits (module scope).

Test modules that define a fixture of the same name use their own.

Compiled programs go to a cache folder of the test session, never to the user's: the
xdist workers (and the processes tests start) share it, so a program compiled by one
is loaded by the others.
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile

# The two xdist workers share two cores: OpenBLAS's spinning worker threads in each
# would take the other's core (default tier 6:21 with them, 5:26 without, same machine).
# Set before anything loads OpenBLAS; the workers and the processes tests start inherit it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pandas as pd
import pytest
from estimator_data import N_TASKS, fit, fresh_copy, subset

from mimosa_sklearn import MagmaClusterRegressor

_CACHE_FOLDER = pytest.StashKey[str]()


def pytest_configure(config):
    # xdist workers inherit the folder of the process that started them. (The name is
    # spelled out: importing mimosa_sklearn.core here would start JAX in every process.)
    if "PYTEST_XDIST_WORKER" not in os.environ:
        folder = tempfile.mkdtemp(prefix="mimosa-sklearn-test-cache-")
        config.stash[_CACHE_FOLDER] = folder
        os.environ["MIMOSA_SKLEARN_CACHE_DIR"] = folder


def pytest_sessionfinish(session):
    # An xdist worker's controller waits only 5 s for the worker to finish once this
    # hook returns; execnet then sends the worker SIGINT, which lands in JAX's gc
    # callback and prints a KeyboardInterrupt traceback although every test passed.
    # What ran past 5 s were pytest's collections at unconfigure, each traversing a heap
    # grown by hundreds of compilations. Collect now, while the controller still waits,
    # and freeze the survivors so that those collections skip them.
    if "PYTEST_XDIST_WORKER" in os.environ:
        gc.collect()
        gc.freeze()


def pytest_unconfigure(config):
    if _CACHE_FOLDER in config.stash:
        shutil.rmtree(config.stash[_CACHE_FOLDER], ignore_errors=True)


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.Series]:
    return subset("train", N_TASKS)


@pytest.fixture(scope="module")
def new_tasks() -> tuple[pd.DataFrame, pd.Series, pd.DataFrame, pd.Series]:
    X_obs, y_obs = subset("test_observed", 4)
    X_target, y_target = subset("test_target", 4)
    return X_obs, y_obs, X_target, y_target


@pytest.fixture(scope="module")
def fitted(data) -> MagmaClusterRegressor:
    X, y = data
    return fit(X, y)


@pytest.fixture(scope="module")
def fitted_2d(data) -> tuple[MagmaClusterRegressor, pd.DataFrame]:
    X, y = data
    rng = np.random.default_rng(0)
    Y = pd.DataFrame({"a": y, "b": -0.5 * y + rng.normal(0, 0.1, len(y))})
    Y.loc[::7, "b"] = np.nan  # missing outputs are allowed
    return fit(X, Y), Y


@pytest.fixture(scope="module")
def conditioned(fitted, new_tasks) -> MagmaClusterRegressor:
    X_obs, y_obs, _, _ = new_tasks
    return fresh_copy(fitted).condition(X_obs, y_obs)
