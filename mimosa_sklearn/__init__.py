"""scikit-learn compatible MagmaClust: multi-task Gaussian processes with clustered means.

Public names: :class:`MagmaClusterRegressor`, :func:`make_forecast_scorer`, and the
:mod:`mimosa_sklearn.datasets` subpackage. The JAX core is imported on first use
(fit/predict), so importing the package stays light.
"""

from __future__ import annotations

from . import datasets
from ._version import __version__
from .estimator import MagmaClusterRegressor
from .metrics import make_forecast_scorer

__all__ = ["MagmaClusterRegressor", "__version__", "datasets", "make_forecast_scorer"]
