"""Initialisation: k-means responsibilities on curve summaries, data-driven kernels.

Runs once per fit on the host (numpy), outside the jit-compiled hot path.
"""

from __future__ import annotations

import numpy as np

__all__ = ["task_summaries", "kmeans", "init_responsibilities", "data_scales"]


def task_summaries(y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-task (min, mean, max) of every output, standardised: shape ``(T, 3 O)``.

    Tasks with no observation of an output get that output's global mean, so they do
    not pull k-means apart.
    """
    vals = np.where(mask, y, np.nan)
    with np.errstate(all="ignore"), _quiet_nan():
        feats = np.concatenate(
            [np.nanmin(vals, axis=1), np.nanmean(vals, axis=1), np.nanmax(vals, axis=1)], axis=1
        )
    col_mean = np.nanmean(np.where(np.isfinite(feats), feats, np.nan), axis=0)
    col_mean = np.where(np.isfinite(col_mean), col_mean, 0.0)
    feats = np.where(np.isfinite(feats), feats, col_mean)
    std = feats.std(axis=0)
    return (feats - feats.mean(axis=0)) / np.where(std > 0, std, 1.0)


class _quiet_nan:
    """Silence numpy's 'All-NaN slice' warnings for tasks missing an output."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def kmeans(
    feats: np.ndarray,
    n_clusters: int,
    rng: np.random.Generator,
    n_restarts: int = 20,
    n_iter: int = 50,
) -> np.ndarray:
    """Hard k-means labels (k-means++ seeding, Lloyd iterations, best of restarts).

    Empty clusters are re-seeded at the point farthest from its centre, so every
    cluster keeps at least one task whenever there are at least ``n_clusters``
    distinct points.
    """
    n = feats.shape[0]
    if n_clusters == 1:
        return np.zeros(n, dtype=np.int64)
    best_labels, best_inertia = None, np.inf
    for _ in range(n_restarts):
        centres = _kmeanspp(feats, n_clusters, rng)
        labels = np.zeros(n, dtype=np.int64)
        for _ in range(n_iter):
            d2 = ((feats[:, None, :] - centres[None]) ** 2).sum(-1)
            labels = d2.argmin(1)
            counts = np.bincount(labels, minlength=n_clusters)
            dist = d2[np.arange(n), labels]
            for k in np.flatnonzero(counts == 0):
                # Only from clusters that keep another member: with identical points
                # the farthest one is any point, and taking the same one twice would
                # empty the cluster it was just given to.
                donors = counts[labels] > 1
                far = np.where(donors, dist, -np.inf).argmax()
                counts[labels[far]] -= 1
                labels[far], counts[k] = k, 1
            new = np.stack([feats[labels == k].mean(0) for k in range(n_clusters)])
            if np.allclose(new, centres):
                break
            centres = new
        inertia = ((feats - centres[labels]) ** 2).sum()
        if inertia < best_inertia - 1e-12:
            best_labels, best_inertia = labels, inertia
    return best_labels


def _kmeanspp(feats: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    n = feats.shape[0]
    centres = [feats[rng.integers(n)]]
    for _ in range(1, k):
        d2 = np.min(((feats[:, None, :] - np.stack(centres)[None]) ** 2).sum(-1), axis=1)
        total = d2.sum()
        idx = rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)
        centres.append(feats[idx])
    return np.stack(centres)


def init_responsibilities(
    y: np.ndarray,
    mask: np.ndarray,
    n_clusters: int,
    rng: np.random.Generator,
    method: str = "kmeans",
    task_weight: np.ndarray | None = None,
) -> np.ndarray:
    """One-hot starting responsibilities ``(T, K)`` for real tasks (uniform on dummies)."""
    t = y.shape[0]
    real = np.ones(t, bool) if task_weight is None else task_weight > 0
    tau = np.full((t, n_clusters), 1.0 / n_clusters)
    n_real = int(real.sum())
    if method == "kmeans":
        labels = kmeans(task_summaries(y[real], mask[real]), n_clusters, rng)
    elif method == "random":
        labels = rng.permutation(np.arange(n_real) % n_clusters)
    else:
        raise ValueError(f"Unknown init method {method!r}; expected 'kmeans' or 'random'.")
    tau[real] = np.eye(n_clusters)[labels]
    return tau


def data_scales(x: np.ndarray, y: np.ndarray, mask: np.ndarray, row_mask: np.ndarray):
    """Input ranges per dimension ``(I,)`` and output variances per output ``(O,)``."""
    xs = x[row_mask]
    span = xs.max(axis=0) - xs.min(axis=0) if xs.size else np.ones(x.shape[-1])
    span = np.where(span > 0, span, 1.0)
    var = np.array(
        [np.var(y[..., o][mask[..., o]]) if mask[..., o].any() else 1.0 for o in range(y.shape[-1])]
    )
    var = np.where(var > 0, var, 1.0)
    return span, var
