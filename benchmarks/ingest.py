"""Ingest benchmark: long-format rows to padded task arrays, from 300k to 30M rows.

Run ``python benchmarks/ingest.py [--rows 300000 3000000 30000000]``.

Each size runs in its own Python process. A process builds a long table of ``rows / 30``
tasks of 30 points each (integer task ids, inputs on a 201-point grid, a few missing
outputs), shuffles its rows, then times what ``MagmaClusterRegressor.fit`` does before
its EM starts: validation of the rows, task-id encoding, padding into ``(T, N)`` arrays
in the canonical order, normalisation, the grid choice and the memory check. The EM
entry point is replaced by one that stops the fit, so nothing else is timed. It prints
seconds, nanoseconds per row and the process's peak RSS; time per row that stays flat
from 300k to 30M rows is what "vectorised" means here (a Python loop over rows or tasks
would show as a per-row cost that does not fall, and as minutes at 30M rows).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
from scale import _peak_rss_gib  # this folder is on sys.path when run as a script

POINTS = 30


class _Stop(Exception):
    """Raised in place of the EM: the ingest is over."""


def _table(n_rows: int, seed: int = 0):
    import pandas as pd

    rng = np.random.default_rng(seed)
    n_tasks = n_rows // POINTS
    ids = np.repeat(np.arange(n_tasks, dtype=np.int64), POINTS)
    grid = np.linspace(0.0, 10.0, 201)
    inputs = grid[rng.integers(0, grid.size, ids.size)]
    outputs = np.sin(inputs) + rng.normal(0.0, 0.3, ids.size)
    outputs[rng.random(ids.size) < 0.01] = np.nan  # missing outputs are dropped
    order = rng.permutation(ids.size)
    X = pd.DataFrame({"ID": ids[order], "Input": inputs[order]})
    return X, pd.Series(outputs[order], name="Output")


def run_one(n_rows: int) -> dict:
    """Time the ingest of ``n_rows`` rows in this process."""
    from mimosa_sklearn import MagmaClusterRegressor, _fit

    X, y = _table(n_rows)

    def stop(*args, **kwargs):
        raise _Stop

    _fit.fit_magma = stop
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        MagmaClusterRegressor(n_clusters=3, random_state=0).fit(X, y)
    except _Stop:
        pass
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "rows": n_rows,
        "tasks": n_rows // POINTS,
        "ingest_s": wall,
        "cpu_s": cpu,
        "ns_per_row": 1e9 * wall / n_rows,
        "peak_rss_gib": _peak_rss_gib(),
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[300_000, 3_000_000, 30_000_000])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child process
    args = parser.parse_args(argv)
    if args.one is not None:
        print(json.dumps(run_one(args.one)), flush=True)
        return 0
    lines = [
        "| rows | tasks | ingest (s) | CPU (s) | ns per row | peak RSS (GiB) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n in args.rows:
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(n)], capture_output=True, text=True
        )
        found = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        if out.returncode != 0 or not found:
            tail = (out.stderr.strip().splitlines() or [""])[-1]
            lines.append(f"| {n:,} | | failed: {tail} | | | |")
            continue
        r = json.loads(found[-1])
        print(json.dumps(r), flush=True)
        lines.append(
            f"| {r['rows']:,} | {r['tasks']:,} | {r['ingest_s']:.2f} | {r['cpu_s']:.2f} "
            f"| {r['ns_per_row']:.0f} | {r['peak_rss_gib']:.2f} |"
        )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
