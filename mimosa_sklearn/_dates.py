"""Date and duration input columns: their numeric scale, recorded at fit.

The model computes on float inputs. A ``datetime64`` input column (naive or
timezone-aware) becomes *days since an origin*, the earliest date of that column at fit;
a ``timedelta64`` column becomes days (its own zero is the origin). The scale is fitted
once, by :func:`fit_scale`, and reused by every later call (:func:`to_model`), so that
``predict``, ``condition`` and ``sample_y`` read dates exactly as ``fit`` did.
:meth:`InputScale.to_user` turns model inputs back into the user's dtype (tables,
plots).

Timezone-aware columns are compared as instants: they are converted to UTC, and a
column in another timezone than at fit is accepted (the same instants give the same
numbers). Mixing naive and aware columns between fit and a later call, a column whose
values mix timezones, and dates where numbers were fitted (or the converse) are errors
that name the column.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from typing import Any, Literal

import numpy as np
import pandas as pd

__all__ = ["InputScale", "fit_scale", "to_model"]

_DAY = pd.Timedelta(1, "D")


@dataclasses.dataclass(frozen=True)
class InputScale:
    """How one input column of ``X`` maps to the model's float input.

    Parameters
    ----------
    name : str
        Name of the input column.
    kind : {"numeric", "datetime", "timedelta"}
        The column's kind at fit.
    unit : str
        Unit of the model's input: ``"days"`` for dates and durations, ``""`` for
        numbers (taken as they are).
    origin : str or None
        Datetime columns: the earliest date of the column at fit (ISO 8601, in UTC
        for timezone-aware columns), which becomes 0. None otherwise.
    tz : str or None
        Datetime columns: the timezone of the column at fit (None when naive). Dates
        given back (:meth:`to_user`) are in this timezone.
    """

    name: str
    kind: Literal["numeric", "datetime", "timedelta"] = "numeric"
    unit: str = ""
    origin: str | None = None
    tz: str | None = None

    def to_user(self, values: np.ndarray) -> Any:
        """Model inputs back in the column's kind at fit.

        Parameters
        ----------
        values : ndarray of shape (n,)
            Model inputs (floats).

        Returns
        -------
        ndarray or DatetimeIndex or TimedeltaIndex
            The floats unchanged for a numeric column; dates (in the fitted timezone)
            or durations otherwise.
        """
        values = np.asarray(values, dtype=np.float64)
        if self.kind == "numeric":
            return values
        delta = pd.to_timedelta(values, unit="D")
        if self.kind == "timedelta":
            return delta
        dates = pd.Timestamp(self.origin) + delta
        return dates if self.tz is None else dates.tz_localize("UTC").tz_convert(self.tz)


def column_kind(column: pd.Series) -> str:
    """Kind of an input column: ``"datetime"``, ``"timedelta"`` or ``"numeric"``.

    Object columns of dates (Python ``datetime`` or ``date`` objects, Timestamps) are
    dates too.
    """
    if isinstance(column.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(
        column.dtype
    ):
        return "datetime"
    if pd.api.types.is_timedelta64_dtype(column.dtype):
        return "timedelta"
    if column.dtype == object and pd.api.types.infer_dtype(column, skipna=True) in (
        "datetime",
        "datetime64",
        "date",
    ):
        return "datetime"
    return "numeric"


def _as_datetime(column: pd.Series, name: Hashable) -> pd.Series:
    """A datetime column as ``datetime64`` (object columns of dates are converted)."""
    if column.dtype != object:
        return column
    try:
        return pd.to_datetime(column)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"Input column {name!r} of X holds dates in several timezones, or naive and "
            f"timezone-aware dates together ({exc}). Convert it to one timezone first, "
            f"e.g. pd.to_datetime(X[{name!r}], utc=True)."
        ) from exc


def _naive_utc(column: pd.Series) -> pd.Series:
    """Dates as naive values: UTC instants for an aware column, wall time otherwise."""
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        return column.dt.tz_convert("UTC").dt.tz_localize(None)
    return column


def _tz_name(column: pd.Series) -> str | None:
    return str(column.dt.tz) if isinstance(column.dtype, pd.DatetimeTZDtype) else None


def fit_scale(column: pd.Series, name: Hashable) -> InputScale:
    """The scale of an input column at fit (the origin is its earliest date)."""
    kind = column_kind(column)
    if kind == "numeric":
        return InputScale(str(name))
    if kind == "timedelta":
        return InputScale(str(name), "timedelta", "days")
    column = _as_datetime(column, name)
    earliest = _naive_utc(column).min()
    origin = pd.Timestamp(0) if pd.isna(earliest) else earliest  # all NaT: refused later
    return InputScale(str(name), "datetime", "days", origin.isoformat(), _tz_name(column))


def to_model(column: pd.Series, scale: InputScale, name: Hashable) -> np.ndarray | None:
    """A date or duration column as model floats (NaT becomes NaN).

    Returns None for a numeric column of a numeric scale (the caller converts it).

    Raises
    ------
    TypeError
        If the column's kind, or its being timezone-aware, differs from the fit.
    ValueError
        If an object column mixes timezones.
    """
    kind = column_kind(column)
    if kind != scale.kind:
        raise TypeError(
            f"Input column {name!r} of X holds {_describe(kind, column)}, but it held "
            f"{_describe_scale(scale)} at fit: give it the same kind of values."
        )
    if kind == "numeric":
        return None
    if kind == "timedelta":
        return (column / _DAY).to_numpy(dtype=np.float64, na_value=np.nan)
    column = _as_datetime(column, name)
    tz = _tz_name(column)
    if (tz is None) != (scale.tz is None):
        now = "naive dates" if tz is None else f"dates in timezone {tz}"
        then = "naive dates" if scale.tz is None else f"dates in timezone {scale.tz}"
        raise TypeError(
            f"Input column {name!r} of X holds {now}, but it held {then} at fit: "
            "localise or drop the timezone as at fit (Series.dt.tz_localize)."
        )
    offset = _naive_utc(column) - pd.Timestamp(scale.origin)
    return (offset / _DAY).to_numpy(dtype=np.float64, na_value=np.nan)


def _describe(kind: str, column: pd.Series) -> str:
    if kind == "numeric":
        return f"numbers (dtype {column.dtype})"
    return f"{'dates' if kind == 'datetime' else 'durations'} (dtype {column.dtype})"


def _describe_scale(scale: InputScale) -> str:
    if scale.kind == "numeric":
        return "numbers"
    if scale.kind == "timedelta":
        return "durations (timedelta64)"
    return "dates (datetime64)" + ("" if scale.tz is None else f" in timezone {scale.tz}")
