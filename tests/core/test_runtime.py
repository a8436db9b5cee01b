"""The CPU-backend guard against the jaxlib 0.10 batched-LAPACK deadlock, and float64.

The hang itself was reproduced on this project's EM iteration (jaxlib 0.10.2, 2 cores:
both XLA pool threads blocked in ``jax::ParallelBatchMap`` under ``lapack_dtrsm_ffi``,
4 of 4 runs). These tests pin down the mechanism of the guard (a one-thread XLA pool)
and run real fits under CPU load in a fresh process with a hard timeout, so a
regression shows up as a failure instead of a hung CI job.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from mimosa_sklearn.core import runtime

_SNIPPET_THREADS = textwrap.dedent(
    """
    import os
    import mimosa_sklearn.core  # creates the CPU backend safely
    import jax.numpy as jnp
    x = jnp.ones((8, 8)); (x @ x).block_until_ready()
    names = [open(f"/proc/self/task/{t}/comm").read().strip()
             for t in os.listdir("/proc/self/task")]
    affinities = {len(os.sched_getaffinity(int(t))) for t in os.listdir("/proc/self/task")}
    print(names.count("tf_XLAEigen"), min(affinities), len(os.sched_getaffinity(0)))
    """
)

_SNIPPET_FIT = textwrap.dedent(
    """
    import numpy as np
    from mimosa_sklearn import MagmaClusterRegressor
    from mimosa_sklearn.datasets import make_magma_data
    for seed in range(2):
        X, y, _ = make_magma_data(n_tasks=40, n_points=12, n_clusters=2, grid_size=40,
                                  random_state=seed)
        est = MagmaClusterRegressor(n_clusters=2, max_iter=4, tol=0.0, random_state=0)
        est.fit(X, y)
        assert np.isfinite(est.predict(X)).all()
    print("done")
    """
)


def test_exposed_versions():
    assert runtime.jaxlib_is_exposed("0.10.0")
    assert runtime.jaxlib_is_exposed("0.10.2")
    assert not runtime.jaxlib_is_exposed("0.9.2")
    assert not runtime.jaxlib_is_exposed("0.11.2")
    assert not runtime.jaxlib_is_exposed("garbage")


def _run(code: str, timeout: float, env_extra: dict[str, str] | None = None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs Linux affinity")
def test_guard_builds_one_thread_pool_and_restores_affinity():
    out = _run(_SNIPPET_THREADS, timeout=120)
    assert out.returncode == 0, out.stderr
    n_pool, min_affinity, process_affinity = map(int, out.stdout.split())
    n_cpus = len(os.sched_getaffinity(0))
    if runtime.jaxlib_is_exposed() and n_cpus > 1:
        assert n_pool == 1
    # Nothing stays pinned: every thread may use every CPU again.
    assert min_affinity == n_cpus
    assert process_affinity == n_cpus


def test_importing_the_package_starts_no_jax_backend():
    """``jax.distributed.initialize`` must come before any JAX computation: importing
    the package (and loading data) may come first."""
    code = (
        "import mimosa_sklearn, mimosa_sklearn.plotting, mimosa_sklearn.selection\n"
        "from mimosa_sklearn import MagmaClusterRegressor\n"
        "from mimosa_sklearn.datasets import load_synth_dev\n"
        "load_synth_dev(); MagmaClusterRegressor(n_clusters=2).get_params()\n"
        "from jax._src import xla_bridge\n"
        "print(len(xla_bridge._backends))\n"
    )
    out = _run(code, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "0"


def test_processes_of_a_distributed_fit_create_their_backends_on_different_cpus(monkeypatch):
    from jax._src import distributed

    for index, expected in [(None, 2), (0, 2), (1, 5), (2, 7), (3, 2)]:
        monkeypatch.setattr(distributed.global_state, "process_id", index)
        assert runtime._creation_cpu({7, 2, 5}) == expected


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_a_process_of_a_multi_process_cpu_run_computes_with_one_blas_thread(monkeypatch):
    """Spinning OpenBLAS threads of each process took the cores of the others: two
    processes on two cores fitted 7-14 times slower than one process."""
    import jax
    import scipy.linalg.cython_lapack  # noqa: F401 - the OpenBLAS XLA's LAPACK calls
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads() -> list[int]:
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    with threadpool_limits(limits=2, user_api="blas"):
        with runtime.jax_scope():
            single = blas_threads()
        monkeypatch.setattr(jax, "process_count", lambda: 2)
        with runtime.jax_scope():
            multi = blas_threads()
        after = blas_threads()
    assert single and set(single) == {2}
    assert set(multi) == {1}
    assert set(after) == {2}


def test_fits_finish_under_cpu_load():
    """Two EM fits (same shapes: one compile) in a fresh process while every core is
    busy never hang (the unguarded engine hung in its second iteration, 4 runs of 4)."""
    burners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(max(1, len(os.sched_getaffinity(0))))
    ]
    try:
        out = _run(_SNIPPET_FIT, timeout=600)
    finally:
        for proc in burners:
            proc.kill()
            proc.wait()
    assert out.returncode == 0, out.stderr[-2000:]
    assert "done" in out.stdout


def test_jax_scope_leaves_global_config_alone():
    import jax
    import jax.numpy as jnp

    before = jax.config.jax_enable_x64
    with runtime.jax_scope():
        assert jnp.ones(2).dtype == jnp.float64
    assert jax.config.jax_enable_x64 == before
    if not before:
        assert jnp.ones(2).dtype == jnp.float32


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs procfs")
def test_compiled_code_is_released_near_the_map_limit(monkeypatch):
    """XLA maps every compiled kernel into its own pages and segfaults once the process
    reaches vm.max_map_count (CI crashed this way after ~60 data shapes). Near half of
    the budget the caches are cleared; fits after that recompile and agree exactly."""
    import numpy as np

    from mimosa_sklearn import MagmaClusterRegressor
    from mimosa_sklearn.datasets import make_magma_data

    X, y, _ = make_magma_data(n_tasks=8, n_points=6, n_clusters=2, grid_size=15, random_state=3)
    est = MagmaClusterRegressor(n_clusters=2, max_iter=3, random_state=0).fit(X, y)
    first = est.predict(X)
    held = runtime.memory_map_count()
    monkeypatch.setenv(runtime.MAP_LIMIT_ENV, str(10 * held))
    assert not runtime.release_compiled_code_if_needed()
    monkeypatch.setenv(runtime.MAP_LIMIT_ENV, str(2 * held - 2))
    releases = runtime._state["releases"]
    assert runtime.release_compiled_code_if_needed()
    assert runtime._state["releases"] == releases + 1
    # The compiled programs of that fit held hundreds of maps.
    assert runtime.memory_map_count() < held - 200
    # Every core entry point checks the budget: with a tiny one, each entry releases,
    # and the refit recompiles and reproduces the first fit.
    monkeypatch.setenv(runtime.MAP_LIMIT_ENV, "2")
    refit = MagmaClusterRegressor(n_clusters=2, max_iter=3, random_state=0).fit(X, y)
    assert runtime._state["releases"] >= releases + 2
    np.testing.assert_array_equal(refit.predict(X), first)
