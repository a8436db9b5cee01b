"""Conditioning and prediction: the estimator's surface once it is fitted.

:class:`ForecastMixin` holds the methods of
:class:`~mimosa_sklearn._estimator.MagmaClusterRegressor` that use a fitted model:
``condition``, ``predict``, ``forecast``, ``predict_proba``, ``score``, ``sample_y`` and
``predict_frame``. They validate rows (:mod:`._validation`), lay them out as tasks
(:mod:`._data`), ask the fitted model (:mod:`._fitted`) and put the results back in the
caller's rows and units. No model math here.
"""

from __future__ import annotations

import dataclasses
import numbers
import warnings
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import pandas as pd
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ._data import build_task_data, encode_task_ids
from ._outputs import FullCov
from ._validation import Rows, validate_rows, validate_y
from .metrics import masked_r2_score

if TYPE_CHECKING:
    from ._fitted import Context

__all__ = ["ForecastMixin", "UnseenTaskWarning"]


class UnseenTaskWarning(UserWarning):
    """Rows of tasks that were neither fitted nor conditioned were predicted.

    Their forecasts are the cluster mixture, with no data of the task: plausible
    numbers, but rarely what was meant when the task id is a typo or has another type
    (``"7"`` for ``7``). Silence it with ``warnings.filterwarnings("ignore",
    category=mimosa_sklearn.UnseenTaskWarning)``.
    """


def _id_key(value: Any) -> str:
    """A task id as text, integral floats without their ``.0`` (``7.0`` -> ``"7"``)."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


class ForecastMixin:
    """Methods of :class:`~mimosa_sklearn._estimator.MagmaClusterRegressor` on a fitted
    model (attributes set by its ``fit``)."""

    # ------------------------------------------------------------------ conditioning

    def condition(self, X: Any, y: Any) -> Self:
        """Add new tasks from a few observed points, without refitting.

        Computes the cluster memberships of each new task (and its own hyperparameters
        when task hyperparameters are not shared) so that :meth:`predict`,
        :meth:`predict_proba` and :meth:`sample_y` forecast it from these points.
        Conditioning a task again replaces its previous observations.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Observed rows of the new tasks, with the same columns as in :meth:`fit`.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Their outputs (NaN = missing; each task needs one observed value).

        Returns
        -------
        self : MagmaClusterRegressor
            The estimator, now able to forecast these tasks.

        Raises
        ------
        ValueError
            If a task id was seen during fit (training tasks are already conditioned on
            their data: give the new task a new id), or on invalid data.
        """
        check_is_fitted(self, "model_")
        contexts = self._condition_contexts(X, y, allow_training_ids=False, allow_empty=False)
        self._contexts.update(contexts)
        return self

    def _condition_contexts(
        self, X: Any, y: Any, *, allow_training_ids: bool, allow_empty: bool
    ) -> dict[Hashable, Context]:
        """Per-task contexts of the tasks in ``X`` (nothing is stored)."""
        rows = validate_rows(self, X, y, reset=False)
        y2, _, _ = validate_y(self, y, rows.ids.shape[0])
        if y2.shape[1] != self._y_train_mean.shape[0]:
            raise ValueError(
                f"y has {y2.shape[1]} output(s) but the model was fitted with "
                f"{self._y_train_mean.shape[0]}"
            )
        codes, ids = encode_task_ids(rows.ids)
        if not allow_training_ids:
            seen = pd.Index(self.task_ids_).get_indexer(ids) >= 0
            if seen.any():
                shown = ", ".join(repr(t) for t in ids[seen][:5].tolist())
                raise ValueError(
                    f"Task(s) {shown} were seen during fit; condition() adds new tasks. "
                    "Give the new observations a task id not used in training."
                )
        observed = np.bincount(codes, weights=(~np.isnan(y2)).any(axis=1), minlength=ids.size)
        if not allow_empty and (observed == 0).any():
            shown = ", ".join(repr(t) for t in ids[observed == 0][:5].tolist())
            raise ValueError(f"Task(s) {shown} have no observed output (all y values are NaN)")
        keep = observed > 0
        if not keep.any():
            return {}
        if not keep.all():
            rows_kept = keep[codes]
            remap = np.cumsum(keep) - 1
            codes, ids = remap[codes[rows_kept]], ids[keep]
            rows = dataclasses.replace(rows, inputs=rows.inputs[rows_kept])
            y2 = y2[rows_kept]
        y_norm = (y2 - self._y_train_mean) / self._y_train_std
        # Canonical layout: each task's context (hence its memberships and forecasts)
        # does not depend on the order of its rows or of the other new tasks.
        td = build_task_data(codes, ids.size, rows.inputs, y_norm, canonical=True, with_grid=False)
        context = self.model_.condition(td.tasks)
        return {
            task: context.task(int(i)) for task, i in zip(ids.tolist(), td.task_index, strict=True)
        }

    # ------------------------------------------------------------------ prediction

    def _warn_unseen(self, rows: Rows) -> None:
        """Warn (:class:`UnseenTaskWarning`) when rows belong to tasks that were neither
        fitted nor conditioned, naming a few and any that match a known id as text."""
        _, ids = encode_task_ids(rows.ids)
        train_idx, ctx_idx = self._task_sources(ids, self._contexts)
        unseen = ids[(train_idx < 0) & (ctx_idx < 0)]
        if not unseen.size:
            return
        shown = ", ".join(repr(t) for t in unseen[:5].tolist())
        more = f" and {unseen.size - 5} more" if unseen.size > 5 else ""
        msg = (
            f"{unseen.size} task(s) in X were neither fitted nor conditioned ({shown}{more}): "
            "their predictions are the cluster mixture, without any data of these tasks. "
            "Add tasks with condition(), or silence this with warnings.filterwarnings("
            "'ignore', category=mimosa_sklearn.UnseenTaskWarning)."
        )
        known = {_id_key(t): t for t in [*self.task_ids_.tolist(), *self._contexts]}
        cast = [(t, known[_id_key(t)]) for t in unseen.tolist() if _id_key(t) in known]
        if cast:
            t, k = cast[0]
            msg += (
                f" {len(cast)} of them equal a known task id once converted to text "
                f"(e.g. {t!r} and {k!r}): ids are compared with their type; convert the "
                "task column to the type used in fit."
            )
        warnings.warn(msg, UnseenTaskWarning, stacklevel=3)

    def _task_sources(
        self, ids: np.ndarray, contexts: dict[Hashable, Context]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Index of each task among training tasks and among ``contexts`` (-1: absent).

        A task present in ``contexts`` is predicted from its context even if it was also
        a training task (only possible through the private forecasting path).
        """
        ctx_idx = pd.Index(list(contexts), dtype=object).get_indexer(ids)
        train_idx = pd.Index(self.task_ids_).get_indexer(ids)
        train_idx[ctx_idx >= 0] = -1
        return train_idx, ctx_idx

    def _predict_tasks(
        self,
        rows: Rows,
        contexts: dict[Hashable, Context],
        *,
        full_cov: FullCov,
        include_noise: bool,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
        """Model predictions per task (model units): mean, var or cov, tau, layout.

        ``full_cov="joint"`` (correlated outputs only) gives covariances across rows and
        outputs, ``(T, N, O, N, O)``.
        """
        codes, ids = encode_task_ids(rows.ids)
        # Rows in canonical order inside each task (predictions of a row then do not
        # depend on the order of the other rows); everything below is per padded task.
        td = build_task_data(codes, ids.size, rows.inputs, canonical=True, with_grid=False)
        ids = ids[td.task_order]
        train_idx, ctx_idx = self._task_sources(ids, contexts)
        train_rows = np.where(train_idx >= 0, self._model_rows[train_idx], -1)
        pairs = zip(ids.tolist(), ctx_idx.tolist(), strict=True)
        known = [contexts[t] if c >= 0 else None for t, c in pairs]
        mean, spread, tau = self.model_.predict_tasks(
            td.tasks, train_rows, known, full_cov=full_cov, include_noise=include_noise
        )
        return mean, spread, tau, td

    def predict(
        self,
        X: Any,
        return_std: bool = False,
        return_cov: bool = False,
        include_noise: bool = True,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Posterior predictive mean (and std or covariance) of every row.

        Rows of a training task use that task's posterior; rows of tasks added with
        :meth:`condition` use their observed points; rows of tasks never seen get the
        cluster-mixture prediction (mixture weights as memberships). Rows of one task
        are predicted jointly; results come back in the caller's row order.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Rows to predict, with the columns used in :meth:`fit`.
        return_std : bool, default=False
            Also return the predictive standard deviation.
        return_cov : bool, default=False
            Also return the predictive covariance between rows. Covariances between rows
            of *different* tasks are not computed and are returned as 0.
        include_noise : bool, default=True
            Predict noisy observations (True) or the latent curve (False).

        Returns
        -------
        y_mean : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            Predictive mean; 1-D when ``y`` was 1-D at fit. With several outputs every
            row gets every output, whether or not it was observed.
        y_std : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            Only with ``return_std``.
        y_cov : ndarray of shape (n_samples, n_samples) or (n_samples, n_samples, n_outputs)
            Only with ``return_cov``; block-diagonal across tasks. ``y_cov[i, j, o]`` is
            the covariance of output ``o`` between rows ``i`` and ``j``. With
            ``correlated_outputs=True`` the covariances *between* outputs are not
            returned (:meth:`sample_y` draws the outputs jointly).
        """
        check_is_fitted(self, "model_")
        if return_std and return_cov:
            raise RuntimeError("At most one of return_std or return_cov can be requested.")
        rows = validate_rows(self, X, reset=False)
        self._warn_unseen(rows)
        return self._predict_rows(
            rows,
            self._contexts,
            return_std=return_std,
            return_cov=return_cov,
            include_noise=include_noise,
        )

    def _predict_rows(
        self,
        rows: Rows,
        contexts: dict[Hashable, Context],
        *,
        return_std: bool,
        return_cov: bool,
        include_noise: bool,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        mean, spread, _, td = self._predict_tasks(
            rows, contexts, full_cov=return_cov, include_noise=include_noise
        )
        mu, sd = self._y_train_mean, self._y_train_std
        y_mean = self._shape_out(td.to_rows(mean) * sd + mu)
        if return_cov:
            codes, pos = td.task_codes, td.row_pos
            i, j = np.nonzero(codes[:, None] == codes[None, :])
            cov = np.zeros((codes.size, codes.size, sd.size))
            cov[i, j] = spread[codes[i], :, pos[i], pos[j]] * sd**2
            return y_mean, (cov[..., 0] if self._y_1d else cov)
        if return_std:
            var = np.clip(td.to_rows(spread), 0.0, None)
            return y_mean, self._shape_out(np.sqrt(var) * sd)
        return y_mean

    def _joint_outputs(self) -> bool:
        """Whether the fitted model couples its outputs (correlated, several outputs)."""
        # Read from the fitted model, not the parameter: set_params may change it later.
        return getattr(self.model_, "n_joint_outputs", 1) > 1

    def _shape_out(self, values: np.ndarray) -> np.ndarray:
        """(n, O) -> (n,) when ``y`` was 1-D at fit."""
        return values[:, 0] if self._y_1d else values

    def forecast(self, X_obs: Any, y_obs: Any, X_new: Any) -> tuple[np.ndarray, np.ndarray]:
        """Forecast tasks from a few observed points, storing nothing.

        As :meth:`condition` on ``(X_obs, y_obs)`` then :meth:`predict` of ``X_new``
        with ``return_std=True``, except that the estimator is left unchanged and the
        task ids may be training ids (their tasks are then treated as new, known only
        through ``X_obs``). Tasks of ``X_new`` without observed points get the
        cluster-mixture prediction. :func:`mimosa_sklearn.metrics.make_forecast_scorer`
        scores held-out tasks with it.

        Parameters
        ----------
        X_obs : DataFrame or array-like of shape (n_obs, n_features)
            Observed rows (may be empty).
        y_obs : array-like of shape (n_obs,) or (n_obs, n_outputs)
            Their outputs (NaN = missing).
        X_new : DataFrame or array-like of shape (n_samples, n_features)
            Rows to forecast.

        Returns
        -------
        y_mean : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            Predictive mean.
        y_std : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            Predictive standard deviation (noise included).
        """
        check_is_fitted(self, "model_")
        contexts: dict[Hashable, Context] = {}
        if len(X_obs):
            contexts = self._condition_contexts(
                X_obs, y_obs, allow_training_ids=True, allow_empty=True
            )
        rows = validate_rows(self, X_new, reset=False)
        return self._predict_rows(
            rows, contexts, return_std=True, return_cov=False, include_noise=True
        )

    def _row_memberships(self, rows: Rows) -> np.ndarray:
        """(n, K) memberships of each row's task, without calling the model."""
        codes, ids = encode_task_ids(rows.ids)
        train_idx, ctx_idx = self._task_sources(ids, self._contexts)
        tau = np.broadcast_to(self.weights_, (ids.size, self.weights_.size)).copy()
        known = train_idx >= 0
        tau[known] = self.memberships_.to_numpy()[train_idx[known]]
        cond = (train_idx < 0) & (ctx_idx >= 0)
        if cond.any():
            tau[cond] = np.concatenate([self._contexts[t].tau for t in ids[cond].tolist()])
        return tau[codes]

    def predict_proba(self, X: Any) -> np.ndarray:
        """Cluster memberships of each row's task.

        Training tasks get their fitted memberships, conditioned tasks the memberships
        computed by :meth:`condition`, and unseen tasks the mixture weights. This is a
        clustering output of a regressor: sklearn scorers that expect a classifier's
        ``predict_proba`` will not (and must not) use it.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Rows, with the columns used in :meth:`fit`.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_clusters)
            Memberships; each row sums to 1. One row per row of ``X`` whatever the
            number of outputs: the outputs of a task share its cluster.
        """
        check_is_fitted(self, "model_")
        rows = validate_rows(self, X, reset=False)
        self._warn_unseen(rows)
        return self._row_memberships(rows)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Coefficient of determination R² of :meth:`predict`, ignoring NaN targets.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Test rows.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            True outputs; NaN entries are left out.
        sample_weight : array-like of shape (n_samples,), default=None
            Row weights.

        Returns
        -------
        score : float
            R² (averaged uniformly over outputs).
        """
        y_pred = self.predict(X)
        y_true, _, _ = validate_y(self, y, y_pred.shape[0])
        return masked_r2_score(y_true, y_pred.reshape(y_true.shape), sample_weight)

    def sample_y(
        self,
        X: Any,
        n_samples: int = 1,
        random_state: int | np.random.RandomState | None = None,
        *,
        include_noise: bool = True,
    ) -> np.ndarray:
        """Draw joint samples of the predictive distribution at ``X``.

        Rows of one task are sampled jointly (Gaussian with the predictive mean and
        covariance); different tasks are independent.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples_X, n_features)
            Rows to sample at.
        n_samples : int, default=1
            Number of samples per row.
        random_state : int, RandomState instance or None, default=None
            Seed of the draws; an int gives reproducible samples.
        include_noise : bool, default=True
            Sample noisy observations (True) or the latent curve (False).

        Returns
        -------
        y_samples : ndarray of shape (n_samples_X, n_samples) or (n_samples_X, n_outputs, n_samples)
            Samples; 2-D when ``y`` was 1-D at fit. With ``correlated_outputs=True`` the
            outputs of a task are drawn jointly, otherwise independently.
        """
        check_is_fitted(self, "model_")
        if not isinstance(n_samples, numbers.Integral) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
        rows = validate_rows(self, X, reset=False)
        self._warn_unseen(rows)
        # Correlated outputs are drawn jointly (covariance across rows and outputs).
        joint = "joint" if self._joint_outputs() else True
        mean, cov, _, td = self._predict_tasks(
            rows, self._contexts, full_cov=joint, include_noise=include_noise
        )
        seed = int(check_random_state(random_state).randint(2**31 - 1))
        draws = np.asarray(self.model_.sample(mean, cov, int(n_samples), seed))
        draws = td.to_rows(draws)  # (n, O, S)
        draws = draws * self._y_train_std[:, None] + self._y_train_mean[:, None]
        return draws[:, 0, :] if self._y_1d else draws

    def predict_frame(
        self, X: Any, *, include_noise: bool = True, level: float = 0.95
    ) -> pd.DataFrame:
        """Predictions as a table, convenient in notebooks and for plotting.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Rows to predict.
        include_noise : bool, default=True
            Predict noisy observations (True) or the latent curve (False).
        level : float, default=0.95
            Probability of the central interval ``[lower, upper]``.

        Returns
        -------
        frame : DataFrame
            The task column (unless ``task_col=None``), the input columns (as given in
            ``X``, dates included), then ``mean``,
            ``std``, ``lower``, ``upper`` (one set per output, suffixed ``_<name>``, when
            ``y`` had several columns) and ``cluster``, the most likely cluster of the
            row's task. Indexed like ``X`` when it is a DataFrame.
        """
        from scipy.stats import norm

        check_is_fitted(self, "model_")
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level}")
        rows = validate_rows(self, X, reset=False)
        self._warn_unseen(rows)
        mean, var, tau, td = self._predict_tasks(
            rows, self._contexts, full_cov=False, include_noise=include_noise
        )
        sd = self._y_train_std
        y_mean = td.to_rows(mean) * sd + self._y_train_mean
        y_std = np.sqrt(np.clip(td.to_rows(var), 0.0, None)) * sd
        z = float(norm.ppf(0.5 + level / 2))
        table: dict[str, Any] = {}
        if self.task_col is not None:
            table[self._task_col_label()] = rows.ids
        for j, (name, scale) in enumerate(zip(rows.input_names, rows.scales, strict=True)):
            # Dates and durations as given, in the caller's dtype.
            table[name] = rows.inputs[:, j] if scale.kind == "numeric" else rows.raw_inputs[j]
        for o, name in enumerate(self._output_names):
            suffix = "" if self._y_1d or len(self._output_names) == 1 else f"_{name}"
            table[f"mean{suffix}"] = y_mean[:, o]
            table[f"std{suffix}"] = y_std[:, o]
            table[f"lower{suffix}"] = y_mean[:, o] - z * y_std[:, o]
            table[f"upper{suffix}"] = y_mean[:, o] + z * y_std[:, o]
        table["cluster"] = tau.argmax(axis=1)[td.task_codes]
        return pd.DataFrame(table, index=rows.index)


# ---------------------------------------------------------------------- helpers
