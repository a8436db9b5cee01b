"""Tasks of very different lengths: parts against one batch padded to the longest.

Run ``python benchmarks/parts.py [--tasks N] [--iters 5] [--tol 1e-4 1e-3]``
(``--tasks 600 --iters 2 --tol 1e-3`` for a quick check).

Data: the bundled swimmers (3456 swimmers with 16 to 61 races each, median 20, at
994 distinct ages), fitted with the exact grid, K=3, through ``MagmaClusterRegressor``.

1. Side by side, at a fixed number of EM iterations (``tol=0``): the fit with every
   task padded to the longest (``FitConfig.task_parts=1``) and the default, which
   groups the tasks into parts of their own padded length (``_fit.make_parts``).
   Each variant is fitted twice (cold: compile included; warm: a refit), and the
   final ELBOs are printed: they agree to round-off.
2. Full fits (until the relative ELBO change is below ``tol``, at most 100 iterations)
   with the default parts, for each ``--tol``: time, iterations, whether it converged,
   and the ELBO.

The part layout is set through ``_fit.fit_magma``'s ``config``, which the script
wraps (the estimator does not expose it).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings

import numpy as np

from mimosa_sklearn import MagmaClusterRegressor
from mimosa_sklearn import _fit as fit_module
from mimosa_sklearn._padded import row_bucket
from mimosa_sklearn.datasets import load_swimmers

_fit_magma = fit_module.fit_magma


def _with_parts(task_parts):
    def fit(tasks, grid, config, *args, **kwargs):
        config = dataclasses.replace(config, task_parts=task_parts)
        return _fit_magma(tasks, grid, config, *args, **kwargs)

    return fit


def _fit(X, y, task_parts, **kwargs):
    fit_module.fit_magma = _with_parts(task_parts)
    try:
        est = MagmaClusterRegressor(n_clusters=3, grid=None, random_state=0, **kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning at a fixed iteration count
            t0 = time.perf_counter()
            est.fit(X, y)
        return time.perf_counter() - t0, est
    finally:
        fit_module.fit_magma = _fit_magma


def _layout(X) -> str:
    lengths = X.groupby("ID").size().to_numpy()
    candidates = np.array([row_bucket(n) for n in lengths])
    from mimosa_sklearn import _parts

    sizes = _parts.length_parts(lengths, candidates)
    edges = np.searchsorted(np.asarray(sizes), lengths, side="left")
    counts = np.bincount(edges, minlength=len(sizes))
    return ", ".join(f"{c} tasks padded to {n}" for n, c in zip(sizes, counts, strict=True))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=None, help="keep the first swimmers")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--tol", type=float, nargs="*", default=[1e-4, 1e-3])
    args = parser.parse_args(argv)
    X, y = load_swimmers()
    if args.tasks is not None:
        keep = X["ID"].isin(X["ID"].unique()[: args.tasks]).to_numpy()
        X, y = X[keep], y[keep]
    lengths = X.groupby("ID").size()
    print(
        f"swimmers: {lengths.size} tasks, {len(X)} points ({lengths.min()}-{lengths.max()} "
        f"per task, median {int(lengths.median())}), {X['age_years'].nunique()} distinct ages; "
        f"exact grid, K=3"
    )
    print(f"parts: {_layout(X)}\n")
    print(f"## {args.iters} EM iterations (tol=0)\n")
    print("| layout | cold s | warm s | final ELBO |")
    print("|---|---:|---:|---:|")
    warm = {}
    for name, parts in (("one part (padded to the longest)", 1), ("parts", None)):
        cold, _ = _fit(X, y, parts, max_iter=args.iters, tol=0.0)
        warm[name], est = _fit(X, y, parts, max_iter=args.iters, tol=0.0)
        print(f"| {name} | {cold:.1f} | {warm[name]:.1f} | {est.model_.elbo:.6f} |")
    ratio = warm["one part (padded to the longest)"] / warm["parts"]
    print(f"\nparts speed-up (warm): {ratio:.1f}x\n")
    if args.tol:
        print("## Full fits, parts (warm: compiled above)\n")
        print("| tol | fit s | iterations | converged | ELBO |")
        print("|---:|---:|---:|---|---:|")
        for tol in args.tol:
            secs, est = _fit(X, y, None, tol=tol)
            print(
                f"| {tol:g} | {secs:.1f} | {est.n_iter_} | {est.converged_} | "
                f"{est.model_.elbo:.3f} |"
            )


if __name__ == "__main__":
    main()
