"""Tests for mimosa_sklearn._data (ragged rows <-> padded task arrays)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mimosa_sklearn._data import (
    TaskData,
    build_grid,
    build_task_data,
    encode_task_ids,
    map_to_grid,
    snap_inputs,
)
from mimosa_sklearn._padded import bucket, task_bucket

# --------------------------------------------------------------------------- helpers


def _x(td: TaskData, full: bool = False) -> np.ndarray:
    """Inputs with NaN in empty slots; cut to (T, longest task) unless ``full``."""
    p = td.tasks
    x = np.where(p.rows[..., None], p.x, np.nan)
    return x if full else x[: td.n_tasks, : td.n_points.max(initial=0)]


def _y(td: TaskData, full: bool = False) -> np.ndarray:
    """Outputs with NaN where not observed; cut like :func:`_x`."""
    p = td.tasks
    y = np.where(p.observed, p.y, np.nan)
    return y if full else y[: td.n_tasks, : td.n_points.max(initial=0)]


def _maps(td: TaskData, full: bool = False) -> np.ndarray:
    """Grid indices with G in empty slots; cut like :func:`_x`."""
    p = td.tasks
    m = np.where(p.rows, p.mappings, td.n_grid)
    return m if full else m[: td.n_tasks, : td.n_points.max(initial=0)]


@st.composite
def ragged_data(draw):
    """Random ragged multi-task data: very unequal sizes, duplicates, NaN holes, shuffled rows."""
    n_tasks = draw(st.integers(1, 50))
    sizes = draw(
        st.lists(
            st.one_of(st.integers(1, 3), st.integers(1, 60)), min_size=n_tasks, max_size=n_tasks
        )
    )
    n_in = draw(st.integers(1, 3))
    n_out = draw(st.integers(1, 3))
    id_kind = draw(st.sampled_from(["str", "int", "object"]))
    seed = draw(st.integers(0, 2**32 - 1))
    jitter = draw(st.booleans())
    rng = np.random.default_rng(seed)
    n = int(sum(sizes))
    task_of_row = np.repeat(np.arange(n_tasks), sizes)
    perm = rng.permutation(n)
    task_of_row = task_of_row[perm]  # unsorted: tasks interleaved
    # Few distinct, exactly representable values so that duplicates are common.
    x = rng.integers(-3, 4, size=(n, n_in)) * 0.25
    if jitter:
        # Floating-point noise that snapping must remove.
        x = x + rng.choice([0.0, 1e-13, -1e-13], size=x.shape)
    y = rng.normal(size=(n, n_out))
    y[rng.random((n, n_out)) < 0.2] = np.nan
    labels = rng.permutation(n_tasks * 7)[:n_tasks]  # arbitrary, non-contiguous ids
    if id_kind == "str":
        ids = np.array([f"id{v}" for v in labels])[task_of_row]
    elif id_kind == "int":
        ids = labels[task_of_row]
    else:
        ids = np.array([f"s{v}" if v % 2 else int(v) for v in labels], dtype=object)[task_of_row]
    return ids, x, y


def _check_invariants(td: TaskData, codes: np.ndarray, x: np.ndarray, y: np.ndarray | None):
    n = codes.size
    T, p = td.n_tasks, td.tasks
    # Bucketed slots, finite everywhere, masks for the real rows.
    assert p.n_slots == task_bucket(T) and p.n_rows == bucket(td.n_points.max(), 8)
    assert p.x.shape == (p.n_slots, p.n_rows, x.shape[1]) and p.x.dtype == np.float64
    assert np.isfinite(p.x).all()
    assert p.mappings.shape == p.rows.shape and p.mappings.dtype == np.int64
    assert td.task_codes.dtype == np.int64 and td.row_pos.dtype == np.int64
    np.testing.assert_array_equal(td.n_points, np.bincount(codes, minlength=T))
    np.testing.assert_array_equal(p.n_points, td.n_points)
    mask = p.rows
    assert mask.sum() == n
    # Real rows fill the first slots of each task and point at their grid row.
    np.testing.assert_array_equal(mask[:T], np.arange(p.n_rows) < td.n_points[:, None])
    G = td.n_grid
    assert np.all((p.mappings[mask] >= 0) & (p.mappings[mask] < G))
    np.testing.assert_array_equal(td.grid[p.mappings[mask]], p.x[mask])
    # Grid: unique rows, lexicographically sorted.
    assert len(np.unique(td.grid, axis=0)) == G
    order = np.lexsort(td.grid.T[::-1])
    np.testing.assert_array_equal(order, np.arange(G))
    # Round trip, order preserving.
    np.testing.assert_array_equal(td.to_rows(_maps(td, True)) < G, np.ones(n, dtype=bool))
    np.testing.assert_allclose(td.to_rows(p.x), x, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(td.task_codes, codes)
    sort = np.lexsort((np.arange(n), codes))
    starts = np.cumsum(td.n_points) - td.n_points
    np.testing.assert_array_equal(td.row_pos[sort], np.arange(n) - starts[codes[sort]])
    if y is None:
        assert p.y is None and p.observed is None
    else:
        np.testing.assert_array_equal(td.to_rows(_y(td, True)), y)  # NaN compare equal
        assert not p.observed[~mask].any() and not p.y[~p.observed].any()
        assert p.observed.sum() == np.isfinite(y).sum()


# --------------------------------------------------------------------------- property tests


@settings(max_examples=60, deadline=None)
@given(ragged_data())
def test_round_trip_random_ragged(data):
    ids, x, y = data
    codes, uniques = encode_task_ids(ids)
    assert list(uniques) == list(dict.fromkeys(ids.tolist()))
    td = build_task_data(codes, len(uniques), x, y)
    _check_invariants(td, codes, x, y)
    # Same inputs (up to snapping) share a grid point.
    xs = snap_inputs(x)
    rows = td.to_rows(td.tasks.mappings)
    _, inv = np.unique(xs, axis=0, return_inverse=True)
    _, inv_map = np.unique(rows, return_inverse=True)
    np.testing.assert_array_equal(inv.reshape(-1), inv_map.reshape(-1))


@settings(max_examples=30, deadline=None)
@given(ragged_data())
def test_no_outputs(data):
    ids, x, _ = data
    codes, uniques = encode_task_ids(ids)
    td = build_task_data(codes, len(uniques), x)
    assert td.tasks.n_rows == bucket(np.bincount(codes).max(), 8)
    assert td.tasks.y is None and td.tasks.observed is None
    np.testing.assert_allclose(td.to_rows(td.tasks.x), x, rtol=1e-9, atol=1e-12)
    # Without a grid: no grid indices, the first row's input in empty slots.
    bare = build_task_data(codes, len(uniques), x, with_grid=False)
    assert bare.grid is None and bare.tasks.mappings is None and bare.n_grid == 0
    np.testing.assert_array_equal(bare.tasks.x[bare.tasks.rows], td.tasks.x[td.tasks.rows])
    np.testing.assert_array_equal(bare.tasks.x[~bare.tasks.rows][:1], snap_inputs(x)[:1])


# --------------------------------------------------------------------------- encode_task_ids


def test_encode_first_seen_order():
    codes, uniques = encode_task_ids(np.array(["b", "a", "b", "c", "a"]))
    np.testing.assert_array_equal(codes, [0, 1, 0, 2, 1])
    np.testing.assert_array_equal(uniques, ["b", "a", "c"])
    codes, uniques = encode_task_ids(np.array([30, 10, 30, 20]))
    np.testing.assert_array_equal(codes, [0, 1, 0, 2])
    np.testing.assert_array_equal(uniques, [30, 10, 20])
    assert codes.dtype == np.int64


def test_encode_float_object_and_categorical_ids():
    codes, uniques = encode_task_ids(np.array([2.5, 1.0, 2.5]))
    np.testing.assert_array_equal(codes, [0, 1, 0])
    np.testing.assert_array_equal(uniques, [2.5, 1.0])
    # Mixed, mutually unorderable ids.
    codes, uniques = encode_task_ids(np.array([3, "a", 3, 1.5, "a"], dtype=object))
    np.testing.assert_array_equal(codes, [0, 1, 0, 2, 1])
    assert list(uniques) == [3, "a", 1.5]
    cat = pd.Categorical(["z", "y", "z", "x"], categories=["x", "y", "z"])
    codes, uniques = encode_task_ids(np.asarray(cat))
    np.testing.assert_array_equal(codes, [0, 1, 0, 2])
    assert list(uniques) == ["z", "y", "x"]
    codes, uniques = encode_task_ids(pd.Series(["u", "v", "u"], dtype="string").to_numpy())
    np.testing.assert_array_equal(codes, [0, 1, 0])
    # A single column is accepted.
    codes, _ = encode_task_ids(np.array([[5], [6], [5]]))
    np.testing.assert_array_equal(codes, [0, 1, 0])


@pytest.mark.parametrize(
    "ids",
    [
        np.array(["a", "b", None, "a"], dtype=object),
        np.array(["a", "b", np.nan, "a"], dtype=object),
        np.array(["a", "b", pd.NA, "a"], dtype=object),
        np.array([1.0, 2.0, np.nan, 1.0]),
    ],
)
def test_encode_missing_id_names_row(ids):
    with pytest.raises(ValueError, match="row 2"):
        encode_task_ids(ids)


def test_encode_rejects_2d():
    with pytest.raises(ValueError, match="one-dimensional"):
        encode_task_ids(np.zeros((3, 2)))


# --------------------------------------------------------------------------- snapping and grid


def test_snap_merges_float_noise():
    x = np.array([0.1 + 0.2, 0.3, 0.5, 0.30000001])
    assert 0.1 + 0.2 != 0.3
    s = snap_inputs(x)
    assert s[0] == s[1] == 0.3
    assert s[3] == 0.30000001  # a real difference is kept
    assert s[2] == 0.5
    np.testing.assert_array_equal(snap_inputs(x, rtol=0.0), x)


def test_snap_keeps_nan_and_shape():
    x = np.array([[1.0, np.nan], [1.0 + 1e-15, 2.0], [np.nan, 2.0]])
    s = snap_inputs(x)
    assert s.shape == x.shape
    assert np.isnan(s[0, 1]) and np.isnan(s[2, 0])
    assert s[0, 0] == s[1, 0] == 1.0


def test_float_noise_maps_to_same_grid_point():
    td = build_task_data(np.array([0, 1, 1]), 2, np.array([0.1 + 0.2, 0.3, 1.0]))
    assert td.n_grid == 2
    assert _maps(td)[0, 0] == _maps(td)[1, 0] == 0
    assert _x(td)[0, 0, 0] == _x(td)[1, 0, 0] == td.grid[0, 0]


def test_build_grid_lexicographic_multi_dim():
    x = np.array([[1.0, 2.0], [0.0, 5.0], [1.0, -1.0], [0.0, 5.0], [-0.0, 1.0]])
    grid = build_grid(x)
    np.testing.assert_array_equal(grid, [[0.0, 1.0], [0.0, 5.0], [1.0, -1.0], [1.0, 2.0]])
    np.testing.assert_array_equal(map_to_grid(x, grid), [3, 1, 2, 1, 0])
    np.testing.assert_array_equal(build_grid(np.array([3.0, 1.0, 3.0])), [[1.0], [3.0]])


def test_map_to_grid_raises_off_grid():
    grid = np.array([[0.0], [1.0]])
    with pytest.raises(ValueError, match="row 1"):
        map_to_grid(np.array([0.0, 0.5]), grid)
    with pytest.raises(ValueError, match="columns"):
        map_to_grid(np.zeros((2, 2)), grid)


def test_duplicated_inputs_inside_task_are_kept():
    td = build_task_data(np.array([0, 0, 0]), 1, np.array([2.0, 1.0, 2.0]), np.array([1, 2, 3]))
    assert td.n_points[0] == 3
    np.testing.assert_array_equal(_maps(td)[0], [1, 0, 1])
    np.testing.assert_array_equal(_y(td)[0, :, 0], [1.0, 2.0, 3.0])


# --------------------------------------------------------------------------- build_task_data


def test_canonical_layout_orders_tasks_and_rows_by_content():
    codes = np.array([0, 0, 1, 2, 2, 3, 3, 1, 4, 4])
    x = np.array([5.0, 1.0, 2.0, 2.0, 2.0, 5.0, 1.0, 0.5, 1.0, 1.0])
    y = np.array([0.0, 3.0, 1.0, np.nan, 7.0, 0.0, 3.0, 1.0, 2.0, 2.0])
    td = build_task_data(codes, 5, x, y, canonical=True)
    # Sorted rows (x, y) of each task: 0 = [(1, 3), (5, 0)] and 3 are identical,
    # 1 = [(0.5, 1), (2, 1)], 2 = [(2, 7), (2, NaN)] (NaN last), 4 = [(1, 2), (1, 2)].
    # Lexicographic order of these sequences: 1, 4, then 0 and 3 (tied, code order
    # kept), then 2.
    np.testing.assert_array_equal(td.task_order, [1, 4, 0, 3, 2])
    np.testing.assert_array_equal(td.task_index, [2, 0, 4, 3, 1])
    np.testing.assert_array_equal(td.n_points, [2, 2, 2, 2, 2])
    np.testing.assert_array_equal(_x(td)[..., 0], [[0.5, 2], [1, 1], [1, 5], [1, 5], [2, 2]])
    np.testing.assert_array_equal(_y(td)[..., 0], [[1, 1], [2, 2], [3, 0], [3, 0], [7, np.nan]])
    np.testing.assert_array_equal(td.to_rows(td.tasks.x)[:, 0], x)
    np.testing.assert_array_equal(td.to_rows(_y(td, True))[:, 0], y)
    np.testing.assert_array_equal(td.task_codes, td.task_index[codes])
    # Without canonical=True, tasks keep their codes and rows their caller order.
    plain = build_task_data(codes, 5, x, y)
    np.testing.assert_array_equal(plain.task_index, np.arange(5))
    np.testing.assert_array_equal(plain.task_order, np.arange(5))
    np.testing.assert_array_equal(_x(plain)[0, :, 0], [5.0, 1.0])


def test_canonical_layout_puts_a_prefix_first_and_allows_empty_tasks():
    codes = np.array([0, 0, 0, 2, 2])
    x = np.array([1.0, 2.0, 3.0, 2.0, 1.0])
    td = build_task_data(codes, 3, x, canonical=True)
    # Task 1 has no rows (empty prefix of everything), task 2 = [1, 2] is a prefix of
    # task 0 = [1, 2, 3].
    np.testing.assert_array_equal(td.task_order, [1, 2, 0])
    np.testing.assert_array_equal(td.n_points, [0, 2, 3])
    np.testing.assert_array_equal(td.to_rows(td.tasks.x)[:, 0], x)


def test_rows_all_nan_outputs_are_kept():
    y = np.array([[np.nan, np.nan], [1.0, np.nan], [np.nan, np.nan]])
    td = build_task_data(np.array([0, 0, 1]), 2, np.array([0.0, 1.0, 0.0]), y)
    assert td.tasks.rows.sum() == 3
    np.testing.assert_array_equal(td.tasks.observed.sum(axis=(1, 2)), [1, 0])
    np.testing.assert_array_equal(td.to_rows(_y(td, True)), y)


def test_task_without_rows_is_fully_padded():
    td = build_task_data(np.array([0, 2, 2]), 3, np.array([0.0, 1.0, 2.0]))
    np.testing.assert_array_equal(td.n_points, [1, 0, 2])
    assert not td.tasks.rows[1].any()
    assert td.tasks.n_slots == 4 and not td.tasks.rows[3].any()


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_inputs_name_row(bad):
    x = np.zeros((5, 2))
    x[3, 1] = bad
    with pytest.raises(ValueError, match="row 3"):
        build_task_data(np.zeros(5, dtype=int), 1, x)


def test_infinite_outputs_name_row_but_nan_allowed():
    y = np.array([0.0, np.nan, np.inf, 1.0])
    with pytest.raises(ValueError, match="row 2"):
        build_task_data(np.zeros(4, dtype=int), 1, np.arange(4.0), y)
    y[2] = np.nan
    build_task_data(np.zeros(4, dtype=int), 1, np.arange(4.0), y)


def test_shape_errors():
    codes = np.zeros(4, dtype=int)
    with pytest.raises(ValueError, match="x has 3 rows"):
        build_task_data(codes, 1, np.arange(3.0))
    with pytest.raises(ValueError, match="y has 5 rows"):
        build_task_data(codes, 1, np.arange(4.0), np.arange(5.0))
    with pytest.raises(ValueError, match="row 2"):
        build_task_data(np.array([0, 1, 2, 0]), 2, np.arange(4.0))
    with pytest.raises(ValueError, match="integers"):
        build_task_data(np.zeros(4), 1, np.arange(4.0))
    with pytest.raises(ValueError, match="zero rows"):
        build_task_data(np.zeros(0, dtype=int), 1, np.zeros((0, 1)))
    with pytest.raises(ValueError, match="1-D or 2-D"):
        build_task_data(codes, 1, np.zeros((4, 1, 1)))


def test_to_rows_reads_each_row_at_its_padded_position():
    codes = np.array([1, 0, 1, 1])
    td = build_task_data(codes, 2, np.arange(4.0))
    padded = np.zeros((2, 8))
    padded[0, 0], padded[1, :3] = 20.0, [10.0, 30.0, 40.0]
    np.testing.assert_array_equal(td.to_rows(padded), [10.0, 20.0, 30.0, 40.0])
    vec = np.stack([padded, -padded], axis=-1)
    np.testing.assert_array_equal(td.to_rows(vec)[:, 1], [-10.0, -20.0, -30.0, -40.0])
    with pytest.raises(ValueError, match="leading shape"):
        td.to_rows(np.zeros((3, 3)))


def test_properties_and_repr():
    td = build_task_data(
        np.array([0, 1, 1]), 2, np.array([[0.0, 1.0], [1.0, 1.0], [0.0, 1.0]]), np.ones((3, 3))
    )
    assert (td.n_tasks, td.n_grid, td.tasks.x.shape, td.tasks.y.shape) == (
        2,
        2,
        (2, 8, 2),
        (2, 8, 3),
    )
    assert "n_tasks=2" in repr(td) and "n_outputs=3" in repr(td)
    with pytest.raises(AttributeError):
        td.grid = None  # frozen
