"""Bundled data sets and a simulator of MagmaClust data.

All loaders return scikit-learn style ``(X, y)`` pairs in long format: one row
per observation, ``X`` holding the task id column ``"ID"`` and the input
column(s), ``y`` the output(s).

* :func:`load_synth_dev` / :func:`load_synth_dev_reference`: a small synthetic
  data set (60 training tasks, 30 new tasks, 3 clusters) used during
  development, with reference results of other implementations.
* :func:`load_weight`: children's weight growth (GUSTO cohort, Singapore).
* :func:`load_swimmers`: French swimmers' 100 m freestyle times, 2002-2016.
* :func:`make_magma_data`: draw new data from the MagmaClust generative model.

The real data sets (weight and swimmers) are distributed with the MagmaClustR R
package (MIT licence). Please cite: A. Leroy, P. Latouche, B. Guedj and
S. Gey, "Cluster-Specific Predictions with Multi-Task Gaussian Processes",
Journal of Machine Learning Research, 24(5):1-49, 2023.

The files ship inside the package (``mimosa_sklearn/datasets/data``) and are
read with :mod:`importlib.resources`; nothing is downloaded.
"""

from __future__ import annotations

from ._base import load_swimmers, load_synth_dev, load_synth_dev_reference, load_weight
from ._generators import make_magma_data

__all__ = [
    "load_swimmers",
    "load_synth_dev",
    "load_synth_dev_reference",
    "load_weight",
    "make_magma_data",
]
