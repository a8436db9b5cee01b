"""Saving a fitted estimator: its state as plain data, and which states may load.

An estimator's ``__getstate__`` returns :func:`pack_state` of its attributes: every value
through :func:`._spec.encode` (equinox modules, JAX arrays and the package's own objects
become nested dicts, lists, tuples, strings, numbers and numpy arrays), plus two
versions. That state is what pickle, joblib and skops store; ``skops.io`` then needs to
trust only the estimator's class (and a user's own kernel classes, saved by reference).

Two versions guard loading (:func:`unpack_state`):

- the persistence format, :data:`FORMAT`: how the state is written. A state of another
  format is refused, naming both formats and versions (a newer one: upgrade; an older
  one, or none, which is a pickle from before formats existed: install the version
  that saved it, or refit);
- the package version: what the attributes mean. A state from an incompatible version
  (another major, or another minor before 1.0) is refused with a message naming both.
"""

from __future__ import annotations

import pickle
import re
from typing import Any

from ._spec import decode, encode
from ._version import __version__

__all__ = ["FORMAT", "pack_state", "unpack_state"]

# Version of the layout of saved states (the kinds of values of ._spec, the keys
# below). Raise it when a state it writes can no longer be read by the previous code.
FORMAT = 1
_FORMAT_KEY = "_mimosa_format"
_VERSION_KEY = "_mimosa_version"


def _package_version() -> str:
    return __version__


def _compat_key(version: str) -> tuple[int, ...]:
    """Part of a version that must match for states to load (semver; 0.x: the minor)."""
    parts = [int(p) for p in re.findall(r"\d+", version)[:2]]
    parts += [0] * (2 - len(parts))
    return (parts[0],) if parts[0] >= 1 else (0, parts[1])


def pack_state(state: dict[str, Any]) -> dict[str, Any]:
    """An estimator's attributes as plain data, with the format and package versions.

    The caller's dict is not modified.
    """
    packed = {key: encode(value) for key, value in state.items()}
    packed[_FORMAT_KEY] = FORMAT
    packed[_VERSION_KEY] = _package_version()
    return packed


def _format_error(owner: str, saved_format: Any, saved: str | None) -> str:
    by = f"mimosa_sklearn {saved}" if saved else "another mimosa_sklearn"
    if saved_format is None:
        written = f"no persistence format (a pickle from before format {FORMAT})"
    else:
        written = f"persistence format {saved_format}"
    if isinstance(saved_format, int) and saved_format > FORMAT:
        advice = f"Upgrade mimosa_sklearn{f' to {saved} or later' if saved else ''} to load it"
    else:
        advice = "Load it with the mimosa_sklearn that saved it"
    return (
        f"This {owner} was saved by {by} in {written}; mimosa_sklearn "
        f"{_package_version()} reads persistence format {FORMAT}. {advice}, or refit "
        "the model."
    )


def unpack_state(state: dict[str, Any], owner: str) -> dict[str, Any]:
    """The attributes that :func:`pack_state` saved, refusing states of another format
    or of an incompatible package version.

    Raises
    ------
    pickle.UnpicklingError
        When the state's format or package version cannot be loaded (``owner`` names
        the class in the message), or when it names a class or function outside
        kernax and mimosa_sklearn (:func:`._spec.decode`).
    """
    state = dict(state)
    saved_format = state.pop(_FORMAT_KEY, None)
    saved = state.pop(_VERSION_KEY, None)
    if saved_format != FORMAT:
        raise pickle.UnpicklingError(_format_error(owner, saved_format, saved))
    current = _package_version()
    if saved is not None and _compat_key(saved) != _compat_key(current):
        raise pickle.UnpicklingError(
            f"This {owner} was saved with mimosa_sklearn {saved} and cannot be loaded "
            f"with mimosa_sklearn {current} (incompatible versions). Install "
            f"mimosa_sklearn=={saved} to load it, or refit the model."
        )
    return decode(state)
