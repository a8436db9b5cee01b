"""scikit-learn compatible MagmaClust: multi-task Gaussian processes with clustered means.

Public names: :class:`MagmaClusterRegressor`, :func:`make_forecast_scorer`,
:class:`GridChoice` (its ``grid_choice_``), :class:`InputScale` (its
``input_scales_``), :class:`FitMemoryError`,
:class:`UnseenTaskWarning`, and the public
modules :mod:`~mimosa_sklearn.datasets`, :mod:`~mimosa_sklearn.metrics`,
:mod:`~mimosa_sklearn.selection` and :mod:`~mimosa_sklearn.plotting`. Modules whose
names start with ``_`` are implementation. The JAX core is imported on first use
(fit/predict), so importing the package stays light.
"""

from __future__ import annotations

from . import datasets
from ._auto_grid import GridChoice
from ._dates import InputScale
from ._estimator import MagmaClusterRegressor
from ._memory import FitMemoryError
from ._predicting import UnseenTaskWarning
from ._version import __version__
from .metrics import make_forecast_scorer

__all__ = [
    "FitMemoryError",
    "GridChoice",
    "InputScale",
    "MagmaClusterRegressor",
    "UnseenTaskWarning",
    "__version__",
    "datasets",
    "make_forecast_scorer",
]
