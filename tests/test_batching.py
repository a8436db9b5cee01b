"""Bucketed shapes and NaN -> masks (``mimosa_sklearn._batching``).

Proven against closed forms and element-by-element numpy loops: bucket and grid-bucket
sizes (values and the bound on relative padding), :func:`pad_tasks` (placeholder on
every padded row, masks exactly ``real & observed``, values unchanged, nothing NaN),
:func:`make_batch` (the padded tasks, mappings, padded grid, grid mask and task weights
of the :class:`TaskBatch`), shared-input detection and the small padding helpers.
No JAX program is compiled here (``make_batch`` only copies arrays to the device).
"""

from __future__ import annotations

import numpy as np
import pytest

from mimosa_sklearn import _batching
from mimosa_sklearn.core import runtime

GRID = np.linspace(0.0, 5.0, 7)[:, None]


@pytest.fixture(autouse=True)
def _float64():
    with runtime.jax_scope():
        yield


def _shared_data(n_tasks: int, seed: int = 0):
    """``n_tasks`` tasks on the same six inputs, each missing its third output value."""
    rng = np.random.default_rng(seed)
    inputs = np.linspace(0.0, 5.0, 6)[:, None]
    x = np.repeat(inputs[None], n_tasks, axis=0)
    offsets = rng.normal(size=(n_tasks, 1, 1))
    y = np.sin(x) + offsets + 0.1 * rng.normal(size=x.shape)
    y[:, 2, 0] = np.nan
    maps = np.repeat(np.arange(6)[None], n_tasks, axis=0)
    return x, y, maps, inputs


# ---------------------------------------------------------------------- buckets


def test_task_buckets_are_powers_of_two_from_one():
    # A padded task costs as much as a real one, so the task axis has no floor of 8;
    # points and grid keep it (their padding is cheap and it bounds the shape count).
    sizes = [_batching.bucket(t, 8, 1) for t in (1, 2, 3, 5, 8, 9, 32, 33, 41)]
    assert sizes == [1, 2, 4, 8, 8, 16, 32, 40, 48]
    assert _batching.bucket(1, 8) == 8 and _batching.bucket(33, 8) == 40
    x = np.array([[[0.0], [1.0], [2.0]]])
    batch = _batching.make_batch(x, np.ones((1, 3, 1)), np.array([[0, 1, 2]]), GRID[:3])
    assert batch.x.shape[:2] == (1, 8) and float(batch.task_weight.sum()) == 1.0


def test_grid_bucket_values_and_padding_bound():
    # Steps of 8 up to 128 points, 32 up to 1024, then 128; powers of two (at least 8)
    # while the size is at most four steps.
    table = {
        1: 8,
        7: 8,
        9: 16,
        17: 32,
        32: 32,
        33: 40,
        120: 120,
        121: 128,
        128: 128,
        129: 160,
        1000: 1024,
        1024: 1024,
        1025: 1152,
        5000: 5120,
    }
    assert {g: _batching.grid_bucket(g) for g in table} == table
    sizes = np.arange(1, 3001)
    padded = np.array([_batching.grid_bucket(int(g)) for g in sizes])
    assert np.all(padded >= sizes)
    assert np.all(np.diff(padded) >= 0)  # a larger grid never gets a smaller bucket
    # Past 32 points the cubic cost pays at most (1 + 1/4)^3 for the padding.
    big = sizes > 32
    assert np.all((padded[big] - sizes[big]) / sizes[big] < 0.25)
    # At most one bucket per step: few distinct shapes, hence few compiled programs.
    assert np.unique(padded[(sizes > 128) & (sizes <= 1024)]).size == (1024 - 128) // 32


# ---------------------------------------------------------------------- pad_tasks


def _tasks_with_holes(seed: int, t: int = 3, n: int = 5, n_in: int = 2, n_out: int = 2):
    """Random tasks with padded rows anywhere (one only partly NaN), missing outputs on
    real rows and finite outputs on padded rows."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(t, n, n_in))
    y = rng.normal(size=(t, n, n_out))
    x[rng.random((t, n)) < 0.3] = np.nan
    x[0, -1] = np.nan
    x[-1, 1, -1] = np.nan  # one NaN input is enough to make a padded row
    y[rng.random((t, n, n_out)) < 0.3] = np.nan
    y[0, -1] = 3.0  # an output on a padded row is not observed
    return x, y


def _reference_padding(x, y, n_tasks, n_rows, placeholder):
    """:func:`pad_tasks` one element at a time."""
    t, n, n_in = x.shape
    n_out = y.shape[-1]
    xp = np.zeros((n_tasks, n_rows, n_in))
    rows = np.zeros((n_tasks, n_rows), dtype=bool)
    yp = np.zeros((n_tasks, n_rows, n_out))
    mask = np.zeros((n_tasks, n_rows, n_out), dtype=bool)
    for i in range(n_tasks):
        for j in range(n_rows):
            real = i < t and j < n and not np.isnan(x[i, j]).any()
            rows[i, j] = real
            xp[i, j] = x[i, j] if real else placeholder
            for o in range(n_out):
                if real and not np.isnan(y[i, j, o]):
                    mask[i, j, o] = True
                    yp[i, j, o] = y[i, j, o]
    return xp, rows, yp, mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pad_tasks_matches_elementwise_reference(seed):
    x, y = _tasks_with_holes(seed)
    x0, y0 = x.copy(), y.copy()
    placeholder = np.array([7.5, -3.25])
    out = _batching.pad_tasks(x, y, n_tasks=4, n_rows=8, placeholder=placeholder)
    xp, rows, yp, mask = _reference_padding(x, y, 4, 8, placeholder)
    np.testing.assert_array_equal(out.rows, rows)
    np.testing.assert_array_equal(out.x, xp)
    np.testing.assert_array_equal(out.mask, mask)
    np.testing.assert_array_equal(out.y, yp)
    assert out.rows.dtype == bool and out.mask.dtype == bool
    assert out.x.dtype == np.float64 and out.y.dtype == np.float64
    assert np.isfinite(out.x).all() and np.isfinite(out.y).all()
    # Real rows keep their values and order; the caller's arrays are untouched.
    real = ~np.isnan(x).any(-1)
    np.testing.assert_array_equal(out.x[:3, :5][real], x[real])
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)


def test_pad_tasks_without_outputs_and_at_the_same_size():
    x, y = _tasks_with_holes(3)
    placeholder = np.array([1.0, 2.0])
    with_y = _batching.pad_tasks(x, y, n_tasks=3, n_rows=5, placeholder=placeholder)
    without = _batching.pad_tasks(x, None, n_tasks=3, n_rows=5, placeholder=placeholder)
    assert without.y is None and without.mask is None
    np.testing.assert_array_equal(without.x, with_y.x)
    np.testing.assert_array_equal(without.rows, with_y.rows)
    # Nothing added: the padded rows of the caller alone take the placeholder.
    real = ~np.isnan(x).any(-1)
    np.testing.assert_array_equal(without.rows, real)
    np.testing.assert_array_equal(without.x[~real], np.broadcast_to(placeholder, x[~real].shape))


# ---------------------------------------------------------------------- make_batch


def test_make_batch_lays_out_tasks_grid_and_weights():
    grid = np.array([[0.0], [0.5], [1.5], [2.0], [3.0]])
    maps = np.array([[0, 2, 4, 1], [3, 3, 0, 0], [1, 4, 2, 0]])
    x = grid[maps]
    x[0, 3] = x[2, 1] = np.nan  # padded rows (their mappings are anything)
    y = np.sin(x) + np.array([[[0.0]], [[1.0]], [[2.0]]])
    y[1, 2, 0] = np.nan
    batch = _batching.make_batch(x, y, maps, grid, task_chunk=2, task_multiple=3)
    tb, nb, gb = 6, 8, 8  # 3 tasks -> 4 -> a multiple of 3; 4 rows -> 8; 5 points -> 8
    assert batch.x.shape == (tb, nb, 1) and batch.grid.shape == (gb, 1)
    padded = _batching.pad_tasks(x, y, n_tasks=tb, n_rows=nb, placeholder=grid[0])
    np.testing.assert_array_equal(np.asarray(batch.x), padded.x)
    np.testing.assert_array_equal(np.asarray(batch.y), padded.y)
    np.testing.assert_array_equal(np.asarray(batch.mask), padded.mask)
    want_maps = np.full((tb, nb), gb)
    real = ~np.isnan(x).any(-1)
    want_maps[:3, :4][real] = maps[real]
    np.testing.assert_array_equal(np.asarray(batch.mappings), want_maps)
    # Every real row's mapping points at its own input on the grid.
    got_x = np.asarray(batch.x)[np.asarray(batch.mappings) < gb]
    np.testing.assert_array_equal(np.asarray(batch.grid)[want_maps[want_maps < gb]], got_x)
    np.testing.assert_array_equal(np.asarray(batch.grid), np.r_[grid, np.repeat(grid[:1], 3, 0)])
    np.testing.assert_array_equal(np.asarray(batch.grid_mask), np.arange(gb) < 5)
    np.testing.assert_array_equal(np.asarray(batch.task_weight), [1, 1, 1, 0, 0, 0])
    assert batch.x.dtype == np.float64 and batch.task_weight.dtype == np.float64
    assert batch.mappings.dtype == np.int32 and batch.mask.dtype == bool
    assert batch.task_chunk == 2 and batch.shared_inputs is False
    # The approximate grid has no mappings: every row points past the padded grid.
    approx = _batching.make_batch(x, y, None, grid)
    assert approx.x.shape[0] == 4
    np.testing.assert_array_equal(np.asarray(approx.mappings), np.full((4, nb), gb))


# ---------------------------------------------------------------------- shared inputs


def test_shared_inputs_detection():
    x, y, maps, _ = _shared_data(4)
    assert _batching.shared_inputs(x, y, maps)
    y2 = y.copy()
    y2[1, 0, 0] = np.nan  # another observed pattern
    assert not _batching.shared_inputs(x, y2, maps)
    x2 = x.copy()
    x2[3, 1, 0] = 9.0
    assert not _batching.shared_inputs(x2, y, maps)
    assert not _batching.shared_inputs(x[:1], y[:1], maps[:1])


def test_shared_inputs_ignore_padded_rows_but_not_mappings_of_real_rows():
    x, y, maps, _ = _shared_data(3, seed=1)
    x[:, 4] = np.nan  # the same padded row in every task
    y[:, 4] = np.nan
    y[2, 4, 0] = 1.0  # an output on a padded row is no observation
    maps[1, 4] = 0  # nor is the mapping of a padded row
    assert _batching.shared_inputs(x, y, maps)
    assert _batching.shared_inputs(x, y, None)
    other = maps.copy()
    other[2, 1] = 5  # a real row mapped elsewhere: not the same task layout
    assert not _batching.shared_inputs(x, y, other)
    x[2, 4] = 0.0  # one task has a real row where the others pad
    assert not _batching.shared_inputs(x, y, maps)


# ---------------------------------------------------------------------- helpers


def test_pad_axis_and_repeat_first():
    a = np.arange(6.0).reshape(2, 3)
    padded = _batching.pad_axis(a, 1, 5, -1.0)
    np.testing.assert_array_equal(padded, [[0, 1, 2, -1, -1], [3, 4, 5, -1, -1]])
    np.testing.assert_array_equal(_batching.pad_axis(a, 0, 3, 0.0)[2], [0, 0, 0])
    assert _batching.pad_axis(a, 1, 3, -1.0) is a
    b = np.arange(12.0).reshape(2, 2, 3)
    rep = _batching.repeat_first(b, 4)
    assert rep.shape == (4, 2, 3)
    np.testing.assert_array_equal(rep[:2], b)
    np.testing.assert_array_equal(rep[2], b[0])
    np.testing.assert_array_equal(rep[3], b[0])
    assert _batching.repeat_first(b, 2) is b and _batching.repeat_first(b, 1) is b
