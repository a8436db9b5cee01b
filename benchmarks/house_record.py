"""Final ELBOs and compile counts: the record that a refactor changed no behaviour.

Run ``python benchmarks/house_record.py [--part elbo compiles]``.

- ``elbo``: the final ELBO (17 significant digits), the EM iterations and a checksum of
  the forecasts of these fits: synth_dev with K = 1 and K = 3; weight with K = 3; a
  correlated-outputs fit (20 simulated tasks of 15 points, two outputs, K = 2,
  ``max_iter=50``); the speed benchmark's 1000-task fit (30 points on a 201-point grid,
  K = 3, 5 EM iterations, ``tol=0``). Two runs of a commit print the same numbers; two
  commits whose numbers agree to 1e-6 relative fit alike.
- ``compiles``: XLA compilations (``jax_log_compiles``) of a first fit, ``condition`` and
  ``predict`` on synth_dev (K = 3) in a new process, and of the same three calls on a
  second fold (40 of the 60 training tasks). Counted with the compiled-program cache
  off, so that programs compiled by an earlier run are compiled again.
- ``warm`` (not run by default): the speed benchmark's 1000-task fit three times in one
  process, once cold and twice warm; prints the three times. For an A/B of two commits,
  run it in alternating processes at each (e.g. from a ``git worktree``).
"""

from __future__ import annotations

import argparse
import logging
import os
import warnings

import numpy as np
import pandas as pd


def _fits():
    from mimosa_sklearn.datasets import load_synth_dev, load_weight, make_magma_data

    X, y = load_synth_dev()
    yield "synth_dev K=1", X, y, {"n_clusters": 1}
    yield "synth_dev K=3", X, y, {"n_clusters": 3}
    Xw, yw = load_weight()
    yield "weight K=3", Xw, yw, {"n_clusters": 3}
    Xc, Yc, _ = make_magma_data(n_tasks=20, n_points=15, n_clusters=2, n_outputs=2, random_state=0)
    yield "correlated K=2", Xc, Yc, {"n_clusters": 2, "correlated_outputs": True, "max_iter": 50}
    Xs, ys, _ = make_magma_data(
        n_tasks=1000, n_points=30, n_clusters=3, grid_size=201, random_state=0
    )
    yield "speed 1000 tasks", Xs, ys, {"n_clusters": 3, "max_iter": 5, "tol": 0.0}


def elbo() -> None:
    from sklearn.exceptions import ConvergenceWarning

    from mimosa_sklearn import MagmaClusterRegressor

    print("| fit | final ELBO | EM iterations | sum of forecasts |")
    print("|---|---|---|---|")
    for name, X, y, kw in _fits():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est = MagmaClusterRegressor(random_state=0, **kw).fit(X, y)
        total = float(np.sum(est.predict(X)))
        print(f"| {name} | {est.elbo_[-1]:.17g} | {est.n_iter_} | {total:.12g} |", flush=True)


class _Counter(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "Finished XLA compilation" in record.getMessage():
            self.count += 1


def compiles() -> None:
    os.environ["MIMOSA_SKLEARN_CACHE_DIR"] = ""
    import jax

    from mimosa_sklearn import MagmaClusterRegressor
    from mimosa_sklearn.datasets import load_synth_dev

    counter = _Counter()
    for name in ("jax._src.dispatch", "jax._src.interpreters.pxla", "jax._src.compiler"):
        logging.getLogger(name).addHandler(counter)
        logging.getLogger(name).setLevel(logging.DEBUG)
    jax.config.update("jax_log_compiles", True)
    X, y = load_synth_dev()
    X_obs, y_obs = load_synth_dev("test_observed")
    X_new, _ = load_synth_dev("test_target")
    fold = X["ID"].isin(pd.unique(X["ID"])[:40]).to_numpy()
    print("| calls | fit | condition | predict |")
    print("|---|---|---|---|")
    for label, rows in (("first", slice(None)), ("second fold (40 tasks)", fold)):
        est = MagmaClusterRegressor(n_clusters=3, random_state=0)
        counts = []
        for method, args in (
            ("fit", (X[rows], y[rows])),
            ("condition", (X_obs, y_obs)),
            ("predict", (X_new,)),
        ):
            before = counter.count
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                getattr(est, method)(*args)
            counts.append(counter.count - before)
        print(f"| {label} | {counts[0]} | {counts[1]} | {counts[2]} |", flush=True)


def warm() -> None:
    import time

    from sklearn.exceptions import ConvergenceWarning

    from mimosa_sklearn import MagmaClusterRegressor
    from mimosa_sklearn.datasets import make_magma_data

    X, y, _ = make_magma_data(
        n_tasks=1000, n_points=30, n_clusters=3, grid_size=201, random_state=0
    )
    times = []
    for _ in range(3):
        est = MagmaClusterRegressor(n_clusters=3, max_iter=5, tol=0.0, random_state=0)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X, y)
        times.append(time.perf_counter() - start)
    print("fit s (cold, warm, warm):", " ".join(f"{t:.3f}" for t in times), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", nargs="+", default=["elbo", "compiles"])
    args = parser.parse_args(argv)
    if "compiles" in args.part:
        compiles()
    if "elbo" in args.part:
        elbo()
    if "warm" in args.part:
        warm()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
