"""Padded tasks at bucketed shapes (``mimosa_sklearn._padded``).

Proven against closed forms and element-by-element loops: bucket sizes (values and the
bound on relative padding); :func:`scatter` (every row in its slot, masks exactly the
real rows and observed outputs, a finite placeholder elsewhere, nothing NaN);
:func:`take`, :func:`concat` and :func:`empty` (the tasks asked for, in order, with
their masks, and empty slots that are masked out).
"""

from __future__ import annotations

import numpy as np
import pytest

from mimosa_sklearn import _padded
from mimosa_sklearn._padded import Padded, concat, empty, scatter, take

# ---------------------------------------------------------------------- buckets


def test_task_buckets_are_powers_of_two_from_one():
    # An empty task slot costs as much as a real task, so the task axis has no floor of
    # 8; rows and grid keep it (their padding is cheap and it bounds the shape count).
    sizes = [_padded.task_bucket(t) for t in (1, 2, 3, 5, 8, 9, 33, 60, 128, 129, 1000)]
    assert sizes == [1, 2, 4, 8, 8, 16, 64, 64, 128, 160, 1024]
    assert _padded.row_bucket(1) == 8 and _padded.row_bucket(33) == 40
    assert _padded.bucket(3, 8) == 8


def test_grid_bucket_values_and_padding_bound():
    # Steps of 8 up to 128 points, 32 up to 1024, then 128; powers of two (at least 8)
    # while the size is at most four steps.
    table = {1: 8, 7: 8, 9: 16, 17: 32, 32: 32, 33: 40, 120: 120, 121: 128, 128: 128}
    table |= {129: 160, 1000: 1024, 1024: 1024, 1025: 1152, 5000: 5120}
    assert {g: _padded.grid_bucket(g) for g in table} == table
    sizes = np.arange(1, 3001)
    padded = np.array([_padded.grid_bucket(int(g)) for g in sizes])
    assert np.all(padded >= sizes)
    assert np.all(np.diff(padded) >= 0)  # a larger grid never gets a smaller bucket
    # Past 32 points the cubic cost pays at most (1 + 1/4)^3 for the padding.
    big = sizes > 32
    assert np.all((padded[big] - sizes[big]) / sizes[big] < 0.25)
    # At most one bucket per step: few distinct shapes, hence few compiled programs.
    assert np.unique(padded[(sizes > 128) & (sizes <= 1024)]).size == (1024 - 128) // 32


# ---------------------------------------------------------------------- scatter


def _rows(seed: int, t: int = 3, n_in: int = 2, n_out: int = 2):
    """Ragged random rows (task 1 has none), some outputs missing."""
    rng = np.random.default_rng(seed)
    counts = np.array([4, 0, 9])[:t]
    task = np.repeat(np.arange(t), counts)
    pos = np.concatenate([np.arange(c) for c in counts])
    x = rng.normal(size=(task.size, n_in))
    y = rng.normal(size=(task.size, n_out))
    y[rng.random(y.shape) < 0.3] = np.nan
    return task, pos, x, y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scatter_matches_elementwise_reference(seed):
    task, pos, x, y = _rows(seed)
    x0, y0 = x.copy(), y.copy()
    maps = np.arange(task.size) * 3
    placeholder = np.array([7.5, -3.25])
    out = scatter(task, pos, 3, x, y, maps, placeholder)
    assert (out.n_slots, out.n_rows, out.n_tasks) == (4, 16, 3)  # 3 -> 4 tasks, 9 -> 16 rows
    for i in range(out.n_slots):
        for j in range(out.n_rows):
            r = np.flatnonzero((task == i) & (pos == j))
            assert out.rows[i, j] == (r.size == 1)
            if r.size:
                np.testing.assert_array_equal(out.x[i, j], x[r[0]])
                assert out.mappings[i, j] == maps[r[0]]
                for o in range(2):
                    seen = not np.isnan(y[r[0], o])
                    assert out.observed[i, j, o] == seen
                    assert out.y[i, j, o] == (y[r[0], o] if seen else 0.0)
            else:
                np.testing.assert_array_equal(out.x[i, j], placeholder)
                assert not out.observed[i, j].any() and not out.y[i, j].any()
    np.testing.assert_array_equal(out.n_points, [4, 0, 9])
    assert out.rows.dtype == bool and out.observed.dtype == bool
    assert np.isfinite(out.x).all() and np.isfinite(out.y).all()
    np.testing.assert_array_equal(x, x0)  # the caller's arrays are untouched
    np.testing.assert_array_equal(y, y0)


def test_scatter_without_outputs_uses_the_first_row_as_placeholder():
    task, pos, x, _ = _rows(3)
    out = scatter(task, pos, 3, x)
    assert out.y is None and out.observed is None and out.mappings is None
    np.testing.assert_array_equal(out.x[~out.rows], np.broadcast_to(x[0], out.x[~out.rows].shape))


# ---------------------------------------------------------------------- take, concat, empty


def _tasks() -> Padded:
    task, pos, x, y = _rows(4)
    return scatter(task, pos, 3, x, y, np.arange(task.size))


def test_take_lays_out_the_tasks_asked_for():
    p = _tasks()
    sub = take(p, np.array([2, 0]))
    assert (sub.n_tasks, sub.n_slots, sub.n_rows) == (2, 2, p.n_rows)
    for name in ("x", "rows", "y", "observed", "mappings"):
        np.testing.assert_array_equal(getattr(sub, name), getattr(p, name)[[2, 0]])
    # Cut to the rows of task 0 (4 rows in 8 slots), into 4 task slots.
    cut = take(p, np.array([0]), n_rows=8, n_slots=4)
    assert cut.x.shape[:2] == (4, 8) and cut.n_tasks == 1
    np.testing.assert_array_equal(cut.rows[0], p.rows[0, :8])
    assert not cut.rows[1:].any() and not cut.observed[1:].any()
    np.testing.assert_array_equal(cut.x[1:], np.broadcast_to(p.placeholder, cut.x[1:].shape))
    # Grown: more row slots than the source, all empty.
    grown = take(p, np.array([1, 2]), n_rows=24)
    assert grown.n_rows == 24 and not grown.rows[:, 16:].any()
    np.testing.assert_array_equal(grown.y[:, :16], p.y[[1, 2]])


def test_concat_joins_real_tasks_in_order():
    p = _tasks()
    a, b = take(p, np.array([2]), n_rows=16), take(p, np.array([0, 1]), n_rows=8)
    both = concat([a, b])
    assert (both.n_tasks, both.n_slots, both.n_rows) == (3, 4, 16)
    for name in ("x", "rows", "y", "observed"):
        got = getattr(both, name)
        np.testing.assert_array_equal(got[:3, :8], getattr(p, name)[[2, 0, 1], :8])
    np.testing.assert_array_equal(both.rows[:3].sum(1), [9, 4, 0])
    assert not both.rows[3].any()
    assert concat([a]) is a


def test_empty_tasks_have_no_rows():
    e = empty(3, np.array([1.0, 2.0]), 2)
    assert (e.n_tasks, e.n_slots) == (3, 4)
    assert not e.rows.any() and not e.observed.any() and not e.y.any()
    np.testing.assert_array_equal(e.x[2, 5], [1.0, 2.0])
