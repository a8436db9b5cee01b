"""Probabilistic metrics and a forecast scorer for held-out tasks.

``nlpd`` and ``coverage`` judge predictive distributions (not only their means).
:func:`make_forecast_scorer` builds a scorer for ``GridSearchCV``/``cross_val_score``
that measures what MagmaClust is for: forecasting a *new* task from its first points.
"""

from __future__ import annotations

import numbers
from typing import Any, Literal

import numpy as np
from scipy.stats import norm
from sklearn.metrics import r2_score
from sklearn.pipeline import Pipeline
from sklearn.utils import _safe_indexing

from ._data import encode_task_ids
from ._validation import validate_rows

__all__ = ["coverage", "make_forecast_scorer", "masked_r2_score", "nlpd"]

_METRICS = ("r2", "rmse", "nlpd")


def _as_float_arrays(
    y_true: Any, mean: Any, std: Any | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Float arrays of one common shape; NaN targets are kept (masked by callers)."""
    y = np.asarray(y_true, dtype=np.float64)
    mu = np.asarray(mean, dtype=np.float64)
    if y.shape != mu.shape:
        raise ValueError(f"y_true has shape {y.shape} but mean has shape {mu.shape}")
    sd = None
    if std is not None:
        sd = np.asarray(std, dtype=np.float64)
        if sd.shape != y.shape:
            raise ValueError(f"y_true has shape {y.shape} but std has shape {sd.shape}")
        if np.any(sd[~np.isnan(y)] <= 0) or np.any(~np.isfinite(sd[~np.isnan(y)])):
            raise ValueError("std must be positive and finite wherever y_true is observed")
    if np.isinf(y).any() or not np.isfinite(mu[~np.isnan(y)]).all():
        raise ValueError("y_true must not contain infinities and mean must be finite")
    if np.isnan(y).all():
        raise ValueError("y_true has no observed (non-NaN) value")
    return y, mu, sd


def nlpd(y_true: Any, mean: Any, std: Any) -> float:
    """Mean negative log predictive density of Gaussian predictions.

    ``mean(0.5 * log(2 pi std**2) + (y_true - mean)**2 / (2 std**2))``; lower is better.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or (n_samples, n_outputs)
        Observed values; NaN entries are ignored.
    mean : array-like of the same shape
        Predictive means.
    std : array-like of the same shape
        Predictive standard deviations (positive).

    Returns
    -------
    float
        The average over observed entries.

    Examples
    --------
    >>> round(nlpd([0.0], [0.0], [1.0]), 6)
    0.918939
    """
    y, mu, sd = _as_float_arrays(y_true, mean, std)
    keep = ~np.isnan(y)
    z = (y[keep] - mu[keep]) / sd[keep]
    return float(np.mean(0.5 * np.log(2 * np.pi) + np.log(sd[keep]) + 0.5 * z**2))


def coverage(y_true: Any, mean: Any, std: Any, level: float = 0.95) -> float:
    """Fraction of observations inside the central predictive interval.

    The interval is ``mean ± z std`` with ``z`` the ``(1 + level) / 2`` quantile of the
    standard normal; a calibrated model has coverage close to ``level``.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or (n_samples, n_outputs)
        Observed values; NaN entries are ignored.
    mean : array-like of the same shape
        Predictive means.
    std : array-like of the same shape
        Predictive standard deviations (positive).
    level : float, default=0.95
        Probability of the interval, in (0, 1).

    Returns
    -------
    float
        Fraction (in [0, 1]) of observed entries inside their interval.

    Examples
    --------
    >>> coverage([0.0, 3.0], [0.0, 0.0], [1.0, 1.0])
    0.5
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    y, mu, sd = _as_float_arrays(y_true, mean, std)
    keep = ~np.isnan(y)
    half = norm.ppf(0.5 + level / 2) * sd[keep]
    return float(np.mean(np.abs(y[keep] - mu[keep]) <= half))


def masked_r2_score(y_true: np.ndarray, y_pred: np.ndarray, sample_weight: Any = None) -> float:
    """R² ignoring NaN targets: per output over its observed rows, then averaged.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or (n_samples, n_outputs)
        True outputs; NaN entries are left out.
    y_pred : array-like of the same shape
        Predictions.
    sample_weight : array-like of shape (n_samples,), default=None
        Row weights.

    Returns
    -------
    float
        The mean over outputs of :func:`sklearn.metrics.r2_score` on observed rows.

    Raises
    ------
    ValueError
        When no target is observed.
    """
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    y2, p2 = y.reshape(y.shape[0], -1), p.reshape(p.shape[0], -1)
    w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    scores = []
    for o in range(y2.shape[1]):  # loop over outputs
        keep = ~np.isnan(y2[:, o])
        if keep.any():
            scores.append(
                r2_score(y2[keep, o], p2[keep, o], sample_weight=None if w is None else w[keep])
            )
    if not scores:
        raise ValueError("y has no observed (non-NaN) value to score")
    return float(np.mean(scores))


def _rmse(y_true: np.ndarray, mean: np.ndarray) -> float:
    keep = ~np.isnan(y_true)
    return float(np.sqrt(np.mean((y_true[keep] - mean[keep]) ** 2)))


class _ForecastScorer:
    """Scorer ``(estimator, X, y) -> float``; see :func:`make_forecast_scorer`."""

    def __init__(self, metric: str, observed_fraction: float, n_observed: int | None) -> None:
        self.metric = metric
        self.observed_fraction = observed_fraction
        self.n_observed = n_observed

    def __repr__(self) -> str:
        split = (
            f"n_observed={self.n_observed}"
            if self.n_observed is not None
            else f"observed_fraction={self.observed_fraction}"
        )
        return f"make_forecast_scorer(metric={self.metric!r}, {split})"

    def _n_observed(self, n_points: np.ndarray) -> np.ndarray:
        """Observed points per task: at least 1 and at most n-1 (tasks of 1 point: 0)."""
        if self.n_observed is not None:
            k = np.full(n_points.shape, self.n_observed)
        else:
            k = np.floor(self.observed_fraction * n_points).astype(np.int64)
        return np.where(n_points >= 2, np.clip(k, 1, n_points - 1), 0)

    def __call__(self, estimator: Any, X: Any, y: Any, sample_weight: Any = None) -> float:
        if sample_weight is not None:
            raise ValueError("the forecast scorer does not support sample_weight")
        model, Xt = estimator, X
        if isinstance(estimator, Pipeline):
            model = estimator.steps[-1][1]
            if len(estimator.steps) > 1:
                Xt = estimator[:-1].transform(X)
        if not hasattr(model, "forecast"):
            raise TypeError(
                "the forecast scorer needs a fitted MagmaClusterRegressor or a Pipeline "
                f"ending with one, got {type(model).__name__}"
            )
        rows = validate_rows(model, Xt, reset=False)
        codes, ids = encode_task_ids(rows.ids)
        n_rows = codes.size
        # Earliest points of each task along the first input column (stable on ties).
        order = np.lexsort((np.arange(n_rows), rows.inputs[:, 0], codes))
        n_points = np.bincount(codes, minlength=ids.size)
        starts = np.cumsum(n_points) - n_points
        rank = np.empty(n_rows, dtype=np.int64)
        rank[order] = np.arange(n_rows) - starts[codes[order]]
        observed = rank < self._n_observed(n_points)[codes]
        obs_idx, new_idx = np.flatnonzero(observed), np.flatnonzero(~observed)

        y_arr = np.asarray(y, dtype=np.float64)
        mean, std = model.forecast(
            _safe_indexing(Xt, obs_idx),
            _safe_indexing(y_arr, obs_idx),
            _safe_indexing(Xt, new_idx),
        )
        y_new = y_arr[new_idx].reshape(mean.shape)
        if self.metric == "r2":
            return masked_r2_score(y_new, mean)
        if self.metric == "rmse":
            return -_rmse(y_new, mean)
        return -nlpd(y_new, mean, std)


def make_forecast_scorer(
    metric: Literal["r2", "rmse", "nlpd"] = "r2",
    *,
    observed_fraction: float = 0.5,
    n_observed: int | None = None,
) -> _ForecastScorer:
    """Scorer that forecasts each task of the scored data from its first points.

    For every task in ``X`` (typically tasks held out by ``GroupKFold``), the scorer
    conditions the fitted model on the task's earliest points (ordered by the first input
    column) and scores the prediction of the remaining points. The estimator is left
    unchanged. Tasks with a single point are predicted from the cluster mixture.

    Parameters
    ----------
    metric : {"r2", "rmse", "nlpd"}, default="r2"
        Score of the forecast points. Greater is better: ``"rmse"`` and ``"nlpd"``
        (see :func:`nlpd`) are returned negated.
    observed_fraction : float, default=0.5
        Fraction of each task's points to condition on (rounded down, at least 1 and
        at most all but one). Ignored when ``n_observed`` is given.
    n_observed : int or None, default=None
        Number of points to condition on in every task (capped at all but one).

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y) -> float``, for the ``scoring`` argument of
        ``GridSearchCV`` or ``cross_val_score``. ``estimator`` is a fitted
        :class:`~mimosa_sklearn.MagmaClusterRegressor` or a ``Pipeline`` ending with one
        (``X`` is passed through the preceding steps, and the first input column is read
        after them).

    Examples
    --------
    >>> from sklearn.model_selection import GroupKFold, cross_val_score
    >>> from mimosa_sklearn import MagmaClusterRegressor, make_forecast_scorer
    >>> from mimosa_sklearn.datasets import load_synth_dev
    >>> X, y = load_synth_dev()
    >>> scores = cross_val_score(  # doctest: +SKIP
    ...     MagmaClusterRegressor(n_clusters=3), X, y, groups=X["ID"], cv=GroupKFold(3),
    ...     scoring=make_forecast_scorer("rmse"))
    """
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
    if n_observed is not None:
        if not isinstance(n_observed, numbers.Integral) or n_observed < 1:
            raise ValueError(f"n_observed must be a positive integer, got {n_observed!r}")
    elif not 0 < observed_fraction < 1:
        raise ValueError(f"observed_fraction must be in (0, 1), got {observed_fraction!r}")
    return _ForecastScorer(metric, float(observed_fraction), n_observed)
