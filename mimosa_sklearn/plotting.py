"""Matplotlib figures for a fitted :class:`~mimosa_sklearn.MagmaClusterRegressor`.

The figures answer the usual questions (those of MagmaClustR's ``plot_magmaclust`` and
``plot_gif`` included):

* :func:`plot_mean_processes`: what do the clusters look like? (the ``K`` mean
  processes with their 95% credible bands, optionally over the data points);
* :func:`plot_clusters`: which curves went where? (every task as a curve coloured by
  its most likely cluster, under the mean processes and their bands);
* :func:`plot_memberships`: how sure is the clustering? (a heatmap of the memberships,
  tasks by clusters);
* :func:`plot_forecast`: what does the model predict for one task? (its points, the
  mixture forecast with a 95% band, and the cluster means weighted by membership);
* :func:`plot_forecast_fan`: how uncertain is that forecast? (nested quantile bands);
* :func:`animate_forecast`: how does the forecast sharpen as the task's points arrive?
  (a matplotlib animation, saved as a GIF or shown as HTML);
* :func:`plot_elbo`: did the variational EM converge?

Axis labels come from the fitted column names: a name ``<quantity>_<unit>`` with a
known unit reads "quantity (unit)" (``age_months``: "age (months)", ``weight_kg``:
"weight (kg)"); other names are shown as they are. A date input column gives a date
axis.

matplotlib is an optional dependency: ``pip install 'mimosa-sklearn[plot]'``. It is
imported when a function is called, never when this module is imported. The curves
need one-dimensional inputs (one input column besides the task column).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from . import _plot_base as base
from ._plot_animation import animate_forecast
from ._plot_clusters import plot_clusters, plot_mean_processes, plot_memberships

__all__ = [
    "animate_forecast",
    "plot_clusters",
    "plot_elbo",
    "plot_forecast",
    "plot_forecast_fan",
    "plot_mean_processes",
    "plot_memberships",
]

# ---------------------------------------------------------------------- public functions


def plot_forecast(
    estimator: Any,
    task_id: Hashable,
    X_obs: Any,
    y_obs: Any,
    X_pred: Any = None,
    *,
    ax: Any = None,
    show_clusters: bool = True,
    y_true: Any = None,
    output: int | str = 0,
    n_points: int = 200,
) -> Any:
    """Plot the forecast of one task: its points, the mixture mean and a 95% band.

    The prediction comes from :meth:`~MagmaClusterRegressor.predict` with
    ``return_std=True`` on a fine grid. A task that is not a training task is first
    added with :meth:`~MagmaClusterRegressor.condition` on its observed points (this
    updates ``estimator``, exactly as calling ``condition`` yourself would); a task
    without observed points gets the cluster-mixture prediction.

    Parameters
    ----------
    estimator : MagmaClusterRegressor
        A fitted estimator with one input column.
    task_id : hashable
        Id of the task to plot.
    X_obs : DataFrame or array-like of shape (n_samples, n_features)
        Observed rows, laid out like the training ``X``. Rows of other tasks are
        ignored, so the whole training or observed set may be passed.
    y_obs : array-like of shape (n_samples,) or (n_samples, n_outputs)
        Outputs of ``X_obs``.
    X_pred : DataFrame or array-like, default=None
        Where the forecast is wanted: rows laid out like ``X`` (rows of other tasks are
        ignored) or a 1-D array of input values. The curve is drawn on a fine grid
        spanning the observed inputs and ``X_pred``; None: spanning the observed inputs
        and the training inputs.
    ax : matplotlib Axes, default=None
        Axes to draw on; the current Axes when None.
    show_clusters : bool, default=True
        Also draw each cluster's mean process, with opacity growing with the task's
        membership of that cluster.
    y_true : array-like, default=None
        True outputs at ``X_pred`` (same rows), drawn as open circles to judge the
        forecast.
    output : int or str, default=0
        Output to plot (position or name) when the model has several.
    n_points : int, default=200
        Number of grid points of the curves.

    Returns
    -------
    ax : matplotlib Axes
        The Axes, with the mixture mean line, its band, the observed points and, with
        ``show_clusters``, one line per cluster.

    Examples
    --------
    >>> X_obs, y_obs = load_synth_dev("test_observed")  # doctest: +SKIP
    >>> ax = plot_forecast(model, "ID_61", X_obs, y_obs)  # doctest: +SKIP
    """
    base.check_1d_fitted(estimator)
    ax = base.axes(ax)
    o = base.output_index(estimator, output)

    task = base.task_points(estimator, task_id, X_obs, y_obs, X_pred)
    x_obs, y_task, x_target, target_rows = task.x_obs, task.y_obs, task.x_target, task.target_rows
    is_training = task.is_training
    if not is_training and x_obs.size:
        estimator.condition(base.task_frame(estimator, task_id, x_obs), y_task)

    x = task.span(estimator, n_points)
    rows = base.task_frame(estimator, task_id, x)
    mean, std = estimator.predict(rows, return_std=True)
    mean, std = base.column(mean, o), base.column(std, o)
    tau = np.asarray(estimator.predict_proba(rows[:1]))[0]

    # Vertical extent: the task and the clusters it plausibly belongs to; the means of
    # unlikely clusters may lie far away and would flatten the forecast otherwise.
    y_plot = base.column(y_task, o) if y_task.size else np.empty(0)
    xd = base.to_display(estimator, x)
    extent = [mean - base.Z95 * std, mean + base.Z95 * std, y_plot]
    if show_clusters:
        cluster_mean, _ = base.mean_processes_at(estimator, x)
        colors = base.cluster_colors(cluster_mean.shape[0])
        for k in range(cluster_mean.shape[0]):
            likely = tau[k] >= base.LIKELY
            if likely:
                extent.append(cluster_mean[k, o])
            ax.plot(
                xd,
                cluster_mean[k, o],
                color=colors[k],
                lw=1.6,
                ls="--",
                alpha=float(np.clip(tau[k], 0.08, 1.0)),
                # Unlikely clusters stay drawn (faint) but out of the legend.
                label=f"cluster {k} mean (membership {tau[k]:.2f})" if likely else "_unlikely",
            )

    low, high = mean - base.Z95 * std, mean + base.Z95 * std
    ax.fill_between(xd, low, high, color="0.55", alpha=0.3, lw=0, label="95% band")
    ax.plot(xd, mean, color="black", lw=2, label="forecast mean")
    if x_obs.size:
        shown = base.to_display(estimator, x_obs)
        ax.scatter(shown, y_plot, s=22, color="black", zorder=3, label="observed")
    if y_true is not None and x_target.size:
        truth = base.column(np.asarray(y_true, dtype=np.float64), o)
        if target_rows is not None and truth.shape[0] == target_rows.shape[0]:
            truth = truth[target_rows]
        ax.scatter(
            base.to_display(estimator, x_target),
            truth,
            s=26,
            facecolors="none",
            edgecolors="tab:red",
            linewidths=1.2,
            zorder=3,
            label="held out",
        )
        extent.append(truth)

    values = np.concatenate([np.ravel(e) for e in extent])
    values = values[np.isfinite(values)]
    if values.size:
        lo, hi = float(values.min()), float(values.max())
        pad = 0.08 * (hi - lo) if hi > lo else 1.0
        ax.set_ylim(lo - pad, hi + pad)

    if is_training:
        kind = "training task"
    else:
        kind = "new task" if x_obs.size else "unseen task, cluster mixture"
    ax.set_title(f"Task {task_id} ({kind}, most likely cluster {int(np.argmax(tau))})")
    base.label_axes(estimator, ax, o)
    ax.legend(loc="best", fontsize="x-small", framealpha=0.8)
    return ax


def plot_forecast_fan(
    estimator: Any,
    task_id: Hashable,
    X_obs: Any,
    y_obs: Any,
    X_pred: Any = None,
    *,
    levels: Sequence[float] = (0.5, 0.8, 0.95),
    ax: Any = None,
    output: int | str = 0,
    n_points: int = 200,
) -> Any:
    """Plot a fan chart of one task's forecast: nested central intervals.

    The forecast is that of :meth:`~MagmaClusterRegressor.predict` for a training task
    (or a task already added with :meth:`~MagmaClusterRegressor.condition` when
    ``X_obs`` holds none of its rows), and that of
    :meth:`~MagmaClusterRegressor.forecast` from its rows of ``X_obs`` otherwise: the
    estimator is left unchanged. Each band is the central interval of probability
    ``level`` of a normal law with the predictive mean and standard deviation (the
    predictive of a new task is a mixture over clusters: its first two moments are
    kept). Darker bands are the narrower ones.

    Parameters
    ----------
    estimator : MagmaClusterRegressor
        A fitted estimator with one input column.
    task_id : hashable
        Id of the task.
    X_obs : DataFrame or array-like of shape (n_samples, n_features)
        Observed rows, laid out like the training ``X`` (rows of other tasks are
        ignored).
    y_obs : array-like of shape (n_samples,) or (n_samples, n_outputs)
        Outputs of ``X_obs``.
    X_pred : DataFrame or array-like, default=None
        Where the forecast is wanted: rows laid out like ``X`` or a 1-D sequence of
        input values (dates for a date column); the fan spans them and the observed
        inputs. None: the observed and training inputs.
    levels : sequence of float, default=(0.5, 0.8, 0.95)
        Probabilities of the central intervals, each in (0, 1).
    ax : matplotlib Axes, default=None
        Axes to draw on; the current Axes when None.
    output : int or str, default=0
        Output to plot (position or name) when the model has several.
    n_points : int, default=200
        Number of grid points of the fan.

    Returns
    -------
    ax : matplotlib Axes
        The Axes, with one band per level (widest first), the mean line and the
        observed points.

    Examples
    --------
    >>> ax = plot_forecast_fan(model, "ID_61", X_obs, y_obs)  # doctest: +SKIP
    """
    from scipy.stats import norm

    base.check_1d_fitted(estimator)
    levels = sorted(float(p) for p in levels)
    if not levels or not all(0.0 < p < 1.0 for p in levels):
        raise ValueError(f"levels must be probabilities in (0, 1), got {levels}")
    ax = base.axes(ax)
    o = base.output_index(estimator, output)
    task = base.task_points(estimator, task_id, X_obs, y_obs, X_pred)
    x = task.span(estimator, n_points)
    rows = base.task_frame(estimator, task_id, x)
    if task.is_training or not task.x_obs.size:
        mean, std = estimator.predict(rows, return_std=True)
    else:
        observed = base.task_frame(estimator, task_id, task.x_obs)
        mean, std = estimator.forecast(observed, task.y_obs, rows)
    mean, std = base.column(mean, o), base.column(std, o)

    xd = base.to_display(estimator, x)
    for rank, level in enumerate(reversed(levels)):
        z = float(norm.ppf(0.5 + level / 2))
        shade = 0.25 + 0.45 * rank / max(len(levels) - 1, 1)
        ax.fill_between(
            xd,
            mean - z * std,
            mean + z * std,
            color="tab:blue",
            alpha=shade,
            lw=0,
            label=f"{level:.0%} interval",
        )
    ax.plot(xd, mean, color="navy", lw=1.8, label="forecast mean")
    if task.x_obs.size:
        shown = base.to_display(estimator, task.x_obs)
        y_task = base.column(task.y_obs, o)
        ax.scatter(shown, y_task, s=22, color="black", zorder=3, label="observed")
    ax.set_title(f"Task {task_id}: forecast fan")
    base.label_axes(estimator, ax, o)
    ax.legend(loc="best", fontsize="x-small", framealpha=0.8)
    return ax


def plot_elbo(estimator: Any, ax: Any = None) -> Any:
    """Plot the ELBO after each EM iteration.

    The evidence lower bound should increase (up to numerical noise) and flatten out
    when the EM converges.

    Parameters
    ----------
    estimator : MagmaClusterRegressor
        A fitted estimator.
    ax : matplotlib Axes, default=None
        Axes to draw on; the current Axes when None.

    Returns
    -------
    ax : matplotlib Axes
        The Axes, with one line (marked at every iteration).

    Examples
    --------
    >>> ax = plot_elbo(model)  # doctest: +SKIP
    """
    base.check_fitted(estimator)
    ax = base.axes(ax)
    from matplotlib.ticker import MaxNLocator

    elbo = np.asarray(estimator.elbo_, dtype=np.float64)
    iterations = np.arange(1, elbo.size + 1)
    ax.plot(iterations, elbo, marker="o", ms=4, lw=1.5, color="tab:blue", label="ELBO")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    status = "converged" if getattr(estimator, "converged_", False) else "not converged"
    ax.set_title(f"ELBO per EM iteration ({elbo.size} iterations, {status})")
    ax.set_xlabel("EM iteration")
    ax.set_ylabel("ELBO")
    ax.grid(True, alpha=0.3)
    return ax
