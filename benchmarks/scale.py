"""Scale benchmark: fit time, time per task and peak memory from 10k to 1M tasks.

Run ``python benchmarks/scale.py [--tasks 10000 100000 1000000] [--iters 5]``.

Every size runs in its own Python process (peak RSS, ``ru_maxrss``, only grows within
a process). A process draws ``T`` tasks of 30 points each on a 201-point input grid
(:func:`mimosa_sklearn.datasets.make_magma_data`, K = 3), fits a
``MagmaClusterRegressor(n_clusters=3, max_iter=1, tol=0)`` to warm up (compilation
of every program the timed fit runs: they depend on the shapes, not on ``max_iter``),
then times a fit with ``max_iter=--iters`` and ``tol=0`` (every iteration runs) on the
same data. It reports the time to draw the data, the timed fit (ingest of the rows
into padded arrays, the EM iterations and the final E-steps), the fit time per task,
its CPU time (all threads; on a machine shared with other work, CPU time per task is
steadier than wall time), the peak RSS of the whole process (data frames included) and the RSS once the data
is drawn, as a Markdown table.

``--timeout`` bounds each size's process (seconds); a size that runs out of time or
memory is reported as such. ``--processes 1 2`` also fits every size across two
processes joined by ``jax.distributed`` (each draws the same data and fits every
second task); their row reports the slowest process's fit time and the sums of their
CPU times and peak RSS.

Run it alone on an otherwise idle machine: other processes slow the fits down.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

GIB = 1024.0**3


def _rss_gib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / GIB


def _peak_rss_gib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (GIB if sys.platform == "darwin" else 1024.0**2)  # bytes on macOS, KiB else


def run_one(n_tasks: int, iters: int, seed: int = 0, rank: int = 0, processes: int = 1) -> dict:
    """Draw, warm up and time one size in this process; returns the measurements.

    With ``processes > 1`` this process is process ``rank`` of a multi-process fit
    (``jax.distributed`` already initialised): it draws the same data as the others
    and fits its share, every ``processes``-th task.
    """
    from mimosa_sklearn import MagmaClusterRegressor
    from mimosa_sklearn.datasets import make_magma_data

    t0 = time.perf_counter()
    X, y, _ = make_magma_data(
        n_tasks=n_tasks, n_points=30, n_clusters=3, grid_size=201, random_state=seed
    )
    if processes > 1:
        ids = X["ID"].unique()
        mine = X["ID"].isin(ids[rank::processes]).to_numpy()
        X, y = X[mine], y[mine]
    draw = time.perf_counter() - t0
    data_rss = _rss_gib()
    MagmaClusterRegressor(n_clusters=3, max_iter=1, tol=0.0, random_state=0).fit(X, y)
    est = MagmaClusterRegressor(n_clusters=3, max_iter=iters, tol=0.0, random_state=0)
    t0, c0 = time.perf_counter(), time.process_time()
    est.fit(X, y)
    fit, cpu = time.perf_counter() - t0, time.process_time() - c0
    import jax

    return {
        "tasks": n_tasks,
        "rows": len(X),
        "draw_s": draw,
        "fit_s": fit,
        "ms_per_task": 1e3 * fit / n_tasks,
        "cpu_s": cpu,
        "cpu_ms_per_task": 1e3 * cpu / n_tasks,
        "peak_rss_gib": _peak_rss_gib(),
        "data_rss_gib": data_rss,
        "n_iter": int(est.n_iter_),
        "elbo": float(np.ravel(est.elbo_)[-1]),
        "platform": f"JAX {jax.__version__} on {jax.devices()[0].platform}",
    }


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child(n_tasks: int, iters: int, timeout: float, processes: int = 1) -> dict:
    """One size in new processes: one, or ``processes`` joined by ``jax.distributed``
    (then the fit time is the slowest process's, CPU and peak RSS their sums)."""
    port = str(_free_port())
    cmds = [
        [sys.executable, __file__, "--one", str(n_tasks), "--iters", str(iters)]
        + (
            ["--processes", str(processes), "--rank", str(r), "--port", port]
            if processes > 1
            else []
        )
        for r in range(processes)
    ]
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for cmd in cmds
    ]
    outs = []
    for proc in procs:
        try:
            stdout, stderr = proc.communicate(
                timeout=max(1.0, timeout - (time.perf_counter() - t0))
            )
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            return {
                "tasks": n_tasks,
                "processes": processes,
                "error": f"timed out after {timeout:.0f} s",
            }
        lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            why = "killed (out of memory?)" if proc.returncode < 0 else f"exit {proc.returncode}"
            tail = stderr.strip().splitlines()[-1:] or [""]
            return {
                "tasks": n_tasks,
                "processes": processes,
                "error": f"{why} after {time.perf_counter() - t0:.0f} s {tail[0]}",
            }
        outs.append(json.loads(lines[-1]))
    if processes == 1:
        return outs[0]
    total = dict(outs[0], tasks=n_tasks, processes=processes, rows=sum(o["rows"] for o in outs))
    total["fit_s"] = max(o["fit_s"] for o in outs)
    total["cpu_s"] = sum(o["cpu_s"] for o in outs)
    total["peak_rss_gib"] = sum(o["peak_rss_gib"] for o in outs)
    total["data_rss_gib"] = sum(o["data_rss_gib"] for o in outs)
    total["ms_per_task"] = 1e3 * total["fit_s"] / n_tasks
    total["cpu_ms_per_task"] = 1e3 * total["cpu_s"] / n_tasks
    return total


def table(rows: list[dict], iters: int) -> str:
    """The Markdown table of the measurements (a row per size, then the placeholder)."""
    head = (
        "| tasks | rows | draw data (s) | fit, warm (s) | ms per task | CPU (s) "
        "| CPU ms per task | peak RSS (GiB) | RSS after drawing (GiB) | ELBO |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in rows:
        label = f"{r['tasks']}" + (
            f", {r['processes']} processes" if r.get("processes", 1) > 1 else ""
        )
        if "error" in r:
            lines.append(f"| {label} | | | {r['error']} | | | | | | |")
            continue
        lines.append(
            f"| {label} | {r['rows']} | {r['draw_s']:.1f} | {r['fit_s']:.1f} "
            f"| {r['ms_per_task']:.2f} | {r['cpu_s']:.1f} | {r['cpu_ms_per_task']:.2f} "
            f"| {r['peak_rss_gib']:.2f} | {r['data_rss_gib']:.2f} "
            f"| {r['elbo']:.6g} |"
        )
    lines.append(
        f"\n{iters} EM iterations (`tol=0`) after a warm-up fit, K = 3, 30 points per task, "
        f"201-point grid; {platform.node()}, {os.cpu_count()} CPUs."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=4 * 3600.0, help="per size (s)")
    parser.add_argument(
        "--processes",
        type=int,
        nargs="+",
        default=[1],
        help="fit each size in each of these numbers of processes (jax.distributed)",
    )
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child process
    parser.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--port", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:
        processes = args.processes[0]
        if processes > 1:
            import jax

            jax.distributed.initialize(
                f"127.0.0.1:{args.port}", num_processes=processes, process_id=args.rank
            )
        print(
            json.dumps(run_one(args.one, args.iters, rank=args.rank, processes=processes)),
            flush=True,
        )
        return 0
    rows = []
    for t in args.tasks:
        for p in args.processes:
            rows.append(_child(t, args.iters, args.timeout, p))
            print(json.dumps(rows[-1]), flush=True)
    print()
    print(table(rows, args.iters))
    return 0


if __name__ == "__main__":
    sys.exit(main())
