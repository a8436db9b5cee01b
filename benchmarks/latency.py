"""What a user waits for: first calls in new processes, with and without the compile cache.

Run ``python benchmarks/latency.py [--repeats 3] [--output FILE]``. Every figure comes from
a brand-new Python process (``--child``), pinned to one CPU core, so that both sides of
every ratio run alike:

- ``fit`` / ``condition`` / ``predict`` on the bundled synth_dev data (60 training
  curves, K = 3; 40 new curves conditioned on their first points and forecast on the
  rest) and weight data (342 children: four in five fitted, the fifth conditioned on
  the first half of its measurements and forecast on the rest). For each call: the
  time of the first call in the process, the same call again (warm), and the number of
  XLA compilations of the first call (``jax_log_compiles`` records).
- With the compile cache off (``MIMOSA_SKLEARN_CACHE_DIR=""``), empty (a new
  directory: the first process fills it) and filled (a second process on the same
  directory).
- ``GridSearchCV`` over ``n_clusters`` in {2, 3, 4} with ``GroupKFold(3)`` (nine fits and
  the refit) on synth_dev, with ``n_jobs=1`` and ``n_jobs=2`` (two worker processes, two
  cores), from an empty cache, against one cold fit in a new process.
- mimosa-ml's cold fit + predict of the same synth_dev forecast (same number of EM
  iterations as ours), when it is installed (``pip install --pre --no-deps
  mimosa-ml==0.5.0a0 beartype jax-tqdm polars``).

Each case runs ``--repeats`` times, alternating between cases; medians are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


# ---------------------------------------------------------------------- child side


class _CompileCounter:
    """Counts XLA compilations logged by JAX (``jax_log_compiles``) between reads."""

    def __init__(self) -> None:
        import logging

        self.count = 0
        counter = self

        class Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if "Finished XLA compilation" in record.getMessage():
                    counter.count += 1

        logger = logging.getLogger("jax._src.dispatch")
        logger.addHandler(Handler())
        logger.setLevel(logging.WARNING)
        logger.propagate = False

    def take(self) -> int:
        n, self.count = self.count, 0
        return n


def _weight_split():
    """Weight data: every fifth child (by id) is new, observed on its first half."""
    import numpy as np

    from mimosa_sklearn.datasets import load_weight

    X, y = load_weight()
    ids = np.sort(X["ID"].unique())
    new = X["ID"].isin(ids[::5]).to_numpy()
    Xn, yn = X[new], y[new]
    rank = Xn.groupby("ID")["age_months"].rank(method="first")
    size = Xn.groupby("ID")["age_months"].transform("size")
    first = (rank <= (size / 2).clip(lower=1)).to_numpy()
    return (X[~new], y[~new]), (Xn[first], yn[first]), (Xn[~first], yn[~first])


def _data(name: str):
    from mimosa_sklearn.datasets import load_synth_dev

    if name == "weight":
        return _weight_split()
    return load_synth_dev(), load_synth_dev("test_observed"), load_synth_dev("test_target")


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _child_calls(dataset: str) -> dict:
    """First and warm fit / condition / predict in this process."""
    import warnings

    import jax

    jax.config.update("jax_log_compiles", True)
    counter = _CompileCounter()
    from mimosa_sklearn import MagmaClusterRegressor

    (X, y), (Xo, yo), (Xt, _) = _data(dataset)
    out: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for when in ("first", "warm"):
            est = MagmaClusterRegressor(n_clusters=3, random_state=0)
            _, out[f"fit_{when}"] = _timed(lambda est=est: est.fit(X, y))
            out[f"fit_{when}_compiles"] = counter.take()
            _, out[f"condition_{when}"] = _timed(lambda est=est: est.condition(Xo, yo))
            out[f"condition_{when}_compiles"] = counter.take()
            _, out[f"predict_{when}"] = _timed(lambda est=est: est.predict(Xt, return_std=True))
            out[f"predict_{when}_compiles"] = counter.take()
            out["n_iter"] = int(est.n_iter_)
    return out


def _child_grid(n_jobs: int) -> dict:
    import warnings

    from sklearn.model_selection import GridSearchCV, GroupKFold

    from mimosa_sklearn import MagmaClusterRegressor, make_forecast_scorer

    (X, y), _, _ = _data("synth_dev")
    search = GridSearchCV(
        MagmaClusterRegressor(random_state=0),
        {"n_clusters": [2, 3, 4]},
        cv=GroupKFold(n_splits=3),
        scoring=make_forecast_scorer(),
        n_jobs=n_jobs,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, seconds = _timed(lambda: search.fit(X, y, groups=X["ID"]))
    return {"grid_search": seconds, "best_k": int(search.best_params_["n_clusters"])}


def _child_mimosa_ml(iters: int) -> dict:
    import numpy as np

    sys.path.insert(0, str(HERE))
    from _mimosa_ml_baseline import fit_mimosa_ml, predict_mimosa_ml

    (X, y), (Xo, yo), (Xt, yt) = _data("synth_dev")
    t0 = time.perf_counter()
    fitted = fit_mimosa_ml(X, y, iters)
    mean, _ = predict_mimosa_ml(fitted, Xo, yo, Xt)
    seconds = time.perf_counter() - t0
    return {"fit_predict": seconds, "rmse": float(np.sqrt(np.mean((mean - yt.to_numpy()) ** 2)))}


def _child(args) -> None:
    if hasattr(os, "sched_setaffinity") and args.cores:
        os.sched_setaffinity(0, set(range(args.cores)))
    if args.child == "calls":
        out = _child_calls(args.dataset)
    elif args.child == "grid":
        out = _child_grid(args.n_jobs)
    else:
        out = _child_mimosa_ml(args.iters)
    print("RESULT " + json.dumps(out), flush=True)


# ---------------------------------------------------------------------- driver side


def _run(child_args: list[str], cache: str, cores: int) -> dict:
    env = dict(os.environ, MIMOSA_SKLEARN_CACHE_DIR=cache)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--cores", str(cores), *child_args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{' '.join(child_args)} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(lines[-1][len("RESULT ") :])
    return out


def _mimosa_ml_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("mimosa") is not None


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--child", choices=["calls", "grid", "mimosa-ml"], default=None)
    parser.add_argument("--dataset", default="synth_dev")
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--cores", type=int, default=1)
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return

    calls = {(d, c): [] for d in ("synth_dev", "weight") for c in ("off", "empty", "filled")}
    grids = {1: [], 2: []}
    mml: list[dict] = []
    iters = 5
    for rep in range(args.repeats):
        for dataset in ("synth_dev", "weight"):
            with tempfile.TemporaryDirectory() as cache:
                calls[dataset, "off"].append(
                    _run(["--child", "calls", "--dataset", dataset], "", 1)
                )
                calls[dataset, "empty"].append(
                    _run(["--child", "calls", "--dataset", dataset], cache, 1)
                )
                calls[dataset, "filled"].append(
                    _run(["--child", "calls", "--dataset", dataset], cache, 1)
                )
        iters = calls["synth_dev", "off"][-1]["n_iter"]
        if _mimosa_ml_installed():
            mml.append(_run(["--child", "mimosa-ml", "--iters", str(iters)], "", 1))
        for n_jobs in (1, 2):
            with tempfile.TemporaryDirectory() as cache:
                grids[n_jobs].append(
                    _run(["--child", "grid", "--n-jobs", str(n_jobs)], cache, n_jobs)
                )
        print(f"repeat {rep + 1}/{args.repeats} done", file=sys.stderr, flush=True)

    lines = [
        f"# Latency: first calls in new processes (median of {args.repeats}, one core each)",
        "",
        "| data | cache | fit first / warm (s) | condition first / warm (s) | "
        "predict first / warm (s) | compilations fit + condition + predict | "
        "first three calls / warm three |",
        "|---|---|---|---|---|---|---|",
    ]
    first_total = {}
    for (dataset, cache), runs in calls.items():
        cells = []
        for call in ("fit", "condition", "predict"):
            first, warm = _median(runs, f"{call}_first"), _median(runs, f"{call}_warm")
            cells.append(f"{first:.2f} / {warm:.2f}")
        comp = " + ".join(
            str(int(_median(runs, f"{c}_first_compiles"))) for c in ("fit", "condition", "predict")
        )
        first = statistics.median(
            sum(r[f"{c}_first"] for c in ("fit", "condition", "predict")) for r in runs
        )
        warm = statistics.median(
            sum(r[f"{c}_warm"] for c in ("fit", "condition", "predict")) for r in runs
        )
        first_total[dataset, cache] = first
        lines.append(
            f"| {dataset} | {cache} | {' | '.join(cells)} | {comp} | "
            f"{first:.2f} / {warm:.2f} = {first / warm:.1f}x |"
        )
    cold_fit = _median(calls["synth_dev", "empty"], "fit_first")
    lines += [
        "",
        "| GridSearchCV, 3 K x 3 folds + refit, synth_dev, empty cache | seconds | "
        "/ one cold fit |",
        "|---|---|---|",
    ]
    for n_jobs, runs in grids.items():
        seconds = _median(runs, "grid_search")
        lines.append(f"| n_jobs={n_jobs} | {seconds:.1f} | {seconds / cold_fit:.1f}x |")
    if mml:
        theirs = _median(mml, "fit_predict")
        ours = first_total["synth_dev", "empty"]
        lines += [
            "",
            f"mimosa-ml cold fit + predict on synth_dev ({iters} EM iterations, as ours): "
            f"{theirs:.2f} s; ours, fit + condition + predict in a new process with an empty "
            f"cache: {ours:.2f} s, ratio {ours / theirs:.2f}; with a filled cache: "
            f"{first_total['synth_dev', 'filled']:.2f} s, ratio "
            f"{first_total['synth_dev', 'filled'] / theirs:.2f}.",
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
