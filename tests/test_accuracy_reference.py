"""Forecast accuracy on synth_dev against the MagmaClustR reference (issue acceptance).

MagmaClust with the true K = 3 and default settings is fitted once on the training
tasks; each new task is conditioned on its points with ``Input <= 6`` and its points
after 6 are forecast. The better reference (MagmaClustR 1.2.1: RMSE 1.176, NLPD 1.534)
must be matched within 2% in RMSE and 0.02 in NLPD, with calibrated 95% intervals, and
MagmaClust must beat independent per-task GPs (issue 3).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from sklearn.metrics import adjusted_rand_score

from mimosa_sklearn import MagmaClusterRegressor
from mimosa_sklearn.datasets import load_synth_dev, load_synth_dev_reference
from mimosa_sklearn.metrics import coverage, nlpd

RMSE_SLACK = 1.02
NLPD_SLACK = 0.02


def rmse(y, mean):
    return float(np.sqrt(np.mean((np.asarray(y) - np.asarray(mean)) ** 2)))


@pytest.fixture(scope="module")
def synth_dev():
    X, y, clusters = load_synth_dev("train", return_clusters=True)
    X_obs, y_obs = load_synth_dev("test_observed")
    X_target, y_target = load_synth_dev("test_target")
    return X, y, clusters, X_obs, y_obs, X_target, y_target


@pytest.fixture(scope="module")
def forecast(synth_dev):
    X, y, _, X_obs, y_obs, X_target, _ = synth_dev
    model = MagmaClusterRegressor(n_clusters=3, random_state=0).fit(X, y)
    model.condition(X_obs, y_obs)
    mean, std = model.predict(X_target, return_std=True)
    return model, np.asarray(mean), np.asarray(std)


@pytest.fixture(scope="module")
def reference():
    ref = load_synth_dev_reference("magmaclustr")
    assert ref["rmse"] == pytest.approx(1.176, abs=5e-4)
    assert ref["nlpd"] == pytest.approx(1.534, abs=5e-4)
    return ref


def test_rmse_matches_magmaclustr(forecast, synth_dev, reference):
    _, mean, _ = forecast
    assert rmse(synth_dev[-1], mean) <= reference["rmse"] * RMSE_SLACK


def test_nlpd_matches_magmaclustr(forecast, synth_dev, reference):
    _, mean, std = forecast
    assert nlpd(synth_dev[-1], mean, std) <= reference["nlpd"] + NLPD_SLACK


def test_coverage_is_calibrated(forecast, synth_dev):
    _, mean, std = forecast
    assert 0.90 <= coverage(synth_dev[-1], mean, std, level=0.95) <= 0.99


def test_training_clusters_are_recovered(forecast, synth_dev):
    model = forecast[0]
    clusters = synth_dev[2]
    truth = clusters.reindex(model.task_ids_).to_numpy()
    assert adjusted_rand_score(truth, model.labels_) >= 0.9


def test_beats_per_task_gps(forecast, synth_dev):
    _, mean, _ = forecast
    _, _, _, X_obs, y_obs, X_target, y_target = synth_dev
    gp_mean = np.empty(len(y_target))
    observed = X_obs.groupby("ID").indices
    for task, rows in X_target.groupby("ID").indices.items():
        obs = observed[task]
        kernel = ConstantKernel(1.0) * RBF(length_scale=2.5) + WhiteKernel(0.1)
        gp = GaussianProcessRegressor(
            kernel, normalize_y=True, n_restarts_optimizer=2, random_state=0
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp.fit(X_obs[["Input"]].to_numpy()[obs], y_obs.to_numpy()[obs])
        gp_mean[rows] = gp.predict(X_target[["Input"]].to_numpy()[rows])
    assert rmse(y_target, mean) < rmse(y_target, gp_mean)
