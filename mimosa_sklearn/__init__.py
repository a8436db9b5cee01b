"""scikit-learn compatible MagmaClust: multi-task Gaussian processes with clustered means.

Public names: :class:`MagmaClusterRegressor`, :func:`make_forecast_scorer`, and the
:mod:`mimosa_sklearn.datasets` subpackage. The JAX core is imported on first use
(fit/predict), so importing the package stays light.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("mimosa-sklearn")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.2.0"

# Imported after __version__: the estimator reads it when pickling.
from . import datasets
from .estimator import MagmaClusterRegressor
from .metrics import make_forecast_scorer

__all__ = ["MagmaClusterRegressor", "__version__", "datasets", "make_forecast_scorer"]
