"""grid="auto" against the exact grid: accuracy of held-out forecasts, fit time, choice.

Run ``python benchmarks/auto_grid.py [--datasets synth_dev weight swimmers irregular]
[--irregular-tasks 100 300 1000]``.

Every data set is fitted twice with default settings, once with ``grid=None`` (the
exact union grid) and once with ``grid="auto"`` (the default), and the held-out tasks
are conditioned on their first points and forecast after, as in
``benchmarks/accuracy.py``:

- synth_dev, weight and swimmers (``--quick``: 300 swimmers): the splits of
  ``benchmarks/accuracy.py``, K = 3;
- irregular: ``make_magma_data`` with 20 points per task at continuous uniform random
  inputs on [0, 10] (every input distinct, so the exact grid holds every training
  point), K = 2; 20% of the tasks (drawn with ``default_rng(0)``) are held out,
  observed on their first 10 points and forecast on their last 10.

Prints one table: the grid chosen, its size, fit time, EM iterations, RMSE, NLPD and
95% coverage of the forecasts, and the auto grid's RMSE change (%) and NLPD change
against the exact grid, with the issue's acceptance (at most +1% RMSE and +0.02 NLPD).
An exact fit that would not fit in memory is reported with the estimate of
:func:`mimosa_sklearn._memory.estimate_fit_bytes` instead.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import Split, _scores, load_split  # noqa: E402

from mimosa_sklearn import MagmaClusterRegressor  # noqa: E402
from mimosa_sklearn._memory import FitMemoryError  # noqa: E402
from mimosa_sklearn.datasets import make_magma_data  # noqa: E402

RMSE_SLACK = 0.01  # relative
NLPD_SLACK = 0.02


def irregular_split(n_tasks: int, seed: int) -> Split:
    X, y, labels = make_magma_data(n_tasks=n_tasks, n_points=20, n_clusters=2, random_state=seed)
    ids = X["ID"].unique()
    test = set(np.random.default_rng(seed).permutation(ids)[: n_tasks // 5])
    pos = X.groupby("ID").cumcount().to_numpy()
    is_test = X["ID"].isin(test).to_numpy()
    train, obs, target = ~is_test, is_test & (pos < 10), is_test & (pos >= 10)

    def part(mask):
        return X.loc[mask].reset_index(drop=True), y.loc[mask].reset_index(drop=True)

    (xt, yt), (xo, yo), (xg, yg) = part(train), part(obs), part(target)
    return Split(
        name=f"irregular {n_tasks}",
        description=f"{n_tasks} tasks x 20 continuous random inputs, K=2",
        X_train=xt,
        y_train=yt,
        X_obs=xo,
        y_obs=yo,
        X_target=xg,
        y_target=yg,
    )


def fit_forecast(split: Split, k: int, grid, seed: int) -> dict:
    model = MagmaClusterRegressor(n_clusters=k, grid=grid, random_state=seed)
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(split.X_train, split.y_train)
    except FitMemoryError as exc:
        return {"error": str(exc).split(":")[0]}
    fit_s = time.perf_counter() - start
    model.condition(split.X_obs, split.y_obs)
    mean, std = model.predict(split.X_target, return_std=True)
    choice = model.grid_choice_
    return {
        **_scores(split, np.asarray(mean), np.asarray(std)),
        "grid": f"{choice.kind} {choice.size}",
        "fit s": fit_s,
        "iters": model.n_iter_,
        "G": choice.n_distinct_inputs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=["synth_dev", "weight", "swimmers", "irregular"],
        choices=["synth_dev", "weight", "swimmers", "irregular"],
    )
    parser.add_argument("--irregular-tasks", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    splits: list[tuple[Split, int]] = []
    for name in args.datasets:
        if name == "irregular":
            splits += [(irregular_split(t, args.seed), 2) for t in args.irregular_tasks]
        else:
            split = load_split(name, None, quick=True, seed=args.seed)
            if name == "swimmers":
                split.name = "swimmers (300)"
            splits.append((split, 3))

    print("| data set | G | grid= | fit s | iters | RMSE | NLPD | cov95 | dRMSE % | dNLPD | ok |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    failed = False
    t0 = time.perf_counter()
    for split, k in splits:
        exact = fit_forecast(split, k, None, args.seed)
        auto = fit_forecast(split, k, "auto", args.seed)
        for label, row in (("None", exact), ('"auto"', auto)):
            if "error" in row:
                print(f"| {split.name} | | {label}: {row['error']} | | | | | | | | |")
                continue
            cells = (
                f"| {split.name} | {row['G']} | {label}: {row['grid']} | {row['fit s']:.1f} | "
                f"{row['iters']} | {row['RMSE']:.4f} | {row['NLPD']:.4f} | {row['cov95']:.3f} |"
            )
            if row is auto and "error" not in exact:
                d_rmse = 100 * (row["RMSE"] / exact["RMSE"] - 1)
                d_nlpd = row["NLPD"] - exact["NLPD"]
                ok = d_rmse <= 100 * RMSE_SLACK and d_nlpd <= NLPD_SLACK
                failed |= not ok
                cells += f" {d_rmse:+.2f} | {d_nlpd:+.4f} | {'yes' if ok else 'NO'} |"
            else:
                cells += " | | |"
            print(cells, flush=True)
    print(
        f"\n{platform.platform()}, Python {platform.python_version()}, "
        f"pandas {pd.__version__}; total {time.perf_counter() - t0:.0f} s"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
