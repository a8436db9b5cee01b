"""What the plots of :mod:`mimosa_sklearn.plotting` share.

matplotlib is imported inside the functions, never at import. The figures compute on the
model's float inputs and show them in the user's terms: an axis label from the fitted
column name (``age_months`` reads "age (months)"), dates on a date axis.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from ._dates import InputScale, to_model
from ._validation import validate_rows

__all__ = [
    "LIKELY",
    "Z95",
    "axes",
    "axis_label",
    "check_1d_fitted",
    "check_fitted",
    "cluster_colors",
    "column",
    "fine_grid",
    "input_label",
    "label_axes",
    "mean_processes_at",
    "output_index",
    "output_label",
    "output_names",
    "pyplot",
    "split_rows",
    "task_frame",
    "task_points",
    "to_display",
    "to_model_inputs",
]

# Two-sided 95% normal quantile, written out to avoid importing scipy for a constant.
Z95 = 1.959963984540054
# Clusters with at least this membership are "plausible" for a task.
LIKELY = 0.05

# Unit suffixes read from column names ``<quantity>_<unit>``, and how they are shown.
_UNITS = {
    "s": "s",
    "ms": "ms",
    "min": "min",
    "h": "h",
    "hours": "hours",
    "days": "days",
    "weeks": "weeks",
    "months": "months",
    "years": "years",
    "kg": "kg",
    "g": "g",
    "mg": "mg",
    "m": "m",
    "cm": "cm",
    "mm": "mm",
    "km": "km",
    "l": "L",
    "ml": "mL",
    "pct": "%",
    "percent": "%",
    "celsius": "°C",
    "degc": "°C",
    "bpm": "bpm",
    "mmhg": "mmHg",
}


def axis_label(name: str) -> str:
    """An axis label from a column name: ``"<quantity>_<unit>"`` -> ``"quantity (unit)"``.

    The unit is the part after the last underscore when it is a known unit (seconds,
    minutes, hours, days, weeks, months, years, kg, g, m, cm, L, %, ...); underscores
    of the quantity become spaces. Other names are shown as they are.

    Parameters
    ----------
    name : str
        Column name.

    Returns
    -------
    label : str
        The label.
    """
    quantity, sep, unit = str(name).rpartition("_")
    if not sep or not quantity or unit.lower() not in _UNITS:
        return str(name)
    return f"{quantity.replace('_', ' ')} ({_UNITS[unit.lower()]})"


def pyplot() -> Any:
    """Import ``matplotlib.pyplot`` or explain how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "mimosa_sklearn.plotting needs matplotlib, an optional dependency: "
            "pip install 'mimosa-sklearn[plot]'"
        ) from exc
    return plt


def axes(ax: Any) -> Any:
    """The given Axes, or the current Axes of pyplot (checks that matplotlib exists)."""
    plt = pyplot()
    return plt.gca() if ax is None else ax


def cluster_colors(n_clusters: int) -> list[Any]:
    """One distinct colour per cluster (tab10, then tab20 beyond ten clusters)."""
    import matplotlib as mpl

    cmap = mpl.colormaps["tab10" if n_clusters <= 10 else "tab20"]
    return [cmap(k % cmap.N) for k in range(n_clusters)]


def check_fitted(estimator: Any) -> None:
    """Raise sklearn's NotFittedError for an estimator that is not fitted."""
    check_is_fitted(estimator, "model_")


def check_1d_fitted(estimator: Any) -> None:
    """A fitted estimator with one input column (the curves need one axis)."""
    check_fitted(estimator)
    n_inputs = int(np.asarray(estimator.model_.grid).shape[1])
    if n_inputs != 1:
        raise ValueError(
            f"plots need one input column besides the task column, but the model was fitted "
            f"with {n_inputs} inputs; plot a 1-D slice of your data with your own code."
        )


def output_names(estimator: Any) -> list[str]:
    """Names of the fitted outputs."""
    n_out = int(np.size(estimator._y_train_mean))
    names = getattr(estimator, "_output_names", None)
    return list(names) if names is not None else [f"y{o}" for o in range(n_out)]


def output_index(estimator: Any, output: int | str) -> int:
    """Position of ``output`` (an index or an output name) among the fitted outputs."""
    names = output_names(estimator)
    if isinstance(output, str):
        if output not in names:
            raise ValueError(f"output {output!r} is not one of the fitted outputs {names}")
        return names.index(output)
    if not -len(names) <= int(output) < len(names):
        raise ValueError(f"output={output} is out of range for {len(names)} output(s)")
    return int(output) % len(names)


def output_label(estimator: Any, o: int) -> str:
    """Axis label of output ``o``."""
    return axis_label(output_names(estimator)[o])


def _scale(estimator: Any) -> InputScale:
    """Scale of the (single) input column; numbers for estimators saved before dates."""
    scales = getattr(estimator, "input_scales_", None)
    if scales:
        return scales[0]
    names = getattr(estimator, "_input_names", None)
    return InputScale(str(names[0]) if names else "input")


def input_label(estimator: Any) -> str:
    """Axis label of the input: from its name, with the unit of dates and durations."""
    scale = _scale(estimator)
    label = axis_label(scale.name)
    if scale.kind == "timedelta":
        return f"{label} (days)"
    if scale.kind == "datetime" and scale.tz is not None:
        return f"{label} ({scale.tz})"
    return label


def label_axes(estimator: Any, ax: Any, o: int) -> None:
    """Label both axes from the fitted names; short date ticks for a date input."""
    ax.set_xlabel(input_label(estimator))
    ax.set_ylabel(output_label(estimator, o))
    if _scale(estimator).kind == "datetime":
        from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

        locator = AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))


def to_display(estimator: Any, x: np.ndarray) -> np.ndarray:
    """Model inputs as the x axis shows them: dates (wall time of the fitted timezone,
    for a matplotlib date axis) for a datetime input, the floats otherwise (durations
    in days)."""
    scale = _scale(estimator)
    x = np.asarray(x, dtype=np.float64)
    if scale.kind != "datetime":
        return x
    dates = scale.to_user(x)
    if dates.tz is not None:
        dates = dates.tz_localize(None)  # wall time where the data were recorded
    return dates.to_numpy()


def to_model_inputs(estimator: Any, values: Any) -> np.ndarray:
    """A 1-D sequence of input values in the user's kind (numbers, dates, durations) as
    model floats."""
    scale = _scale(estimator)
    if scale.kind == "numeric":
        return np.asarray(values, dtype=np.float64).ravel()
    return to_model(pd.Series(np.asarray(values).ravel()), scale, scale.name)


def mean_processes_at(estimator: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hyperposterior mean and std of the mean processes at ``x`` (M,), original units.

    Returns arrays of shape (K, O, M).
    """
    mean, var = estimator.model_.mean_processes(np.asarray(x, dtype=np.float64)[:, None])
    loc = np.asarray(estimator._y_train_mean, dtype=np.float64)[:, None]
    scale = np.asarray(estimator._y_train_std, dtype=np.float64)[:, None]
    std = np.sqrt(np.clip(np.asarray(var, dtype=np.float64), 0.0, None))
    return np.asarray(mean, dtype=np.float64) * scale + loc, std * scale


def split_rows(estimator: Any, X: Any) -> tuple[np.ndarray, np.ndarray]:
    """Task ids (n,) and 1-D model inputs (n,) of rows laid out like the training ``X``."""
    rows = validate_rows(estimator, X, reset=False)
    return rows.ids, rows.inputs[:, 0]


def task_frame(estimator: Any, task_id: Hashable, x: np.ndarray) -> Any:
    """Rows ``(task_id, x)`` laid out like the training ``X`` (DataFrame or array);
    ``x`` are model inputs, given back in the input column's kind."""
    x = np.asarray(x, dtype=np.float64).ravel()
    names = getattr(estimator, "feature_names_in_", None)
    task_col = estimator.task_col
    if names is not None:
        values = _scale(estimator).to_user(x)
        # A list lets pandas infer the id dtype (str -> object, int -> int64) as it did
        # for the training frame.
        data = {name: ([task_id] * x.size if name == task_col else values) for name in names}
        return pd.DataFrame(data, columns=list(names))
    n_features = int(estimator.n_features_in_)
    if task_col is None:
        return x[:, None]
    arr = np.empty((x.size, n_features), dtype=object)
    pos = int(task_col) % n_features
    arr[:, pos] = task_id
    arr[:, [j for j in range(n_features) if j != pos]] = x[:, None]
    return arr


def column(y: Any, o: int) -> np.ndarray:
    """Output ``o`` of ``y`` (1-D or 2-D) as a float vector."""
    arr = np.asarray(y, dtype=np.float64)
    return arr if arr.ndim == 1 else arr[:, o]


def fine_grid(lo: float, hi: float, n_points: int) -> np.ndarray:
    """``n_points`` evenly spaced model inputs from ``lo`` to ``hi``."""
    if hi <= lo:  # a single distinct input: widen a little so that a curve shows
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, int(n_points))


@dataclasses.dataclass(frozen=True)
class TaskPoints:
    """One task's observed points and the inputs where its forecast is wanted."""

    x_obs: np.ndarray  # (n_obs,) model inputs of the task's observed rows
    y_obs: np.ndarray  # (n_obs,) or (n_obs, O) their outputs
    x_target: np.ndarray  # (n_target,) model inputs where the forecast is wanted
    target_rows: np.ndarray | None  # rows of X_pred that belong to the task
    is_training: bool  # a training task (forecast from its training rows)

    def span(self, estimator: Any, n_points: int) -> np.ndarray:
        """A fine grid over the observed and target inputs (and the training grid when
        no target was given)."""
        parts = [self.x_obs, self.x_target]
        if self.target_rows is None:
            parts.append(np.asarray(estimator.model_.grid, dtype=np.float64)[:, 0])
        span = np.concatenate([p for p in parts if p.size])
        return fine_grid(float(span.min()), float(span.max()), n_points)


def task_points(
    estimator: Any, task_id: Hashable, X_obs: Any, y_obs: Any, X_pred: Any = None
) -> TaskPoints:
    """The rows of ``task_id`` in ``X_obs``/``y_obs`` and in ``X_pred`` (rows laid out
    like ``X``, of which other tasks' are ignored, or a 1-D sequence of input values)."""
    ids, x_all = split_rows(estimator, X_obs)
    is_task = ids == task_id
    y_arr = np.asarray(y_obs, dtype=np.float64)
    if y_arr.shape[0] != ids.shape[0]:
        raise ValueError(f"X_obs has {ids.shape[0]} rows but y_obs has {y_arr.shape[0]}")
    x_target, target_rows = np.empty(0), None
    if X_pred is not None:
        arr = X_pred if isinstance(X_pred, pd.DataFrame) else np.asarray(X_pred)
        if isinstance(arr, np.ndarray) and (arr.ndim == 1 or arr.shape[1] == 1):
            x_target = to_model_inputs(estimator, arr)
            target_rows = np.ones(x_target.shape, dtype=bool)
        else:
            pred_ids, pred_x = split_rows(estimator, arr)
            target_rows = pred_ids == task_id
            x_target = pred_x[target_rows]
    is_training = bool(pd.Index(estimator.task_ids_).get_indexer([task_id])[0] >= 0)
    return TaskPoints(x_all[is_task], y_arr[is_task], x_target, target_rows, is_training)
