"""Validation of ``X`` rows and outputs ``y`` (``mimosa_sklearn._validation``).

Proven on small hand-made inputs: :func:`validate_rows` splits a DataFrame or an array
into task ids, float64 inputs and input names (task column anywhere, by name or
position, or none), records then checks the columns on the estimator, and names the
non-numeric column, the non-finite input (column, row, index label) and an infinite
task id; :func:`validate_y` returns a float64 copy that keeps NaN (missing outputs),
with output names, and rejects infinity naming the row and output;
:func:`check_observed` names tasks and outputs without any observed value. The ``est``
argument is an unfitted :class:`MagmaClusterRegressor` (only its ``task_col`` and the
column checks of scikit-learn's ``validate_data`` are used).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mimosa_sklearn import MagmaClusterRegressor
from mimosa_sklearn._validation import check_observed, validate_rows, validate_y


def _frame() -> pd.DataFrame:
    """Task column between two inputs (one of them integer), string row labels."""
    return pd.DataFrame(
        {"t": [0.5, 1.0, 2.0, 3.5], "ID": ["a", "b", "a", "c"], "u": [1, 2, 3, 4]},
        index=["r0", "r1", "r2", "r3"],
    )


# ---------------------------------------------------------------------- rows of X


def test_validate_rows_from_a_frame():
    est = MagmaClusterRegressor()
    X = _frame()
    rows = validate_rows(est, X, reset=True)
    np.testing.assert_array_equal(rows.ids, ["a", "b", "a", "c"])
    assert rows.inputs.dtype == np.float64
    np.testing.assert_array_equal(rows.inputs, [[0.5, 1], [1.0, 2], [2.0, 3], [3.5, 4]])
    assert rows.input_names == ["t", "u"]
    assert rows.index.equals(X.index)
    # reset=True records the columns on the estimator...
    assert est.n_features_in_ == 3 and list(est.feature_names_in_) == ["t", "ID", "u"]
    # ...and reset=False checks them.
    again = validate_rows(est, X, reset=False)
    np.testing.assert_array_equal(again.inputs, rows.inputs)
    with pytest.raises(ValueError, match="feature names should match"):
        validate_rows(est, X.rename(columns={"u": "v"}), reset=False)


def test_validate_rows_from_a_frame_without_task_column():
    X = _frame().drop(columns="ID")
    rows = validate_rows(MagmaClusterRegressor(task_col=None), X, reset=True)
    np.testing.assert_array_equal(rows.ids, np.zeros(4))  # one task
    np.testing.assert_array_equal(rows.inputs, X.to_numpy(dtype=float))
    assert rows.input_names == ["t", "u"]


def test_validate_rows_from_an_array():
    X = np.array([[0.5, 7.0, 1.0], [1.5, 8.0, 2.0], [2.5, 7.0, 3.0]])
    est = MagmaClusterRegressor(task_col=1)
    rows = validate_rows(est, X, reset=True)
    np.testing.assert_array_equal(rows.ids, [7.0, 8.0, 7.0])
    np.testing.assert_array_equal(rows.inputs, X[:, [0, 2]])
    assert rows.input_names == ["x0", "x2"] and rows.index is None
    assert est.n_features_in_ == 3
    with pytest.raises(ValueError, match="X has 2 features, but .* is expecting 3"):
        validate_rows(est, X[:, :2], reset=False)
    last = validate_rows(MagmaClusterRegressor(task_col=-1), X, reset=True)
    np.testing.assert_array_equal(last.ids, X[:, 2])
    np.testing.assert_array_equal(last.inputs, X[:, :2])
    assert last.input_names == ["x0", "x1"]
    alone = validate_rows(MagmaClusterRegressor(task_col=None), X, reset=True)
    np.testing.assert_array_equal(alone.ids, np.zeros(3))
    np.testing.assert_array_equal(alone.inputs, X)
    with pytest.raises(ValueError, match="task_col='ID' is a column name"):
        validate_rows(MagmaClusterRegressor(), X, reset=True)
    with pytest.raises(ValueError, match="task_col=3 is out of range"):
        validate_rows(MagmaClusterRegressor(task_col=3), X, reset=True)


def test_task_column_errors_in_a_frame():
    X = _frame()
    with pytest.raises(ValueError, match=r"task_col='task' is not a column of X \(columns: "):
        validate_rows(MagmaClusterRegressor(task_col="task"), X, reset=True)
    twice = pd.concat([X, X[["ID"]]], axis=1)
    # scikit-learn's column check refuses the duplicate first.
    with pytest.raises(ValueError, match="'ID' 2 times"):
        validate_rows(MagmaClusterRegressor(), twice, reset=True)
    with pytest.raises(ValueError, match="only the task column"):
        validate_rows(MagmaClusterRegressor(), X[["ID"]], reset=True)


def test_non_numeric_column_is_named():
    X = _frame().assign(site=["x", "y", "z", "x"])
    with pytest.raises(TypeError) as info:
        validate_rows(MagmaClusterRegressor(), X, reset=True)
    message = str(info.value)
    assert message.startswith("Input column 'site' of X is not numeric")
    assert "other than the task column 'ID'" in message
    without = X.drop(columns="ID")
    with pytest.raises(TypeError, match="'site'") as info:
        validate_rows(MagmaClusterRegressor(task_col=None), without, reset=True)
    assert "task column" not in str(info.value)
    # An array: the column's position in X (the task column is position 0).
    A = np.array([["a", 1.0, "x"], ["a", 2.0, "y"]], dtype=object)
    with pytest.raises(TypeError, match=r"^Input column 2 of X is not numeric"):
        validate_rows(MagmaClusterRegressor(task_col=0), A, reset=True)


def test_non_finite_input_is_named_by_column_row_and_index():
    X = _frame()
    X.loc["r3", "u"] = np.nan
    X.loc["r1", "t"] = np.inf  # the first bad row is the one reported
    with pytest.raises(ValueError) as info:
        validate_rows(MagmaClusterRegressor(), X, reset=True)
    assert str(info.value).startswith(
        "Input X contains infinity in column 't' at row 1 (index 'r1')."
    )
    X.loc["r1", "t"] = 1.0
    with pytest.raises(ValueError, match=r"NaN in column 'u' at row 3 \(index 'r3'\)\."):
        validate_rows(MagmaClusterRegressor(), X, reset=True)
    A = np.array([[0.0, 1.0, 2.0], [1.0, 1.0, np.nan]])
    with pytest.raises(ValueError, match=r"NaN in column 2 at row 1\. Inputs"):
        validate_rows(MagmaClusterRegressor(task_col=1), A, reset=True)
    ids = _frame().assign(ID=[1.0, np.inf, 1.0, 2.0])
    with pytest.raises(ValueError, match=r"infinity in the task column at row 1 \(index 'r1'\)"):
        validate_rows(MagmaClusterRegressor(), ids, reset=True)


# ---------------------------------------------------------------------- outputs y


def test_validate_y_keeps_nan_and_names_outputs():
    est = MagmaClusterRegressor()
    y = np.array([1.0, np.nan, 2.0])
    y2, is_1d, names = validate_y(est, y, 3)
    assert y2.shape == (3, 1) and y2.dtype == np.float64 and is_1d and names == ["y"]
    np.testing.assert_array_equal(y2[:, 0], y)  # NaN included
    y2[0, 0] = 99.0
    assert y[0] == 1.0  # a copy, never a view of the caller's y
    _, _, names = validate_y(est, pd.Series([1, 2, 3], name="out"), 3)
    assert names == ["out"]
    _, _, names = validate_y(est, pd.Series([1, 2, 3]), 3)
    assert names == ["y"]
    frame = pd.DataFrame({"a": [1, 2, 3], "b": [np.nan, 1.0, 2.0]})
    y2, is_1d, names = validate_y(est, frame, 3)
    assert not is_1d and names == ["a", "b"] and y2.dtype == np.float64
    np.testing.assert_array_equal(y2, frame.to_numpy(dtype=float))
    _, is_1d, names = validate_y(est, np.ones((3, 2)), 3)
    assert not is_1d and names == ["0", "1"]


def test_validate_y_rejects_infinity_and_bad_shapes():
    est = MagmaClusterRegressor()
    with pytest.raises(ValueError, match=r"^Input y contains infinity at row 1$"):
        validate_y(est, np.array([1.0, -np.inf, np.nan]), 3)
    frame = pd.DataFrame({"a": [1.0, 2.0, np.inf], "b": [np.nan, np.inf, 2.0]})
    with pytest.raises(ValueError, match=r"^Input y contains infinity at row 1 \(output 'b'\)$"):
        validate_y(est, frame, 3)
    with pytest.raises(ValueError, match="X has 3 rows but y has 2"):
        validate_y(est, np.ones(2), 3)
    with pytest.raises(ValueError, match=r"0 feature\(s\) \(shape=\(3, 0\)\)"):
        validate_y(est, np.ones((3, 0)), 3)


def test_validate_y_refuses_text_naming_row_and_value():
    est = MagmaClusterRegressor()
    with pytest.raises(ValueError, match=r"^y must be numeric; row 2 holds the text 'abc'\."):
        validate_y(est, pd.Series([1.0, 2.0, "abc"], dtype=object), 3)
    # A number spelled as text is refused too, with the way out.
    with pytest.raises(ValueError, match=r"row 0 holds the text '1.5'\. It spells a number"):
        validate_y(est, np.array(["1.5", "2.0"]), 2)
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, "x"]})
    with pytest.raises(ValueError, match=r"row 1, output 1 holds the text 'x'"):
        validate_y(est, frame, 2)
    # Missing values of an object column stay missing outputs.
    y2, _, _ = validate_y(est, pd.Series([1.0, None, np.nan], dtype=object), 3)
    np.testing.assert_array_equal(y2[:, 0], [1.0, np.nan, np.nan])


def test_fit_names_a_text_output():
    X = pd.DataFrame({"ID": [0, 0, 1, 1], "t": [0.0, 1.0, 0.0, 1.0]})
    with pytest.raises(ValueError, match="row 3 holds the text 'abc'"):
        MagmaClusterRegressor(n_clusters=1).fit(X, pd.Series([1.0, 2.0, 1.0, "abc"]))


# ---------------------------------------------------------------------- observed values


def test_check_observed_names_tasks_and_outputs_without_values():
    task_ids = np.array(["a", "b", "c"], dtype=object)
    codes = np.array([0, 0, 1, 2, 2])
    y = np.array([[1.0, np.nan], [np.nan, np.nan], [np.nan, 2.0], [3.0, np.nan], [4.0, 5.0]])
    check_observed(y, codes, task_ids, ["u", "v"])  # each task has one observed value
    empty = y.copy()
    empty[2] = np.nan  # task "b"'s only row
    with pytest.raises(ValueError, match=r"^Task\(s\) 'b' have no observed output"):
        check_observed(empty, codes, task_ids, ["u", "v"])
    many = np.array([f"t{i}" for i in range(8)], dtype=object)
    y8 = np.full((8, 1), np.nan)
    y8[3] = 1.0
    with pytest.raises(ValueError, match=r"Task\(s\) 't0', 't1', 't2', 't4', 't5' and 2 more have"):
        check_observed(y8, np.arange(8), many, ["y"])
    never = y.copy()
    never[:, 1] = np.nan
    with pytest.raises(ValueError, match="Output 'v' of y is never observed"):
        check_observed(never, codes, task_ids, ["u", "v"])
    with pytest.raises(ValueError, match="NaN only"):
        check_observed(np.full((5, 2), np.nan), codes, task_ids, ["u", "v"])
