"""Choice of the number of clusters by variational BIC (ALGORITHM.md §5).

:func:`select_n_clusters` fits one model per candidate number of clusters ``K`` and
keeps the one with the largest

    VBIC(K) = ELBO_K - |Theta_K| / 2 * log(T),

where ``ELBO_K`` is the evidence lower bound at convergence, ``|Theta_K|`` the number
of free hyperparameters (:meth:`FittedMagma.n_parameters`) and ``T`` the number of
training tasks.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

__all__ = ["select_n_clusters"]

_CRITERIA = ("vbic",)
_COLUMNS = ["elbo", "n_parameters", "penalty", "vbic", "converged", "fit_seconds"]


def _final_step(estimator: Any) -> Any:
    """The MagmaClust estimator itself, or the last step of a Pipeline."""
    steps = getattr(estimator, "steps", None)
    return steps[-1][1] if steps else estimator


def _n_clusters_param(estimator: Any) -> str:
    """Name of the parameter setting the number of clusters (``step__n_clusters`` in a
    Pipeline)."""
    get_params = getattr(estimator, "get_params", None)
    params = get_params(deep=True) if callable(get_params) else {}
    if "n_clusters" in params:
        return "n_clusters"
    matches = [name for name in params if name.endswith("__n_clusters")]
    if len(matches) != 1:
        raise TypeError(
            "select_n_clusters needs an estimator with an `n_clusters` parameter (a "
            "MagmaClusterRegressor or a Pipeline ending with one); got "
            f"{type(estimator).__name__}"
        )
    return matches[0]


def _count_tasks(estimator: Any, X: Any) -> int | None:
    """Number of distinct task ids in ``X`` (None when it cannot be read before fitting)."""
    task_col = getattr(_final_step(estimator), "task_col", "ID")
    if task_col is None:
        return 1
    try:
        if isinstance(X, pd.DataFrame):
            ids = X[task_col]
        else:
            ids = pd.Series(np.asarray(X, dtype=object)[:, int(task_col)])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return int(pd.unique(ids.to_numpy()).size)


def _check_candidates(candidates: Iterable[int]) -> list[int]:
    values = []
    for k in candidates:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"candidates must be positive integers, got {k!r}")
        values.append(int(k))
    values = sorted(set(values))
    if not values:
        raise ValueError("candidates must contain at least one number of clusters")
    return values


def select_n_clusters(
    estimator: Any,
    X: Any,
    y: Any,
    candidates: Iterable[int] = range(1, 7),
    *,
    criterion: str = "vbic",
) -> tuple[pd.DataFrame, Any]:
    """Choose the number of clusters by variational BIC.

    The estimator is cloned once per candidate ``K``, its ``n_clusters`` set to ``K``
    and fitted on ``(X, y)``; every other parameter (kernels, sharing options,
    ``random_state``...) is kept. The fit with the largest VBIC is returned.

    Parameters
    ----------
    estimator : MagmaClusterRegressor or Pipeline ending with one
        Unfitted template; it is not modified.
    X : DataFrame or array-like
        Training rows, as for ``estimator.fit``.
    y : array-like
        Training outputs.
    candidates : iterable of int, default=range(1, 7)
        Numbers of clusters to try. Candidates larger than the number of training
        tasks are skipped with a warning.
    criterion : {"vbic"}, default="vbic"
        Selection criterion: ``ELBO - n_parameters / 2 * log(n_tasks)``.

    Returns
    -------
    table : DataFrame
        Indexed by ``n_clusters`` (the candidates fitted, ascending), with columns
        ``elbo`` (final ELBO), ``n_parameters`` (free hyperparameters, ALGORITHM.md §5),
        ``penalty`` (``n_parameters / 2 * log(n_tasks)``), ``vbic`` (``elbo - penalty``),
        ``converged`` (EM met its tolerance) and ``fit_seconds`` (wall time of the fit,
        including JIT compilation the first time a shape is met).
    best_estimator : estimator
        The fitted clone with the largest VBIC (the smallest ``K`` on ties).

    Notes
    -----
    With ``normalize_y=True`` (the default) the ELBO is that of the standardised
    outputs. The standardisation does not depend on ``K``, so it shifts every
    candidate's ELBO by the same constant and does not change the choice.

    Examples
    --------
    >>> from mimosa_sklearn import MagmaClusterRegressor
    >>> from mimosa_sklearn.datasets import make_magma_data
    >>> from mimosa_sklearn.selection import select_n_clusters
    >>> X, y, _ = make_magma_data(n_tasks=20, n_points=8, n_clusters=2, random_state=0)
    >>> table, best = select_n_clusters(  # doctest: +SKIP
    ...     MagmaClusterRegressor(random_state=0), X, y, candidates=[1, 2, 3])
    >>> best.n_clusters  # doctest: +SKIP
    2
    """
    if criterion not in _CRITERIA:
        raise ValueError(f"criterion must be one of {_CRITERIA}, got {criterion!r}")
    values = _check_candidates(candidates)
    param = _n_clusters_param(estimator)
    n_tasks = _count_tasks(estimator, X)
    if n_tasks is not None:
        too_many = [k for k in values if k > n_tasks]
        if too_many:
            warnings.warn(
                f"Skipping n_clusters={too_many}: larger than the number of training tasks "
                f"({n_tasks}).",
                UserWarning,
                stacklevel=2,
            )
            values = [k for k in values if k <= n_tasks]
        if not values:
            raise ValueError(
                f"No candidate number of clusters is at most the number of tasks ({n_tasks})."
            )

    rows: dict[int, dict[str, Any]] = {}
    best, best_score = None, -np.inf
    for k in values:
        candidate = clone(estimator).set_params(**{param: k})
        start = time.perf_counter()
        with warnings.catch_warnings():
            # Reported once for all candidates below (and in the `converged` column).
            warnings.simplefilter("ignore", ConvergenceWarning)
            candidate.fit(X, y)
        seconds = time.perf_counter() - start
        model = _final_step(candidate).model_
        elbo = float(model.elbo)
        n_par = int(model.n_parameters())
        penalty = 0.5 * n_par * math.log(max(int(model.n_tasks), 1))
        score = elbo - penalty
        rows[k] = {
            "elbo": elbo,
            "n_parameters": n_par,
            "penalty": penalty,
            "vbic": score,
            "converged": bool(model.converged),
            "fit_seconds": seconds,
        }
        if np.isfinite(score) and score > best_score:
            best, best_score = candidate, score
    table = pd.DataFrame.from_dict(rows, orient="index")[_COLUMNS]
    table.index.name = "n_clusters"
    not_converged = [int(k) for k in table.index[~table["converged"].astype(bool)]]
    if not_converged:
        warnings.warn(
            f"EM did not converge for n_clusters={not_converged} within max_iter; their "
            "ELBO (hence VBIC) may be underestimated. Increase max_iter or tol.",
            ConvergenceWarning,
            stacklevel=2,
        )
    if best is None:
        raise RuntimeError("No candidate fit gave a finite VBIC.")
    return table, best
