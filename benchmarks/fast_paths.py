"""Speed-up of the shared-input fast path and cost of chunking, at one size.

Run ``python benchmarks/fast_paths.py [--tasks 1000] [--points 30] [--iters 5]``
(``--tasks 50 --iters 2`` for a quick check).

All tasks are observed at the same ``--points`` inputs (e.g. one measurement per
week), so the fit flags the batch as shared-input and the EM factorises one task
covariance instead of ``T``. The script fits the same data three ways at a fixed number
of EM iterations (``tol=0``) and prints warm fit times (a first fit of each variant
compiles; its time is printed as "cold"):

- ``shared``: the fast path (detected automatically);
- ``general``: the same fit with detection switched off (one Cholesky per task);
- ``general, chunk=64``: the general path with the per-task work in chunks of 64
  tasks (``FitConfig.task_chunk``), which bounds memory at a small time cost.

The final ELBOs of the three are printed too: they agree to about 1e-8 relative.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mimosa_sklearn import _batching
from mimosa_sklearn import _fit as fit_module
from mimosa_sklearn._padded import scatter


def _data(n_tasks: int, n_points: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x1 = np.linspace(0.0, 10.0, n_points)[:, None]
    x = np.repeat(x1[None], n_tasks, axis=0)
    centre = rng.integers(0, 3, size=n_tasks)[:, None, None]
    y = np.sin(x + centre) + 0.5 * centre + 0.3 * rng.normal(size=x.shape)
    # Every task on the same inputs, laid out as the estimator would.
    task = np.repeat(np.arange(n_tasks), n_points)
    pos = np.tile(np.arange(n_points), n_tasks)
    maps = np.tile(np.arange(n_points), n_tasks)
    return scatter(task, pos, n_tasks, x.reshape(-1, 1), y.reshape(-1, 1), maps), x1


def _fit(data, config, shared: bool):
    original = _batching.shared_inputs
    if not shared:
        _batching.shared_inputs = lambda *args: False
    try:
        t0 = time.perf_counter()
        model = fit_module.fit_magma(*data, config)
        return time.perf_counter() - t0, model
    finally:
        _batching.shared_inputs = original


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--points", type=int, default=30)
    parser.add_argument("--iters", type=int, default=5)
    args = parser.parse_args(argv)
    data = _data(args.tasks, args.points)
    base = fit_module.FitConfig(n_clusters=3, max_iter=args.iters, tol=0.0, task_chunk=0)
    variants = [
        ("shared", base, True),
        ("general", base, False),
        ("general, chunk=64", fit_module.FitConfig(**{**base.__dict__, "task_chunk": 64}), False),
    ]
    print(f"T={args.tasks} tasks x N={args.points} shared points, K=3, {args.iters} EM iterations")
    print(f"{'variant':<20}{'cold s':>10}{'warm s':>10}{'final ELBO':>22}")
    warm = {}
    for name, config, shared in variants:
        cold, _ = _fit(data, config, shared)
        warm[name], model = _fit(data, config, shared)
        print(f"{name:<20}{cold:>10.2f}{warm[name]:>10.2f}{model.elbo:>22.10f}")
    print(f"shared-input speed-up (warm): {warm['general'] / warm['shared']:.1f}x")


if __name__ == "__main__":
    main()
