"""Matplotlib figures for a fitted :class:`~mimosa_sklearn.MagmaClusterRegressor`.

Three views cover the usual questions:

* :func:`plot_mean_processes`: what do the clusters look like? (the ``K`` mean
  processes with their 95% credible bands, optionally over the data);
* :func:`plot_forecast`: what does the model predict for one task? (its points, the
  mixture forecast with a 95% band, and the cluster means weighted by membership);
* :func:`plot_elbo`: did the variational EM converge?

matplotlib is an optional dependency: ``pip install 'mimosa-sklearn[plot]'``. It is
imported when a function is called, never when this module is imported. The plots
need one-dimensional inputs (one input column besides the task column).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from ._validation import validate_rows

__all__ = ["plot_elbo", "plot_forecast", "plot_mean_processes"]

# Two-sided 95% normal quantile, written out to avoid importing scipy for a constant.
_Z95 = 1.959963984540054
# Clusters with at least this membership are "plausible" for a task in plot_forecast.
_LIKELY = 0.05


# ---------------------------------------------------------------------- helpers


def _pyplot() -> Any:
    """Import ``matplotlib.pyplot`` or explain how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "mimosa_sklearn.plotting needs matplotlib, an optional dependency: "
            "pip install 'mimosa-sklearn[plot]'"
        ) from exc
    return plt


def _axes(ax: Any) -> Any:
    """The given Axes, or the current Axes of pyplot (checks that matplotlib exists)."""
    plt = _pyplot()
    return plt.gca() if ax is None else ax


def _cluster_colors(n_clusters: int) -> list[Any]:
    """One distinct colour per cluster (tab10, then tab20 beyond ten clusters)."""
    import matplotlib as mpl

    cmap = mpl.colormaps["tab10" if n_clusters <= 10 else "tab20"]
    return [cmap(k % cmap.N) for k in range(n_clusters)]


def _check_fitted(estimator: Any) -> None:
    check_is_fitted(estimator, "model_")


def _check_1d_inputs(estimator: Any) -> None:
    n_inputs = int(np.asarray(estimator.model_.grid).shape[1])
    if n_inputs != 1:
        raise ValueError(
            f"plots need one input column besides the task column, but the model was fitted "
            f"with {n_inputs} inputs; plot a 1-D slice of your data with your own code."
        )


def _output_names(estimator: Any) -> list[str]:
    n_out = int(np.size(estimator._y_train_mean))
    names = getattr(estimator, "_output_names", None)
    return list(names) if names is not None else [f"y{o}" for o in range(n_out)]


def _output_index(estimator: Any, output: int | str) -> int:
    """Position of ``output`` (an index or an output name) among the fitted outputs."""
    names = _output_names(estimator)
    if isinstance(output, str):
        if output not in names:
            raise ValueError(f"output {output!r} is not one of the fitted outputs {names}")
        return names.index(output)
    if not -len(names) <= int(output) < len(names):
        raise ValueError(f"output={output} is out of range for {len(names)} output(s)")
    return int(output) % len(names)


def _input_name(estimator: Any) -> str:
    names = getattr(estimator, "_input_names", None)
    if names:
        return str(names[0])
    return "input"


def _mean_processes_at(estimator: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hyperposterior mean and std of the mean processes at ``x`` (M,), original units.

    Returns arrays of shape (K, O, M).
    """
    mean, var = estimator.model_.mean_processes(np.asarray(x, dtype=np.float64)[:, None])
    loc = np.asarray(estimator._y_train_mean, dtype=np.float64)[:, None]
    scale = np.asarray(estimator._y_train_std, dtype=np.float64)[:, None]
    std = np.sqrt(np.clip(np.asarray(var, dtype=np.float64), 0.0, None))
    return np.asarray(mean, dtype=np.float64) * scale + loc, std * scale


def _split_rows(estimator: Any, X: Any) -> tuple[np.ndarray, np.ndarray]:
    """Task ids (n,) and 1-D inputs (n,) of rows laid out like the training ``X``."""
    rows = validate_rows(estimator, X, reset=False)
    return rows.ids, rows.inputs[:, 0]


def _task_frame(estimator: Any, task_id: Hashable, x: np.ndarray) -> Any:
    """Rows ``(task_id, x)`` laid out like the training ``X`` (DataFrame or array)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    names = getattr(estimator, "feature_names_in_", None)
    task_col = estimator.task_col
    if names is not None:
        # A list lets pandas infer the id dtype (str -> object, int -> int64) as it did
        # for the training frame.
        data = {name: ([task_id] * x.size if name == task_col else x) for name in names}
        return pd.DataFrame(data, columns=list(names))
    n_features = int(estimator.n_features_in_)
    if task_col is None:
        return x[:, None]
    arr = np.empty((x.size, n_features), dtype=object)
    pos = int(task_col) % n_features
    arr[:, pos] = task_id
    arr[:, [j for j in range(n_features) if j != pos]] = x[:, None]
    return arr


def _column(y: Any, o: int) -> np.ndarray:
    """Output ``o`` of ``y`` (1-D or 2-D) as a float vector."""
    arr = np.asarray(y, dtype=np.float64)
    return arr if arr.ndim == 1 else arr[:, o]


def _fine_grid(lo: float, hi: float, n_points: int) -> np.ndarray:
    if hi <= lo:  # a single distinct input: widen a little so that a curve shows
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, int(n_points))


# ---------------------------------------------------------------------- public functions


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
    _check_fitted(estimator)
    _check_1d_inputs(estimator)
    if (X is None) != (y is None):
        raise ValueError("give both X and y to draw the data points, or neither")
    if int(n_points) < 2:
        raise ValueError(f"n_points must be at least 2, got {n_points}")
    ax = _axes(ax)
    o = _output_index(estimator, output)
    grid = np.asarray(estimator.model_.grid, dtype=np.float64)[:, 0]
    x = _fine_grid(float(grid.min()), float(grid.max()), n_points)
    mean, std = _mean_processes_at(estimator, x)
    weights = np.asarray(estimator.weights_, dtype=np.float64)
    colors = _cluster_colors(mean.shape[0])

    for k in range(mean.shape[0]):
        m, s = mean[k, o], std[k, o]
        ax.fill_between(x, m - _Z95 * s, m + _Z95 * s, color=colors[k], alpha=0.2, lw=0)
        ax.plot(x, m, color=colors[k], lw=2.2, label=f"cluster {k} (weight {weights[k]:.2f})")

    if X is not None:
        _, inputs = _split_rows(estimator, X)
        values = _column(y, o)
        if values.shape[0] != inputs.shape[0]:
            raise ValueError(f"X has {inputs.shape[0]} rows but y has {values.shape[0]}")
        clusters = np.asarray(estimator.predict_proba(X)).argmax(axis=1)
        keep = ~np.isnan(values)
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

    names = _output_names(estimator)
    ax.set_xlabel(_input_name(estimator))
    ax.set_ylabel(names[o])
    ax.set_title(f"Mean processes (K={mean.shape[0]}, 95% credible bands)")
    ax.legend(loc="best", fontsize="small", framealpha=0.8)
    return ax


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
    _check_fitted(estimator)
    _check_1d_inputs(estimator)
    ax = _axes(ax)
    o = _output_index(estimator, output)

    ids, x_all = _split_rows(estimator, X_obs)
    is_task = ids == task_id
    x_obs = x_all[is_task]
    y_arr = np.asarray(y_obs, dtype=np.float64)
    if y_arr.shape[0] != ids.shape[0]:
        raise ValueError(f"X_obs has {ids.shape[0]} rows but y_obs has {y_arr.shape[0]}")
    y_task = y_arr[is_task]

    x_target = np.empty(0)
    target_rows = None
    if X_pred is not None:
        arr = X_pred if isinstance(X_pred, pd.DataFrame) else np.asarray(X_pred)
        if isinstance(arr, np.ndarray) and (arr.ndim == 1 or arr.shape[1] == 1):
            x_target = arr.astype(np.float64).ravel()
            target_rows = np.ones(x_target.shape, dtype=bool)
        else:
            pred_ids, pred_x = _split_rows(estimator, arr)
            target_rows = pred_ids == task_id
            x_target = pred_x[target_rows]

    is_training = bool(pd.Index(estimator.task_ids_).get_indexer([task_id])[0] >= 0)
    if not is_training and x_obs.size:
        estimator.condition(_task_frame(estimator, task_id, x_obs), y_task)

    span = [x_obs, x_target]
    if X_pred is None:
        span.append(np.asarray(estimator.model_.grid, dtype=np.float64)[:, 0])
    span = np.concatenate([s for s in span if s.size])
    x = _fine_grid(float(span.min()), float(span.max()), n_points)
    rows = _task_frame(estimator, task_id, x)
    mean, std = estimator.predict(rows, return_std=True)
    mean, std = _column(mean, o), _column(std, o)
    tau = np.asarray(estimator.predict_proba(rows[:1]))[0]

    # Vertical extent: the task and the clusters it plausibly belongs to; the means of
    # unlikely clusters may lie far away and would flatten the forecast otherwise.
    y_plot = _column(y_task, o) if y_task.size else np.empty(0)
    extent = [mean - _Z95 * std, mean + _Z95 * std, y_plot]
    if show_clusters:
        cluster_mean, _ = _mean_processes_at(estimator, x)
        colors = _cluster_colors(cluster_mean.shape[0])
        for k in range(cluster_mean.shape[0]):
            likely = tau[k] >= _LIKELY
            if likely:
                extent.append(cluster_mean[k, o])
            ax.plot(
                x,
                cluster_mean[k, o],
                color=colors[k],
                lw=1.6,
                ls="--",
                alpha=float(np.clip(tau[k], 0.08, 1.0)),
                # Unlikely clusters stay drawn (faint) but out of the legend.
                label=f"cluster {k} mean (membership {tau[k]:.2f})" if likely else "_unlikely",
            )

    ax.fill_between(
        x, mean - _Z95 * std, mean + _Z95 * std, color="0.55", alpha=0.3, lw=0, label="95% band"
    )
    ax.plot(x, mean, color="black", lw=2, label="forecast mean")
    if x_obs.size:
        ax.scatter(x_obs, y_plot, s=22, color="black", zorder=3, label="observed")
    if y_true is not None and x_target.size:
        truth = _column(np.asarray(y_true, dtype=np.float64), o)
        if target_rows is not None and truth.shape[0] == target_rows.shape[0]:
            truth = truth[target_rows]
        ax.scatter(
            x_target,
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
    ax.set_xlabel(_input_name(estimator))
    ax.set_ylabel(_output_names(estimator)[o])
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
    _check_fitted(estimator)
    ax = _axes(ax)
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
