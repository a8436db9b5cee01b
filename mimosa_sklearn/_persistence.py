"""Pickling: what of a fitted estimator travels how, and which versions may load it.

kernax kernels hold jitted functions that stdlib ``pickle`` rejects, so attributes that
hold equinox modules (the fitted model, user kernels, conditioned tasks' contexts) travel
as cloudpickle bytes. JAX arrays travel as numpy arrays and come back on the device in
float64 (:func:`to_host`, :func:`to_device_tree`): unpickled as JAX arrays outside
``jax.enable_x64`` they would silently become float32. A pickle records the package
version; one from an incompatible version (another major, or another minor before
1.0) is refused with a message naming both.
"""

from __future__ import annotations

import pickle
import re
import sys
from typing import Any

from ._version import __version__

__all__ = ["pack_state", "to_device_tree", "to_host", "unpack_state"]

# Marker of estimator attributes stored as cloudpickle bytes inside a pickle.
_CLOUDPICKLED = "__cloudpickled__"
# Attributes that may hold equinox modules deep inside containers.
_ALWAYS_CLOUDPICKLED = ("_contexts",)
_VERSION_KEY = "_mimosa_version"


def _package_version() -> str:
    return __version__


def _compat_key(version: str) -> tuple[int, ...]:
    """Part of a version that must match for pickles to load (semver; 0.x: the minor)."""
    parts = [int(p) for p in re.findall(r"\d+", version)[:2]]
    parts += [0] * (2 - len(parts))
    return (parts[0],) if parts[0] >= 1 else (0, parts[1])


def _cloudpickle() -> Any:
    """cloudpickle: a dependency of joblib >= 1.6, vendored by older joblib."""
    try:
        import cloudpickle
    except ImportError:  # pragma: no cover - joblib < 1.6
        from joblib.externals import cloudpickle
    return cloudpickle


def _is_equinox_module(value: Any) -> bool:
    """True for equinox modules, without importing equinox when nobody else did."""
    eqx = sys.modules.get("equinox")
    return eqx is not None and isinstance(value, eqx.Module)


def _is_cloudpickled(value: Any) -> bool:
    """True for the ``(marker, bytes)`` pairs written by :func:`pack_state`."""
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and value[0] == _CLOUDPICKLED
        and isinstance(value[1], bytes)
    )


def pack_state(state: dict[str, Any]) -> dict[str, Any]:
    """An estimator's ``__dict__`` ready for pickle: equinox modules (with numpy
    leaves) and conditioned tasks' contexts as cloudpickle bytes, and the package
    version."""
    cloudpickle = _cloudpickle()
    state = dict(state)
    for key, value in state.items():
        if _is_equinox_module(value):
            state[key] = (_CLOUDPICKLED, cloudpickle.dumps(to_host(value)))
        elif key in _ALWAYS_CLOUDPICKLED and value:
            state[key] = (_CLOUDPICKLED, cloudpickle.dumps(value))
    state[_VERSION_KEY] = _package_version()
    return state


def unpack_state(state: dict[str, Any], owner: str) -> dict[str, Any]:
    """The inverse of :func:`pack_state`, refusing pickles from incompatible versions.

    Raises
    ------
    pickle.UnpicklingError
        When the pickle's version is incompatible with this one (``owner`` names the
        class in the message).
    """
    state = dict(state)
    saved = state.pop(_VERSION_KEY, None)
    current = _package_version()
    if saved is not None and _compat_key(saved) != _compat_key(current):
        raise pickle.UnpicklingError(
            f"This {owner} was pickled with mimosa_sklearn {saved} and cannot be loaded "
            f"with mimosa_sklearn {current} (incompatible versions). Install "
            f"mimosa_sklearn=={saved} to load it, or refit the model."
        )
    for key, value in state.items():
        if _is_cloudpickled(value):
            value = pickle.loads(value[1])
            # Modules (user kernels) travelled with numpy leaves: back in float64.
            state[key] = to_device_tree(value) if _is_equinox_module(value) else value
    return state


def to_host(tree: Any) -> Any:
    """``tree`` with its JAX arrays as numpy arrays."""
    import jax
    import numpy as np

    return jax.tree.map(lambda a: np.asarray(a) if isinstance(a, jax.Array) else a, tree)


def to_device_tree(tree: Any) -> Any:
    """``tree`` with its numpy arrays on the device, dtypes kept (float64 included)."""
    import jax
    import numpy as np

    from .core import runtime
    from .core.compile import to_device

    with runtime.jax_scope():
        return jax.tree.map(lambda a: to_device(a) if isinstance(a, np.ndarray) else a, tree)
