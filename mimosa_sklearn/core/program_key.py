"""What identifies a compiled program across processes: the key of its cache entry.

A key is computed before tracing, so everything that shapes the program must be in it:

- the environment (:func:`environment`, once per process): Python, the versions of JAX,
  jaxlib and the libraries our programs are traced through, a hash of this package's
  source files and of kernax's (the package version too), the backend (platform,
  platform version, device kind), the host CPU (architecture, CPU counts, and on Linux
  the model and feature flags from ``/proc/cpuinfo``: XLA compiles CPU code for the
  host's instruction set; elsewhere the machine's name, so entries never travel) and
  ``XLA_FLAGS``;
- the program (:func:`program_key`): the function's module and name, the compiler
  options, every ``jax.config`` value as it reads in the call (``jax_enable_x64``
  among them) except the few that only log or set up JAX's own cache
  (:data:`UNKEYED_SETTINGS`: ``jax_log_compiles`` must not turn the cache off), the
  static (non-array) part of the arguments with their pytree structure, and the
  shape, dtype, weak type and memory kind of every array argument, all on the one
  device of the backend (programs over several devices get no key).

The static part is written with :func:`dumps`: a pickle in which every class and
function is named by its module and name. Only objects of this package, kernax,
equinox, optimistix, lineax, JAX, numpy and a few standard modules may be named, the
modules whose code the environment pins. Anything else, a lambda, a function of the
user's module or a user-defined kernel class, raises :class:`Uncacheable` and the
program is compiled as usual without touching the disk: a key that does not pin the
code it names could load a wrong program.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import io
import os
import pickle
import platform
import sys
import types
from pathlib import Path
from typing import Any

import equinox
import jax
import jaxlib
import kernax
import numpy as np

__all__ = ["UNKEYED_SETTINGS", "Uncacheable", "dumps", "loads", "environment", "program_key"]

# Modules whose classes and functions may be named in a key, and what pins their code.
_SOURCES = {  # source files hashed
    "mimosa_sklearn": Path(__file__).resolve().parents[1],
    "kernax": Path(kernax.__file__).resolve().parent,
}
_VERSIONED = {m.__name__: m.__version__ for m in (jax, jaxlib, equinox, np)}
# Read from the installed metadata: importing them costs a process loading its programs
# from the cache 0.2 s, and only tracing needs them.
_VERSIONED |= {name: importlib.metadata.version(name) for name in ("optimistix", "lineax")}
_STANDARD = ("builtins", "copyreg", "collections", "functools", "operator", "_operator", "enum")
_NAMEABLE = frozenset((*_SOURCES, *_VERSIONED, *_STANDARD))
_PROTOCOL = 5


class Uncacheable(Exception):
    """A program whose arguments or setting have no stable identity across processes."""


def _resolve(module: str, qualname: str) -> Any:
    """The object named ``qualname`` in ``module`` (how :func:`dumps` refers to it)."""
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _is_named(obj: Any, module: str, qualname: str) -> bool:
    try:
        return _resolve(module, qualname) is obj
    except Exception:  # any import or attribute error: not reachable by name
        return False


@functools.cache
def _constant_names(cls: type) -> tuple[str, ...]:
    """Names of the instances of ``cls`` defined in its own module (sentinels)."""
    module = sys.modules.get(cls.__module__)
    if module is None or cls.__module__.partition(".")[0] not in _NAMEABLE:
        return ()
    return tuple(name for name, value in vars(module).items() if type(value) is cls)


class _Pickler(pickle.Pickler):
    """Pickles classes, functions and module-level sentinels by name, only from the
    modules the key pins."""

    def reducer_override(self, obj):
        cls = type(obj)
        for name in _constant_names(cls):
            # Compared by identity (equinox's MISSING): a copy would break unflattening.
            if getattr(sys.modules[cls.__module__], name, None) is obj:
                return _resolve, (cls.__module__, name)
        module = getattr(obj, "__module__", None)
        qualname = getattr(obj, "__qualname__", None)
        if not (isinstance(module, str) and isinstance(qualname, str) and callable(obj)):
            return NotImplemented
        if _is_named(obj, module, qualname):
            if module.partition(".")[0] not in _NAMEABLE:
                raise Uncacheable(f"{module}.{qualname} is not pinned by the key")
            if isinstance(obj, type | types.FunctionType | types.BuiltinFunctionType):
                return NotImplemented  # pickle names these itself
            # A jitted function (kernax's distances) named at module level.
            return _resolve, (module, qualname)
        if isinstance(obj, type | types.FunctionType):
            raise Uncacheable(f"{module}.{qualname} cannot be named")
        return NotImplemented


def dumps(obj: Any, canonical: bool = False) -> bytes:
    """``obj`` pickled with classes and functions by name (:class:`Uncacheable` if one
    cannot be). ``canonical`` drops pickle's memo, so that equal objects give equal
    bytes whichever of them are one object in this process."""
    with io.BytesIO() as f:
        pickler = _Pickler(f, protocol=_PROTOCOL)
        pickler.fast = canonical
        try:
            pickler.dump(obj)
        except Uncacheable:
            raise
        except Exception as err:  # unpicklable objects, recursion in canonical mode
            raise Uncacheable(str(err)) from err
        return f.getvalue()


def loads(data: bytes) -> Any:
    """The object of :func:`dumps`. Only for trusted data: loading runs its code."""
    return pickle.loads(data)


def _tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _cpu_identity() -> str:
    """The host CPU's model and features (Linux), else the machine's name."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return platform.node()
    fields = ("vendor_id", "model name", "flags", "Features", "CPU implementer", "CPU part")
    kept = {line for line in lines if line.split(":")[0].strip() in fields}
    return "\n".join(sorted(kept)) or platform.node()


def _cpus() -> tuple[int | None, int]:
    """The host's CPUs, and those this process may use (XLA splits loops by them)."""
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else ()
    return os.cpu_count(), len(usable)


@functools.cache
def environment() -> bytes:
    """What pins the programs of this process besides their arguments (see above)."""
    device = jax.devices()[0]
    try:
        package_version = importlib.metadata.version("mimosa-sklearn")
    except importlib.metadata.PackageNotFoundError:
        package_version = None
    return dumps(
        {
            "python": sys.version,
            "versions": _VERSIONED,
            "package": package_version,
            "sources": {name: _tree_hash(root) for name, root in _SOURCES.items()},
            "backend": (
                device.platform,
                device.client.platform_version,
                device.device_kind,
                jax.device_count(),
            ),
            "host": (platform.system(), platform.machine(), _cpus(), _cpu_identity()),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
        },
        canonical=True,
    )


#: ``jax.config`` settings left out of the key: they log, or configure JAX's own
#: persistent cache, and cannot change a traced program.
UNKEYED_SETTINGS = frozenset(
    {
        "jax_log_compiles",
        "jax_explain_cache_misses",
        "jax_logging_level",
        "jax_debug_log_modules",
        "jax_compiler_detailed_logging_min_ops",
        "jax_traceback_filtering",
        "jax_compilation_cache_dir",
        "jax_enable_compilation_cache",
        "jax_raise_persistent_cache_errors",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
        "jax_compilation_cache_max_size",
    }
)


def _settings() -> dict[str, Any]:
    return {k: v for k, v in jax.config.values.items() if k not in UNKEYED_SETTINGS}


def _aval(x: jax.Array, device: Any) -> tuple:
    sharding = x.sharding
    if sharding.device_set != {device}:
        raise Uncacheable("an argument lives on another device")
    return x.shape, str(x.dtype), x.weak_type, sharding.memory_kind


def program_key(name: str, options: dict[str, Any], static: Any, dynamic: tuple[Any, ...]) -> str:
    """The hex key of program ``name`` (``module:qualname``) compiled with ``options``
    for the static part ``static`` and the JAX arrays ``dynamic`` of its arguments.

    Raises :class:`Uncacheable` when the key would not pin the program: a static part
    that cannot be named, or more than one device (the entry holds an executable for
    one device).
    """
    devices = jax.devices()
    if len(devices) != 1 or jax.config.jax_default_device is not None:
        raise Uncacheable("several devices")
    avals = tuple(_aval(x, devices[0]) for x in dynamic)
    material = dumps((name, options, _settings(), static, avals), canonical=True)
    return hashlib.sha256(environment() + material).hexdigest()
