"""Forecasting new swimmers against fitting: the issue-23 target "condition plus predict of
the new tasks costs at most 0.1x the fit".

Run ``python benchmarks/swimmers_forecast.py [--gender 1 2] [--n-train N] [--n-new N]
[--n-clusters 5] [--observed 0.6]``.

The protocol of the MagmaClust authors on the swimmers: per gender, the swimmers (in
order of first appearance) are permuted with ``numpy.random.default_rng(--seed)``; 60%
are training tasks (about 1,035), the other 40% new tasks (about 690). Each new swimmer
is observed on the first ``--observed`` fraction of its races (by age) and forecast on
the rest. ``MagmaClusterRegressor(n_clusters=5, grid=None, random_state=0)`` (the exact
grid) is fitted to the training swimmers, then the new ones are conditioned on and
predicted twice (``return_std=True``, then the mean alone), all in one process, so the
ratio of the forecast's time to the fit's is measured on the same machine load.
``--n-train`` / ``--n-new`` keep only the first swimmers of each part (a quick check).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np

from mimosa_sklearn import MagmaClusterRegressor
from mimosa_sklearn.datasets import load_swimmers


def split(X, y, seed: int, observed: float, n_train: int | None, n_new: int | None):
    """Training rows, observed rows of the new swimmers, and their forecast rows."""
    ids = X["ID"].unique()
    ids = ids[np.random.default_rng(seed).permutation(ids.size)]
    n_tr = int(round(0.6 * ids.size))
    train, new = ids[:n_tr][:n_train], ids[n_tr:][:n_new]
    tr = X["ID"].isin(train).to_numpy()
    nw = X["ID"].isin(new).to_numpy()
    Xn, yn = X[nw].sort_values(["ID", "Age"], kind="stable"), y[nw]
    yn = yn.loc[Xn.index]
    rank = Xn.groupby("ID").cumcount().to_numpy()
    count = Xn.groupby("ID")["Age"].transform("size").to_numpy()
    obs = rank < np.maximum(1, np.floor(observed * count))
    return (X[tr], y[tr]), (Xn[obs], yn[obs]), (Xn[~obs], yn[~obs])


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run(gender: int, args) -> dict:
    X, y = load_swimmers(gender=gender)
    (Xt, yt), (Xo, yo), (Xf, yf) = split(X, y, args.seed, args.observed, args.n_train, args.n_new)
    est = MagmaClusterRegressor(n_clusters=args.n_clusters, grid=None, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a ConvergenceWarning shows in n_iter_
        _, fit_s = timed(lambda: est.fit(Xt, yt))
    _, cond_s = timed(lambda: est.condition(Xo, yo))
    (mean, std), pred1_s = timed(lambda: est.predict(Xf, return_std=True))
    mean2, pred2_s = timed(lambda: est.predict(Xf))
    rmse = float(np.sqrt(np.mean((mean - yf.to_numpy()) ** 2)))
    out = {
        "gender": gender,
        "train": Xt["ID"].nunique(),
        "new": Xo["ID"].nunique(),
        "grid": int(est.model_.n_grid),
        "fit": fit_s,
        "iter": est.n_iter_,
        "condition": cond_s,
        "predict1": pred1_s,
        "predict2": pred2_s,
        "rmse": rmse,
        "mean_std": float(np.mean(std)),
        "same": bool(np.array_equal(mean, mean2)),
    }
    out["ratio"] = (cond_s + pred1_s + pred2_s) / fit_s
    print(out, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gender", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--n-new", type=int, default=None)
    parser.add_argument("--n-clusters", type=int, default=5)
    parser.add_argument("--observed", type=float, default=0.6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = [run(g, args) for g in args.gender]
    import jax

    device = jax.devices()[0]
    print(
        "\n| gender | training / new swimmers | G | fit (s) | EM iterations | condition (s) "
        "| predict with std (s) | predict again (s) | (condition + 2 predicts) / fit "
        "| RMSE (s) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['gender']} | {r['train']} / {r['new']} | {r['grid']} | {r['fit']:.1f} "
            f"| {r['iter']} | {r['condition']:.1f} | {r['predict1']:.1f} "
            f"| {r['predict2']:.1f} | {r['ratio']:.3f} | {r['rmse']:.3f} |"
        )
    print(f"\nJAX {jax.__version__} on {device.platform} ({device.device_kind}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
