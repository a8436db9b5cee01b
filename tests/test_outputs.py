"""Correlated outputs as a layout (``mimosa_sklearn._outputs``).

Proven against explicit loops over tasks, rows and outputs: :func:`stack_observed`
keeps exactly the observed ``(row, output)`` pairs of real rows, in (row, output)
order, with the output index as the last input column; :func:`stack_inputs` puts
``(x_m, p)`` at row ``m * O + p`` and :func:`stack_rows` keeps the row mask with it; :func:`unstack_spread` sends every entry of a stacked
variance or covariance (built from a known kernel on the stacked inputs) back to its
``(row, output)`` position in the caller's layout. Pure numpy: no JAX.
"""

from __future__ import annotations

import numpy as np
import pytest
from padded_tasks import from_nan

from mimosa_sklearn._outputs import stack_inputs, stack_observed, stack_rows, unstack_spread
from mimosa_sklearn._padded import row_bucket


def test_stack_observed_and_inputs():
    x = np.array([[[0.0], [1.0], [np.nan]], [[2.0], [3.0], [4.0]]])
    y = np.array([[[1.0, np.nan], [2.0, 3.0], [np.nan, np.nan]], [[np.nan, 4.0], [5, 6], [7, 8]]])
    st = stack_observed(from_nan(x, y))
    assert st.x.shape == (2, 8, 2) and st.y.shape == (2, 8, 1)  # 5 pairs -> 8 row slots
    assert st.mappings is None and st.n_tasks == 2
    np.testing.assert_array_equal(st.rows.sum(1), [3, 5])
    np.testing.assert_array_equal(st.observed[..., 0], st.rows)
    np.testing.assert_array_equal(st.x[0, :3], [[0, 0], [1, 0], [1, 1]])
    assert not st.y[0, 3:].any() and np.isfinite(st.x).all()
    np.testing.assert_array_equal(st.y[1, :5, 0], [4, 5, 6, 7, 8])
    np.testing.assert_array_equal(st.x[1, :5, 1], [1, 0, 1, 0, 1])
    full = stack_inputs(np.nan_to_num(x), 2)
    assert full.shape == (2, 6, 2)
    np.testing.assert_array_equal(full[1, :, 1], [0, 1, 0, 1, 0, 1])
    rows = stack_rows(from_nan(x), 2)
    np.testing.assert_array_equal(rows.rows[:, :6], [[1, 1, 1, 1, 0, 0], [1] * 6])
    np.testing.assert_array_equal(rows.x, stack_inputs(from_nan(x).x, 2))


def test_unstack_spread_layouts():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 6, 6))
    cov = (a @ np.swapaxes(a, 1, 2))[:, None]  # (P, 1, M*O, M*O), M=3, O=2
    blocks = unstack_spread(cov, 2, True)
    assert blocks.shape == (3, 2, 3, 3)
    np.testing.assert_allclose(blocks[:, 1], cov[:, 0, 1::2, 1::2])
    joint = unstack_spread(cov, 2, "joint")
    assert joint.shape == (3, 3, 2, 3, 2)
    np.testing.assert_allclose(joint[:, 0, 1, 2, 0], cov[:, 0, 1, 4])
    var = unstack_spread(np.arange(12.0).reshape(2, 6, 1), 2, False)
    np.testing.assert_array_equal(var[0], [[0, 1], [2, 3], [4, 5]])


# ---------------------------------------------------------------------- stacking


def _observed_pairs(x, y):
    """Per task, the ``(x, p)`` inputs and values of its observed pairs, looped."""
    t, n, o = y.shape
    out = []
    for i in range(t):
        inputs, values = [], []
        for m in range(n):
            if np.isnan(x[i, m]).any():
                continue
            for p in range(o):
                if not np.isnan(y[i, m, p]):
                    inputs.append(np.r_[x[i, m], p])
                    values.append(y[i, m, p])
        out.append((np.array(inputs).reshape(-1, x.shape[-1] + 1), np.array(values)))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_stack_observed_matches_looped_pairs(seed):
    rng = np.random.default_rng(seed)
    t, n, n_in, o = 4, 5, 2, 3
    x = rng.normal(size=(t, n, n_in))
    y = rng.normal(size=(t, n, o))
    x[rng.random((t, n)) < 0.25] = np.nan
    y[rng.random((t, n, o)) < 0.4] = np.nan
    x[0, 0] = np.nan
    y[1] = np.nan  # a task without any observed pair: all empty slots
    tasks = from_nan(x, y)
    x0, y0 = tasks.x.copy(), tasks.y.copy()
    st = stack_observed(tasks)
    pairs = _observed_pairs(x, y)
    size = max(len(v) for _, v in pairs)
    assert st.x.shape == (tasks.n_slots, row_bucket(size), n_in + 1)
    for i, (inputs, values) in enumerate(pairs):
        k = len(values)
        np.testing.assert_array_equal(st.x[i, :k], inputs)
        np.testing.assert_array_equal(st.y[i, :k, 0], values)
        assert st.rows[i, :k].all() and not st.rows[i, k:].any() and not st.y[i, k:].any()
    np.testing.assert_array_equal(tasks.x, x0)
    np.testing.assert_array_equal(tasks.y, y0)


def test_stack_observed_with_nothing_observed_has_no_rows():
    tasks = from_nan(np.zeros((2, 3, 1)), np.full((2, 3, 2), np.nan))
    st = stack_observed(tasks)
    assert st.x.shape == (2, 8, 2) and st.y.shape == (2, 8, 1)
    assert not st.rows.any() and not st.observed.any() and np.isfinite(st.x).all()


def test_stack_inputs_row_order_with_any_leading_shape():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(4, 2))  # (M, I): inputs of the mean processes, no task axis
    o = 3
    full = stack_inputs(x, o)
    assert full.shape == (4 * o, 3)
    for m in range(4):
        for p in range(o):
            np.testing.assert_array_equal(full[m * o + p], np.r_[x[m], p])
    batched = stack_inputs(np.stack([x, x[::-1]]), o)
    np.testing.assert_array_equal(batched[0], full)
    np.testing.assert_array_equal(batched[1], stack_inputs(x[::-1], o))


# ---------------------------------------------------------------------- unstacking


def _icm(a: np.ndarray, b: np.ndarray, coreg: np.ndarray) -> np.ndarray:
    """``B[p, q] exp(-|x - x'|^2 / 2)`` between stacked inputs ``(x, p)`` and ``(x', q)``."""
    d2 = ((a[:, None, :-1] - b[None, :, :-1]) ** 2).sum(-1)
    return coreg[a[:, -1].astype(int)][:, b[:, -1].astype(int)] * np.exp(-0.5 * d2)


def test_unstack_spread_puts_each_covariance_at_its_row_and_output():
    rng = np.random.default_rng(5)
    n_tasks, m, o = 2, 4, 3
    w = rng.normal(size=(o, o))
    coreg = w @ w.T + np.diag([0.5, 1.0, 1.5])
    x = rng.normal(size=(n_tasks, m, 2))
    stacked = stack_inputs(x, o)  # (P, M*O, I + 1)
    cov = np.stack([_icm(s, s, coreg) for s in stacked])[:, None]  # (P, 1, M*O, M*O)
    joint = unstack_spread(cov, o, "joint")
    blocks = unstack_spread(cov, o, True)
    # Variances that depend on the row as well as on the output.
    diag = np.diagonal(cov[:, 0], axis1=1, axis2=2) + stacked[..., 0]
    var = unstack_spread(diag[..., None], o, False)
    assert joint.shape == (n_tasks, m, o, m, o) and blocks.shape == (n_tasks, o, m, m)
    assert var.shape == (n_tasks, m, o)
    for i in range(n_tasks):
        for a in range(m):
            for p in range(o):
                np.testing.assert_allclose(var[i, a, p], coreg[p, p] + x[i, a, 0], rtol=1e-12)
                for b in range(m):
                    d2 = ((x[i, a] - x[i, b]) ** 2).sum()
                    for q in range(o):
                        want = coreg[p, q] * np.exp(-0.5 * d2)
                        np.testing.assert_allclose(joint[i, a, p, b, q], want, rtol=1e-12)
                    want = coreg[p, p] * np.exp(-0.5 * d2)
                    np.testing.assert_allclose(blocks[i, p, a, b], want, rtol=1e-12)
