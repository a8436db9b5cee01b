"""scikit-learn estimator for MagmaClust (multi-task GPs with clustered mean processes).

This module is the sklearn-facing layer only: it validates inputs, converts rows of
``(task id, inputs) -> outputs`` into padded per-task arrays (:mod:`mimosa_sklearn._data`),
and calls the numpy-in/numpy-out fit (:mod:`mimosa_sklearn._fit`) and fitted model
(:mod:`mimosa_sklearn._fitted`). It holds no model math.
"""

from __future__ import annotations

import dataclasses
import numbers
import warnings
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._auto_grid import resolve_grid
from ._data import build_task_data, encode_task_ids
from ._memory import check_fit_memory
from ._persistence import pack_state, unpack_state
from ._predicting import ForecastMixin
from ._progress import Progress
from ._validation import Rows, check_observed, validate_rows, validate_y

if TYPE_CHECKING:
    from ._fitted import FittedMagma

__all__ = ["MagmaClusterRegressor"]

# Fitted tables left out of the saved state and rebuilt from arrays on loading, so that
# the state holds no pandas objects (which skops would ask the user to trust).
_REBUILT_ON_LOAD = ("memberships_", "_mean_processes")


def _fit_module():
    """Import the fit lazily so that ``import mimosa_sklearn`` stays light (no JAX)."""
    from . import _fit

    return _fit


class MagmaClusterRegressor(ForecastMixin, MultiOutputMixin, RegressorMixin, BaseEstimator):
    """Multi-task Gaussian-process regression with clustered mean processes (MagmaClust).

    Each task (a curve: the rows of ``X`` sharing a task id) is a Gaussian process whose
    mean is one of ``n_clusters`` latent mean processes, themselves Gaussian processes.
    Fitting runs a variational EM that learns the mean processes, the kernel
    hyperparameters, the mixture weights and the task-to-cluster memberships. The model
    then forecasts training tasks, tasks never seen (from the cluster mixture), and new
    tasks observed through a few points (:meth:`condition`).

    Parameters
    ----------
    n_clusters : int, default=3
        Number of clusters ``K`` (mean processes). ``n_clusters=1`` is Magma (one
        shared mean process). Must not exceed the number of training tasks.
    task_col : str, int or None, default="ID"
        Task-id column of ``X``. With a DataFrame it is a column *name* (resolved by
        name, never by position, since ``ColumnTransformer`` reorders columns); with an
        array it is an integer column position. Every other column is an input
        dimension. ``None``: all rows form one task (GP regression with a learned mean).
        Keeping the ids inside ``X`` lets the estimator go through ``Pipeline``,
        ``GridSearchCV`` and ``cross_val_score``; pass ``groups=X[task_col]`` to
        ``GroupKFold`` to hold whole tasks out.
    mean_kernel : kernax kernel or None, default=None
        Covariance of the mean processes. None: a data-driven ``variance * SE`` kernel
        (ARD length scales with several inputs).
    task_kernel : kernax kernel or None, default=None
        Covariance of each task around its mean process. None: as for ``mean_kernel``.
    prior_mean : kernax mean or None, default=None
        Prior mean of the mean processes. None: a learned constant per cluster.
    shared_task_hps : bool, default=True
        All tasks share the task-kernel and noise hyperparameters (otherwise each task
        has its own).
    shared_cluster_hps : bool, default=True
        All mean processes share the mean-kernel hyperparameters.
    cluster_specific_task_hps : bool, default=False
        Task hyperparameters differ between clusters.
    shared_output_hps : bool, default=True
        With several independent outputs, all outputs share their hyperparameters
        (otherwise each output has its own). Ignored with ``correlated_outputs=True``,
        whose multi-output kernels have per-output parameters by construction.
    correlated_outputs : bool, default=False
        How several outputs (2-D ``y``) are modelled. False (default): the outputs are
        independent Gaussian processes that share only the cluster membership of their
        task. True: the outputs of a task are modelled jointly, so an output observed
        at an input informs the others there (e.g. forecast an output that is missing
        on the forecast range from an output that is observed). Each observed
        ``(row, output p)`` pair becomes a row with input ``(x, p)``, and the mean and
        task covariances become multi-output kernels, by default the intrinsic
        coregionalisation model ``B[p, q] k(x, x')`` with ``B = W W^T + diag(kappa)``
        learned (full rank, starting from independent outputs). A kernax
        ``ICMKernel``, ``LCMKernel`` or ``ConvolutionKernel`` passed as ``mean_kernel``
        or ``task_kernel`` is used as is; any other kernel becomes the ``k`` of an ICM.
        The noise variance is shared by the outputs (after standardisation with
        ``normalize_y``). Missing outputs (NaN) are simply absent rows. The cost grows
        with the number of *observed* ``(input, output)`` pairs, cubically. No effect
        with a single output; not available with an approximate ``grid`` (so
        ``grid="auto"`` keeps the exact grid).
    grid : "auto", None, int or array-like of shape (M, n_inputs), default="auto"
        Inputs on which the mean processes are represented. None: the union of the
        training inputs (exact; its size ``G`` grows with the number of distinct inputs,
        the cost with ``G^3`` and the memory with ``G^2``). An int or an array selects
        the *approximate grid*: the mean processes live on ``M`` inducing inputs ``u``
        and are interpolated to any input ``x`` by GP conditioning, ``mu_k(x) = m_k(x)
        + A(x) (mu_k(u) - m_k(u))`` with ``A(x) = c(x, u) c(u, u)^{-1}`` (``c`` the mean
        kernel), so a fit costs ``O(T N M^2 + K M^3)`` per iteration: linear in the
        number of tasks, for irregular continuous inputs. ``A`` is recomputed from the
        current mean kernel before every EM iteration (held fixed within the M-step), so
        predictions, which condition on ``u`` with the final kernel, interpolate exactly
        as the fit did. An int ``M >= 2`` picks the inducing inputs from the data: a
        regular lattice from the smallest to the largest input with one input column,
        k-means centres of the distinct inputs with several; when ``M`` is at least the
        number of distinct training inputs the exact grid is used. An array gives them
        directly (one column per input; duplicates are merged).

        ``"auto"`` chooses between the two from the data (the choice is in
        :attr:`grid_choice_`, and printed with ``verbose``). It keeps the exact grid
        when ``G <= 256``, or when the grid costs no more than the tasks: ``G^3 <=
        sum_i N_i^3`` (``N_i`` the rows of task ``i``; then also ``G^2 <= sum_i
        N_i^2``, the memory).
        Otherwise it takes ``M`` inducing inputs: per input column, the column's range
        divided by half the median gap between consecutive values inside a task, plus
        one; the product over columns, clipped to ``[32, 512]`` (and the exact grid
        when that is not fewer than ``G``). The choice depends on the data only, not on
        the order of the rows. With ``correlated_outputs=True`` and several outputs it
        is always the exact grid, as the approximate grid is not available there.

        Before it starts, a fit estimates the memory its grid needs and raises
        :class:`~mimosa_sklearn.FitMemoryError` (a ``MemoryError``) naming the
        grid size and the estimate when the machine does not have it.
    normalize_y : bool, default=True
        Standardise each output (observed values) before fitting; predictions are
        returned in the original units.
    max_iter : int, default=100
        Maximum number of EM iterations.
    tol : float, default=1e-4
        Convergence threshold on the relative change of the ELBO.
    accelerate : bool, default=True
        Extrapolate the EM iterations (SQUAREM: after every two iterations, one step
        along their trend, kept only when the ELBO does not decrease). Slow EM fits
        converge in far fewer iterations (the swimmers: 20 instead of 33); False runs
        plain variational EM, iteration for iteration as MagmaClustR does.
    n_init : int, default=1
        Number of initialisations; the fit with the best ELBO is kept.
    init : {"kmeans", "random"}, default="kmeans"
        Initialisation of the memberships.
    jitter : float, default=1e-6
        Diagonal added to covariance matrices before their Cholesky factorisation.
    random_state : int, RandomState instance or None, default=None
        Drives every random choice (initialisation; sampling when
        :meth:`sample_y` gets no ``random_state``). Pass an int for reproducible fits.
    verbose : int, default=0
        0: silent. 1 or more: a progress bar over EM iterations showing the ELBO.
    warm_start : bool, default=False
        When True, a new ``fit`` of a fitted estimator starts where the previous one
        ended: its hyperparameters, its output scaling, the memberships of the tasks
        fitted before (by task id) and, for new tasks, the memberships that
        :meth:`condition` gives them (the mean processes follow at the first E-step).
        A refit on the same data starts at the previous final ELBO. The settings that
        shape the model (``n_clusters``, kernels, sharing flags, ``correlated_outputs``,
        ``normalize_y``), the input columns and the number of outputs must not change;
        otherwise the fit starts from scratch, with a warning. ``n_init`` is ignored
        when warm starting.

    Attributes
    ----------
    task_ids_ : ndarray of shape (n_tasks_,)
        Training task ids, in order of first appearance.
    n_tasks_ : int
        Number of training tasks.
    weights_ : ndarray of shape (n_clusters,)
        Mixture weights of the clusters.
    memberships_ : DataFrame of shape (n_tasks_, n_clusters)
        Posterior cluster memberships of the training tasks (rows sum to 1), indexed by
        task id.
    labels_ : ndarray of shape (n_tasks_,)
        Most likely cluster of each training task.
    elbo_ : ndarray of shape (n_iter_,)
        ELBO after each EM iteration.
    n_iter_ : int
        Number of EM iterations run.
    converged_ : bool
        Whether the EM met ``tol`` before ``max_iter``.
    hyperparameters_ : dict of str to ndarray
        Fitted hyperparameters, named ``"<group>.<name>"`` (e.g.
        ``"mean_kernel.length_scale"``, ``"noise"``), with leading axes following the
        sharing layout. Values are in the model's units: inputs as given, outputs
        standardised when ``normalize_y=True``.
    mean_processes_ : DataFrame
        Long table of the mean processes' hyperposterior on the training grid (the
        inducing inputs with an approximate ``grid``): the input
        columns, ``cluster``, ``output``, ``mean`` and ``std`` (original output units).
        Computed on first access.
    grid_choice_ : GridChoice
        The grid the mean processes live on: ``kind`` (``"exact"`` or
        ``"inducing"``), ``size`` (its number of points), ``n_distinct_inputs`` (``G``)
        and ``reason`` (the rule of ``grid="auto"`` with its numbers, or the ``grid``
        passed).
    model_ : FittedMagma
        The fitted model (numpy in, numpy out) around the JAX model pytree
        ``model_.model`` (:class:`mimosa_sklearn.core.model.Model`).
    input_scales_ : tuple of InputScale
        How each input column of ``X`` (in order) maps to the model's float input:
        ``kind`` (``"numeric"``, ``"datetime"`` or ``"timedelta"``), ``unit``,
        ``origin`` and ``tz``. Numbers are taken as they are. A ``datetime64`` column
        (naive or timezone-aware) becomes days since ``origin``, its earliest date at
        fit (in UTC for an aware column); a ``timedelta64`` column becomes days. Later
        calls convert their columns with this scale, and refuse another kind of
        values (dates for numbers, naive for aware dates) in a column. The
        hyperparameters, ``grid`` and inducing inputs of date columns are in days.
    n_features_in_ : int
        Number of columns of ``X`` seen during fit (task column included).
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names of ``X``; only when ``X`` was a DataFrame with string names.

    See Also
    --------
    sklearn.gaussian_process.GaussianProcessRegressor : single-task GP regression.
    mimosa_sklearn.metrics.make_forecast_scorer : scores held-out tasks by forecasting.

    Notes
    -----
    Predictions for a task come from the posterior given *that task's* training rows,
    so a task is a unit: hold tasks out with ``GroupKFold`` rather than rows with
    ``KFold``. ``n_jobs`` in ``GridSearchCV``/``cross_val_score`` may be up to the number
    of cores: each worker process computes on one thread, and the workers share the
    on-disk compile cache.

    A fit depends on the data only, not on the order of the rows or tasks nor on the
    task ids: before fitting, tasks and the rows inside each task are put in an order
    computed from their values (only tasks with identical rows tie), and the fitted
    attributes are mapped back to the caller's task ids.

    References
    ----------
    A. Leroy, P. Latouche, B. Guedj and S. Gey, "Cluster-Specific Predictions with
    Multi-Task Gaussian Processes", Journal of Machine Learning Research, 24(5), 2023.

    Examples
    --------
    >>> from mimosa_sklearn import MagmaClusterRegressor
    >>> from mimosa_sklearn.datasets import load_synth_dev
    >>> X, y = load_synth_dev()
    >>> model = MagmaClusterRegressor(n_clusters=3, random_state=0).fit(X, y)
    >>> X_new, y_new = load_synth_dev("test_observed")
    >>> model = model.condition(X_new, y_new)
    >>> X_future, _ = load_synth_dev("test_target")
    >>> mean, std = model.predict(X_future, return_std=True)
    """

    _parameter_constraints: dict = {
        "n_clusters": [Interval(numbers.Integral, 1, None, closed="left")],
        "task_col": [None, Hashable],
        "mean_kernel": [None, callable],
        "task_kernel": [None, callable],
        "prior_mean": [None, callable],
        "shared_task_hps": ["boolean"],
        "shared_cluster_hps": ["boolean"],
        "cluster_specific_task_hps": ["boolean"],
        "shared_output_hps": ["boolean"],
        "correlated_outputs": ["boolean"],
        "grid": [
            None,
            StrOptions({"auto"}),
            Interval(numbers.Integral, 2, None, closed="left"),
            "array-like",
        ],
        "normalize_y": ["boolean"],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "accelerate": ["boolean"],
        "n_init": [Interval(numbers.Integral, 1, None, closed="left")],
        "init": [StrOptions({"kmeans", "random"})],
        "jitter": [Interval(numbers.Real, 0, None, closed="left")],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
    }

    def __init__(
        self,
        n_clusters: int = 3,
        *,
        task_col: Hashable | None = "ID",
        mean_kernel: Any = None,
        task_kernel: Any = None,
        prior_mean: Any = None,
        shared_task_hps: bool = True,
        shared_cluster_hps: bool = True,
        cluster_specific_task_hps: bool = False,
        shared_output_hps: bool = True,
        correlated_outputs: bool = False,
        grid: Any = "auto",
        normalize_y: bool = True,
        max_iter: int = 100,
        tol: float = 1e-4,
        accelerate: bool = True,
        n_init: int = 1,
        init: str = "kmeans",
        jitter: float = 1e-6,
        random_state: int | np.random.RandomState | None = None,
        verbose: int = 0,
        warm_start: bool = False,
    ) -> None:
        self.n_clusters = n_clusters
        self.task_col = task_col
        self.mean_kernel = mean_kernel
        self.task_kernel = task_kernel
        self.prior_mean = prior_mean
        self.shared_task_hps = shared_task_hps
        self.shared_cluster_hps = shared_cluster_hps
        self.cluster_specific_task_hps = cluster_specific_task_hps
        self.shared_output_hps = shared_output_hps
        self.correlated_outputs = correlated_outputs
        self.grid = grid
        self.normalize_y = normalize_y
        self.max_iter = max_iter
        self.tol = tol
        self.accelerate = accelerate
        self.n_init = n_init
        self.init = init
        self.jitter = jitter
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start

    # ------------------------------------------------------------------ sklearn plumbing

    def __sklearn_tags__(self):
        """Estimator tags: multi-output regressor whose task ids may be strings."""
        tags = super().__sklearn_tags__()
        tags.input_tags.string = self.task_col is not None
        tags.input_tags.allow_nan = False
        tags.regressor_tags.poor_score = self.task_col is not None
        tags.target_tags.single_output = True
        tags.target_tags.multi_output = True
        return tags

    def __getstate__(self) -> dict[str, Any]:
        """State to save, as plain data (see :mod:`mimosa_sklearn._persistence`).

        Tables are left out: they are rebuilt on loading from the arrays they show.
        """
        state = super().__getstate__()
        return pack_state({k: v for k, v in state.items() if k not in _REBUILT_ON_LOAD})

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a saved estimator, refusing states of another persistence format or
        of an incompatible version."""
        super().__setstate__(unpack_state(state, type(self).__name__))
        if "model_" in self.__dict__:
            self.memberships_ = self._memberships_frame()
            self._mean_processes = None

    # ------------------------------------------------------------------ input validation

    def _task_col_label(self) -> str:
        """Name of the task column in outputs (tables, error messages)."""
        return self.task_col if isinstance(self.task_col, str) else "task"

    # ------------------------------------------------------------------ fit

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any) -> MagmaClusterRegressor:
        """Fit the model with variational EM.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            One row per observation: the task-id column ``task_col`` and the inputs
            (every other column, numeric and finite). In a DataFrame, an input column
            may hold dates (``datetime64``, naive or timezone-aware) or durations
            (``timedelta64``): it is read in days (see :attr:`input_scales_`).
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Outputs; NaN marks a missing output, but every task needs at least one
            observed value.

        Returns
        -------
        self : MagmaClusterRegressor
            The fitted estimator.

        Raises
        ------
        ValueError
            On invalid data (the message names the offending column, row or task), or
            when ``n_clusters`` exceeds the number of tasks.
        NotImplementedError
            For ``correlated_outputs=True`` with an approximate ``grid``.
        """
        # Validation records n_features_in_ (and feature names) on the estimator: a fit
        # that fails or is interrupted puts them back, and the fitted state below is
        # assigned at once, so the estimator is left as it was before the call.
        before = {k: vars(self)[k] for k in _VALIDATION_ATTRS if k in vars(self)}
        try:
            state = self._fitted_state(X, y)
        except BaseException:
            for key in _VALIDATION_ATTRS:
                vars(self).pop(key, None)
            vars(self).update(before)
            raise
        vars(self).update(state)
        if not self.converged_:
            warnings.warn(
                f"MagmaClust EM did not converge within max_iter={self.max_iter} "
                f"iterations (tol={self.tol}). Increase max_iter or tol.",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def _fitted_state(self, X: Any, y: Any) -> dict[str, Any]:
        """Every fitted attribute of a fit on ``(X, y)``, by name (nothing assigned)."""
        from ._processes import process_group

        group = process_group()
        error = None
        try:
            rows = validate_rows(self, X, y, reset=True)
            y2, is_1d, output_names = validate_y(self, y, rows.ids.shape[0])
            codes, task_ids = encode_task_ids(rows.ids)
            check_observed(y2, codes, task_ids, output_names)
            if group is not None and any(s.kind == "datetime" for s in rows.scales):
                raise NotImplementedError(
                    "Date input columns are read as days since their earliest date, "
                    "which differs between processes: convert them to numbers on a "
                    "common origin for a multi-process fit."
                )
        except Exception as exc:
            if group is None:
                raise
            error = exc
        if group is None:
            n_tasks = task_ids.shape[0]
            all_codes, n_all, inputs, y_all, offset = codes, n_tasks, rows.inputs, y2, 0
        else:
            # Every process fails together: the others would wait at the next collective.
            group.agree(error)
            group.check_same_columns(rows.inputs.shape[1], y2.shape[1])
            group.check_disjoint(task_ids)
            n_tasks = task_ids.shape[0]
            all_codes, n_all, inputs, y_all, offset = group.union(codes, n_tasks, rows.inputs, y2)
        if self.n_clusters > n_all:
            raise ValueError(
                f"n_clusters={self.n_clusters} is larger than the number of training tasks "
                f"({n_all}); set n_clusters to at most {n_all}."
            )

        # Tasks and rows in an order that depends only on the data, so that the fit
        # ignores the caller's row order and task ids (k-means, in particular, would
        # otherwise split look-alike tasks by their order). model_ rows follow that
        # order; td.task_index maps the first-seen task codes to them. A multi-process
        # fit lays out the union of the processes' rows: the same layout as one process
        # fitting them all.
        td = build_task_data(all_codes, n_all, inputs, y_all, canonical=True)
        model_rows = td.task_index[offset : offset + n_tasks]
        tasks = td.tasks
        previous = self._warm_model(rows, y2.shape[1])
        if previous is not None and group is not None:
            warnings.warn(
                "warm_start=True is not available in a multi-process fit: fitting from scratch.",
                UserWarning,
                stacklevel=4,
            )
            previous = None
        if previous is not None:  # the scale the previous hyperparameters live in
            mean, std = self._y_train_mean, self._y_train_std
        elif self.normalize_y:
            # Statistics over the canonical layout: the same rounding for any row order.
            values = np.where(tasks.observed, tasks.y, np.nan).reshape(-1, y2.shape[1])
            mean = np.nanmean(values, axis=0)
            std = np.nanstd(values, axis=0)
            std = np.where((std > 0) & np.isfinite(std), std, 1.0)
        else:
            mean, std = np.zeros(y2.shape[1]), np.ones(y2.shape[1])
        tasks = dataclasses.replace(tasks, y=np.where(tasks.observed, (tasks.y - mean) / std, 0.0))

        fit_module = _fit_module()
        seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        if group is not None:
            seed = group.broadcast_seed(seed)
        config = fit_module.FitConfig.from_params(self.get_params(deep=False), seed=seed)
        start = None
        if previous is not None:
            known = pd.Index(self.task_ids_).get_indexer(task_ids[td.task_order])
            rows_before = np.where(known >= 0, self._model_rows[np.maximum(known, 0)], -1)
            start = fit_module.warm_start(previous, tasks, rows_before)
        choice, inducing = resolve_grid(
            self.grid, inputs, td, joint=self.correlated_outputs and y2.shape[1] > 1, seed=seed
        )
        if self.verbose:
            print(f"MagmaClust grid: {choice.reason}", flush=True)
        # Correlated outputs stack (input, output) pairs: their grid has up to O G points.
        stacked = self.correlated_outputs and y2.shape[1] > 1
        check_fit_memory(
            n_clusters=config.n_clusters,
            n_outputs=1 if stacked else y2.shape[1],
            grid_size=choice.size * (y2.shape[1] if stacked else 1),
            n_tasks=n_all,
            n_rows=n_all * tasks.n_rows,
            approximate=inducing is not None,
        )
        with Progress(self.verbose, self.max_iter) as callback:
            try:
                if inducing is None:
                    model = fit_module.fit_magma(tasks, td.grid, config, callback, start=start)
                else:
                    model = fit_module.fit_magma(
                        dataclasses.replace(tasks, mappings=None),
                        inducing,
                        config,
                        callback,
                        approximate=True,
                        start=start,
                    )
            except fit_module.NumericalFailure as exc:
                exc.add_note(
                    "Hint: try a larger `jitter`, `normalize_y=True`, fewer clusters, or "
                    "rescaling the inputs (e.g. StandardScaler in a ColumnTransformer)."
                )
                raise

        tau = np.asarray(model.tau, dtype=np.float64)[model_rows]
        return {
            "model_": model,
            "grid_choice_": choice,
            "task_ids_": task_ids,
            "n_tasks_": n_tasks,
            # model_ row of each training task (task_ids_ order).
            "_model_rows": model_rows,
            "weights_": np.asarray(model.weights, dtype=np.float64).copy(),
            "memberships_": _memberships_table(tau, task_ids, self._task_col_label()),
            "labels_": tau.argmax(axis=1),
            "elbo_": np.asarray(model.elbo_history, dtype=np.float64).copy(),
            "n_iter_": int(model.n_iter),
            "converged_": bool(model.converged),
            "hyperparameters_": model.hyperparameters(task_order=model_rows),
            "_y_train_mean": mean,
            "_y_train_std": std,
            "_y_1d": is_1d,
            "_output_names": output_names,
            "_input_names": rows.input_names,
            "input_scales_": rows.scales,
            "_contexts": {},
            "_mean_processes": None,
            "_model_settings": {name: getattr(self, name) for name in _MODEL_SHAPING},
        }

    def _warm_model(self, rows: Rows, n_outputs: int) -> FittedMagma | None:
        """The fitted model a ``warm_start`` fit starts from, or None (a cold fit)."""
        if not self.warm_start or not hasattr(self, "model_"):
            return None
        before = self._model_settings
        changed = [
            name
            for name in _MODEL_SHAPING
            if before[name] is not getattr(self, name) and before[name] != getattr(self, name)
        ]
        kinds = [scale.kind for scale in rows.scales]
        if rows.input_names != self._input_names or kinds != [
            scale.kind for scale in getattr(self, "input_scales_", rows.scales)
        ]:
            changed.append("the input columns")
        if n_outputs != self._y_train_mean.shape[0]:
            changed.append("the number of outputs")
        if changed:
            warnings.warn(
                f"warm_start=True, but {', '.join(changed)} changed since the previous "
                "fit: fitting from scratch.",
                UserWarning,
                stacklevel=4,
            )
            return None
        return self.model_

    # ------------------------------------------------------------------ fitted views

    def _memberships_frame(self) -> pd.DataFrame:
        """``memberships_`` from the fitted model's memberships, rows in task id order."""
        tau = np.asarray(self.model_.tau, dtype=np.float64)[self._model_rows]
        return _memberships_table(tau, self.task_ids_, self._task_col_label())

    @property
    def mean_processes_(self) -> pd.DataFrame:
        """DataFrame: hyperposterior of the mean processes on the training grid.

        Columns: the input columns, ``cluster``, ``output``, ``mean`` and ``std`` (the
        hyperposterior standard deviation), in the original output units. One row per
        (cluster, output, grid point).
        """
        check_is_fitted(self, "model_")
        if self._mean_processes is None:
            grid = np.asarray(self.model_.grid, dtype=np.float64)
            mean, var = self.model_.mean_processes(grid)
            mean = np.asarray(mean) * self._y_train_std[:, None] + self._y_train_mean[:, None]
            std = np.sqrt(np.clip(np.asarray(var), 0.0, None)) * self._y_train_std[:, None]
            k, o, g = np.meshgrid(*(np.arange(s) for s in mean.shape), indexing="ij")
            table = {
                name: self.input_scales_[j].to_user(grid[g.ravel(), j])
                for j, name in enumerate(self._input_names)
            }
            table["cluster"] = k.ravel()
            table["output"] = np.asarray(self._output_names, dtype=object)[o.ravel()]
            table["mean"] = mean.ravel()
            table["std"] = std.ravel()
            self._mean_processes = pd.DataFrame(table)
        return self._mean_processes


def _memberships_table(tau: np.ndarray, task_ids: np.ndarray, name: str) -> pd.DataFrame:
    """Memberships (T, K) as a table indexed by task id, one column per cluster."""
    return pd.DataFrame(
        tau,
        index=pd.Index(task_ids, name=name),
        columns=pd.RangeIndex(tau.shape[1], name="cluster"),
    )


# Settings that shape the fitted model: a warm start needs them unchanged.
_MODEL_SHAPING = (
    "n_clusters",
    "mean_kernel",
    "task_kernel",
    "prior_mean",
    "shared_task_hps",
    "shared_cluster_hps",
    "cluster_specific_task_hps",
    "shared_output_hps",
    "correlated_outputs",
    "normalize_y",
)
# Attributes that scikit-learn's validate_data sets on the estimator during fit.
_VALIDATION_ATTRS = ("n_features_in_", "feature_names_in_")
