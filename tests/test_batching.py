"""Padded tasks -> device batches (``mimosa_sklearn._batching``).

Proven element by element: :func:`make_batch` (the tasks and masks unchanged, grid
indices of real rows and past the grid elsewhere, the padded grid, grid mask and task
weights of the :class:`TaskBatch`, task slots grown to a device multiple) and
shared-input detection. No JAX program is compiled here (``make_batch`` only copies
arrays to the device).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from padded_tasks import from_nan

from mimosa_sklearn import _batching
from mimosa_sklearn.core import runtime


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
    return x, y, maps


def test_make_batch_lays_out_tasks_grid_and_weights():
    grid = np.array([[0.0], [0.5], [1.5], [2.0], [3.0]])
    maps = np.array([[0, 2, 4, 1], [3, 3, 0, 0], [1, 4, 2, 0]])
    x = grid[maps]
    x[0, 3] = x[2, 3] = np.nan  # padded rows (their mappings are anything)
    y = np.sin(x) + np.array([[[0.0]], [[1.0]], [[2.0]]])
    y[1, 2, 0] = np.nan
    tasks = from_nan(x, y, maps)
    batch = _batching.make_batch(tasks, grid, task_chunk=2, task_multiple=3)
    tb, nb, gb = 6, 8, 8  # 3 tasks -> 4 slots -> a multiple of 3; 4 rows -> 8; 5 points -> 8
    assert batch.x.shape == (tb, nb, 1) and batch.grid.shape == (gb, 1)
    np.testing.assert_array_equal(np.asarray(batch.x)[:4], tasks.x)
    np.testing.assert_array_equal(np.asarray(batch.y)[:4], tasks.y)
    np.testing.assert_array_equal(np.asarray(batch.mask)[:4], tasks.observed)
    assert not np.asarray(batch.mask)[4:].any()
    want_maps = np.full((tb, nb), gb)
    want_maps[:4][tasks.rows] = tasks.mappings[tasks.rows]
    np.testing.assert_array_equal(np.asarray(batch.mappings), want_maps)
    # Every real row's mapping points at its own input on the grid.
    real = np.asarray(batch.mappings) < gb
    np.testing.assert_array_equal(
        np.asarray(batch.grid)[want_maps[real]], np.asarray(batch.x)[real]
    )
    np.testing.assert_array_equal(np.asarray(batch.grid), np.r_[grid, np.repeat(grid[:1], 3, 0)])
    np.testing.assert_array_equal(np.asarray(batch.grid_mask), np.arange(gb) < 5)
    np.testing.assert_array_equal(np.asarray(batch.task_weight), [1, 1, 1, 0, 0, 0])
    assert batch.x.dtype == np.float64 and batch.task_weight.dtype == np.float64
    assert batch.mappings.dtype == np.int32 and batch.mask.dtype == bool
    assert batch.task_chunk == 2 and batch.shared_inputs is False
    # The approximate grid has no mappings: every row points past the padded grid.
    approx = _batching.make_batch(dataclasses.replace(tasks, mappings=None), grid)
    assert approx.x.shape[0] == 4
    np.testing.assert_array_equal(np.asarray(approx.mappings), np.full((4, nb), gb))


def test_shared_inputs_detection():
    x, y, maps = _shared_data(4)
    assert _batching.shared_inputs(from_nan(x, y, maps))
    y2 = y.copy()
    y2[1, 0, 0] = np.nan  # another observed pattern
    assert not _batching.shared_inputs(from_nan(x, y2, maps))
    x2 = x.copy()
    x2[3, 1, 0] = 9.0
    assert not _batching.shared_inputs(from_nan(x2, y, maps))
    assert not _batching.shared_inputs(from_nan(x[:1], y[:1], maps[:1]))


def test_shared_inputs_ignore_empty_slots_but_not_mappings_of_real_rows():
    x, y, maps = _shared_data(3, seed=1)
    x[:, 4] = np.nan  # the same padded row in every task
    y[:, 4] = np.nan
    tasks = from_nan(x, y, maps)
    assert tasks.n_slots == 4  # an empty task slot does not count
    assert _batching.shared_inputs(tasks)
    assert _batching.shared_inputs(dataclasses.replace(tasks, mappings=None))
    other = maps.copy()
    other[2, 1] = 5  # a real row mapped elsewhere: not the same task layout
    assert not _batching.shared_inputs(from_nan(x, y, other))
    x[2, 4] = 0.0  # one task has a real row where the others pad
    assert not _batching.shared_inputs(from_nan(x, y, maps))


def test_padded_grid_size_reuses_a_larger_size_within_the_work_bound(monkeypatch):
    monkeypatch.setattr(_batching, "_grid_sizes", {})
    shapes = (64, 32, 1, 1, False)
    # Nothing used yet: the grid's own bucket.
    assert _batching.padded_grid_size(189, shapes) == 192
    # 194 points need the next bucket; from then on 224 is a size this process uses.
    assert _batching.padded_grid_size(194, shapes) == 224
    # 189 points may take 224 (cubic work (224/189)^3 = 1.66 <= 2): the largest size used.
    assert _batching.padded_grid_size(189, shapes) == 224
    # 150 points would pay (192/150)^3 = 2.1 > 2 for 192: own bucket 160.
    assert _batching.padded_grid_size(150, shapes) == 160
    # Other task shapes share nothing.
    assert _batching.padded_grid_size(189, (32, 32, 1, 1, False)) == 192
    # A size below the grid's own bucket is never taken.
    assert _batching.padded_grid_size(200, shapes) == 224
    with pytest.raises(ValueError, match="smaller than the grid"):
        x, y, maps = _shared_data(2)
        _batching.make_batch(from_nan(x, y, maps), np.arange(6.0)[:, None], grid_size=4)


def test_a_small_fit_grid_keeps_room_for_the_next_fold(monkeypatch):
    # synth_dev's GroupKFold(3) folds and refit have 189, 192, 194 and 199 grid points:
    # with 5% spare room the first fold takes 224 points, and every later fit reuses it
    # (without room: 192, then 224 from the third fold on, two EM programs).
    monkeypatch.setattr(_batching, "_grid_sizes", {})
    shapes = (64, 32, 1, 1, False)
    assert [_batching.padded_grid_size(g, shapes, True) for g in (189, 192, 194, 199)] == [224] * 4
    monkeypatch.setattr(_batching, "_grid_sizes", {})
    assert [_batching.padded_grid_size(g, shapes) for g in (189, 192, 194, 199)] == [
        192,
        192,
        224,
        224,
    ]
    # Small grids: the spare room stays within the grid's own power-of-two bucket.
    assert _batching.padded_grid_size(11, (16, 8, 1, 1, False), True) == 16
