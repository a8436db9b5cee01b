"""Initialisation on the host (:mod:`mimosa_sklearn.core.init`), against brute force.

Proven here:

* ``task_summaries`` is the standardised per-task (min, mean, max) of every observed
  output, a missing output taking that column's mean over the other tasks;
* ``kmeans`` finds the global minimum of the within-cluster sum of squares (checked by
  enumerating every labelling of a small set), returns a Lloyd fixed point, keeps
  every cluster non-empty and is reproducible for a given generator;
* ``init_responsibilities`` gives one-hot rows to real tasks (k-means on the real
  tasks only, or a balanced random split) and uniform rows to padded tasks;
* ``data_scales`` gives the input ranges over real rows and the output variances over
  observed entries, with 1 in place of a zero or undefined scale.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

from mimosa_sklearn.core import init

# --------------------------------------------------------------------------- summaries


def test_task_summaries_are_standardised_min_mean_max_per_output():
    rng = np.random.default_rng(0)
    t, n, o = 5, 4, 2
    y = rng.normal(size=(t, n, o))
    mask = rng.random((t, n, o)) > 0.3
    mask[:, 0] = True
    mask[3, :, 1] = False  # task 3 never observes output 1
    y = np.where(mask, y, 1e6)  # unobserved values must be ignored
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 'All-NaN slice' warning escapes
        got = init.task_summaries(y, mask)
    raw = np.full((t, 3 * o), np.nan)
    for i in range(t):
        for p in range(o):
            obs = y[i, mask[i, :, p], p]
            if obs.size:
                raw[i, [p, o + p, 2 * o + p]] = obs.min(), obs.mean(), obs.max()
    raw = np.where(np.isnan(raw), np.nanmean(raw, axis=0), raw)
    want = (raw - raw.mean(0)) / raw.std(0)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_task_summaries_of_identical_tasks_are_zero_not_nan():
    y = np.tile(np.array([1.0, 2.0, 4.0])[None, :, None], (3, 1, 1))
    got = init.task_summaries(y, np.ones_like(y, bool))
    np.testing.assert_array_equal(got, 0.0)


# --------------------------------------------------------------------------- k-means


def _inertia(feats, labels, k):
    return sum(((feats[labels == c] - feats[labels == c].mean(0)) ** 2).sum() for c in range(k))


def _best_inertia(feats, k):
    """Global minimum over every labelling with no empty cluster."""
    best = np.inf
    for labels in itertools.product(range(k), repeat=feats.shape[0]):
        labels = np.asarray(labels)
        if np.unique(labels).size == k:
            best = min(best, _inertia(feats, labels, k))
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kmeans_reaches_the_global_optimum_of_a_small_problem(seed):
    rng = np.random.default_rng(seed)
    feats = np.concatenate([rng.normal(c, 0.6, size=(3, 2)) for c in ([0, 0], [3, 0], [0, 3])])
    labels = init.kmeans(feats, 3, np.random.default_rng(seed))
    assert labels.shape == (9,) and np.bincount(labels, minlength=3).min() >= 1
    np.testing.assert_allclose(_inertia(feats, labels, 3), _best_inertia(feats, 3), rtol=1e-12)
    # A Lloyd fixed point: every point is nearest to its own cluster's centre.
    centres = np.stack([feats[labels == c].mean(0) for c in range(3)])
    d2 = ((feats[:, None] - centres[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(d2.argmin(1), labels)
    # Reproducible for a given generator.
    np.testing.assert_array_equal(init.kmeans(feats, 3, np.random.default_rng(seed)), labels)


def test_kmeans_puts_each_distinct_point_in_its_own_cluster():
    # As many clusters as distinct points, with duplicates: the optimum has inertia 0.
    # k-means++ never seeds on a copy of a chosen centre, so one start finds it.
    feats = np.repeat(np.array([[0.0], [1.0], [5.0]]), [4, 1, 2], axis=0)
    for seed in range(5):
        labels = init.kmeans(feats, 3, np.random.default_rng(seed), n_restarts=1)
        assert _inertia(feats, labels, 3) == 0.0
        assert sorted(set(labels)) == [0, 1, 2]
    np.testing.assert_array_equal(init.kmeans(feats, 1, np.random.default_rng(0)), 0)


# --------------------------------------------------------------------------- responsibilities


@pytest.fixture(scope="module")
def two_levels():
    """Six real tasks at two levels (-3 and +3) and two padded tasks (weight 0) whose
    extreme values would make k-means split them from the rest if they took part."""
    rng = np.random.default_rng(1)
    level = np.array([-3.0, 3.0, -3.0, 3.0, 3.0, -3.0, 0.0, 0.0])
    y = level[:, None, None] + 0.1 * rng.normal(size=(8, 4, 1))
    mask = np.ones((8, 4, 1), bool)
    y[6:] = [[[50.0]], [[-80.0]]]
    weight = np.r_[np.ones(6), 0.0, 0.0]
    return y, mask, weight, level


def test_kmeans_responsibilities_are_one_hot_on_real_tasks_and_uniform_on_padding(two_levels):
    y, mask, weight, level = two_levels
    tau = init.init_responsibilities(y, mask, 2, np.random.default_rng(2), task_weight=weight)
    assert tau.shape == (8, 2)
    np.testing.assert_array_equal(tau[6:], 0.5)
    np.testing.assert_array_equal(np.sort(tau[:6], axis=1), [[0.0, 1.0]] * 6)
    labels = tau[:6].argmax(1)
    low = level[:6] < 0
    assert len(set(labels[low])) == 1 and len(set(labels[~low])) == 1
    assert labels[low][0] != labels[~low][0]
    # The padded tasks took no part: the same as k-means on the real tasks alone.
    alone = init.kmeans(init.task_summaries(y[:6], mask[:6]), 2, np.random.default_rng(2))
    np.testing.assert_array_equal(labels, alone)
    # No weights: every task is real.
    all_real = init.init_responsibilities(y[:6], mask[:6], 2, np.random.default_rng(2))
    np.testing.assert_array_equal(all_real, tau[:6])


def test_random_responsibilities_split_real_tasks_evenly(two_levels):
    y, mask, weight, _ = two_levels
    weight = np.r_[np.ones(7), 0.0]  # seven real tasks over three clusters
    tau = init.init_responsibilities(
        y, mask, 3, np.random.default_rng(3), method="random", task_weight=weight
    )
    np.testing.assert_array_equal(tau[7], 1.0 / 3.0)
    np.testing.assert_array_equal(np.sort(tau[:7], axis=1)[:, -1], 1.0)
    np.testing.assert_array_equal(np.sort(tau[:7].sum(0)), [2.0, 2.0, 3.0])
    other = init.init_responsibilities(
        y, mask, 3, np.random.default_rng(4), method="random", task_weight=weight
    )
    assert not np.array_equal(other, tau)  # the split is random


def test_unknown_init_method_is_rejected(two_levels):
    y, mask, *_ = two_levels
    with pytest.raises(ValueError, match="Unknown init method 'spectral'"):
        init.init_responsibilities(y, mask, 2, np.random.default_rng(0), method="spectral")


# --------------------------------------------------------------------------- data scales


def test_data_scales_use_real_rows_and_observed_entries_only():
    x = np.array(
        [
            [[0.0, 2.0, 1.0], [4.0, 2.0, 3.0], [1e9, -1e9, 1e9]],
            [[1.0, 2.0, -1.0], [2.0, 2.0, 0.0], [0.0, 0.0, 0.0]],
        ]
    )
    row = np.array([[True, True, False], [True, True, False]])
    y = np.zeros((2, 3, 3))
    y[..., 0] = [[1.0, 3.0, 99.0], [5.0, 7.0, 99.0]]
    y[..., 1] = 2.5  # constant output
    mask = row[..., None] & np.array([True, True, False])  # output 2 never observed
    span, var = init.data_scales(x, y, mask, row)
    # Input 1 is constant over real rows: its span falls back to 1.
    np.testing.assert_array_equal(span, [4.0, 1.0, 4.0])
    np.testing.assert_allclose(var, [np.var([1.0, 3.0, 5.0, 7.0]), 1.0, 1.0], rtol=1e-15)
    # Without any real row, the spans are 1.
    span, _ = init.data_scales(x, y, mask, np.zeros_like(row))
    np.testing.assert_array_equal(span, [1.0, 1.0, 1.0])
