"""Figures of the clustering: the mean processes, the curves by cluster, the memberships.

Public through :mod:`mimosa_sklearn.plotting`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _plot_base as base
from ._data import encode_task_ids

__all__ = ["plot_clusters", "plot_mean_processes", "plot_memberships"]


def plot_mean_processes(
    estimator: Any,
    X: Any = None,
    y: Any = None,
    *,
    output: int | str = 0,
    ax: Any = None,
    n_points: int = 200,
) -> Any:
    """Plot the ``K`` mean processes with their 95% credible bands.

    Each mean process is drawn as its hyperposterior mean over a fine grid spanning the
    training inputs, with a band of ±1.96 hyperposterior standard deviations (the
    uncertainty about the cluster mean itself, not the spread of the tasks around it).
    When ``X`` and ``y`` are given, the data points are added, coloured by the most
    likely cluster of their task.

    Parameters
    ----------
    estimator : MagmaClusterRegressor
        A fitted estimator with one input column.
    X : DataFrame or array-like of shape (n_samples, n_features), default=None
        Rows to scatter, laid out like the training ``X``. Training tasks are coloured
        by ``labels_``; other tasks by :meth:`~MagmaClusterRegressor.predict_proba`,
        which knows tasks added with :meth:`~MagmaClusterRegressor.condition` (tasks
        never seen get the largest mixture weight).
    y : array-like of shape (n_samples,) or (n_samples, n_outputs), default=None
        Outputs of ``X``; required with ``X``.
    output : int or str, default=0
        Output to plot (position or name) when the model has several.
    ax : matplotlib Axes, default=None
        Axes to draw on; the current Axes when None.
    n_points : int, default=200
        Number of grid points of each curve.

    Returns
    -------
    ax : matplotlib Axes
        The Axes, with one line and one band per cluster (plus one scatter of points
        per cluster when data are given) and a legend.

    Raises
    ------
    ValueError
        If the model has more than one input, or ``X`` is given without ``y``.

    Examples
    --------
    >>> import matplotlib.pyplot as plt  # doctest: +SKIP
    >>> from mimosa_sklearn.plotting import plot_mean_processes  # doctest: +SKIP
    >>> ax = plot_mean_processes(model, X, y)  # doctest: +SKIP
    >>> plt.show()  # doctest: +SKIP
    """
    base.check_1d_fitted(estimator)
    if (X is None) != (y is None):
        raise ValueError("give both X and y to draw the data points, or neither")
    if int(n_points) < 2:
        raise ValueError(f"n_points must be at least 2, got {n_points}")
    ax = base.axes(ax)
    o = base.output_index(estimator, output)
    grid = np.asarray(estimator.model_.grid, dtype=np.float64)[:, 0]
    x = base.fine_grid(float(grid.min()), float(grid.max()), n_points)
    mean, std = base.mean_processes_at(estimator, x)
    weights = np.asarray(estimator.weights_, dtype=np.float64)
    colors = base.cluster_colors(mean.shape[0])

    xd = base.to_display(estimator, x)
    for k in range(mean.shape[0]):
        m, s = mean[k, o], std[k, o]
        ax.fill_between(xd, m - base.Z95 * s, m + base.Z95 * s, color=colors[k], alpha=0.2, lw=0)
        ax.plot(xd, m, color=colors[k], lw=2.2, label=f"cluster {k} (weight {weights[k]:.2f})")

    if X is not None:
        _, inputs = base.split_rows(estimator, X)
        values = base.column(y, o)
        if values.shape[0] != inputs.shape[0]:
            raise ValueError(f"X has {inputs.shape[0]} rows but y has {values.shape[0]}")
        clusters = np.asarray(estimator.predict_proba(X)).argmax(axis=1)
        keep = ~np.isnan(values)
        inputs = base.to_display(estimator, inputs)
        for k in range(mean.shape[0]):
            sel = keep & (clusters == k)
            if sel.any():
                ax.scatter(
                    inputs[sel],
                    values[sel],
                    s=10,
                    color=colors[k],
                    alpha=0.55,
                    edgecolors="none",
                    zorder=1,
                )

    base.label_axes(estimator, ax, o)
    ax.set_title(f"Mean processes (K={mean.shape[0]}, 95% credible bands)")
    ax.legend(loc="best", fontsize="small", framealpha=0.8)
    return ax


def plot_clusters(
    estimator: Any,
    X: Any,
    y: Any,
    *,
    output: int | str = 0,
    ax: Any = None,
    n_points: int = 200,
) -> Any:
    """Plot the data as curves coloured by cluster, under the mean processes.

    Each task of ``X`` is drawn as a thin line through its points (in input order),
    coloured by its most likely cluster (:meth:`~MagmaClusterRegressor.predict_proba`:
    fitted memberships for training tasks, those of
    :meth:`~MagmaClusterRegressor.condition` for new ones). Over them, each cluster's
    mean process with its 95% credible band, as :func:`plot_mean_processes` draws it.
    MagmaClustR users know this figure from ``plot_magmaclust`` with the training data.

    Parameters
    ----------
    estimator : MagmaClusterRegressor
        A fitted estimator with one input column.
    X : DataFrame or array-like of shape (n_samples, n_features)
        Rows of the curves, laid out like the training ``X``.
    y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        Outputs of ``X`` (rows with a missing output are skipped).
    output : int or str, default=0
        Output to plot (position or name) when the model has several.
    ax : matplotlib Axes, default=None
        Axes to draw on; the current Axes when None.
    n_points : int, default=200
        Number of grid points of each mean process.

    Returns
    -------
    ax : matplotlib Axes
        The Axes, with one line per task of ``X`` (drawn first), then one line and one
        band per cluster, and a legend of the clusters with their number of curves.

    Examples
    --------
    >>> ax = plot_clusters(model, X, y)  # doctest: +SKIP
    """
    base.check_1d_fitted(estimator)
    ax = base.axes(ax)
    o = base.output_index(estimator, output)
    ids, inputs = base.split_rows(estimator, X)
    values = base.column(y, o)
    if values.shape[0] != inputs.shape[0]:
        raise ValueError(f"X has {inputs.shape[0]} rows but y has {values.shape[0]}")
    clusters = np.asarray(estimator.predict_proba(X)).argmax(axis=1)
    codes, _ = encode_task_ids(ids)
    colors = base.cluster_colors(int(np.size(estimator.weights_)))
    counts = np.zeros(len(colors), dtype=np.int64)
    shown = base.to_display(estimator, inputs)
    observed = ~np.isnan(values)
    for code in range(int(codes.max()) + 1):
        rows = np.flatnonzero(codes == code)
        rows = rows[np.argsort(inputs[rows], kind="stable")]
        k = int(clusters[rows[0]])  # the rows of a task share its memberships
        counts[k] += 1
        rows = rows[observed[rows]]
        ax.plot(shown[rows], values[rows], color=colors[k], lw=0.8, alpha=0.45, zorder=1)
    plot_mean_processes(estimator, output=output, ax=ax, n_points=n_points)
    for text, count in zip(ax.get_legend().get_texts(), counts, strict=True):
        text.set_text(f"{text.get_text()}, {count} curves")
    ax.set_title(f"Clusters: {int(counts.sum())} curves, K={len(colors)} mean processes")
    return ax


def plot_memberships(
    estimator: Any,
    X: Any = None,
    *,
    ax: Any = None,
    sort: bool = True,
    max_labels: int = 40,
    cmap: str = "viridis",
) -> Any:
    """Heatmap of the cluster memberships: one row per task, one column per cluster.

    Parameters
    ----------
    estimator : MagmaClusterRegressor
        A fitted estimator.
    X : DataFrame or array-like, default=None
        Rows whose tasks to show (one row per task, in order of first appearance), with
        their memberships from :meth:`~MagmaClusterRegressor.predict_proba`. None: the
        training tasks and ``memberships_``.
    ax : matplotlib Axes, default=None
        Axes to draw on; the current Axes when None.
    sort : bool, default=True
        Order the tasks by most likely cluster, then by decreasing membership of it, so
        that the clusters show as blocks.
    max_labels : int, default=40
        Label the rows with the task ids when there are at most this many tasks.
    cmap : str, default="viridis"
        Colormap of the memberships (0 to 1).

    Returns
    -------
    ax : matplotlib Axes
        The Axes, with one image of shape (n_tasks, n_clusters) whose values are the
        memberships (rows in the order shown) and a colour bar.

    Examples
    --------
    >>> ax = plot_memberships(model)  # doctest: +SKIP
    """
    base.check_fitted(estimator)
    ax = base.axes(ax)
    if X is None:
        tau = estimator.memberships_.to_numpy()
        task_ids = np.asarray(estimator.task_ids_)
    else:
        ids, _ = base.split_rows(estimator, X)
        codes, task_ids = encode_task_ids(ids)
        first = np.unique(codes, return_index=True)[1]
        tau = np.asarray(estimator.predict_proba(X))[first]
    order = np.arange(tau.shape[0])
    if sort:
        best = tau.argmax(axis=1)
        order = np.lexsort((-tau[order, best], best))
    tau, task_ids = tau[order], task_ids[order]
    image = ax.imshow(tau, aspect="auto", cmap=cmap, vmin=0.0, vmax=1.0, interpolation="none")
    ax.figure.colorbar(image, ax=ax, label="membership")
    ax.set_xticks(np.arange(tau.shape[1]))
    ax.set_xlabel("cluster")
    if tau.shape[0] <= max_labels:
        ax.set_yticks(np.arange(tau.shape[0]), [str(t) for t in task_ids.tolist()])
    else:
        ax.set_yticks([])
    ax.set_ylabel(f"task ({tau.shape[0]})")
    ax.set_title("Cluster memberships")
    return ax
