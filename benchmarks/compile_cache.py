"""Cost of a new process: fit + condition + predict on synth_dev, with the program cache.

Run ``python benchmarks/compile_cache.py [--cache-dir DIR] [--empty] [--repeat N]``.

The process imports what the first fit imports (JAX, equinox, the core: timed apart,
it costs the same whatever the cache holds), then fits synth_dev (60 tasks,
``n_clusters=3``), conditions on its ``test_observed`` tasks and predicts their
``test_target`` inputs, ``--repeat`` times (default once), and prints for each round
its time and where JAX spent it: tracing, lowering to StableHLO and XLA compilation
(JAX's own duration events), the rest being execution and Python. The first round of
a process is the cold one; later rounds are warm. Then it prints the checksum of the
predictions, equal in every mode.

- ``--cache-dir DIR`` sets ``MIMOSA_SKLEARN_CACHE_DIR`` (``''``: the cache off);
- ``--empty`` deletes the cache folder first (the first process on a machine).

For whole-process figures, time the command itself in alternating runs: the cache off
(``--cache-dir ''``), empty (``--cache-dir D --empty``) and filled (``--cache-dir D``
after one run); ``benchmarks/results/compile_cache.md`` has them.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import os
import shutil
import time
import warnings

_EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
    "/jax/core/compile/backend_compile_duration": "compile",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--empty", action="store_true")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    if args.cache_dir is not None:
        os.environ["MIMOSA_SKLEARN_CACHE_DIR"] = args.cache_dir
        if args.empty and args.cache_dir:
            shutil.rmtree(args.cache_dir, ignore_errors=True)

    from jax._src import monitoring

    spent: collections.Counter[str] = collections.Counter()

    def on_duration(event: str, duration: float, **_) -> None:
        if event in _EVENTS:
            spent[_EVENTS[event]] += duration

    monitoring.register_event_duration_secs_listener(on_duration)

    import numpy as np

    from mimosa_sklearn import MagmaClusterRegressor
    from mimosa_sklearn.datasets import load_synth_dev

    X, y = load_synth_dev()
    X_obs, y_obs = load_synth_dev("test_observed")
    X_new, _ = load_synth_dev("test_target")
    start = time.perf_counter()
    importlib.import_module("mimosa_sklearn._fit")  # imported by the first fit
    print(f"import of JAX and the core: {time.perf_counter() - start:.3f} s")
    for round_ in range(args.repeat):
        spent.clear()
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = MagmaClusterRegressor(n_clusters=3, random_state=0).fit(X, y)
            mean = model.condition(X_obs, y_obs).predict(X_new)
        total = time.perf_counter() - start
        rest = total - sum(spent.values())
        split = " ".join(f"{k} {spent[k]:.3f}" for k in ("trace", "lower", "compile"))
        print(f"round {round_ + 1}: {total:.3f} s ({split}, execution and Python {rest:.3f})")
    print(f"checksum {float(np.sum(mean)):.12g}")


if __name__ == "__main__":
    main()
