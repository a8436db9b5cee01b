"""Validation of the estimator's inputs: rows of ``X`` and outputs ``y``.

Used alike by the estimator, the forecast scorer (:mod:`.metrics`) and the plots
(:mod:`.plotting`), so that every entry point reads ``X`` the same way and names the bad
column, row or value in its errors. ``est`` is the estimator: its ``task_col`` says how
to split ``X``, and scikit-learn's ``validate_data`` records or checks the number and
names of the columns on it. Date and duration columns become numbers on the scale of
:mod:`._dates`, fitted when ``reset`` and read from ``est.input_scales_`` otherwise.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Hashable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_array, validate_data

from ._dates import InputScale, fit_scale, to_model

__all__ = ["Rows", "check_observed", "validate_rows", "validate_y"]


@dataclasses.dataclass(frozen=True)
class Rows:
    """Validated rows of ``X``: task ids, float inputs and how to name things in errors."""

    ids: np.ndarray  # (n,) task id of each row
    inputs: np.ndarray  # (n, I) float64, finite
    input_names: list[str]  # names of the input columns
    index: pd.Index | None  # row labels of a DataFrame X
    # Scale of each input column (dates -> days): fitted when reset, else the fit's.
    scales: tuple[InputScale, ...] = ()
    # The caller's input columns (an ExtensionArray or ndarray each), to give them back.
    raw_inputs: tuple[Any, ...] = ()


def validate_rows(est: Any, X: Any, y: Any = "no_validation", *, reset: bool) -> Rows:
    """Validate ``X`` (and the presence of ``y``) and split it into ids and inputs."""
    if isinstance(X, pd.DataFrame):
        return _rows_from_frame(est, X, y, reset=reset)
    return _rows_from_array(est, X, y, reset=reset)


def _rows_from_frame(est: Any, X: pd.DataFrame, y: Any, *, reset: bool) -> Rows:
    n_rows, n_cols = X.shape
    if n_cols == 0:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={X.shape}) while a minimum of 1 is required."
        )
    validate_data(est, X, y, reset=reset, skip_check_array=True)
    if n_rows == 0:
        raise ValueError(
            f"Found array with 0 sample(s) (shape={X.shape}) while a minimum of 1 is required."
        )
    columns = list(X.columns)
    if est.task_col is None:
        ids = np.zeros(n_rows, dtype=np.int64)
        input_pos, input_cols = list(range(n_cols)), columns
    else:
        matches = [j for j, c in enumerate(columns) if _same_label(c, est.task_col)]
        if not matches:
            raise ValueError(_missing_task_col_message(est, columns))
        if len(matches) > 1:
            raise ValueError(f"X has {len(matches)} columns named {est.task_col!r}")
        ids = X.iloc[:, matches[0]].to_numpy()
        input_pos = [j for j in range(n_cols) if j != matches[0]]
        input_cols = [columns[j] for j in input_pos]
        if not input_cols:
            raise ValueError(
                f"X has 1 feature(s) (shape={X.shape}): only the task column "
                f"{est.task_col!r}; at least one input column is required."
            )
    inputs = np.empty((n_rows, len(input_cols)), dtype=np.float64)
    scales = _scales(est, input_cols, reset=reset, frame=X, positions=input_pos)
    for j, (pos, col) in enumerate(zip(input_pos, input_cols, strict=True)):
        # Loop over input columns (not rows); positions survive duplicated names.
        column = X.iloc[:, pos]
        dated = to_model(column, scales[j], col)
        if dated is not None:
            inputs[:, j] = dated
            continue
        if not (pd.api.types.is_numeric_dtype(column.dtype) or column.dtype == object):
            raise TypeError(_non_numeric_message(est, col, f"dtype {column.dtype}"))
        try:
            inputs[:, j] = column.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise TypeError(_non_numeric_message(est, col, str(exc))) from exc
    _check_finite_inputs(inputs, [repr(c) for c in input_cols], X.index)
    raw = tuple(X.iloc[:, pos].array for pos in input_pos)
    names = [str(c) for c in input_cols]
    return Rows(_check_ids(ids, X.index), inputs, names, X.index, scales, raw)


def _scales(
    est: Any, cols: list[Hashable], *, reset: bool, frame: pd.DataFrame, positions: list[int]
) -> tuple[InputScale, ...]:
    """The input scales: fitted on ``frame`` when ``reset``, else those of the fit."""
    if reset:
        return tuple(fit_scale(frame.iloc[:, p], c) for p, c in zip(positions, cols, strict=True))
    fitted = getattr(est, "input_scales_", None)
    if fitted is None:  # a state saved before dates were read: numbers only
        return tuple(InputScale(str(c)) for c in cols)
    return tuple(fitted)


def _rows_from_array(est: Any, X: Any, y: Any, *, reset: bool) -> Rows:
    arr = check_array(
        X,
        dtype=None,
        accept_sparse=False,
        ensure_all_finite=False,
        input_name="X",
        estimator=est,
    )
    validate_data(est, arr, y, reset=reset, skip_check_array=True)
    _check_numeric_scales(est, reset=reset)
    n_rows, n_cols = arr.shape
    if est.task_col is None:
        ids = np.zeros(n_rows, dtype=np.int64)
        input_pos = np.arange(n_cols)
    else:
        if not isinstance(est.task_col, numbers.Integral) or isinstance(est.task_col, bool):
            raise ValueError(
                f"task_col={est.task_col!r} is a column name, but X is a "
                f"{type(X).__name__} without column names. Pass X as a pandas "
                "DataFrame, or set task_col to the integer position of the task "
                "column (or None for a single task)."
            )
        if not -n_cols <= est.task_col < n_cols:
            raise ValueError(f"task_col={est.task_col} is out of range for X with {n_cols} columns")
        pos = int(est.task_col) % n_cols
        ids = arr[:, pos]
        input_pos = np.delete(np.arange(n_cols), pos)
        if input_pos.size == 0:
            raise ValueError(
                f"X has 1 feature(s) (shape={arr.shape}): only the task column "
                f"task_col={est.task_col}; at least one input column is required."
            )
    raw = arr[:, input_pos]
    try:
        inputs = np.array(raw, dtype=np.float64)
    except (TypeError, ValueError):
        inputs = np.empty(raw.shape, dtype=np.float64)
        for j in range(raw.shape[1]):  # find the offending input column
            try:
                inputs[:, j] = raw[:, j].astype(np.float64)
            except (TypeError, ValueError) as exc:
                raise TypeError(_non_numeric_message(est, int(input_pos[j]), str(exc))) from exc
    _check_finite_inputs(inputs, [str(j) for j in input_pos], None)
    names = [f"x{j}" for j in input_pos]
    scales = tuple(InputScale(name) for name in names)
    return Rows(_check_ids(ids, None), inputs, names, None, scales, tuple(inputs.T))


def _check_numeric_scales(est: Any, *, reset: bool) -> None:
    """An array X holds numbers: refuse it where the fit read dates from a DataFrame."""
    if reset:
        return
    for scale in getattr(est, "input_scales_", None) or ():
        if scale.kind != "numeric":
            raise TypeError(
                f"Input column {scale.name!r} held {scale.kind} values at fit, but X is "
                "an array of numbers: pass X as a DataFrame with the same columns."
            )


def _non_numeric_message(est: Any, col: Hashable, detail: str) -> str:
    where = "" if est.task_col is None else f" other than the task column {est.task_col!r}"
    return (
        f"Input column {col!r} of X is not numeric ({detail}). Every column of X{where} "
        "is an input dimension and must be numeric: encode or drop it first."
    )


def _missing_task_col_message(est: Any, columns: list[Hashable]) -> str:
    msg = f"task_col={est.task_col!r} is not a column of X (columns: {columns[:10]!r})."
    prefixed = [c for c in columns if isinstance(c, str) and c.endswith(f"__{est.task_col}")]
    if prefixed:
        msg += (
            f" Column {prefixed[0]!r} looks like a ColumnTransformer output with "
            "prefixed names: build it with ColumnTransformer(..., "
            "verbose_feature_names_out=False) so that the task column keeps its name."
        )
    return msg


def _check_finite_inputs(inputs: np.ndarray, labels: list[str], index: pd.Index | None) -> None:
    """Reject NaN/inf inputs, naming the column (``labels``) and the row."""
    bad = ~np.isfinite(inputs)
    if not bad.any():
        return
    row, col = np.argwhere(bad)[0]
    kind = "NaN" if np.isnan(inputs[row, col]) else "infinity"
    label = "" if index is None else f" (index {index[row]!r})"
    raise ValueError(
        f"Input X contains {kind} in column {labels[col]} at row {row}{label}. Inputs "
        "must be finite: drop or impute these rows (missing *outputs* may be NaN)."
    )


def validate_y(est: Any, y: Any, n_rows: int) -> tuple[np.ndarray, bool, list[str]]:
    """Outputs as float64 (n, O) (NaN = missing), whether y was 1-D, output names."""
    names: list[str] | None = None
    if isinstance(y, pd.Series):
        names = [str(y.name) if y.name is not None else "y"]
    elif isinstance(y, pd.DataFrame):
        names = [str(c) for c in y.columns]
    _check_numeric_y(y)
    arr = check_array(
        y,
        ensure_2d=False,
        dtype=np.float64,
        ensure_all_finite=False,
        ensure_min_samples=0,
        input_name="y",
        estimator=est,
    )
    if arr.ndim not in (1, 2):
        raise ValueError(f"y must be 1-D or 2-D, got shape {arr.shape}")
    if arr.shape[0] != n_rows:
        raise ValueError(
            f"X has {n_rows} rows but y has {arr.shape[0]}: they must have the same number of rows."
        )
    is_1d = arr.ndim == 1
    y2 = np.array(arr, dtype=np.float64).reshape(n_rows, -1)  # a copy: never alias y
    if y2.shape[1] == 0:
        raise ValueError("y has no output column")
    if names is None or len(names) != y2.shape[1]:
        names = ["y"] if is_1d else [str(o) for o in range(y2.shape[1])]
    inf = np.isinf(y2)
    if inf.any():
        row, col = np.argwhere(inf)[0]
        where = "" if is_1d else f" (output {names[col]!r})"
        raise ValueError(f"Input y contains infinity at row {row}{where}")
    return y2, is_1d, names


def _check_numeric_y(y: Any) -> None:
    """Refuse text in ``y``, naming the first offending row and value.

    Strings are refused even when they spell numbers (``"1.5"``), as scikit-learn does:
    a column read as text usually hides a parsing problem (a decimal comma, a unit, a
    header row), and converting it silently would hide it too. NaN, None and pandas'
    missing values stay missing outputs.
    """
    values = y.to_numpy() if isinstance(y, pd.Series | pd.DataFrame) else y
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError):
        return  # ragged or odd input: check_array reports it
    if arr.dtype.kind not in "OUS" or arr.size == 0:
        return
    flat = arr.reshape(arr.shape[0], -1) if arr.ndim else arr.reshape(1, 1)
    for row, col in np.ndindex(flat.shape):
        value = flat[row, col]
        if isinstance(value, str | bytes):
            value = value.item() if isinstance(value, np.generic) else value  # np.str_
            spelled = _parses_as_number(value)
            hint = (
                " It spells a number: convert y to numbers first (e.g. pd.to_numeric)."
                if spelled
                else ""
            )
            where = f"row {row}" if flat.shape[1] == 1 else f"row {row}, output {col}"
            raise ValueError(
                f"y must be numeric; {where} holds the text {value!r}.{hint} Missing "
                "outputs are NaN."
            )


def _parses_as_number(value: str | bytes) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def check_observed(
    y2: np.ndarray, codes: np.ndarray, task_ids: np.ndarray, output_names: list[str]
) -> None:
    """Every task and every output needs at least one observed value."""
    observed = ~np.isnan(y2)
    if not observed.any():
        raise ValueError(
            "Input y contains NaN only: no output is observed. NaN marks a missing "
            "output; every task needs at least one observed value."
        )
    never = np.flatnonzero(~observed.any(axis=0))
    if never.size:
        raise ValueError(f"Output {output_names[never[0]]!r} of y is never observed (all NaN)")
    per_task = np.bincount(codes, weights=observed.any(axis=1), minlength=task_ids.size)
    empty = np.flatnonzero(per_task == 0)
    if empty.size:
        shown = ", ".join(repr(t) for t in task_ids[empty[:5]].tolist())
        more = f" and {empty.size - 5} more" if empty.size > 5 else ""
        raise ValueError(
            f"Task(s) {shown}{more} have no observed output (all y values are NaN): "
            "drop these tasks."
        )


def _same_label(column: Hashable, label: Hashable) -> bool:
    """Column label equality that never broadcasts (labels may be arrays or tuples)."""
    try:
        return bool(column == label) and type(column) is not bool
    except (TypeError, ValueError):
        return False


def _check_ids(ids: np.ndarray, index: pd.Index | None) -> np.ndarray:
    """Reject infinite numeric task ids (missing ids are caught by encode_task_ids)."""
    ids = np.asarray(ids)
    if ids.dtype.kind in "fc":
        bad = np.isinf(ids)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            label = "" if index is None else f" (index {index[row]!r})"
            raise ValueError(f"Input X contains infinity in the task column at row {row}{label}")
    return ids
