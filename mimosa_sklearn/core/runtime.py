"""Runtime set-up of JAX for the numerical core: float64 and a hang-free CPU backend.

float64
    The core runs inside ``jax.enable_x64(True)`` (a context manager), so the user's
    global ``jax_enable_x64`` setting is never changed: arrays made by their own code
    outside our calls keep their default dtype.

CPU thread-pool deadlock (jaxlib 0.10.x)
    jaxlib 0.10.0-0.10.2 split *batched* LAPACK calls (Cholesky, triangular solves)
    into chunks scheduled on XLA's intra-op CPU thread pool and block the calling pool
    thread until they finish. When the XLA executor runs as many such calls at once as
    the pool has threads (two on a 2-core machine), every thread waits for chunks that
    no free thread can run: the process hangs at 0% CPU. Our EM iteration was seen to
    hang this way (gdb: every ``tf_XLAEigen`` thread in ``jax::ParallelBatchMap`` under
    ``lapack_dtrsm_ffi``). ``--xla_cpu_multi_thread_eigen=false`` does not help.
    A one-thread pool runs the chunks inline, so :func:`ensure_safe_cpu_backend` creates
    the CPU backend while the process is pinned to one CPU and restores the affinity
    right after (XLA's pool is sized once, at creation, from the affinity). The
    processes of a multi-process fit are pinned to different CPUs for that moment, and
    run on all of them afterwards: each computes on one thread, so two processes use
    two cores. Later
    jaxlib releases compile that parallel path out, and the guard is then skipped.

Memory maps of compiled code
    XLA's CPU backend maps every compiled kernel into its own pages: one set of our
    programs (EM iteration, final E-step, predictions) holds about 1000 of the
    process's memory maps. Linux caps a process at ``vm.max_map_count`` maps (65530 by
    default), and XLA segfaults when a compile cannot map more. About 60 distinct data
    shapes in one process (a long notebook session, a test suite, a large grid search)
    reached that cap. :func:`release_compiled_code_if_needed`, called on entry to every
    core computation, clears JAX's compilation caches (:func:`jax.clear_caches`) once
    the process holds half of its allowed maps: later calls recompile, none crash.
    Holders of other compiled programs (:mod:`mimosa_sklearn.core.compile`) drop them
    at the same time (:func:`on_release`).

BLAS threads of a multi-process fit
    XLA's CPU LAPACK kernels call the OpenBLAS that SciPy bundles, whose worker threads
    spin while they wait for work. With one ``jax.distributed`` process per core, each
    process's spinning threads take the cores the other processes compute on: two
    processes on two cores ran 7-14 times slower than one process (perf: 96% of the
    samples in ``blas_thread_server`` / ``exec_blas_async_wait``). Inside
    :func:`jax_scope`, a process of a multi-process CPU run therefore uses one BLAS
    thread, like its one XLA thread (:func:`one_blas_thread_per_process`). A single
    process keeps OpenBLAS's threads: on large grids they shorten the fit.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import warnings
from collections.abc import Callable

import jax

__all__ = [
    "jax_scope",
    "one_blas_thread_per_process",
    "ensure_safe_cpu_backend",
    "jaxlib_is_exposed",
    "release_compiled_code_if_needed",
    "on_release",
    "memory_map_count",
    "GUARD_ENV",
    "MAP_LIMIT_ENV",
]

GUARD_ENV = "MIMOSA_SKLEARN_CPU_GUARD"
# Overrides vm.max_map_count as the process's map budget (tests use a small one).
MAP_LIMIT_ENV = "MIMOSA_SKLEARN_MAX_MAP_COUNT"
# Fraction of the budget at which compiled code is released; a set of our programs
# takes ~1000 maps, far below half of the default 65530, so one call never overflows.
_MAP_FRACTION = 0.5
_state = {"checked": False, "releases": 0, "blas": None}
_release_hooks: list[Callable[[], None]] = []
_log = logging.getLogger(__name__)


def jaxlib_is_exposed(version: str | None = None) -> bool:
    """Whether this jaxlib schedules batched LAPACK chunks on the XLA pool (0.10.x)."""
    import jaxlib

    version = version or jaxlib.__version__
    parts = version.split(".")
    try:
        major, minor = int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        return False
    return (major, minor) == (0, 10)


def _backend_initialised() -> bool:
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge._backends)  # noqa: SLF001 - no public query exists
    except Exception:  # pragma: no cover - private API moved
        return True


def ensure_safe_cpu_backend() -> None:
    """Create JAX's CPU backend with a one-thread intra-op pool on exposed jaxlibs.

    No-op when jaxlib is not exposed, when ``MIMOSA_SKLEARN_CPU_GUARD=0``, when the
    process may only use one CPU anyway, or on the second call. If the backend already
    exists (the user ran JAX code first) it cannot be rebuilt: a :class:`RuntimeWarning`
    explains how to avoid the possible hang.
    """
    if _state["checked"]:
        return
    _state["checked"] = True
    if os.environ.get(GUARD_ENV, "1") == "0" or not jaxlib_is_exposed():
        return
    if not hasattr(os, "sched_getaffinity"):  # pragma: no cover - non-Linux
        return
    cpus = os.sched_getaffinity(0)
    if len(cpus) <= 1:
        return
    if _backend_initialised():
        warnings.warn(
            "jaxlib 0.10.x can deadlock in batched linear algebra on a multi-threaded CPU "
            "backend, and JAX's CPU backend was created before mimosa_sklearn could make "
            "it safe. Import mimosa_sklearn before running other JAX code, or upgrade "
            "jaxlib, or run the process on one CPU (taskset -c 0).",
            RuntimeWarning,
            stacklevel=2,
        )
        return
    try:
        os.sched_setaffinity(0, {_creation_cpu(cpus)})
        jax.devices("cpu")
    finally:
        # Threads started meanwhile inherited the pin: release them all (the pool's
        # size is fixed at creation, so this keeps the fix and frees the cores).
        for tid in _thread_ids():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, cpus)


def _creation_cpu(cpus: set[int]) -> int:
    """The CPU the backend is created on: the processes of a multi-process fit
    (``jax.distributed``, initialised before any computation) take different ones, so
    that threads XLA pins at creation, if any, do not share one core."""
    try:
        from jax._src import distributed  # no public query before a backend exists

        index = distributed.global_state.process_id or 0
    except Exception:  # pragma: no cover - private API moved
        index = 0
    ordered = sorted(cpus)
    return ordered[index % len(ordered)]


def _thread_ids() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # pragma: no cover - no procfs
        return [0]


def memory_map_count() -> int | None:
    """Number of memory maps this process holds (None where procfs is missing)."""
    try:
        with open("/proc/self/maps", "rb") as f:
            return f.read().count(b"\n")
    except OSError:  # pragma: no cover - non-Linux
        return None


def _map_limit() -> int | None:
    override = os.environ.get(MAP_LIMIT_ENV)
    if override:
        return int(override)
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            return int(f.read().strip())
    except (OSError, ValueError):  # pragma: no cover - non-Linux
        return None


def on_release(hook: Callable[[], None]) -> None:
    """Have :func:`release_compiled_code_if_needed` call ``hook`` when it releases
    compiled code (``hook`` drops its own references to compiled programs)."""
    _release_hooks.append(hook)


def release_compiled_code_if_needed() -> bool:
    """Clear JAX's compilation caches when the process nears its memory-map limit.

    Returns whether the caches were cleared. The cost is a recompilation of whatever
    runs next (the user's own jitted functions included), instead of a segfault in
    XLA once ``vm.max_map_count`` is reached.
    """
    limit = _map_limit()
    count = memory_map_count() if limit else None
    if count is None or count < _MAP_FRACTION * limit:
        return False
    jax.clear_caches()
    for hook in _release_hooks:
        hook()
    gc.collect()
    _state["releases"] += 1
    _log.info(
        "Released JAX's compiled code: the process held %d memory maps of %d allowed.",
        count,
        limit,
    )
    return True


@contextlib.contextmanager
def jax_scope():
    """The scope of every computation of the package's JAX code.

    On entry: the CPU backend made safe (:func:`ensure_safe_cpu_backend`), the
    process's memory-map budget guarded (:func:`release_compiled_code_if_needed`); then
    the enclosed code runs in float64 without touching the global config.
    """
    ensure_safe_cpu_backend()
    release_compiled_code_if_needed()
    with jax.enable_x64(True), one_blas_thread_per_process():
        yield


def one_blas_thread_per_process() -> contextlib.AbstractContextManager:
    """Limit BLAS to one thread in a process of a multi-process CPU run (restored on exit).

    A no-op context in a single process and on accelerators.
    """
    if jax.process_count() == 1 or jax.default_backend() != "cpu":
        return contextlib.nullcontext()
    if _state["blas"] is None:
        # XLA loads SciPy's OpenBLAS at its first LAPACK call: load it first, so that the
        # controller (which only sees loaded libraries) finds it.
        import scipy.linalg.cython_lapack  # noqa: F401
        from threadpoolctl import ThreadpoolController

        _state["blas"] = ThreadpoolController()
    return _state["blas"].limit(limits=1, user_api="blas")
