"""Approximate grid benchmark: accuracy against the exact grid, and speed at scale.

Run ``python benchmarks/approx_grid.py [--part accuracy speed swimmers]``. Parts:

- ``accuracy``: tasks with continuous random inputs (every input distinct, so the exact
  union grid holds every training point) fitted with the exact grid and with
  ``grid=M`` for each ``--inducing`` value. Prints fit time, and RMSE, NLPD and 95%
  coverage of (1) forecasts of the training tasks' last points and (2) forecasts of
  held-out tasks conditioned on their first points, with the differences to the exact
  grid. The exact grid costs ``O(G^3)`` with ``G = tasks x points``: keep
  ``--tasks x --points`` to a few thousand.
- ``speed``: fit time (cold: first fit in the process, compile included; warm: a
  second data set of the same shapes) and peak memory on ``--speed-tasks`` tasks of
  ``--speed-points`` continuous random inputs with ``grid=--speed-inducing``, for a
  fixed number of EM iterations (``--iters``).
- ``swimmers``: a full fit (until convergence, at most ``--max-iter`` iterations) of the
  bundled swimmers data (3456 swimmers, 76,832 races at irregular ages) with
  ``grid=--swimmers-inducing``; ``--swimmers-tasks`` keeps the first swimmers only.

Small smoke run: ``python benchmarks/approx_grid.py --tasks 40 --points 8
--speed-tasks 200 --swimmers-tasks 100 --iters 3``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import warnings

import numpy as np

from mimosa_sklearn import MagmaClusterRegressor
from mimosa_sklearn.datasets import load_swimmers, make_magma_data
from mimosa_sklearn.metrics import coverage, nlpd


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _fit(X, y, grid, k: int, **kw):
    est = MagmaClusterRegressor(n_clusters=k, grid=grid, random_state=0, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning with a fixed iteration count
        t0 = time.perf_counter()
        est.fit(X, y)
    return est, time.perf_counter() - t0


def _scores(est, X, y) -> tuple[float, float, float]:
    mean, std = est.predict(X, return_std=True)
    y = np.asarray(y, dtype=np.float64)
    return (
        float(np.sqrt(np.mean((mean - y) ** 2))),
        nlpd(y, mean, std),
        coverage(y, mean, std),
    )


def accuracy(n_tasks: int, n_points: int, inducing: list[int], k: int, seed: int) -> None:
    X, y, _ = make_magma_data(n_tasks=n_tasks, n_points=n_points, n_clusters=k, random_state=seed)
    ids = X["ID"].unique()
    pos = X.groupby("ID").cumcount().to_numpy()
    held = X["ID"].isin(ids[: max(1, n_tasks // 5)]).to_numpy()
    n_fit = max(2, (3 * n_points) // 4)
    fit = ~held & (pos < n_fit)
    splits = {
        "train tasks, last points": (~held & (pos >= n_fit)),
        "new tasks, conditioned": (held & (pos >= n_points // 2)),
    }
    obs = held & (pos < n_points // 2)
    print(
        f"\n## Accuracy: {n_tasks} tasks x {n_points} continuous random inputs, K={k} "
        f"(fit on {int(fit.sum())} points; exact grid G = {int(fit.sum())})\n"
    )
    print("| grid | fit s | iters | forecast | RMSE | NLPD | cov95 | dRMSE | dNLPD |")
    print("|---|---|---|---|---|---|---|---|---|")
    ref: dict[str, tuple[float, float, float]] = {}
    for grid in [None, *inducing]:
        est, secs = _fit(X[fit], y[fit], grid, k)
        est.condition(X[obs], y[obs])
        for name, rows in splits.items():
            rmse, nl, cov = _scores(est, X[rows], y[rows])
            if grid is None:
                ref[name] = (rmse, nl, cov)
            d_rmse, d_nlpd = rmse - ref[name][0], nl - ref[name][1]
            label = "exact" if grid is None else f"M={grid}"
            print(
                f"| {label} | {secs:.1f} | {est.n_iter_} | {name} | {rmse:.4f} | {nl:.4f} | "
                f"{cov:.3f} | {d_rmse:+.4f} | {d_nlpd:+.4f} |"
            )
        sys.stdout.flush()


def speed(n_tasks: int, n_points: int, m: int, iters: int, k: int, seed: int) -> None:
    print(
        f"\n## Speed: {n_tasks} tasks x {n_points} continuous random inputs, K={k}, "
        f"grid={m}, {iters} EM iterations\n"
    )
    times = []
    for s in (seed, seed + 1):
        X, y, _ = make_magma_data(n_tasks=n_tasks, n_points=n_points, n_clusters=k, random_state=s)
        est, secs = _fit(X, y, m, k, max_iter=iters, tol=0.0)
        times.append(secs)
    print("| fit cold s | fit warm s | per iteration s | peak RSS GiB |")
    print("|---|---|---|---|")
    print(f"| {times[0]:.1f} | {times[1]:.1f} | {times[1] / iters:.2f} | {_peak_rss_gib():.2f} |")


def swimmers(n_tasks: int | None, m: int, k: int, max_iter: int) -> None:
    X, y = load_swimmers()
    if n_tasks is not None:
        keep = X["ID"].isin(X["ID"].unique()[:n_tasks]).to_numpy()
        X, y = X[keep], y[keep]
    n_sw = X["ID"].nunique()
    print(
        f"\n## Swimmers: {n_sw} swimmers, {len(X)} races, {X['age_years'].nunique()} distinct ages, "
        f"K={k}, grid={m}\n"
    )
    est, secs = _fit(X, y, m, k, max_iter=max_iter)
    print("| full fit s (cold) | iters | converged | peak RSS GiB |")
    print("|---|---|---|---|")
    print(f"| {secs:.1f} | {est.n_iter_} | {est.converged_} | {_peak_rss_gib():.2f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--part",
        nargs="+",
        default=["accuracy", "speed", "swimmers"],
        choices=["accuracy", "speed", "swimmers"],
    )
    parser.add_argument("--clusters", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", type=int, default=200, help="accuracy part")
    parser.add_argument("--points", type=int, default=12, help="accuracy part")
    parser.add_argument("--inducing", type=int, nargs="+", default=[20, 50, 100])
    parser.add_argument("--speed-tasks", type=int, default=10000)
    parser.add_argument("--speed-points", type=int, default=30)
    parser.add_argument("--speed-inducing", type=int, default=100)
    parser.add_argument("--iters", type=int, default=10, help="speed part: EM iterations")
    parser.add_argument("--swimmers-tasks", type=int, default=None)
    parser.add_argument("--swimmers-inducing", type=int, default=100)
    parser.add_argument("--max-iter", type=int, default=100, help="swimmers part")
    args = parser.parse_args(argv)
    k = args.clusters
    if "accuracy" in args.part:
        accuracy(args.tasks, args.points, args.inducing, k, args.seed)
    if "speed" in args.part:
        speed(args.speed_tasks, args.speed_points, args.speed_inducing, args.iters, k, args.seed)
    if "swimmers" in args.part:
        swimmers(args.swimmers_tasks, args.swimmers_inducing, k, args.max_iter)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
