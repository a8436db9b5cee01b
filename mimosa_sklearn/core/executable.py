"""Compiled programs as bytes and back: what may be written, and how it is loaded.

:func:`dump` serialises a compiled program with
:mod:`jax.experimental.serialize_executable`, together with its output structure (which
holds the static outputs, pickled by :func:`mimosa_sklearn.core.program_key.dumps`);
:func:`load` makes it a callable :class:`jax.stages.Compiled` again in another process.

Two things that tracing and lowering do, and loading skips, decide what is written:

- lowering a program that calls LAPACK sets up jaxlib's LAPACK kernels; a loaded one
  calling them in a new process segfaulted (jax 0.10.2). :func:`load` sets them up
  first, and :func:`dump` refuses programs with other custom calls (a host callback,
  any kernel whose set-up only lowering would do);
- the static outputs must come back equal: an object compared by identity (a sentinel
  that pickling copied) would make a loaded program return other objects than a
  compiled one.
"""

from __future__ import annotations

import functools

import jax
from jax.experimental import serialize_executable

from . import program_key

__all__ = ["custom_calls", "dump", "load"]

# Custom calls whose kernels load() sets up (jaxlib's LAPACK targets).
_LOADABLE_PREFIX = "lapack_"


def custom_calls(lowered: jax.stages.Lowered) -> set[str]:
    """The targets of the custom calls in a lowered program."""
    names = set()

    def walk(op):
        for region in op.regions:
            for block in region.blocks:
                for inner in block.operations:
                    if inner.operation.name == "stablehlo.custom_call":
                        names.add(str(inner.attributes["call_target_name"]).strip('"'))
                    walk(inner.operation)

    walk(lowered.compiler_ir("stablehlo").operation)
    return names


def dump(compiled: jax.stages.Compiled, lowered: jax.stages.Lowered) -> bytes:
    """``compiled`` (lowered as ``lowered``) as bytes for :func:`load`.

    Raises :class:`~mimosa_sklearn.core.program_key.Uncacheable` for a program that
    could not be loaded safely (see above), ``ValueError`` or ``NotImplementedError``
    for one that JAX cannot serialise.
    """
    other = {name for name in custom_calls(lowered) if not name.startswith(_LOADABLE_PREFIX)}
    if other:
        raise program_key.Uncacheable(f"custom calls {sorted(other)} may need set-up")
    executable, _, out_tree = serialize_executable.serialize(compiled)
    try:
        same = program_key.loads(program_key.dumps(out_tree)) == out_tree
    except Exception:  # an object that cannot be loaded or compared
        same = False
    if not same:
        raise program_key.Uncacheable("the output structure does not survive pickling")
    return program_key.dumps((executable, out_tree))


@functools.cache
def _lapack_ready() -> bool:
    """Set up jaxlib's LAPACK kernels as lowering does; False when this JAX has no such
    function (a later JAX moved it): nothing is loaded then."""
    try:
        from jax._src.lax.linalg import initialize_lapack
    except ImportError:
        return False
    initialize_lapack()
    return True


def load(payload: bytes, dynamic: tuple) -> jax.stages.Compiled:
    """The program of :func:`dump`, called with the arrays ``dynamic`` (a tuple).

    Only for trusted bytes: loading runs code they hold.
    """
    if not _lapack_ready():
        raise RuntimeError("this JAX cannot prepare loaded programs")
    executable, out_tree = program_key.loads(payload)
    in_tree = jax.tree.structure(((dynamic,), {}))
    return serialize_executable.deserialize_and_load(executable, in_tree, out_tree)
