"""An animation of a forecast sharpening as a task's points arrive.

Public through :mod:`mimosa_sklearn.plotting`.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np

from . import _plot_base as base

__all__ = ["animate_forecast"]


def animate_forecast(
    estimator: Any,
    task_id: Hashable,
    X_obs: Any,
    y_obs: Any,
    X_pred: Any = None,
    *,
    output: int | str = 0,
    ax: Any = None,
    n_points: int = 120,
    interval: int = 700,
) -> Any:
    """Animate one task's forecast as its observed points arrive, one at a time.

    Frame ``j`` shows the forecast of :meth:`~MagmaClusterRegressor.forecast` from the
    task's first ``j`` points of ``X_obs`` (in input order), with its 95% band, over the
    cluster mean processes: frame 0 is the cluster-mixture prediction, the last one uses
    every point. Each frame's memberships are in its title. The estimator is left
    unchanged (a training task is forecast as a new task from the given points).
    MagmaClustR users know this figure from ``plot_gif``.

    The forecasts are computed when the animation is made; drawing a frame computes
    nothing. Save it with ``anim.save("forecast.gif", writer="pillow")`` (pillow comes
    with matplotlib) or show it in a notebook with ``IPython.display.HTML(
    anim.to_jshtml())``.

    Parameters
    ----------
    estimator : MagmaClusterRegressor
        A fitted estimator with one input column.
    task_id : hashable
        Id of the task.
    X_obs : DataFrame or array-like of shape (n_samples, n_features)
        Observed rows, laid out like the training ``X`` (rows of other tasks are
        ignored); the task needs at least one.
    y_obs : array-like of shape (n_samples,) or (n_samples, n_outputs)
        Outputs of ``X_obs``.
    X_pred : DataFrame or array-like, default=None
        Where the forecast is wanted: rows laid out like ``X`` or a 1-D sequence of
        input values; the curves span them and the observed inputs. None: the observed
        and training inputs.
    output : int or str, default=0
        Output to plot (position or name) when the model has several.
    ax : matplotlib Axes, default=None
        Axes to draw on; None: a new pyplot figure.
    n_points : int, default=120
        Number of grid points of the curves.
    interval : int, default=700
        Delay between frames, in milliseconds.

    Returns
    -------
    anim : matplotlib.animation.FuncAnimation
        The animation, with ``n_observed + 1`` frames.

    Raises
    ------
    ValueError
        If ``X_obs`` has no row of the task.

    Examples
    --------
    >>> anim = animate_forecast(model, "ID_61", X_obs, y_obs)  # doctest: +SKIP
    >>> anim.save("forecast.gif", writer="pillow")  # doctest: +SKIP
    """
    from matplotlib.animation import FuncAnimation

    base.check_1d_fitted(estimator)
    o = base.output_index(estimator, output)
    task = base.task_points(estimator, task_id, X_obs, y_obs, X_pred)
    if not task.x_obs.size:
        raise ValueError(f"X_obs has no row of task {task_id!r}: nothing arrives")
    if ax is None:
        _, ax = base.pyplot().subplots(figsize=(7, 4.5))
    order = np.argsort(task.x_obs, kind="stable")
    x_obs, y_all = task.x_obs[order], task.y_obs[order]
    x = task.span(estimator, n_points)
    rows = base.task_frame(estimator, task_id, x)
    frames = []
    for j in range(x_obs.size + 1):
        first = base.task_frame(estimator, task_id, x_obs[:j])
        mean, std = estimator.forecast(first, y_all[:j], rows)
        tau = _memberships(estimator, first, y_all[:j])
        frames.append((base.column(mean, o), base.column(std, o), tau))

    xd = base.to_display(estimator, x)
    cluster_mean, _ = base.mean_processes_at(estimator, x)
    colors = base.cluster_colors(cluster_mean.shape[0])
    for k in range(cluster_mean.shape[0]):
        ax.plot(xd, cluster_mean[k, o], color=colors[k], lw=1.2, ls="--", alpha=0.6)
    mean, std, _ = frames[0]
    band = ax.fill_between(xd, mean - base.Z95 * std, mean + base.Z95 * std, color="0.6")
    band.set_alpha(0.35)
    (line,) = ax.plot(xd, mean, color="black", lw=2)
    y_task = base.column(y_all, o)
    shown = base.to_display(estimator, x_obs)
    points = ax.scatter(shown[:0], y_task[:0], s=26, color="black", zorder=3)
    extent = np.concatenate(
        [np.r_[m - base.Z95 * s, m + base.Z95 * s] for m, s, _ in frames] + [y_task]
    )
    lo, hi = float(np.nanmin(extent)), float(np.nanmax(extent))
    pad = 0.08 * (hi - lo) if hi > lo else 1.0
    ax.set_ylim(lo - pad, hi + pad)
    base.label_axes(estimator, ax, o)

    def draw(j: int) -> tuple[Any, ...]:
        m, s, tau = frames[j]
        band.set_data(xd, m - base.Z95 * s, m + base.Z95 * s)
        line.set_ydata(m)
        points.set_offsets(np.column_stack([shown[:j], y_task[:j]]) if j else np.empty((0, 2)))
        shares = ", ".join(f"{p:.2f}" for p in tau)
        ax.set_title(f"Task {task_id}: {j} of {x_obs.size} points; memberships {shares}")
        return band, line, points

    draw(0)
    return FuncAnimation(ax.figure, draw, frames=len(frames), interval=interval, blit=False)


def _memberships(estimator: Any, X: Any, y: Any) -> np.ndarray:
    """Memberships of a task known through the rows ``X`` (the weights without rows)."""
    if not len(X):
        return np.asarray(estimator.weights_, dtype=np.float64)
    contexts = estimator._condition_contexts(X, y, allow_training_ids=True, allow_empty=True)
    if not contexts:  # no observed output yet
        return np.asarray(estimator.weights_, dtype=np.float64)
    (context,) = contexts.values()
    return np.asarray(context.tau, dtype=np.float64).ravel()
