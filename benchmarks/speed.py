"""Speed benchmark: MagmaClust fit/predict time and memory against baselines.

Run ``python benchmarks/speed.py [--tasks 100 1000 10000] [--iters 10]``.

For each number of tasks T (about 30 points each, on a 201-point input grid, K = 3,
a fixed number of EM iterations) it prints, side by side in one process:

- our fit time cold (first fit of these shapes in the process, compile included) and
  warm (a refit of the same data), predict time for 1000 new tasks (condition on 10
  points, forecast 20; first call with compile, then warm), and peak resident memory
  (read before the baselines run);
- per-task scikit-learn ``GaussianProcessRegressor`` on the same tasks (the usual
  baseline: one independent GP per curve), as a ratio to our warm fit;
- ``mimosa-ml`` (import name ``mimosa``) at the same number of iterations, when it is
  installed (optional: ``pip install --pre mimosa-ml``), as a ratio to ours.
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import sys
import time

from mimosa_sklearn import MagmaClusterRegressor
from mimosa_sklearn.datasets import make_magma_data


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _device_peak_gib() -> float | None:
    """Peak memory of the accelerator JAX runs on (None on CPU, which reports none)."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 1024**3


def _platform() -> str:
    # Asked only after the first fit: mimosa_sklearn's CPU guard must create the backend.
    import jax

    device = jax.devices()[0]
    return f"JAX {jax.__version__} on {device.platform} ({device.device_kind})"


def _data(n_tasks: int, seed: int):
    return make_magma_data(
        n_tasks=n_tasks, n_points=30, n_clusters=3, grid_size=201, random_state=seed
    )


def _time_fit(n_tasks: int, iters: int, seed: int = 0):
    """First fit in the process (compile included), then a refit of the same data.

    Both fits do the same work: on other data the L-BFGS steps per VM-step differ
    (16 against 26 in the first iteration for two seeds of 1000 tasks), which would
    mix data into the cold/warm comparison."""
    X, y, _ = _data(n_tasks, seed)
    times, est = [], None
    for _ in range(2):
        est = MagmaClusterRegressor(n_clusters=3, max_iter=iters, tol=0.0, random_state=0)
        t0 = time.perf_counter()
        est.fit(X, y)
        times.append(time.perf_counter() - t0)
    return est, times[0], times[1]


def _time_predict(est, n_new: int = 1000, seed: int = 123) -> tuple[float, float]:
    """Condition ``n_new`` new tasks on 10 points and forecast 20: first call (with the
    prediction programs' compile) and a second call on other new tasks."""
    times = []
    for rep in range(2):
        X, y, _ = _data(n_new, seed + rep)
        X = X.assign(ID=f"new{rep}_" + X["ID"].astype(str))
        order = X.groupby("ID").cumcount()
        obs = order < 10
        target = (order >= 10) & (order < 30)
        t0 = time.perf_counter()
        est.condition(X[obs], y[obs])
        est.predict(X[target], return_std=True)
        times.append(time.perf_counter() - t0)
    return times[0], times[1]


def _time_sklearn_gpr(n_tasks: int, seed: int = 0, max_tasks: int = 200) -> float:
    """Per-task GPR fit time, measured on up to ``max_tasks`` tasks and scaled to T."""
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    X, y, _ = _data(min(n_tasks, max_tasks), seed)
    t0 = time.perf_counter()
    for _, rows in X.groupby("ID", sort=False).groups.items():
        kernel = ConstantKernel() * RBF() + WhiteKernel()
        gpr = GaussianProcessRegressor(kernel, normalize_y=True)
        gpr.fit(X.loc[rows, ["Input"]].to_numpy(), y.loc[rows].to_numpy())
    return (time.perf_counter() - t0) * n_tasks / min(n_tasks, max_tasks)


def _time_mimosa_ml(n_tasks: int, iters: int, seed: int = 0) -> float | None:
    # Check for mimosa-ml without importing it: importing it creates the JAX backend,
    # which must happen after mimosa_sklearn's CPU-thread guard (the adapter runs it).
    if importlib.util.find_spec("mimosa") is None:
        return None
    # benchmarks/ is on sys.path when this file runs as a script.
    from _mimosa_ml_baseline import fit_mimosa_ml

    X, y, _ = _data(n_tasks, seed + 1)
    fit_mimosa_ml(X, y, iters)  # compile, on other data of the same shapes
    X, y, _ = _data(n_tasks, seed)  # timed on the data our warm fit used
    t0 = time.perf_counter()
    fit_mimosa_ml(X, y, iters)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--iters", type=int, default=10)
    args = parser.parse_args(argv)
    rows = []
    for t in args.tasks:
        est, cold, warm = _time_fit(t, args.iters)
        pred_cold, pred = _time_predict(est)
        rss = _peak_rss_gib()
        gpr = _time_sklearn_gpr(t)
        mml = _time_mimosa_ml(t, args.iters)
        rows.append((t, cold, warm, pred_cold, pred, rss, gpr, mml))
        device_peak = _device_peak_gib()
        print(
            f"T={t}: fit cold {cold:.2f}s warm {warm:.2f}s, predict cold {pred_cold:.2f}s "
            f"warm {pred:.2f}s, peak RSS {rss:.2f} GiB"
            + ("" if device_peak is None else f", device peak {device_peak:.2f} GiB")
            + f", per-task GPR {gpr:.1f}s"
            + ("" if mml is None else f", mimosa-ml {mml:.2f}s"),
            flush=True,
        )
    print()
    print(
        "| tasks | fit cold (s) | fit warm (s) | predict 1000 new, cold / warm (s) "
        "| peak RSS (GiB) | per-task GPR (s) | GPR / ours | mimosa-ml / ours |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t, cold, warm, pred_cold, pred, rss, gpr, mml in rows:
        ratio = "not installed" if mml is None else f"{mml / warm:.1f}x"
        print(
            f"| {t} | {cold:.2f} | {warm:.2f} | {pred_cold:.2f} / {pred:.2f} | {rss:.2f} "
            f"| {gpr:.1f} | {gpr / warm:.1f}x | {ratio} |"
        )
    print(f"\n{args.iters} EM iterations, K=3, ~30 points per task, 201-point grid; {_platform()}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
