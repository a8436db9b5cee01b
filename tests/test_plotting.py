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
import pandas as pd  # noqa: E402
from matplotlib.collections import PathCollection, PolyCollection  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.dates import ConciseDateFormatter, date2num  # noqa: E402
from PIL import Image  # noqa: E402

from mimosa_sklearn import MagmaClusterRegressor  # noqa: E402
from mimosa_sklearn._plot_base import axis_label  # noqa: E402
from mimosa_sklearn.datasets import load_synth_dev  # noqa: E402
from mimosa_sklearn.plotting import (  # noqa: E402
    animate_forecast,
    plot_clusters,
    plot_elbo,
    plot_forecast,
    plot_forecast_fan,
    plot_mean_processes,
    plot_memberships,
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


# ---------------------------------------------------------------------- labels and dates


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("age_months", "age (months)"),
        ("weight_kg", "weight (kg)"),
        ("time_s", "time (s)"),
        ("age_years", "age (years)"),
        ("body_temp_celsius", "body temp (°C)"),
        ("Input", "Input"),  # no unit
        ("visit_date", "visit_date"),  # "date" is not a unit
        ("_kg", "_kg"),  # no quantity
        ("height_CM", "height (cm)"),
    ],
)
def test_axis_label_reads_the_unit_suffix(name, label):
    assert axis_label(name) == label


START = pd.Timestamp("2023-05-01")


@pytest.fixture(scope="module")
def dated_model(data):
    """A small model on a date column named visit_date, output named weight_kg."""
    X, y = data[:2]
    keep = X["ID"].isin(X["ID"].unique()[:8]).to_numpy()
    X = X[keep].rename(columns={"Input": "visit_date"})
    X["visit_date"] = START + pd.to_timedelta(X["visit_date"] * 7, unit="D")
    y = y[keep].rename("weight_kg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MagmaClusterRegressor(n_clusters=2, max_iter=3, random_state=0).fit(X, y)
    return model, X, y


def test_plots_of_dates_have_a_date_axis(dated_model, ax, tmp_path):
    model, X, y = dated_model
    plot_mean_processes(model, X, y, ax=ax, n_points=20)
    assert isinstance(ax.xaxis.get_major_formatter(), ConciseDateFormatter)
    assert ax.get_xlabel() == "visit_date" and ax.get_ylabel() == "weight (kg)"
    # The curves span the first to the last visit, drawn as dates.
    x_line = ax.get_lines()[0].get_xdata()
    assert np.issubdtype(np.asarray(x_line).dtype, np.datetime64)
    assert x_line[0] == X["visit_date"].min() and x_line[-1] == X["visit_date"].max()
    offsets = np.concatenate(
        [c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)]
    )
    np.testing.assert_allclose(np.sort(offsets[:, 0]), np.sort(date2num(X["visit_date"])))
    _save(ax, tmp_path / "dates.png")


def test_forecast_of_dates_takes_dates(dated_model, ax):
    model, X, y = dated_model
    task = X["ID"].iloc[0]
    target = pd.date_range(START, periods=5, freq="20D")
    plot_forecast_fan(model, task, X, y, target, ax=ax, n_points=5)
    assert isinstance(ax.xaxis.get_major_formatter(), ConciseDateFormatter)
    line = ax.get_lines()[0]
    # The fan spans the task's visits and the target dates.
    first = min(X.loc[X["ID"] == task, "visit_date"].min(), target[0])
    assert line.get_xdata()[0] == first
    frame = X[X["ID"] == task].iloc[:0]
    expected = model.predict(
        pd.concat([frame, pd.DataFrame({"ID": [task], "visit_date": [first]})])
    )
    assert line.get_ydata()[0] == pytest.approx(expected[0], rel=1e-12)


# ---------------------------------------------------------------------- cluster views


def test_plot_clusters_draws_each_curve_in_its_cluster_colour(model, data, ax, tmp_path):
    X, y = data[:2]
    out = plot_clusters(model, X, y, ax=ax, n_points=30)
    assert out is ax
    task_ids = list(pd.unique(X["ID"]))
    lines = ax.get_lines()
    assert len(lines) == len(task_ids) + N_CLUSTERS  # the curves, then the mean processes
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == N_CLUSTERS
    colours = [to_rgba(line.get_color()) for line in lines[len(task_ids) :]]
    labels = model.labels_[pd.Index(model.task_ids_).get_indexer(task_ids)]
    for line, task, k in zip(lines, task_ids, labels, strict=False):
        assert to_rgba(line.get_color()) == colours[k]
        rows = (X["ID"] == task).to_numpy()
        np.testing.assert_array_equal(line.get_xdata(), np.sort(X.loc[rows, "Input"]))
    counts = np.bincount(labels, minlength=N_CLUSTERS)
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert [t.endswith(f"{c} curves") for t, c in zip(texts, counts, strict=True)] == [True] * 3
    assert ax.get_xlabel() == "Input" and ax.get_ylabel() == "Output"
    _save(ax, tmp_path / "clusters.png")


def test_plot_memberships_shows_the_memberships(model, ax):
    plot_memberships(model, ax=ax, sort=False)
    (image,) = ax.images
    np.testing.assert_array_equal(image.get_array(), model.memberships_.to_numpy())
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [str(t) for t in model.task_ids_]
    assert ax.get_xlabel() == "cluster"
    assert len(ax.figure.axes) == 2  # the heatmap and its colour bar


def test_plot_memberships_of_new_tasks_sorted_by_cluster(model, data, ax):
    _, _, X_obs, y_obs, _, _ = data
    conditioned = copy.deepcopy(model).condition(X_obs, y_obs)
    plot_memberships(conditioned, X_obs, ax=ax, max_labels=5)
    shown = np.asarray(ax.images[0].get_array())
    first = ~X_obs["ID"].duplicated().to_numpy()
    proba = conditioned.predict_proba(X_obs)[first]
    assert shown.shape == proba.shape == (X_obs["ID"].nunique(), N_CLUSTERS)
    best = shown.argmax(axis=1)
    assert np.all(np.diff(best) >= 0)  # blocks of clusters
    order = np.lexsort((-proba.max(axis=1), proba.argmax(axis=1)))
    np.testing.assert_array_equal(shown, proba[order])
    assert ax.get_yticklabels() == []  # more tasks than max_labels


# ---------------------------------------------------------------------- forecasts


def test_plot_forecast_fan_bands_are_the_quantiles(model, data, ax, tmp_path):
    _, _, X_obs, y_obs, X_tgt, _ = data
    task = X_obs["ID"].iloc[0]
    n_contexts = len(model._contexts)
    plot_forecast_fan(model, task, X_obs, y_obs, X_tgt, ax=ax, levels=(0.95, 0.5), n_points=40)
    assert len(model._contexts) == n_contexts  # the estimator is left unchanged
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    (line,) = ax.get_lines()
    x = line.get_xdata()
    rows = pd.DataFrame({"ID": task, "Input": x})
    obs = (X_obs["ID"] == task).to_numpy()
    mean, std = model.forecast(X_obs[obs], y_obs[obs], rows)
    np.testing.assert_allclose(line.get_ydata(), mean, rtol=1e-12)
    for band, z in zip(bands, (1.959963984540054, 0.6744897501960817), strict=True):
        y_edges = band.get_paths()[0].vertices[:, 1]
        assert y_edges.max() == pytest.approx(np.max(mean + z * std), rel=1e-9)
        assert y_edges.min() == pytest.approx(np.min(mean - z * std), rel=1e-9)
    assert [t.get_text() for t in ax.get_legend().get_texts()][:2] == [
        "95% interval",
        "50% interval",
    ]
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(scatters[0].get_offsets()) == int(obs.sum())
    _save(ax, tmp_path / "fan.png")


def test_plot_forecast_fan_rejects_bad_levels(model, data, ax):
    X, y = data[:2]
    with pytest.raises(ValueError, match="levels"):
        plot_forecast_fan(model, X["ID"].iloc[0], X, y, levels=(0.5, 1.0), ax=ax)


def test_animate_forecast_adds_one_point_a_frame(model, data, ax, tmp_path):
    _, _, X_obs, y_obs, X_tgt, _ = data
    task = X_obs["ID"].iloc[1]
    obs = (X_obs["ID"] == task).to_numpy()
    n_obs = int(obs.sum())
    anim = animate_forecast(model, task, X_obs, y_obs, X_tgt, ax=ax, n_points=30)
    assert len(list(anim.new_frame_seq())) == n_obs + 1
    line = ax.get_lines()[-1]
    x = line.get_xdata()
    rows = pd.DataFrame({"ID": task, "Input": x})
    prior, _ = model.forecast(X_obs.iloc[:0], y_obs.iloc[:0], rows)
    np.testing.assert_allclose(line.get_ydata(), prior, rtol=1e-12)  # frame 0: no point
    anim._func(n_obs)  # the last frame: every point
    full, _ = model.forecast(X_obs[obs], y_obs[obs], rows)
    np.testing.assert_allclose(line.get_ydata(), full, rtol=1e-12)
    points = [c for c in ax.collections if isinstance(c, PathCollection)][0]
    assert len(points.get_offsets()) == n_obs
    assert f"{n_obs} of {n_obs} points" in ax.get_title()
    ax.figure.set_size_inches(3, 2)
    anim.save(tmp_path / "forecast.gif", writer="pillow", dpi=30)
    with Image.open(tmp_path / "forecast.gif") as gif:
        assert gif.n_frames == n_obs + 1
    assert 'class="animation"' in anim.to_jshtml()


def test_animate_forecast_needs_a_point(model, data):
    X, y = data[:2]
    with pytest.raises(ValueError, match="no row of task"):
        animate_forecast(model, "nope", X, y)
