"""Equinox modules and the package's own objects as plain data, and back.

Stdlib ``pickle`` cannot store kernax kernels (they hold jitted functions that pickle
finds under another object), and skops loads only the types the user trusts. So the
values of a fitted estimator are saved as nested plain data that both store as they
are: dicts, lists, tuples, strings, numbers, None and numpy arrays. Four kinds of
tagged dicts (key :data:`TAG`) carry the rest:

``{TAG: "jax", "array": a}``
    A JAX array, as a numpy array. It comes back on the device with its dtype: float64
    even where the user's ``jax_enable_x64`` is off, which stays off.
``{TAG: "object", "class": ref, "fields": {name: value}}``
    An equinox module (kernax kernels and means, the fitted
    :class:`~mimosa_sklearn.core.model.Model`) or an object of this package that pickles
    by its attributes (the fitted model's facade, conditioned tasks, dataclasses): its
    instance attributes, static fields included. It comes back through
    ``object.__new__`` and ``object.__setattr__``, without calling ``__init__``: the
    attributes were saved after ``__init__``'s conversions.
``{TAG: "ref", "ref": ref}``
    A class or a function held as a value (the ``engine`` classes of kernax kernels,
    the jitted ``distance_function`` of stationary kernels).
``{TAG: "dict", "keys": [...], "values": [...]}``
    A dict whose keys are not all strings (task ids), or one holding :data:`TAG`.

A ``ref`` to a class or function of kernax or of this package is its import path, the
string ``"module:qualname"``. Loading resolves such strings only inside those packages
(:data:`ALLOWED_PACKAGES`), and only to the object defined at that path: a jitted
function comes back as the object stored at import. Any other class or function (a
user's own kernel class) is saved as the object itself: pickle stores it by reference,
and skops lists it among the types the user must trust. Other values (numbers, strings,
numpy arrays, a ``RandomState``) are left to the storage format.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import pickle
import sys
import types
from typing import Any

import numpy as np

__all__ = ["ALLOWED_PACKAGES", "TAG", "decode", "encode"]

TAG = "__mimosa__"
# Packages whose classes and functions a saved state may name by their import path.
ALLOWED_PACKAGES = ("kernax", "mimosa_sklearn")
_OWN_PACKAGE = "mimosa_sklearn"


# ---------------------------------------------------------------------- what is what


def _loaded(module: str, name: str) -> type | None:
    """``module.name`` when ``module`` is already imported (encoding imports no JAX)."""
    found = sys.modules.get(module)
    return None if found is None else getattr(found, name)


def _is_jax_array(value: Any) -> bool:
    array = _loaded("jax", "Array")
    return array is not None and isinstance(value, array)


def _is_module_class(cls: type) -> bool:
    module = _loaded("equinox", "Module")
    return module is not None and issubclass(cls, module)


def _package(path: str) -> str:
    """Top-level package of a module name or of a ``"module:qualname"`` path."""
    return path.partition(":")[0].partition(".")[0]


def _is_own_object(value: Any) -> bool:
    """An object of this package that pickle would store as its ``__dict__``."""
    cls = type(value)
    return (
        _package(cls.__module__) == _OWN_PACKAGE
        and hasattr(value, "__dict__")
        and cls.__reduce_ex__ is object.__reduce_ex__
        and cls.__reduce__ is object.__reduce__
        and cls.__getstate__ is object.__getstate__
    )


def _is_named(value: Any) -> bool:
    """A class or a function (jitted ones included): saved by reference."""
    wrapper = hasattr(value, "__wrapped__") and _path(value) is not None
    return isinstance(value, type | types.FunctionType) or wrapper


def _path(obj: Any) -> str | None:
    """``"module:qualname"`` of a class or function (None for other objects)."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return None
    return f"{module}:{qualname}"


def _lookup(path: str) -> Any:
    """The object at ``path``; ImportError or AttributeError when there is none."""
    module, _, qualname = path.partition(":")
    found = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


# ---------------------------------------------------------------------- encode


def _ref(obj: Any) -> Any:
    """How a class or function is saved: its path inside the allowed packages, else
    the object itself (stored by reference)."""
    path = _path(obj)
    try:
        found = _lookup(path) if path else None
    except (ImportError, AttributeError):
        found = None
    if found is not obj:
        raise pickle.PicklingError(
            f"Cannot save {obj!r}: it is not found at its import path {path} (a lambda, "
            "a local function or class, or a function wrapped after its definition). "
            "Define it at the top level of a module."
        )
    if _package(path) in ALLOWED_PACKAGES:
        return path
    if not isinstance(obj, type | types.FunctionType):
        raise pickle.PicklingError(
            f"Cannot save {obj!r} ({type(obj).__name__}): outside kernax and "
            "mimosa_sklearn only classes and plain functions can be saved, by reference. "
            "Keep the plain function in the kernel and jit it where it is called."
        )
    return obj


def encode(value: Any) -> Any:
    """``value`` as plain data (see the module's docstring).

    Parameters
    ----------
    value : object
        Any value of a fitted estimator: containers, arrays, equinox modules, the
        package's own objects.

    Returns
    -------
    object
        Nested dicts, lists, tuples and leaves that pickle and skops store as they are.

    Raises
    ------
    pickle.PicklingError
        For a class or function that could not be found again when loading.
    """
    if isinstance(value, dict):
        if all(isinstance(key, str) for key in value) and TAG not in value:
            return {key: encode(item) for key, item in value.items()}
        return {
            TAG: "dict",
            "keys": [encode(key) for key in value],
            "values": [encode(item) for item in value.values()],
        }
    if type(value) in (list, tuple):
        return type(value)(encode(item) for item in value)
    if _is_jax_array(value):
        return {TAG: "jax", "array": np.asarray(value)}
    if _is_module_class(type(value)) or _is_own_object(value):
        return {
            TAG: "object",
            "class": _ref(type(value)),
            "fields": {name: encode(item) for name, item in vars(value).items()},
        }
    if _is_named(value):
        return {TAG: "ref", "ref": _ref(value)}
    return value


# ---------------------------------------------------------------------- decode


def _refused(ref: Any, why: str) -> pickle.UnpicklingError:
    return pickle.UnpicklingError(
        f"Refusing to load {ref!r}: {why}. A saved mimosa_sklearn model names classes "
        f"and functions only from {', '.join(ALLOWED_PACKAGES)}; other classes (a "
        "kernel class of your own) are saved as the class itself, which skops lists "
        "among the types to trust (skops.io.get_untrusted_types)."
    )


def _resolve(ref: Any) -> Any:
    """The class or function a ``ref`` names."""
    if not isinstance(ref, str):
        # A class or function of another package, as pickle or skops (once trusted)
        # gave it back.
        if isinstance(ref, type) or callable(ref):
            return ref
        raise _refused(ref, "not a class, a function or an import path")
    if ":" not in ref or _package(ref) not in ALLOWED_PACKAGES:
        raise _refused(ref, "outside the packages a saved model may name")
    try:
        found = _lookup(ref)
    except (ImportError, AttributeError) as err:
        raise pickle.UnpicklingError(
            f"Cannot load {ref!r}: it does not exist in the installed {_package(ref)}. "
            "Install the versions the model was saved with, or refit it."
        ) from err
    if _path(found) != ref:
        # Reached through another module's attribute: only objects defined there load.
        raise _refused(ref, f"it is {found!r}, defined elsewhere")
    return found


class _Decoder:
    """Walks plain data back into objects; enters the float64 JAX scope at the first
    JAX array (and imports JAX only then)."""

    def __init__(self, scope: contextlib.ExitStack) -> None:
        self._scope = scope
        self._to_device = None

    def _array(self, array: np.ndarray) -> Any:
        if self._to_device is None:
            from .core import runtime
            from .core.compile import to_device

            self._scope.enter_context(runtime.jax_scope())
            self._to_device = to_device
        return self._to_device(array)

    def _object(self, node: dict) -> Any:
        cls = _resolve(node["class"])
        own = isinstance(cls, type) and _package(cls.__module__) == _OWN_PACKAGE
        if not isinstance(cls, type) or not (own or _is_module_class(cls)):
            raise _refused(cls, "not an equinox module nor a class of mimosa_sklearn")
        declared = (
            {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else None
        )
        obj = object.__new__(cls)
        for name, value in node["fields"].items():
            if not isinstance(name, str) or name.startswith("__"):
                raise _refused(name, f"not an attribute name of {cls.__qualname__}")
            if declared is not None and name not in declared:
                raise _refused(name, f"not a field of {cls.__qualname__}")
            # Equinox modules and frozen dataclasses refuse plain attribute setting.
            object.__setattr__(obj, name, self.decode(value))
        return obj

    def decode(self, data: Any) -> Any:
        if isinstance(data, dict):
            kind = data.get(TAG)
            if kind is None:
                return {key: self.decode(item) for key, item in data.items()}
            if kind == "jax":
                return self._array(data["array"])
            if kind == "object":
                return self._object(data)
            if kind == "ref":
                return _resolve(data["ref"])
            if kind == "dict":
                keys = [self.decode(key) for key in data["keys"]]
                return dict(zip(keys, map(self.decode, data["values"]), strict=True))
            raise pickle.UnpicklingError(
                f"Unknown kind of saved value {kind!r}: the model was saved by another "
                "version of mimosa_sklearn."
            )
        if type(data) in (list, tuple):
            return type(data)(self.decode(item) for item in data)
        return data


def decode(data: Any) -> Any:
    """The value that :func:`encode` turned into ``data``.

    JAX arrays come back on the device with their saved dtypes (float64 included,
    whatever the global ``jax_enable_x64``); numpy arrays stay numpy arrays.

    Raises
    ------
    pickle.UnpicklingError
        When ``data`` names a class or function outside kernax and mimosa_sklearn by
        its path, or one that does not exist.
    """
    with contextlib.ExitStack() as scope:
        return _Decoder(scope).decode(data)
