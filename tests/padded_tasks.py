"""Tests' shorthand for padded tasks: NaN-padded arrays -> :class:`Padded`.

Hand-written test data are easiest to read as ``(T, N, ...)`` arrays with NaN rows; the
package itself never reads NaN as padding (:func:`mimosa_sklearn._padded.scatter`
builds the masks from the caller's rows), so this conversion lives with the tests.
"""

from __future__ import annotations

import numpy as np

from mimosa_sklearn._padded import Padded, scatter


def from_nan(
    x: np.ndarray, y: np.ndarray | None = None, mappings: np.ndarray | None = None
) -> Padded:
    """Tasks ``x`` (T, N, I) with NaN rows on padding (and ``y`` (T, N, O), NaN where not
    observed; ``mappings`` (T, N)) as :class:`Padded`, each task's real rows moved to
    its first row slots in their order."""
    x = np.asarray(x, np.float64)
    real = ~np.isnan(x).any(-1)
    task, slot = np.nonzero(real)
    pos = np.cumsum(real, axis=1)[task, slot] - 1
    return scatter(
        task,
        pos,
        x.shape[0],
        x[task, slot],
        None if y is None else np.asarray(y, np.float64)[task, slot],
        None if mappings is None else np.asarray(mappings)[task, slot],
    )
