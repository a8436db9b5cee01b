"""Padded clusters (:mod:`mimosa_sklearn.core.clusters`): buckets and the padding itself.

Proven: 2-4 clusters run as 4 and 5-8 as 8, 1 and more than 8 as asked; padding
appends copies of cluster 0 on every cluster-specific leaf, leaves shared leaves
(size 1 on their cluster axis) alone, adds zero responsibility columns and marks the
padded clusters in ``cluster_mask``. That the EM then fits the real clusters' model is
proven in ``test_em.py`` (one E-step, ELBO and objective against numpy) and
``test_fit.py`` (whole fits against exact-K fits).
"""

from __future__ import annotations

import core_reference as ref
import jax
import numpy as np
import pytest

from mimosa_sklearn._kernels import SharingLayout
from mimosa_sklearn.core.clusters import cluster_bucket, pad_clusters


def test_cluster_buckets():
    assert [cluster_bucket(k) for k in range(1, 11)] == [None, 4, 4, 4, 8, 8, 8, 8, None, None]


@pytest.mark.parametrize("cluster_specific", [False, True])
def test_padding_copies_cluster_zero_and_marks_the_padded_clusters(cluster_specific):
    rng = np.random.default_rng(0)
    layout = SharingLayout.from_flags(
        5,
        3,
        2,
        shared_task_hps=False,
        shared_cluster_hps=not cluster_specific,
        cluster_specific_task_hps=cluster_specific,
        shared_output_hps=False,
    )
    params, _ = ref.random_params(rng, layout)
    tau = rng.dirichlet(np.ones(3), size=5)
    padded, tau_p = pad_clusters(params, tau, 4)
    np.testing.assert_array_equal(tau_p, np.c_[tau, np.zeros(5)])
    assert np.asarray(padded.cluster_mask).tolist() == [True, True, True, False]
    axes = {"mean_kernel": 0, "prior_mean": 0, "task_kernel": 1, "log_noise": 1}
    for name, axis in axes.items():
        pairs = zip(
            jax.tree.leaves(getattr(params, name)),
            jax.tree.leaves(getattr(padded, name)),
            strict=True,
        )
        for before, after in pairs:
            before, after = np.asarray(before), np.asarray(after)
            if before.shape[axis] == 1:  # shared across clusters: untouched
                np.testing.assert_array_equal(after, before)
                continue
            assert after.shape[axis] == 4
            np.testing.assert_array_equal(after.take([0, 1, 2], axis), before)
            np.testing.assert_array_equal(after.take([3], axis), before.take([0], axis))
    # The cluster-specific layout pads every group, the shared one only the prior means.
    n_padded = sum(
        np.asarray(a).shape != np.asarray(b).shape
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(padded), strict=False)
    )
    assert n_padded == (6 if cluster_specific else 1)
