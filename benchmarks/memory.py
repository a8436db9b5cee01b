"""Memory benchmark: resident memory (RSS) after every EM iteration of long and large fits.

Run ``python benchmarks/memory.py [--tasks 5000] [--large-iters 10] [--iters 500]``.

Two fits, one after the other in one process, each with ``tol=0`` so that every
iteration runs:

- *large*: ``--tasks`` tasks (default 5000) of 5 to 15 points on a 101-point input
  grid, K = 3, ``--large-iters`` EM iterations;
- *long*: 20 tasks of 5 to 15 points, K = 3, ``--iters`` EM iterations (default 500).

Each fit goes through the estimator's own steps (task ids encoded, rows padded with
:func:`mimosa_sklearn._data.build_task_data`, outputs standardised) and calls
:func:`mimosa_sklearn._fit.fit_magma` with a callback that records the current RSS
and the peak RSS after every EM iteration. The first iterations compile and allocate
the working set, so growth is judged after a warm-up (``--warmup`` iterations): the
script prints a sample of the per-iteration readings, the RSS change from the end of
the warm-up to the last iteration, and a least-squares slope (MiB per iteration). It
says ``RSS grows between iterations: YES`` (and exits with status 1) when the RSS
after warm-up rises by more than ``--tolerance-mib`` and keeps rising (positive slope
over the second half of the iterations); otherwise ``NO``.

Run it alone on an otherwise idle machine: other processes do not change this
process's RSS, but they slow it down.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np

from mimosa_sklearn import _fit
from mimosa_sklearn._data import build_task_data, encode_task_ids
from mimosa_sklearn.datasets import make_magma_data

MIB = 1024.0**2


def current_rss_mib() -> float:
    """Resident set size of this process now, in MiB (psutil, else ``/proc``)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is in the dev extra
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / MIB
    return psutil.Process().memory_info().rss / MIB


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (``ru_maxrss``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (MIB if sys.platform == "darwin" else 1024.0)  # bytes on macOS, KiB else


def fit_with_probe(
    n_tasks: int, iters: int, seed: int = 0
) -> tuple[list[float], list[float], float]:
    """Fit ``n_tasks`` tasks for exactly ``iters`` EM iterations, reading RSS after each.

    Returns
    -------
    rss, peak : list of float
        Current and peak RSS (MiB) after every EM iteration.
    seconds : float
        Wall time of the fit.
    """
    X, y, _ = make_magma_data(
        n_tasks=n_tasks, n_points=(5, 15), n_clusters=3, grid_size=101, random_state=seed
    )
    codes, ids = encode_task_ids(X["ID"].to_numpy())
    y2 = y.to_numpy(dtype=np.float64)[:, None]
    y2 = (y2 - np.nanmean(y2, axis=0)) / np.nanstd(y2, axis=0)
    td = build_task_data(codes, ids.size, X[["Input"]].to_numpy(dtype=np.float64), y2)
    config = _fit.FitConfig(n_clusters=3, max_iter=iters, tol=0.0, seed=seed)
    rss: list[float] = []
    peak: list[float] = []

    def probe(iteration: int, elbo: float) -> None:
        rss.append(current_rss_mib())
        peak.append(peak_rss_mib())

    t0 = time.perf_counter()
    _fit.fit_magma(td.tasks, td.grid, config, callback=probe)
    return rss, peak, time.perf_counter() - t0


def grows(rss: list[float], warmup: int, tolerance_mib: float) -> tuple[bool, float, float]:
    """Whether RSS keeps growing after ``warmup`` iterations.

    Returns ``(verdict, change, slope)``: the RSS change (MiB) from the end of the
    warm-up to the last iteration and the least-squares slope (MiB per iteration) over
    the second half of the iterations after warm-up.
    """
    after = np.asarray(rss[min(warmup, len(rss) - 1) :])
    change = float(after[-1] - after[0])
    half = after[len(after) // 2 :]
    slope = float(np.polyfit(np.arange(half.size), half, 1)[0]) if half.size > 1 else 0.0
    return change > tolerance_mib and slope > 0.0, change, slope


def report(name: str, n_tasks: int, iters: int, warmup: int, tolerance_mib: float) -> bool:
    """Run one fit, print its readings and verdict; return True when RSS grows."""
    print(f"\n== {name}: {n_tasks} tasks, {iters} EM iterations (tol=0)", flush=True)
    rss, peak, seconds = fit_with_probe(n_tasks, iters)
    assert len(rss) == iters, f"expected {iters} iterations, got {len(rss)}"
    shown = sorted({0, 1, 2, warmup - 1, warmup, *np.linspace(0, iters - 1, 11).astype(int)})
    print(f"{'iteration':>10} {'RSS MiB':>10} {'peak MiB':>10}")
    for i in shown:
        if 0 <= i < iters:
            print(f"{i + 1:>10} {rss[i]:>10.1f} {peak[i]:>10.1f}")
    verdict, change, slope = grows(rss, warmup, tolerance_mib)
    print(
        f"fit {seconds:.1f} s; RSS after warm-up {rss[min(warmup, iters - 1)]:.1f} MiB -> "
        f"last {rss[-1]:.1f} MiB (change {change:+.1f} MiB, slope {slope:+.3f} MiB/iter); "
        f"peak {peak[-1]:.1f} MiB"
    )
    print(f"RSS grows between iterations: {'YES' if verdict else 'NO'}", flush=True)
    return verdict


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns 1 when a fit's RSS grows between iterations."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=5000, help="tasks of the large fit")
    parser.add_argument("--large-iters", type=int, default=10, help="EM iterations, large fit")
    parser.add_argument("--iters", type=int, default=500, help="EM iterations of the long fit")
    parser.add_argument("--long-tasks", type=int, default=20, help="tasks of the long fit")
    parser.add_argument("--warmup", type=int, default=3, help="iterations before judging")
    parser.add_argument("--tolerance-mib", type=float, default=20.0, help="allowed RSS rise")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--skip-long", action="store_true")
    args = parser.parse_args(argv)
    print(f"start RSS {current_rss_mib():.1f} MiB", flush=True)
    bad = False
    if not args.skip_large:
        bad |= report("large", args.tasks, args.large_iters, args.warmup, args.tolerance_mib)
    if not args.skip_long:
        bad |= report("long", args.long_tasks, args.iters, args.warmup, args.tolerance_mib)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
