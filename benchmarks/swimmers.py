"""Full fits of the bundled swimmers: the issue-7 target "a full fit in at most 60 s".

Run ``python benchmarks/swimmers.py [--grid exact 100] [--tol 1e-4]``.

For each grid (``exact``: the union of the 994 distinct ages; an integer ``M``: the
approximate grid of ``M`` inducing inputs) it fits ``MagmaClusterRegressor(n_clusters=3,
random_state=0)`` to all 3456 swimmers until convergence, twice in the same process:
``first`` includes JIT compilation (a new process has only imported the libraries),
``again`` reuses the compiled programs. It prints time, EM iterations and final ELBO.
The script does not care which device JAX uses: on a machine with a GPU and a CUDA
jaxlib it measures the GPU.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

from mimosa_sklearn import MagmaClusterRegressor
from mimosa_sklearn.datasets import load_swimmers


def _grid(spec: str) -> int | None:
    return None if spec == "exact" else int(spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", nargs="+", default=["exact", "100"])
    parser.add_argument("--tol", type=float, default=1e-4)
    args = parser.parse_args(argv)
    X, y = load_swimmers()
    rows = []
    for spec in args.grid:
        for run in ("first", "again"):
            est = MagmaClusterRegressor(
                n_clusters=3, random_state=0, grid=_grid(spec), tol=args.tol
            )
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a ConvergenceWarning is reported below
                est.fit(X, y)
            seconds = time.perf_counter() - t0
            rows.append((spec, run, seconds, est.n_iter_, est.converged_, est.elbo_[-1]))
            print(f"grid={spec} {run}: {seconds:.1f}s, {est.n_iter_} iterations", flush=True)
    import jax  # after the first fit: mimosa_sklearn's CPU guard creates the backend

    device = jax.devices()[0]
    print(f"\nswimmers: {X['ID'].nunique()} tasks, {len(X)} points, K=3, tol={args.tol:g}")
    print("\n| grid | fit | time (s) | EM iterations | converged | final ELBO |")
    print("|---|---|---:|---:|---|---:|")
    for spec, run, seconds, n_iter, converged, elbo in rows:
        print(f"| {spec} | {run} | {seconds:.1f} | {n_iter} | {converged} | {elbo:.4f} |")
    print(f"\nJAX {jax.__version__} on {device.platform} ({device.device_kind}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
