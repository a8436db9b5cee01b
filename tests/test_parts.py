"""Ragged batches: tasks split into parts of their own padded length give the results of
one batch padded to the longest task (E-step, ELBO, VM-step objective and gradient, a
whole fit and its predictions), on the exact and the approximate grid."""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from padded_tasks import from_nan

from mimosa_sklearn import _batching, _fit, _kernels, _parts
from mimosa_sklearn._kernels import SharingLayout
from mimosa_sklearn._padded import row_bucket, task_bucket
from mimosa_sklearn.core import approx, em, mstep, runtime
from mimosa_sklearn.core.compile import jit
from mimosa_sklearn.core.parts import as_parts


@pytest.fixture(autouse=True)
def _float64():
    with runtime.jax_scope():
        yield


def _ragged_data(n_tasks: int, n_max: int, seed: int, n_outputs: int = 1):
    """Tasks of 3 to ``n_max`` points on a 0.25-step grid, one output hole in some."""
    rng = np.random.default_rng(seed)
    grid = np.arange(0.0, 10.0, 0.25)[:, None]
    x = np.full((n_tasks, n_max, 1), np.nan)
    maps = np.zeros((n_tasks, n_max), dtype=np.int64)
    lengths = rng.integers(3, n_max + 1, n_tasks)
    lengths[0] = n_max
    for i, n in enumerate(lengths):
        idx = np.sort(rng.choice(grid.shape[0], n, replace=False))
        # Real rows anywhere: from_nan moves them to the front, as build_task_data lays
        # them out.
        slots = np.sort(rng.choice(n_max, n, replace=False))
        x[i, slots, 0], maps[i, slots] = grid[idx, 0], idx
    shift = rng.normal(0.0, 2.0, (n_tasks, 1, n_outputs))
    y = np.sin(x) + shift + 0.1 * rng.normal(size=(n_tasks, n_max, n_outputs))
    y[np.isnan(x[..., 0])] = np.nan
    y[1, np.flatnonzero(~np.isnan(x[1, :, 0]))[0], 0] = np.nan
    return from_nan(x, y, maps), grid, lengths


def test_length_parts_merge_parts_that_do_not_pay():
    # Swimmers-like: most tasks short, a few long ones worth their own part; the few
    # shortest are folded into the next part (they would save under 10% of the work).
    lengths = np.r_[np.full(400, 14), np.full(2800, 24), np.full(260, 50)]
    candidates = np.array([row_bucket(n) for n in lengths])
    assert _parts.length_parts(lengths, candidates) == [32, 56]
    assert _parts.length_parts(lengths, candidates, max_parts=1) == [56]
    # Equal lengths, or a few short tasks that would save little: one part.
    assert _parts.length_parts(np.full(50, 30), np.full(50, 32)) == [32]
    few_short = np.r_[np.full(1000, 30), np.full(20, 10)]
    assert _parts.length_parts(few_short, np.r_[np.full(1000, 32), np.full(20, 16)]) == [32]
    # Three sizes that all pay, unless capped at two (the cheapest merge goes).
    three = np.r_[np.full(1000, 8), np.full(1000, 32), np.full(100, 64)]
    assert _parts.length_parts(three, three) == [8, 32, 64]
    assert _parts.length_parts(three, three, max_parts=2) == [32, 64]


def test_split_by_length_keeps_every_row_of_every_task_once():
    tasks, _, lengths = _ragged_data(30, 20, seed=0)
    parts = _parts.split_by_length(tasks, [8, 16, 24])
    seen = np.concatenate([index for _, index in parts])
    np.testing.assert_array_equal(np.sort(seen), np.arange(30))
    for (part, index), n in zip(parts, [8, 16, 24], strict=True):
        assert part.n_rows == n and part.n_tasks == index.size and np.all(lengths[index] <= n)
        assert part.n_slots == task_bucket(index.size)
        cut = min(n, tasks.n_rows)
        for row, i in enumerate(index):
            for name in ("x", "rows", "y", "observed", "mappings"):
                got, want = getattr(part, name)[row, :cut], getattr(tasks, name)[i, :cut]
                np.testing.assert_array_equal(got, want, err_msg=name)
            assert not part.rows[row, cut:].any()
        assert not part.rows[index.size :].any()


def _stacked_rows(src: np.ndarray, n_tasks: int) -> np.ndarray:
    rows = np.empty(n_tasks, dtype=np.int64)
    rows[src[src >= 0]] = np.flatnonzero(src >= 0)
    return rows


@jit
def _core(params, weights, tau, batch, jitter):
    """E-step, ELBO, VM-step objective and gradient on a one-part or batch in parts."""
    post, new_tau, _ = em.e_step(params, weights, tau, batch, jitter, True)
    value = em.elbo(params, weights, new_tau, post, batch, jitter)
    moments, mweights = mstep.part_moments(params, new_tau, post, batch)

    def objective(p):
        return mstep.total_objective(p, post, as_parts(batch), moments, mweights, jitter)

    obj, grad = eqx.filter_value_and_grad(objective)(params)
    return post.mean, post.cov, new_tau, value, obj, grad


@pytest.mark.parametrize("approximate", [False, True], ids=["exact", "approximate"])
def test_ragged_core_equals_one_padded_batch(approximate):
    # Task-specific hyperparameters, perturbed per task: the parts must see their own
    # tasks' rows. Two outputs with a hole, two clusters.
    t, k, jitter = 20, 2, 1e-6
    tasks, grid, _ = _ragged_data(t, 24, seed=1, n_outputs=2)
    config = _fit.FitConfig(n_clusters=k, shared_task_hps=False)
    one = _batching.make_batch(tasks, grid)
    parts, src = _fit.make_parts(tasks, grid, config, max_parts=3)
    assert len(parts) >= 2 and len({p.x.shape[1] for p in parts}) == len(parts)
    if approximate:
        inducing = grid[::4]
        tasks = dataclasses.replace(tasks, mappings=None)
        one = _batching.make_batch(tasks, inducing)
        parts, src = _fit.make_parts(tasks, inducing, config, max_parts=3)
    rows = _stacked_rows(src, t)

    rng = np.random.default_rng(2)
    layout = SharingLayout.from_flags(1, k, 2, shared_task_hps=False, shared_output_hps=False)
    tau0 = rng.dirichlet(np.ones(k), size=t)
    shift = rng.normal(0.0, 0.3, t)

    def params_for(n_rows, where):
        lay = dataclasses.replace(layout, task=(n_rows,) + layout.task[1:])
        p = _kernels.default_params(lay, tasks, tau0)
        return eqx.tree_at(lambda q: q.log_noise, p, p.log_noise.at[where, 0, 0].add(shift))

    p_one = params_for(one.x.shape[0], np.arange(t))
    p_parts = params_for(src.size, rows)
    tau_one = np.full((one.x.shape[0], k), 0.5)
    tau_one[:t] = tau0
    tau_parts = np.where((src >= 0)[:, None], tau0[np.maximum(src, 0)], 0.5)
    if approximate:
        one = approx.with_projection(p_one, one, jitter)
        # Small chunks: the per-task work of the parts runs chunk by chunk.
        parts = tuple(
            dataclasses.replace(approx.with_projection(p_parts, b, jitter), task_chunk=3)
            for b in parts
        )
    weights = jnp.asarray([0.3, 0.7])
    a = _core(p_one, weights, jnp.asarray(tau_one), one, jitter)
    b = _core(p_parts, weights, jnp.asarray(tau_parts), parts, jitter)

    tol = {"rtol": 1e-9, "atol": 1e-9}
    for u, v in zip(a[:2], b[:2], strict=True):  # hyperposterior mean and covariance
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), **tol)
    np.testing.assert_allclose(np.asarray(a[2])[:t], np.asarray(b[2])[rows], **tol)
    np.testing.assert_allclose(float(a[3]), float(b[3]), rtol=1e-11)  # ELBO
    np.testing.assert_allclose(float(a[4]), float(b[4]), rtol=1e-11)  # VM objective
    for u, v in zip(jax.tree.leaves(a[5]), jax.tree.leaves(b[5]), strict=True):
        u, v = np.asarray(u), np.asarray(v)
        if u.ndim == 3:
            u, v = u[:t], v[rows]  # task-specific gradients, stacked in part order
        np.testing.assert_allclose(u, v, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize(
    ("shared_task_hps", "approximate"),
    [
        pytest.param(True, False, marks=pytest.mark.slow, id="shared"),
        pytest.param(False, False, id="task-specific"),
        pytest.param(True, True, marks=pytest.mark.slow, id="shared-approximate"),
    ],
)
def test_ragged_fit_equals_one_part_fit(shared_task_hps, approximate):
    tasks, grid, _ = _ragged_data(24, 24, seed=3)
    config = _fit.FitConfig(
        n_clusters=2, max_iter=3, tol=0.0, max_steps=4, shared_task_hps=shared_task_hps
    )
    if approximate:  # the projections are rebuilt part by part every iteration
        tasks, grid = dataclasses.replace(tasks, mappings=None), grid[::3]
    one, ragged = (
        _fit.fit_magma(
            tasks, grid, dataclasses.replace(config, task_parts=n), approximate=approximate
        )
        for n in (1, 3)
    )
    assert _fit.make_parts(tasks, grid, config, 3) is not None
    # Same objective and gradients to round-off (see the core test), but L-BFGS over one
    # noise per task amplifies round-off a little: 2e-8 after three VM-steps.
    rtol = 1e-9 if shared_task_hps else 1e-6
    np.testing.assert_allclose(ragged.elbo_history, one.elbo_history, rtol=rtol)
    np.testing.assert_allclose(ragged.tau, one.tau, atol=1e-7)
    hp_one, hp_ragged = one.hyperparameters(), ragged.hyperparameters()
    assert hp_one.keys() == hp_ragged.keys()
    for key in hp_one:
        np.testing.assert_allclose(hp_ragged[key], hp_one[key], rtol=100 * rtol, err_msg=key)
    x_new = from_nan(np.linspace(0.0, 12.0, 5)[None, :, None].repeat(4, axis=0))
    for u, v in zip(
        ragged.predict_training_tasks(np.arange(4), x_new),
        one.predict_training_tasks(np.arange(4), x_new),
        strict=True,
    ):
        np.testing.assert_allclose(u, v, rtol=100 * rtol, atol=1e-8)
    assert ragged.n_parameters() == one.n_parameters()
