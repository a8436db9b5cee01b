"""Where one EM iteration spends its time on the CPU: XLA's own per-kernel profile.

Run ``python benchmarks/profile_em.py [--tasks 1000] [--call 0] [--top 15]``.

It fits ``make_magma_data(n_tasks, 30 points, 3 clusters, 201-point grid)`` for five
EM iterations, then runs the ``--call``-th call of the EM iteration again (0: the first
iteration, whose VM-step takes the most L-BFGS steps; -1: the last final E-step) under
``jax.profiler.trace`` and reads the trace back with ``jax.profiler.ProfileData`` (no
TensorBoard needed). It prints

- the call's wall time (warm; the profiler itself slows it down) and the page faults
  of one unprofiled run (see the user guide's "Memory reuse" tip);
- the kernels' time by kind (matrix products, LAPACK calls and the per-matrix
  transposes XLA adds around them, layout copies, other fusions) and the ``--top``
  kernels by name. The names are those of an ``XLA_FLAGS="--xla_dump_to=DIR
  --xla_dump_hlo_as_text"`` dump of the same program
  (``*jit_em_iteration.cpu_after_optimizations.txt``), which says what each computes.
"""

from __future__ import annotations

import argparse
import collections
import glob
import re
import resource
import sys
import tempfile
import time
import warnings

import jax

from mimosa_sklearn import MagmaClusterRegressor
from mimosa_sklearn.core import em
from mimosa_sklearn.core.runtime import jax_scope
from mimosa_sklearn.datasets import make_magma_data

# Bookkeeping events of XLA's thunk runtime, not kernels.
_SKIP = ("ThunkExecutor", "while", "cond", "call", "Transpose::", "TransposePlan")


def _kind(name: str) -> str:
    if name.startswith("ynn_fusion") or name.startswith("dot"):
        return "matrix products"
    if name.startswith(("cholesky", "triangular_solve")):
        return "LAPACK (Cholesky, triangular solves)"
    if name == "Transpose":
        return "per-matrix transposes around LAPACK"
    if name.startswith(("copy", "transpose")) or "_copy_" in name or name.endswith("_copy"):
        return "layout copies"
    return "other fusions"


def _record_calls(n_tasks: int) -> list:
    calls = []
    original = em.em_iteration

    def recording(*args, **kwargs):
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    X, y, _ = make_magma_data(
        n_tasks=n_tasks, n_points=30, n_clusters=3, grid_size=201, random_state=0
    )
    em.em_iteration = recording
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning at a fixed iteration count
            MagmaClusterRegressor(n_clusters=3, max_iter=5, tol=0.0, random_state=0).fit(X, y)
    finally:
        em.em_iteration = original
    return calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--call", type=int, default=0)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    call_args, call_kwargs = _record_calls(args.tasks)[args.call]
    with jax_scope():
        jax.block_until_ready(em.em_iteration(*call_args, **call_kwargs))
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        out = jax.block_until_ready(em.em_iteration(*call_args, **call_kwargs))
        seconds = time.perf_counter() - t0
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        with tempfile.TemporaryDirectory() as trace_dir:
            with jax.profiler.trace(trace_dir):
                jax.block_until_ready(em.em_iteration(*call_args, **call_kwargs))
            (path,) = glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)
            profile = jax.profiler.ProfileData.from_file(path)
    by_name: collections.Counter = collections.Counter()
    for plane in profile.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_XLA"):
                continue
            for event in line.events:
                # "Transpose" is the outer event of each transpose; its nested
                # Transpose::Execute* events are skipped with the bookkeeping.
                if not event.name.startswith(_SKIP):
                    by_name[event.name] += event.duration_ns / 1e6
    by_kind: collections.Counter = collections.Counter()
    for name, ms in by_name.items():
        by_kind[_kind(re.sub(r"\.\d+$", "", name))] += ms
    total = sum(by_kind.values())
    print(
        f"{args.tasks} tasks, EM iteration call {args.call}: {seconds:.3f} s warm, "
        f"{int(out[5])} L-BFGS steps, {faults} page faults"
    )
    print(f"\nkernel time under the profiler: {total:.0f} ms\n")
    print("| kind | ms | share |\n|---|---:|---:|")
    for kind, ms in by_kind.most_common():
        print(f"| {kind} | {ms:.1f} | {100 * ms / total:.1f}% |")
    print("\n| kernel | ms |\n|---|---:|")
    for name, ms in by_name.most_common(args.top):
        print(f"| {name} | {ms:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
