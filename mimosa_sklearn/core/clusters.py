"""Padded clusters: one compiled EM for nearby numbers of clusters.

The EM's programs depend on the number of clusters ``K`` through their shapes, so a
search over ``K`` (``GridSearchCV`` over ``n_clusters``) compiled every program once per
value. Run with ``K_b >= K`` clusters, the last ``K_b - K`` of them padded
(:attr:`.params.Params.cluster_mask`), the EM computes the fit with ``K`` clusters: no
task is theirs (responsibilities exactly 0), they add nothing to the ELBO or to the
VM-step objectives, their hyperparameters get zero gradients and keep their starting
values (copies of cluster 0's, so every factorisation stays well posed), and L-BFGS
measures convergence per coordinate, so their coordinates change no step. The values
of a bucket then share one set of programs (:func:`cluster_bucket`; the bucket's own
size runs with an all-True mask, since the mask is part of the program), at the price
of computing the padded clusters' share of every per-cluster step; the caller pads only
fits where that share is small. :func:`drop_padded_clusters` cuts the result back to
``K`` clusters, so what follows the fit (predictions, persistence) never sees them.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import numpy as np

from .compile import to_device
from .em import EMResult
from .hyperposterior import Hyperposterior
from .model import Model
from .params import Params

__all__ = [
    "cluster_bucket",
    "pad_clusters",
    "pad_memberships",
    "pad_model",
    "drop_padded_clusters",
]

# Axis of the cluster dimension in the leaves of each group of Params (see its docs):
# mean kernel (K*, O*), prior mean (K, O*), task kernel and noise (T*, K*, O*).
_CLUSTER_AXIS = {"mean_kernel": 0, "prior_mean": 0, "task_kernel": 1, "log_noise": 1}


def cluster_bucket(k: int) -> int | None:
    """Clusters a fit asking for ``k`` runs with: 2-4 run as 4, 5-8 as 8. None for one
    cluster (plain Magma, no responsibilities at all) and more than 8: run as asked."""
    if 2 <= k <= 4:
        return 4
    if 5 <= k <= 8:
        return 8
    return None


def _map_cluster_leaves(params: Params, fn) -> Params:
    """``fn(leaf, axis)`` on every floating leaf of ``params``, ``axis`` its cluster axis."""
    groups = {
        name: jax.tree.map(
            lambda a, ax=axis: fn(a, ax) if eqx.is_inexact_array(a) else a,
            getattr(params, name),
        )
        for name, axis in _CLUSTER_AXIS.items()
    }
    return dataclasses.replace(params, **groups)


def _map_post(post: Hyperposterior, fn) -> Hyperposterior:
    """``fn(leaf, 0)`` on every field of a hyperposterior (all lead with ``K``)."""
    return dataclasses.replace(
        post, **{f.name: fn(getattr(post, f.name), 0) for f in dataclasses.fields(post)}
    )


def _padder(k: int, k_b: int):
    """``pad(leaf, axis)``: a leaf of size ``k`` on ``axis`` with ``k_b - k`` copies of
    its entry 0 appended (other leaves as they are). On the host: an eager ``jnp``
    concatenation would compile a program per shape."""

    def pad(leaf, axis):
        if leaf.shape[axis] != k or k == 1:
            return leaf
        a = np.asarray(leaf)
        return to_device(np.concatenate([a, np.repeat(a.take([0], axis), k_b - k, axis)], axis))

    return pad


def _pad_params(params: Params, k: int, k_b: int) -> Params:
    padded = _map_cluster_leaves(params, _padder(k, k_b))
    return dataclasses.replace(padded, cluster_mask=to_device(np.arange(k_b) < k))


def pad_clusters(params: Params, tau: np.ndarray, k_b: int) -> tuple[Params, np.ndarray]:
    """``params`` and ``tau`` (T, K) with ``k_b - K`` padded clusters appended.

    Cluster-specific leaves (size ``K`` on their cluster axis) get copies of cluster
    0's values; shared ones (size 1) are left as they are; ``tau`` gets zero columns.
    """
    return _pad_params(params, tau.shape[1], k_b), pad_memberships(tau, k_b)


def pad_memberships(tau, k_b: int) -> np.ndarray:
    """Memberships ``tau`` (T, K) with ``k_b - K`` zero columns appended (host array)."""
    tau = np.asarray(tau)
    return np.concatenate([tau, np.zeros((tau.shape[0], k_b - tau.shape[1]), tau.dtype)], axis=1)


def pad_model(model: Model, k_b: int) -> Model:
    """The view of a fitted model (without training tasks) that programs on new tasks
    take: ``k_b - K`` padded clusters appended (zero weight, copies of cluster 0's
    hyperparameters and hyperposterior, masked out of every membership), so that those
    programs, compiled once, serve every ``K`` of a bucket. Their membership outputs
    have ``k_b`` columns, the padded ones exactly 0."""
    k = model.weights.shape[0]
    post = _map_post(model.post, _padder(k, k_b))
    weights = to_device(np.r_[np.asarray(model.weights), np.zeros(k_b - k)])
    return dataclasses.replace(
        model, params=_pad_params(model.params, k, k_b), post=post, weights=weights
    )


def drop_padded_clusters(result: EMResult, k: int) -> EMResult:
    """``result`` of an EM run by :func:`pad_clusters` cut back to its ``k`` real
    clusters (the first ``k``): what a fit with ``k`` clusters returns."""
    k_b = result.tau.shape[1]

    def cut(leaf, axis):
        if leaf.shape[axis] != k_b:
            return leaf
        return to_device(np.asarray(leaf).take(np.arange(k), axis))

    params = dataclasses.replace(_map_cluster_leaves(result.params, cut), cluster_mask=None)
    return dataclasses.replace(
        result,
        params=params,
        weights=np.asarray(result.weights)[:k],
        tau=np.asarray(result.tau)[:, :k],
        post=_map_post(result.post, cut),
    )
