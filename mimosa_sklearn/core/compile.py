"""``jit`` for the core's programs, with XLA options that halve their CPU compile time.

XLA's CPU backend lowers every fused loop of a program through its MLIR "fusion
emitters" by default. Our EM iteration holds about 430 such fusions (L-BFGS, line
search, per-task Cholesky algebra), and compiling them through MLIR took 5.3 s of a
9.8 s cold fit of 1000 tasks. The older LLVM IR emitters
(``xla_cpu_use_fusion_emitters=False``) compile the same program in 2.7 s, and it runs
10-25% faster, with the same results (``tests/core/test_compile.py``).

Two more options shorten the compilation without slowing the programs. Measured on
one core (synth_dev, K = 3, a cold fit: XLA compilation time from JAX's duration
events, medians of 3):

- Backend optimisation level 1 instead of XLA's default
  (``xla_backend_optimization_level=1``): 2.65 s to 2.26 s. The heavy work runs in
  LAPACK and Eigen kernels, which are compiled already: a warm fit of 8000 tasks took
  9.3 s against 10.0 s, with the same ELBO to the last digit.
- The program's LLVM module split in as many parts as the process has CPUs
  (``xla_cpu_parallel_codegen_split_count``, XLA's default 32), since XLA compiles
  the parts in parallel: 2.26 s to 1.90 s on one core. On two cores two parts compile
  as fast as 32 (1.3 s), one part slower (1.7 s).

The options are passed per program (``jax.jit(..., compiler_options=...)``), so the
user's own JAX code keeps XLA's defaults. They only concern the CPU backend and are
passed only when JAX runs on the CPU (on a GPU the programs compile with XLA's
defaults). A jaxlib that no longer knows one of them rejects it when compiling, and the
programs then fall back to XLA's defaults for the rest of the process.

Compiled programs on disk
    A new process used to trace, lower and compile every program again. For a first
    fit + condition + predict on synth_dev (60 tasks, K = 3; 2-core CPU, jax 0.10.2)
    that was 3.9 s of work for 0.32 s warm: tracing 0.9 s, lowering to StableHLO
    0.3 s, XLA compilation 2.2 s (JAX's duration events), the rest execution and
    Python. JAX's persistent compilation cache would only skip the compilation (and
    keep the 1.2 s of tracing and lowering), and it cannot be confined to our
    programs in jax 0.10.2: whether it is used and its folder are read from the global
    ``jax.config`` once per process, and setting it up writes a global option
    (``jax_persistent_cache_min_entry_size_bytes``). So each program's executable is
    serialised instead
    (:mod:`jax.experimental.serialize_executable`) under a key computed *before*
    tracing (:mod:`mimosa_sklearn.core.program_key`) and stored in the user's cache
    folder (:mod:`mimosa_sklearn.core.cache`; :mod:`mimosa_sklearn.core.executable`
    writes and loads the executables). A hit skips all three stages: the same
    calls take 0.88 s in a new process, 0.16 s of it loading the five programs
    (``benchmarks/results/compile_cache.md``). Writing them costs a first process
    0.08 s (2%).

    The price is that a key computed without tracing must pin everything that shapes
    the program. Programs whose arguments cannot be pinned (a user's own kernel class
    or function, a lambda, several devices) and functions outside this package are
    compiled as before, without touching the disk. Results are bit for bit those of a
    compilation: the same executable runs (``tests/core/test_compile.py``).

    :func:`jit` therefore dispatches itself, like :func:`equinox.filter_jit` (arrays
    traced, other leaves static): per call signature (structure, static leaves, array
    shapes, dtypes and shardings, JAX settings) it keeps the compiled program of this
    process, else loads it from disk, else lowers and compiles it with
    :func:`jax.jit` and writes it to disk. A process compiles a program under the
    entry's lock (:func:`mimosa_sklearn.core.cache.building`), so that another process
    missing the same entry at the same moment waits and loads it.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import numpy as np

from . import cache, executable, program_key, runtime

__all__ = ["jit", "to_device", "COMPILER_OPTIONS", "options_in_use", "forget_compiled"]


def _codegen_parts() -> int:
    """XLA compiles the parts of a program on the CPUs this process may use."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(32, cpus or 1))


COMPILER_OPTIONS: dict[str, Any] = {
    "xla_cpu_use_fusion_emitters": False,
    "xla_backend_optimization_level": 1,
    "xla_cpu_parallel_codegen_split_count": _codegen_parts(),
}
_state = {"tuned": True}
# This process's programs, by program and call signature (see _Program.__call__).
_compiled: dict[tuple, jax.stages.Compiled] = {}
_log = logging.getLogger(__name__)


def options_in_use() -> bool:
    """Whether programs compile with :data:`COMPILER_OPTIONS` (False after a fallback
    and on other backends than the CPU)."""
    return _state["tuned"] and jax.default_backend() == "cpu"


def forget_compiled() -> None:
    """Drop this process's compiled programs (the next calls load or compile them)."""
    _compiled.clear()


# Released with JAX's own compiled code when the process nears its memory-map limit.
runtime.on_release(forget_compiled)


def _unknown_option(err: Exception) -> bool:
    return "No such compile option" in str(err)


class _Static(eqx.Module):
    """The non-array part of a program's output, carried in its output structure."""

    value: Any = eqx.field(static=True)


def _traced(fn: Callable) -> Callable:
    """``fn`` as a function of its array leaves and of its static part."""

    def run(dynamic, static):
        treedef, leaves = static
        arrays = iter(dynamic)
        filled = [next(arrays) if x is None else x for x in leaves]
        args, kwargs = jax.tree.unflatten(treedef, filled)
        out, static_out = eqx.partition(fn(*args, **kwargs), eqx.is_array)
        return out, _Static(static_out)

    # Names the program in JAX's logs and profiles as before: jit(em_iteration).
    run.__name__, run.__qualname__ = fn.__name__, fn.__qualname__
    return run


def _aval(x: jax.Array) -> tuple:
    return x.shape, x.dtype, x.weak_type, x.sharding


class _Program:
    """The compiled programs of one function: in this process, on disk, or compiled."""

    def __init__(self, fn: Callable):
        self.name = f"{fn.__module__}:{fn.__qualname__}"
        self.signature = inspect.signature(fn)
        # Read once, so that the key and the compiler see the same options.
        self.options = {True: dict(COMPILER_OPTIONS), False: {}}
        traced = _traced(fn)
        self.jitted = {
            tuned: jax.jit(traced, static_argnums=1, compiler_options=options or None)
            for tuned, options in self.options.items()
        }
        self.wrapper: Callable | None = None

    def split(self, args: tuple, kwargs: dict) -> tuple[tuple, tuple]:
        """The array leaves of the arguments and the rest (structure, other leaves)."""
        bound = self.signature.bind(*args, **kwargs)
        leaves, treedef = jax.tree.flatten((bound.args, bound.kwargs))
        # numpy arrays are copied to the device as jax.jit would: one program for both.
        dynamic = tuple(
            jax.device_put(x) if isinstance(x, np.ndarray | np.generic) else x
            for x in leaves
            if eqx.is_array(x)
        )
        return dynamic, (treedef, tuple(None if eqx.is_array(x) else x for x in leaves))

    def __call__(self, dynamic: tuple, static: tuple):
        tuned = options_in_use()
        if any(isinstance(x, jax.core.Tracer) for x in dynamic):
            # Inside another transformation: JAX inlines the program into the outer one,
            # which alone takes compiler options.
            return self.jitted[False](dynamic, static)
        signature = (
            self,
            tuned,
            static,
            tuple(_aval(x) for x in dynamic),
            tuple(jax.config.values.values()),
        )
        try:
            compiled = _compiled.get(signature)
        except TypeError:  # an unhashable setting: let jax.jit dispatch
            return self.jitted[tuned](dynamic, static)
        if compiled is None:
            try:
                compiled = self.load_or_compile(tuned, dynamic, static)
            except jax.errors.JaxRuntimeError as err:
                if not (tuned and _unknown_option(err)):
                    raise
                _state["tuned"] = False
                return self(dynamic, static)
            _compiled[signature] = compiled
        return compiled(dynamic)

    def key(self, tuned: bool, dynamic: tuple, static: tuple) -> str | None:
        """The cache key, or None: the cache is off or the program has no stable key."""
        if cache.directory() is None or not self.named():
            return None
        try:
            return program_key.program_key(self.name, self.options[tuned], static, dynamic)
        except program_key.Uncacheable as err:
            _log.debug("%s is compiled without the disk cache: %s", self.name, err)
            return None

    def named(self) -> bool:
        """Whether this is one of the package's functions, named by its module and name
        (only those have their code pinned by the key)."""
        module, _, qualname = self.name.partition(":")
        return module.startswith("mimosa_sklearn.") and (
            getattr(sys.modules.get(module), qualname, None) is self.wrapper
        )

    def load_or_compile(self, tuned: bool, dynamic: tuple, static: tuple) -> jax.stages.Compiled:
        key = self.key(tuned, dynamic, static)
        if key is None:
            return self.jitted[tuned].lower(dynamic, static).compile()
        compiled = self.load(key, dynamic)
        if compiled is None:
            # One process compiles a program at a time: another one that is compiling
            # it (a GridSearchCV worker on the same shapes) is waited for, then loaded.
            with cache.building(key):
                compiled = self.load(key, dynamic)
                if compiled is None:
                    lowered = self.jitted[tuned].lower(dynamic, static)
                    compiled = lowered.compile()
                    try:
                        cache.write(key, executable.dump(compiled, lowered))
                    except (program_key.Uncacheable, ValueError, NotImplementedError) as err:
                        _log.debug("%s cannot be written to the cache: %s", self.name, err)
        return compiled

    def load(self, key: str, dynamic: tuple) -> jax.stages.Compiled | None:
        """The program stored under ``key``, or None (missing, damaged, unloadable)."""
        payload = cache.read(key)
        if payload is None:
            return None
        try:
            compiled = executable.load(payload, dynamic)
        except Exception as err:  # an entry from a broken write: rebuild it
            _log.info("Ignoring the cache entry %s of %s: %s", key, self.name, err)
            return None
        _log.debug("Loaded %s from the cache (%s).", self.name, key)
        return compiled


def jit(fn: Callable) -> Callable:
    """``fn`` compiled per call signature with :data:`COMPILER_OPTIONS`, like
    :func:`equinox.filter_jit` (arrays traced, other leaves static); the package's
    programs are kept in the disk cache (:mod:`mimosa_sklearn.core.cache`)."""
    program = _Program(fn)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if jax.config.jax_disable_jit:
            return fn(*args, **kwargs)
        dynamic, static = program.split(args, kwargs)
        out, static_out = program(dynamic, static)
        return eqx.combine(out, static_out.value)

    program.wrapper = call
    return call


def to_device(value, dtype=None) -> jax.Array:
    """A host value (numpy array or Python scalar) as a JAX array, compiling nothing.

    ``jnp.asarray`` of a numpy array compiles a small staging program for every new
    shape and dtype (20-50 ms each on CPU; a fit used to compile a dozen of them);
    ``jax.device_put`` only copies. Python scalars keep ``jnp.asarray``'s weak type, so
    both spellings hit the same compiled programs.
    """
    if dtype is None and isinstance(value, bool | int | float):
        return jax.device_put(value)
    if dtype is None and isinstance(value, jax.Array):
        return value  # already placed (maybe split across processes: not fetchable)
    return jax.device_put(np.asarray(value, dtype))
