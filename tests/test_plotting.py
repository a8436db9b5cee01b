"""Tests of mimosa_sklearn.plotting (headless, Agg backend).

One small estimator is fitted for the whole module (JAX compilation dominates the cost).
"""

from __future__ import annotations

import copy
import types
import warnings

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import PathCollection, PolyCollection  # noqa: E402

from mimosa_sklearn import MagmaClusterRegressor  # noqa: E402
from mimosa_sklearn.datasets import load_synth_dev  # noqa: E402
from mimosa_sklearn.plotting import (  # noqa: E402
    plot_elbo,
    plot_forecast,
    plot_mean_processes,
)

N_CLUSTERS = 3


@pytest.fixture(scope="module")
def data():
    X, y = load_synth_dev()
    keep = X["ID"].isin(X["ID"].unique()[:24])
    X_obs, y_obs = load_synth_dev("test_observed")
    X_tgt, y_tgt = load_synth_dev("test_target")
    return X[keep], y[keep], X_obs, y_obs, X_tgt, y_tgt


@pytest.fixture(scope="module")
def model(data):
    X, y = data[:2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter=5
        return MagmaClusterRegressor(n_clusters=N_CLUSTERS, max_iter=5, random_state=0).fit(X, y)


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def _save(ax, path):
    ax.figure.savefig(path, dpi=60)
    assert path.stat().st_size > 0


def test_plot_mean_processes_curves_only(model, ax, tmp_path):
    out = plot_mean_processes(model, ax=ax, n_points=50)
    assert out is ax
    assert len(ax.get_lines()) >= N_CLUSTERS
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == N_CLUSTERS
    assert ax.get_xlabel() == "Input"
    assert ax.get_ylabel() == "Output"
    assert "Mean processes" in ax.get_title()
    assert len(ax.get_legend().get_texts()) == N_CLUSTERS
    x_line = ax.get_lines()[0].get_xdata()
    assert x_line.size == 50
    grid = np.asarray(model.model_.grid)[:, 0]
    assert np.isclose(x_line.min(), grid.min()) and np.isclose(x_line.max(), grid.max())
    _save(ax, tmp_path / "mean_processes.png")


def test_plot_mean_processes_with_data(model, data, ax, tmp_path):
    X, y = data[:2]
    plot_mean_processes(model, X, y, ax=ax)
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert 1 <= len(scatters) <= N_CLUSTERS
    assert sum(len(s.get_offsets()) for s in scatters) == len(X)
    _save(ax, tmp_path / "mean_processes_data.png")


def test_plot_mean_processes_matches_mean_processes_attribute(model, ax):
    """The curves pass through the public hyperposterior table at training inputs."""
    table = model.mean_processes_
    plot_mean_processes(model, ax=ax, n_points=2)
    x0 = table["Input"].min()
    for k, line in enumerate(ax.get_lines()[:N_CLUSTERS]):
        expected = table.loc[(table["cluster"] == k) & (table["Input"] == x0), "mean"].item()
        assert line.get_ydata()[0] == pytest.approx(expected, rel=1e-6, abs=1e-8)


def test_plot_mean_processes_rejects_x_without_y(model, data, ax):
    with pytest.raises(ValueError, match="both X and y"):
        plot_mean_processes(model, data[0], ax=ax)


def test_plot_forecast_new_task(model, data, ax, tmp_path):
    _, _, X_obs, y_obs, X_tgt, y_tgt = data
    task = X_obs["ID"].iloc[0]
    out = plot_forecast(model, task, X_obs, y_obs, X_tgt, ax=ax, y_true=y_tgt)
    assert out is ax
    # K cluster means + the forecast mean
    assert len(ax.get_lines()) >= N_CLUSTERS + 1
    assert any(isinstance(c, PolyCollection) for c in ax.collections)  # the band
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(scatters) == 2  # observed + held out
    assert len(scatters[0].get_offsets()) == int((X_obs["ID"] == task).sum())
    assert len(scatters[1].get_offsets()) == int((X_tgt["ID"] == task).sum())
    assert str(task) in ax.get_title()
    # cluster lines are drawn with an opacity that follows the memberships
    proba = model.predict_proba(X_obs[X_obs["ID"] == task])[0]
    alphas = [line.get_alpha() for line in ax.get_lines()[:N_CLUSTERS]]
    assert np.argmax(alphas) == np.argmax(proba)
    _save(ax, tmp_path / "forecast_new.png")


def test_plot_forecast_training_task_without_clusters(model, data, ax):
    X, y = data[:2]
    task = X["ID"].iloc[0]
    plot_forecast(model, task, X, y, ax=ax, show_clusters=False)
    assert len(ax.get_lines()) == 1
    assert "training task" in ax.get_title()


def test_plot_elbo(model, ax, tmp_path):
    out = plot_elbo(model, ax=ax)
    assert out is ax
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_ydata(), model.elbo_)
    assert ax.get_xlabel() == "EM iteration" and ax.get_ylabel() == "ELBO"
    _save(ax, tmp_path / "elbo.png")


def test_plots_default_to_current_axes(model):
    fig = plt.figure()
    try:
        assert plot_elbo(model) is fig.gca()
    finally:
        plt.close(fig)


def test_plots_reject_several_inputs(model, data, ax):
    # A copy whose fitted model reports a 2-D grid: the check needs no second (slow) fit.
    two_inputs = copy.copy(model)
    two_inputs.model_ = types.SimpleNamespace(grid=np.zeros((4, 2)))
    X, y = data[:2]
    with pytest.raises(ValueError, match="one input"):
        plot_mean_processes(two_inputs, ax=ax)
    with pytest.raises(ValueError, match="one input"):
        plot_forecast(two_inputs, X["ID"].iloc[0], X, y, ax=ax)


def test_missing_matplotlib_message(model, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"mimosa-sklearn\[plot\]"):
        plot_elbo(model)
